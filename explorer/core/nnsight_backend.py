"""The instrumented run through nnsight: the same ``Trace``, computed by nnsight here or on NDIF.

NDIF (the National Deep Inference Fabric) runs 8B-405B models for interpretability behind the ``nnsight``
client; no single machine of ours holds them. ``run_nnsight(lm, text)`` builds the trace exactly as
``explorer.core.run.run`` does (same tokens, same shapes), only the forward pass goes through nnsight's
tracing context and its output is saved from there. Locally (``remote=False``) it wraps the loaded model
and gives a trace identical to the plain path (a test checks); remotely (``remote=True``) nnsight sends
the same pass to NDIF for the hub model ``lm.spec.source`` with the user's own API key, and the rest of
the code does not change. Optional: ``pip install .[ndif]``; without it this module says so in a sentence.

Catalogue models marked ``"remote": "ndif"`` (``llama-3.1-8b``, ``llama-3.1-70b``) load as ``remote_model``:
a ``LoadedModel`` whose ``model`` is an ``NDIFModel`` (the hub config and tokenizer here, the weights on
NDIF); calling it runs the pass remotely, so ``run`` and the bounded trace work unchanged. Without
``EXPLORER_NDIF_API_KEY`` such a model gets one sentence saying what to set. The key lives only in the
settings (``repr=False``) and nnsight's in-memory config; it is never written to nnsight's config file,
logged, or put in a message. NDIF is not reachable from our machines: the remote call itself has not run.
"""

from __future__ import annotations

import torch

from explorer.core.catalogue import CatalogueEntry
from explorer.core.errors import InputError, ModelLoadError
from explorer.core.loading import LoadedModel
from explorer.core.run import run
from explorer.core.settings import Settings, settings
from explorer.core.spec import spec_from_config
from explorer.core.trace import Trace

EXTRA = "The nnsight backend needs the optional 'ndif' extra: pip install 'llm-explorer[ndif]'."


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
        raise ModelLoadError(EXTRA)
    import nnsight

    if remote:
        if not api_key:
            raise ModelLoadError("Running on NDIF needs your own NDIF API key (https://login.ndif.us).")
        use_key(api_key)
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


def use_key(api_key: str) -> None:
    """Hand nnsight the key in memory only (``set_default_api_key`` would also write it to nnsight's config file)."""
    import nnsight

    nnsight.CONFIG.API.APIKEY = api_key


def key_needed(entry: CatalogueEntry) -> str:
    """The sentence for a model that runs on NDIF when this server has no key."""
    return (
        f"{entry.key} runs on NDIF (the National Deep Inference Fabric), not on this server: whoever runs the "
        "server sets EXPLORER_NDIF_API_KEY to their NDIF API key (from https://login.ndif.us) and installs the "
        "'ndif' extra."
    )


class NDIFModel:
    """A hub model that runs on NDIF, standing where a loaded ``torch.nn.Module`` stands in a ``LoadedModel``.

    ``config`` is the hub's; calling it (``model(input_ids=..., output_attentions=True, ...)``) runs that forward
    pass on NDIF and returns the model's output. It holds no weights (``parameters()`` is one empty CPU tensor,
    so the pool counts it as nothing); ``generate`` is not wired and says so.
    """

    def __init__(self, wrapped, api_key: str):
        self._wrapped = wrapped  # nnsight.LanguageModel: a meta-device shell of the hub model
        self._api_key = api_key
        self.config = wrapped.config
        self._empty = torch.zeros(0)

    def __repr__(self) -> str:  # never the key
        return f"NDIFModel({self.config.name_or_path!r})"

    def __call__(self, **inputs):
        use_key(self._api_key)
        with self._wrapped.trace(**inputs, remote=True):
            out = self._wrapped.output.save()
        return out

    def generate(self, *args, **kwargs):
        raise InputError("Generating text on NDIF is not wired yet: analyse the text as it is (no continuation).")

    def parameters(self):
        return iter([self._empty])

    def buffers(self):
        return iter([])

    def get_input_embeddings(self):
        return None


def remote_model(entry: CatalogueEntry, server: Settings | None = None) -> LoadedModel:
    """``entry`` (marked ``"remote": "ndif"``) as a ``LoadedModel`` that runs on NDIF; a sentence without the key
    or the extra. Only the config and tokenizer are downloaded (from the hub), never the weights."""
    key = (server or settings()).ndif_api_key
    if not key:
        raise InputError(key_needed(entry))
    if not available():
        raise ModelLoadError(EXTRA)
    import nnsight

    try:
        wrapped = nnsight.LanguageModel(entry.source)
    except Exception as err:  # no network, a gated repository, ...: its type only, never its text (no key in it)
        raise ModelLoadError(
            f"{entry.key}'s configuration and tokenizer could not be fetched from the hub ({type(err).__name__}); "
            "NDIF models need a network."
        ) from None
    spec = spec_from_config(entry.key, entry.source, wrapped.config, True, description=entry.description)
    return LoadedModel(spec, NDIFModel(wrapped, key), wrapped.tokenizer, torch.device("cpu"))
