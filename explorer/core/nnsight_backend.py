"""The instrumented run through nnsight: the same ``Trace``, computed by nnsight here or on NDIF.

NDIF (the National Deep Inference Fabric) runs 8B-405B models for interpretability behind the ``nnsight``
client; no single machine of ours holds them. ``run_nnsight(lm, text)`` builds the trace exactly as
``explorer.core.run.run`` does (same tokens, same shapes), only the forward pass goes through nnsight's
tracing context and its output is saved from there. Locally (``remote=False``) it wraps the loaded model
and gives a trace identical to the plain path (a test checks); remotely (``remote=True``) nnsight sends
the same pass to NDIF for the hub model ``lm.spec.source`` with the user's own API key, and the rest of
the code does not change. Optional: ``pip install .[ndif]``; without it this module says so in a sentence.
"""

from __future__ import annotations

from explorer.core.errors import ModelLoadError
from explorer.core.loading import LoadedModel
from explorer.core.run import run
from explorer.core.trace import Trace


def available() -> bool:
    """Whether the ``nnsight`` client is installed (the ``ndif`` extra)."""
    try:
        import nnsight  # noqa: F401
    except ImportError:
        return False
    return True


def nnsight_forward(lm: LoadedModel, remote: bool = False, api_key: str | None = None):
    """A ``forward(**inputs)`` that runs ``lm`` through nnsight's tracing context and returns the model's output.

    Locally the loaded model itself is wrapped; remotely NDIF runs the hub model ``lm.spec.source`` (its
    weights never come here), authorised by ``api_key``.
    """
    if not available():
        raise ModelLoadError("The nnsight backend needs the optional 'ndif' extra: pip install 'llm-explorer[ndif]'.")
    import nnsight

    if remote:
        if not api_key:
            raise ModelLoadError("Running on NDIF needs your own NDIF API key (https://login.ndif.us).")
        nnsight.CONFIG.set_default_api_key(api_key)
        wrapped = nnsight.LanguageModel(lm.spec.source)  # a meta-device shell; NDIF holds the weights
    else:
        wrapped = nnsight.NNsight(lm.model)

    def forward(**inputs):
        with wrapped.trace(**inputs, remote=remote):
            out = wrapped.output.save()
        return out

    return forward


def run_nnsight(
    lm: LoadedModel,
    text: str,
    target: str | None = None,
    max_new_tokens: int = 20,
    generate: int = 0,
    remote: bool = False,
    api_key: str | None = None,
) -> Trace:
    """``run(lm, text, ...)`` with the instrumented pass through nnsight (see the module docstring)."""
    return run(lm, text, target, max_new_tokens, generate, forward=nnsight_forward(lm, remote, api_key))
