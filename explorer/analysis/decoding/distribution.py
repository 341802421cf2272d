"""The next-token view's numbers: the distribution after a text, followed through every decoding stage.

``next_token_stages`` takes the last position's logits of a trace, runs them through the decoding
settings (``sampling.transform``) and keeps, for the model's ``top_n`` most probable tokens, what
each stage makes of them: plain arrays the view draws as grouped bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis.decoding.sampling import DecodingSettings, next_token_distribution, transform
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.memory import to_host
from explorer.core.tokens import token_label
from explorer.core.trace import Trace


@dataclass(frozen=True)
class StagedDistribution:
    """The model's ``top_n`` most probable next tokens after a text, through each decoding stage.

    ===============  =========  ==========================================================
    field            shape      meaning
    ===============  =========  ==========================================================
    ids, labels      (N,)       the tokens, most probable first (labels: whitespace visible)
    logits           (N,)       the model's own logits for them
    stage_names      (S,)       ``"model"`` then each active setting, in generate's order
    probs, kept      (S, N)     each stage's probability of the token; False once filtered
    ===============  =========  ==========================================================

    ``after`` is the label of the last token of the text; ``entropy_bits`` and ``rest`` (the mass
    outside the top N) describe the model's whole distribution; ``survivors`` of ``vocab_size``
    tokens can still be chosen after the last stage.
    """

    ids: list[int]
    labels: list[str]
    logits: np.ndarray
    stage_names: list[str]
    probs: np.ndarray
    kept: np.ndarray
    after: str
    entropy_bits: float
    rest: float
    survivors: int
    vocab_size: int


def next_token_stages(lm: LoadedModel, trace: Trace, settings: DecodingSettings, top_n: int) -> StagedDistribution:
    """The next token after ``trace``'s text (its generated stream) under ``settings``; see ``StagedDistribution``.

    The repetition penalty counts every token of that stream, as ``generate`` counts the prompt.
    """
    stream = lm.spec.adapter.target_stream
    if stream is None or trace.logits is None:
        raise InputError(f"{lm.spec.key} does not predict a next token.")
    logits = torch.from_numpy(np.array(trace.logits[-1]))  # (V,)
    previous = torch.tensor([t.id for t in trace.tokens[stream]])  # (T,)
    stages = transform(logits, previous, settings)
    top = next_token_distribution(logits, int(top_n))
    ids = top["ids"]
    return StagedDistribution(
        ids=ids,
        labels=[token_label(lm.tokenizer, i) for i in ids],
        logits=to_host(logits[ids]),
        stage_names=[s.name for s in stages],
        probs=np.stack([to_host(s.probs[ids]) for s in stages]),
        kept=np.stack([to_host(s.kept_mask[ids]) for s in stages]),
        after=trace.labels(stream)[-1],
        entropy_bits=float(top["entropy_bits"]),
        rest=float(top["rest"]),
        survivors=int(stages[-1].kept_mask.sum()),
        vocab_size=int(logits.numel()),
    )
