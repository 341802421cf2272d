"""How decoding settings reshape the next-token distribution: our own copies of transformers' processors.

``model.generate`` turns the logits of the last position into the distribution it samples from by
running a chain of processors, always in this order (``GenerationMixin._get_logits_processor``):

=====================  ==================================================  ===========================
stage                  what it does to the logits (V,) or (B, V)           transformers class
=====================  ==================================================  ===========================
repetition penalty     tokens already in the text: ``x < 0 ? x * r : x/r``  RepetitionPenaltyLogitsProcessor
temperature            ``x / t``                                           TemperatureLogitsWarper
top-k                  below the k-th largest logit -> -inf (ties kept)    TopKLogitsWarper
top-p                  drop the least probable tail of mass <= 1 - p       TopPLogitsWarper
min-p                  drop tokens with prob < min_p * max prob            MinPLogitsWarper
=====================  ==================================================  ===========================

The repetition penalty also applies to greedy decoding; the four others ("warpers") only when
sampling. Each function here performs the same tensor operations as its transformers class
(filter value -inf, at least one token always kept, ties broken the same way), so the results are
equal bit for bit; ``tests/test_sampling.py`` checks this against the classes themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from explorer.core.errors import InputError

FILTERED = -float("inf")  # transformers' default filter_value
MIN_TOKENS_TO_KEEP = 1  # transformers' default outside beam search
MAX_TEMPERATURE = 5.0
MAX_REPETITION_PENALTY = 10.0


@dataclass(frozen=True)
class DecodingSettings:
    """How the next token is chosen. The defaults change nothing: plain sampling from the model.

    ``greedy`` always takes the most probable token (after the repetition penalty, as
    ``generate(do_sample=False)`` does); the sampling filters are then ignored. ``top_k`` 0,
    ``top_p`` 1, ``min_p`` 0 and ``repetition_penalty`` 1 each switch their stage off.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    greedy: bool = False

    def validate(self) -> DecodingSettings:
        """Return self, or raise ``InputError`` naming the first setting out of range."""
        checks = [
            (
                _number(self.temperature) and 0 < self.temperature <= MAX_TEMPERATURE,
                f"Temperature must be above 0 and at most {MAX_TEMPERATURE:g}, not {self.temperature!r}. "
                "Temperature 0 would mean always taking the most likely token: choose greedy decoding for that.",
            ),
            (
                isinstance(self.top_k, (int, np.integer)) and not isinstance(self.top_k, bool) and self.top_k >= 0,
                f"Top-k must be a whole number, 0 (off) or more, not {self.top_k!r}.",
            ),
            (
                _number(self.top_p) and 0 < self.top_p <= 1,
                f"Top-p must be above 0 and at most 1 (1 is off), not {self.top_p!r}.",
            ),
            (
                _number(self.min_p) and 0 <= self.min_p < 1,
                f"Min-p must be at least 0 (off) and below 1, not {self.min_p!r}.",
            ),
            (
                _number(self.repetition_penalty) and 0 < self.repetition_penalty <= MAX_REPETITION_PENALTY,
                f"The repetition penalty must be above 0 and at most {MAX_REPETITION_PENALTY:g} (1 is off), "
                f"not {self.repetition_penalty!r}.",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        return self

    def generate_kwargs(self) -> dict:
        """The ``model.generate`` arguments that choose tokens exactly as these settings do."""
        if self.greedy:
            return {"do_sample": False, "repetition_penalty": float(self.repetition_penalty)}
        return {
            "do_sample": True,
            "temperature": float(self.temperature),
            "top_k": int(self.top_k),  # generate's default is 50, so 0 (off) must be said explicitly
            "top_p": float(self.top_p),
            "min_p": float(self.min_p) if self.min_p > 0 else None,
            "repetition_penalty": float(self.repetition_penalty),
        }


def _number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def _batched(fn):
    """Let a (B, V) processor also take 1-D (V,) logits (and 1-D previous ids)."""

    def wrapper(logits: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if logits.dim() == 1:
            args = tuple(a.unsqueeze(0) if isinstance(a, torch.Tensor) and a.dim() == 1 else a for a in args)
            return fn(logits.unsqueeze(0), *args, **kwargs).squeeze(0)
        return fn(logits, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


@_batched
def repetition_penalty(logits: torch.Tensor, previous_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make every token already in ``previous_ids`` (T,) or (B, T) less likely, once however often it occurs.

    A positive logit is divided by ``penalty``, a negative one multiplied by it (CTRL, Keskar et al.
    2019), so a penalty above 1 always lowers the token. For decoders the prompt counts too.
    """
    vocab = logits.shape[-1]
    ids = previous_ids.to(logits.device).long()
    seen = torch.zeros((logits.shape[0], vocab + 1), dtype=torch.bool, device=logits.device)  # (B, V + 1)
    seen.scatter_(1, ids.clamp(min=0, max=vocab), True)  # ids outside the head land in the spare column
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen[:, :vocab], penalised, logits)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by the temperature: below 1 sharpens the distribution, above 1 flattens it."""
    return logits / temperature


@_batched
def top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = MIN_TOKENS_TO_KEEP) -> torch.Tensor:
    """Keep the ``k`` largest logits (and any tied with the k-th), set the rest to -inf. ``k`` 0 is off."""
    if k <= 0:
        return logits
    k = min(max(k, min_tokens_to_keep), logits.shape[-1])
    kth = torch.topk(logits, k)[0][..., -1, None]  # (B, 1)
    return logits.masked_fill(logits < kth, FILTERED)


@_batched
def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = MIN_TOKENS_TO_KEEP) -> torch.Tensor:
    """Nucleus filter: drop the least probable tokens whose total probability is at most ``1 - p``.

    What stays is the smallest set of most probable tokens holding at least ``p`` (see ``top_p_set``).
    Among equal logits at the boundary, the order of ``torch.sort`` decides, as in transformers.
    ``p`` 1 is off (generate then adds no top-p processor at all).
    """
    if p >= 1.0:
        return logits
    sorted_logits, sorted_ids = torch.sort(logits, descending=False)  # least probable first
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - p)
    drop_sorted[..., -min_tokens_to_keep:] = False
    drop = drop_sorted.scatter(1, sorted_ids, drop_sorted)
    return logits.masked_fill(drop, FILTERED)


@_batched
def min_p_filter(logits: torch.Tensor, min_p: float, min_tokens_to_keep: int = MIN_TOKENS_TO_KEEP) -> torch.Tensor:
    """Drop tokens less probable than ``min_p`` times the most probable one. ``min_p`` 0 is off."""
    if min_p <= 0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    drop = probs < min_p * probs.amax(dim=-1, keepdim=True)
    keep = torch.topk(probs, min(min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
    drop.scatter_(-1, keep, False)
    return logits.masked_fill(drop, FILTERED)


@dataclass(frozen=True)
class Stage:
    """The distribution after one transform: ``logits`` and ``probs`` (V,) or (B, V); ``kept_mask`` is
    True where a token can still be chosen (not filtered by this stage or an earlier one)."""

    name: str
    logits: torch.Tensor
    probs: torch.Tensor
    kept_mask: torch.Tensor


def _stage(name: str, logits: torch.Tensor) -> Stage:
    return Stage(name, logits, torch.softmax(logits, dim=-1), logits > FILTERED)


def transform(logits: torch.Tensor, previous_ids: torch.Tensor | None, settings: DecodingSettings) -> list[Stage]:
    """Every step from the model's logits to the distribution a token is drawn from, in generate's order.

    The first stage is ``"model"`` (the logits as they are, float32); each active setting adds one
    stage, named ``"repetition penalty"``, ``"temperature"``, ``"top-k"``, ``"top-p"``, ``"min-p"``.
    The last stage's ``probs`` are what is sampled from (or, for greedy settings, what the argmax
    is taken of; warpers then do not run, as in ``generate(do_sample=False)``).
    """
    settings.validate()
    logits = logits.float()
    stages = [_stage("model", logits)]
    if settings.repetition_penalty != 1.0 and previous_ids is not None and previous_ids.numel():
        stages.append(
            _stage("repetition penalty", repetition_penalty(logits, previous_ids, settings.repetition_penalty))
        )
    if settings.greedy:
        return stages
    steps = [
        ("temperature", settings.temperature != 1.0, lambda x: apply_temperature(x, settings.temperature)),
        ("top-k", settings.top_k != 0, lambda x: top_k_filter(x, int(settings.top_k))),
        ("top-p", settings.top_p < 1.0, lambda x: top_p_filter(x, settings.top_p)),
        ("min-p", settings.min_p > 0, lambda x: min_p_filter(x, settings.min_p)),
    ]
    for name, active, fn in steps:
        if active:
            stages.append(_stage(name, fn(stages[-1].logits)))
    return stages


def top_p_set(probs, p: float) -> np.ndarray:
    """The smallest set of most probable tokens whose total probability reaches ``p``, most probable first.

    Worked example: probs ``[0.1, 0.5, 0.2, 0.2]`` sorted are token 1 (0.5), then tokens 2 and 3
    (0.2 each, the lower id first), then token 0 (0.1). Running totals: 0.5, 0.7, 0.9, 1.0.

    >>> top_p_set([0.1, 0.5, 0.2, 0.2], 0.6).tolist()   # 0.5 < 0.6, 0.7 reaches it
    [1, 2]
    >>> top_p_set([0.1, 0.5, 0.2, 0.2], 0.9).tolist()   # 0.5 + 0.2 + 0.2 reaches 0.9
    [1, 2, 3]

    The totals are summed in float64 and a total within 1e-9 of ``p`` counts as reaching it, so
    the second example is not lost to rounding (0.5 + 0.2 + 0.2 is 0.8999999999999999 in floats).
    ``top_p_filter`` keeps this same set, up to float32 rounding exactly at the boundary.
    """
    probs = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    if probs.ndim != 1 or probs.size == 0:
        raise InputError("top_p_set needs one probability per vocabulary token, as a 1-D array.")
    if not 0 < p <= 1:
        raise InputError(f"Top-p must be above 0 and at most 1, not {p!r}.")
    order = np.argsort(-probs, kind="stable")  # (V,) most probable first
    totals = np.cumsum(probs[order])
    size = int(np.searchsorted(totals, p - 1e-9, side="left")) + 1  # first running total >= p
    return order[: min(size, probs.size)]


def entropy_bits(probs) -> float | torch.Tensor:
    """Shannon entropy in bits, ``-sum p log2 p`` over the last axis (0 log 0 counts as 0).

    One float for a 1-D distribution, a (B,) tensor for a batch. A uniform choice among 8 tokens
    is 3 bits; a certain choice is 0.
    """
    probs = torch.as_tensor(probs, dtype=torch.float64)
    terms = torch.where(probs > 0, -probs * torch.log2(probs.clamp_min(1e-300)), torch.zeros_like(probs))
    total = terms.sum(dim=-1)
    return float(total) if total.dim() == 0 else total


def next_token_distribution(logits, top_n: int = 10) -> dict:
    """The ``top_n`` most probable next tokens of one position's logits (V,).

    Returns ``ids`` and ``probs`` (most probable first, ties by lower id), ``rest`` (the mass of
    every other token) and ``entropy_bits`` of the whole distribution.
    """
    logits = torch.as_tensor(logits).float().reshape(-1)
    if not 1 <= top_n:
        raise InputError(f"Show at least one token, not {top_n!r}.")
    probs = torch.softmax(logits, dim=-1)
    order = torch.argsort(probs, descending=True, stable=True)[: min(top_n, probs.numel())]
    top = probs[order]
    return {
        "ids": order.tolist(),
        "probs": top.tolist(),
        "rest": max(0.0, 1.0 - float(top.double().sum())),
        "entropy_bits": entropy_bits(probs),
    }
