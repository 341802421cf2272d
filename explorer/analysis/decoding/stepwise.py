"""Step-by-step generation (the UI's "choose the next token"): one token at a time, each with its alternatives.

The model keeps a KV cache between steps (``PrefixCache``), so a step costs one new token's
forward pass, as in ``generate``, even though the history itself is small and immutable.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, replace

import numpy as np
import torch

from explorer.analysis.decoding.generate import (
    MAX_NEW_TOKENS,
    Runner,
    check_count,
    check_generative,
    check_ids,
    check_room,
    check_seed,
    decode_text,
    eos_ids,
    shared_prefix,
)
from explorer.analysis.decoding.sampling import DecodingSettings, entropy_bits, transform
from explorer.core.cache import PerObject
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.run import check_text
from explorer.core.tokens import token_rows


class PrefixCache:
    """The KV caches of recent step-by-step runs of one model, so a step feeds only its new token.

    Each entry is a batch-of-one ``Runner``. A step after ``ids`` takes the free entry (same source)
    sharing the longest prefix with ``ids``, crops its cache to that prefix and feeds the rest: one
    token after a step, a few after an undo and a different choice, the whole text for a new one.
    Entries are used by one thread at a time and the least recently used go beyond ``max_entries``.
    """

    def __init__(self, lm: LoadedModel, max_entries: int = 8):
        self._lm = weakref.ref(lm)  # the cache lives in a dict keyed weakly by lm: it must not keep lm alive
        self.max_entries = max_entries
        self._entries: list[tuple[tuple | None, Runner, threading.Lock]] = []  # most recently used last
        self._lock = threading.Lock()

    def _take(self, ids: list[int], source: tuple | None):
        """A free entry for ``ids`` (locked for the caller), new when none shares a prefix with them."""
        with self._lock:
            best, best_shared = None, 0
            for entry in self._entries:
                key, runner, busy = entry
                if key == source and not busy.locked():
                    shared = shared_prefix(runner.ids[0].tolist(), ids)
                    if shared > best_shared:
                        best, best_shared = entry, shared
            if best is None:
                best = (source, Runner(self._lm(), list(source or ids), 1), threading.Lock())
            else:
                self._entries.remove(best)
            self._entries.append(best)
            del self._entries[: -self.max_entries]
            best[2].acquire()
            return best

    def next_logits(self, ids: list[int], source: tuple | None = None) -> torch.Tensor:
        """The model's logits (V,) float32 for the token after ``ids`` (the decoder side for encoder-decoders)."""
        _, runner, busy = self._take(ids, source)
        try:
            runner.rewind(ids)
            return runner.next_logits()[0]
        finally:
            busy.release()


_PREFIX_CACHES: PerObject[PrefixCache] = PerObject(PrefixCache)


def prefix_cache(lm: LoadedModel) -> PrefixCache:
    """The step caches of ``lm``: they live as long as the loaded model does (the pool's entry)."""
    return _PREFIX_CACHES(lm)


@dataclass(frozen=True)
class Candidate:
    """One possible next token. ``rank`` 1 is the model's most probable token (ties share a rank)."""

    id: int
    text: str  # display form, whitespace made visible
    prob: float  # in the distribution the token is drawn from, after the decoding settings
    model_prob: float  # in the model's own distribution
    rank: int


@dataclass(frozen=True)
class Step:
    """One chosen token with the alternatives it was chosen from."""

    index: int  # 0 for the first new token
    chosen: Candidate
    how: str  # "clicked", "greedy" or "sampled"
    candidates: tuple[Candidate, ...]  # most probable first (after the settings, then by the model)
    kept: int  # tokens that survive the settings' filters
    entropy_bits: float  # of the distribution drawn from
    finished: bool  # the chosen token ends the sequence


def step_seed(seed: int, index: int) -> int:
    """The seed of step ``index``'s draw: a mix of both numbers, so redoing a step redraws the same token."""
    state = np.random.SeedSequence([check_seed(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)


def _candidates(lm: LoadedModel, ids: list[int], probs: torch.Tensor, model_probs: torch.Tensor, model_logits):
    rows = token_rows(lm.tokenizer, ids, None)
    chosen = model_logits[torch.tensor(ids, device=model_logits.device)]
    ranks = 1 + (model_logits[None, :] > chosen[:, None]).sum(dim=1)  # ties share a rank
    return tuple(
        Candidate(t.id, t.display, float(probs[t.id]), float(model_probs[t.id]), int(rank))
        for t, rank in zip(rows, ranks.tolist())
    )


def _top_candidates(probs: torch.Tensor, model_probs: torch.Tensor, n: int) -> list[int]:
    """The ``n`` ids most probable after the settings, then by the model, then by lower id.

    Sorting the whole vocabulary costs more than the model's step on small models, so only a pool
    is sorted: the ``n`` best by each distribution. Tokens the settings keep come first by their
    probability; the filtered ones follow by the model's, and the j-th of those has at most
    ``n`` tokens above it in the model's order, so the pool holds every one that can be shown.
    """
    k = min(n, probs.shape[-1])
    pool = torch.unique(torch.cat([torch.topk(probs, k).indices, torch.topk(model_probs, k).indices])).cpu()
    keys = np.lexsort((pool.numpy(), -model_probs.cpu()[pool].numpy(), -probs.cpu()[pool].numpy()))
    return pool[keys[:n]].tolist()


@torch.no_grad()
def next_step(
    lm: LoadedModel,
    ids_so_far,
    settings: DecodingSettings,
    seed: int = 0,
    choice: int | None = None,
    *,
    step_index: int = 0,
    source_ids=None,
    top_n: int = 10,
) -> Step:
    """The distribution after ``ids_so_far`` and the token taken from it.

    The token is ``choice`` when given (a token the user clicked), else the most probable one
    for greedy settings, else a draw from a generator seeded by ``step_seed(seed, step_index)``.
    For encoder-decoders ``ids_so_far`` is the decoder side (starting with the decoder start
    token) and ``source_ids`` the encoder's input. The model reuses the KV cache of an earlier step
    (``PrefixCache``) and runs only on the tokens it lacks.
    """
    check_generative(lm)
    settings.validate()
    top_n = check_count(top_n, 1, 100, "number of candidates")
    ids = check_ids(lm, ids_so_far, "text so far")
    check_room(lm, len(ids), 0)
    source = None
    if lm.spec.adapter.is_encoder_decoder:
        if source_ids is None:
            raise InputError("An encoder-decoder model needs a source text to translate or answer.")
        source = tuple(check_ids(lm, source_ids, "source"))
    logits = prefix_cache(lm).next_logits(ids, source)  # (V,)
    final = transform(logits, torch.tensor(ids, device=lm.device), settings)[-1]
    if choice is not None:
        chosen, how = check_ids(lm, [choice], "chosen token")[0], "clicked"
    elif settings.greedy:
        chosen, how = int(torch.argmax(final.logits)), "greedy"
    else:
        generator = torch.Generator().manual_seed(step_seed(seed, step_index))
        chosen, how = int(torch.multinomial(final.probs.cpu(), 1, generator=generator)), "sampled"
    model_probs = torch.softmax(logits, dim=-1)
    order = _top_candidates(final.probs, model_probs, top_n)
    candidates = _candidates(lm, order, final.probs, model_probs, logits)
    picked = _candidates(lm, [chosen], final.probs, model_probs, logits)[0]
    return Step(step_index, picked, how, candidates, int(final.kept_mask.sum()), entropy_bits(final.probs),
                chosen in eos_ids(lm))  # fmt: skip


@dataclass(frozen=True)
class StepHistory:
    """Step-by-step generation state (small and immutable: fit for ``gr.State``).

    ``prompt_ids`` is the decoder side before any step (the prompt, or ``(decoder_start,)`` for
    encoder-decoders, whose input is ``source_ids``); ``steps`` the tokens chosen since.
    """

    prompt_ids: tuple[int, ...]
    source_ids: tuple[int, ...] | None = None
    steps: tuple[Step, ...] = ()

    @classmethod
    def start(cls, lm: LoadedModel, text: str) -> StepHistory:
        """A fresh history: ``text`` is the prompt (decoders) or the source (encoder-decoders)."""
        check_generative(lm)
        ids = check_ids(lm, lm.tokenizer(check_text(text))["input_ids"])
        if lm.spec.adapter.is_encoder_decoder:
            return cls((int(lm.model.config.decoder_start_token_id),), tuple(ids))
        return cls(tuple(ids))

    @property
    def new_ids(self) -> tuple[int, ...]:
        return tuple(s.chosen.id for s in self.steps)

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.new_ids

    @property
    def finished(self) -> bool:
        return bool(self.steps) and self.steps[-1].finished

    @property
    def logprob(self) -> float:
        """The model's log-probability of the chosen tokens (natural log)."""
        return float(sum(np.log(max(s.chosen.model_prob, 1e-45)) for s in self.steps))

    def advance(
        self, lm: LoadedModel, settings: DecodingSettings, seed: int = 0, choice: int | None = None, top_n: int = 10
    ) -> StepHistory:
        """This history with one more token (see ``next_step``)."""
        if self.finished:
            raise InputError("The text has ended (the model chose its end-of-sequence token): undo a step to go on.")
        if len(self.steps) >= MAX_NEW_TOKENS:
            raise InputError(f"At most {MAX_NEW_TOKENS} tokens can be added step by step: undo or start again.")
        check_room(lm, len(self.ids), 1)
        step = next_step(lm, self.ids, settings, seed, choice, step_index=len(self.steps),
                         source_ids=self.source_ids, top_n=top_n)  # fmt: skip
        return replace(self, steps=self.steps + (step,))

    def retake(self, lm: LoadedModel, settings: DecodingSettings, seed: int, token_id: int | None) -> StepHistory:
        """This history with its last step redone choosing ``token_id`` (one of that step's alternatives)."""
        if token_id is None or not self.steps:
            raise InputError("Take a first step, then pick one of its alternatives.")
        return self.undo().advance(lm, settings, seed, int(token_id))

    def undo(self) -> StepHistory:
        """This history without its last step (unchanged when there is none)."""
        return replace(self, steps=self.steps[:-1])

    def text(self, lm: LoadedModel) -> str:
        return decode_text(lm, self.ids)
