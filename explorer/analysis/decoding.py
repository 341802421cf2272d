"""Decoding, one token at a time and whole: step-by-step choice, greedy, sampling, a beam-search tree, the logit lens.

Every loop here runs the model the way ``model.generate`` does (a KV cache, the same batch layout,
the same order of operations), so ``greedy``, ``sample`` (for a given seed) and the best sequence
of ``beam_search`` equal what ``generate`` returns; ``tests/test_decoding.py`` checks it.

Scores, in natural-log units:

- ``GeneratedSequence.logprob`` (greedy, sampling, step by step) is the *model's own* log-probability
  of the new tokens: the sum of ``log_softmax(logits)`` of the unmodified model distribution at each
  chosen token, whatever the decoding settings were. It says how likely the model finds the text.
- ``BeamNode.logprob`` is beam search's running score, the same sum (beam search here applies no
  logits processors, so transformers' "processed scores" are these log-probs). A finished
  hypothesis is ranked by ``score = logprob / new_tokens ** length_penalty``, which is what
  transformers reports as ``sequences_scores``; ``new_tokens`` counts the end-of-sequence token.

For encoder-decoders (T5) the prompt is the source text: the encoder runs once, and the decoder
starts from ``decoder_start_token_id``, as in ``generate``. Output ids then start with that token.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from explorer.analysis.sampling import DecodingSettings, entropy_bits, transform
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.run import check_text
from explorer.core.tokens import token_rows
from explorer.core.trace import Trace

MAX_BEAMS = 8
MAX_NEW_TOKENS = 64
MAX_SAMPLES = 16
NEG = -1.0e9  # transformers' stand-in for "impossible" in beam search (finite, so sums stay ordered)

# ---------------------------------------------------------------- checks and model facts


def _check_generative(lm: LoadedModel) -> None:
    if lm.spec.family not in ("decoder", "encoder_decoder"):
        raise InputError(
            f"'{lm.spec.key}' is a {lm.spec.family_name}: it fills in masked tokens but does not generate text. "
            "Pick a decoder (GPT-style) or an encoder-decoder (T5-style) model."
        )


def _vocab_size(lm: LoadedModel) -> int:
    return int(lm.model.get_output_embeddings().weight.shape[0])


def _check_ids(lm: LoadedModel, ids, what: str = "prompt") -> list[int]:
    ids = [int(i) for i in ids]
    if not ids:
        raise InputError(f"The {what} has no tokens: type a few words.")
    vocab = _vocab_size(lm)
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise InputError(f"The {what} holds token id {bad[0]}, outside this model's vocabulary of {vocab} tokens.")
    return ids


def _check_count(value, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InputError(f"The {what} must be a whole number from {low} to {high}, not {value!r}.")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise InputError(f"The seed must be a whole number, 0 or more, not {seed!r}.")
    return int(seed)


def _position_limit(lm: LoadedModel) -> int | None:
    config = lm.model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def _check_room(lm: LoadedModel, prompt_len: int, new_tokens: int) -> None:
    """A decoder's prompt plus its continuation must fit the model's positions."""
    limit = _position_limit(lm)
    if lm.spec.family == "decoder" and limit and prompt_len + new_tokens > limit:
        raise InputError(
            f"The prompt has {prompt_len} tokens and this model sees at most {limit}, "
            f"so it cannot add {new_tokens} more: shorten the prompt or ask for fewer tokens."
        )


def eos_ids(lm: LoadedModel) -> list[int]:
    """The end-of-sequence ids ``generate`` stops at (generation config, else config, else tokenizer)."""
    for source in (getattr(lm.model, "generation_config", None), lm.model.config, lm.tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if eos is not None:
            return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
    return []


def _pad_id(lm: LoadedModel, eos: list[int]) -> int | None:
    pad = getattr(getattr(lm.model, "generation_config", None), "pad_token_id", None)
    return int(pad) if pad is not None else (eos[0] if eos else None)


def _decode(lm: LoadedModel, ids) -> str:
    return lm.tokenizer.decode(list(ids), skip_special_tokens=True)


# ---------------------------------------------------------------- running the model like generate


class _Runner:
    """A batch of sequences grown one token at a time with a KV cache, laid out as ``generate`` lays it out.

    ``ids`` (B, T) holds the decoder side: the prompt for decoders, ``[decoder_start]`` for
    encoder-decoders, whose source is encoded once and repeated per row.
    """

    def __init__(self, lm: LoadedModel, prompt_ids: list[int], batch: int):
        self.model, self.device = lm.model, lm.device
        self.encoder_decoder = lm.spec.family == "encoder_decoder"
        self.cache = None
        params = inspect.signature(self.model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        prompt = torch.tensor([prompt_ids], device=self.device)  # (1, S)
        if self.encoder_decoder:
            mask = torch.ones_like(prompt)
            encoded = self.model.get_encoder()(input_ids=prompt, attention_mask=mask, return_dict=True)
            hidden = encoded.last_hidden_state.repeat_interleave(batch, dim=0)  # (B, S, d)
            self.extra = {"encoder_outputs": BaseModelOutput(last_hidden_state=hidden),
                          "attention_mask": mask.repeat_interleave(batch, dim=0)}  # fmt: skip
            start = self.model.config.decoder_start_token_id
            self.ids = torch.full((batch, 1), int(start), dtype=torch.long, device=self.device)
        else:
            self.extra = {}
            self.ids = prompt.repeat_interleave(batch, dim=0)  # (B, T)
        self.prompt_len = self.ids.shape[1]

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        """Logits (B, V) for the token after ``ids``, float32; feeds only the newest token once cached."""
        new = self.ids if self.cache is None else self.ids[:, -1:]
        if self.encoder_decoder:
            inputs = {"decoder_input_ids": new, **self.extra}
        else:
            inputs = {"input_ids": new, "attention_mask": torch.ones_like(self.ids)}
        out = self.model(**inputs, **{self.cache_arg: self.cache}, use_cache=True, return_dict=True)
        self.cache = out.get("cache", None) if "cache" in out else out.get("past_key_values", None)
        return out.logits[:, -1].to(dtype=torch.float32, copy=True)

    def append(self, tokens: torch.Tensor, parents: torch.Tensor | None = None) -> None:
        """Add one token per row; ``parents`` (B,) first re-orders rows and cache (beam search)."""
        if parents is not None:
            self.ids = self.ids[parents]
            if hasattr(self.model, "_reorder_cache"):
                self.cache = self.model._reorder_cache(self.cache, parents)
            else:
                self.cache.reorder_cache(parents)
        self.ids = torch.cat([self.ids, tokens[:, None].to(self.ids)], dim=-1)


# ---------------------------------------------------------------- greedy and sampling


@dataclass(frozen=True)
class GeneratedSequence:
    """One generated text. ``ids`` is what ``generate`` returns (decoder prompt + new tokens)."""

    ids: tuple[int, ...]
    new_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]  # model log-prob of each new token (natural log, unmodified model)
    text: str  # the new tokens decoded, special tokens left out
    finished: bool  # ended with an end-of-sequence token (else stopped at max_new_tokens)

    @property
    def logprob(self) -> float:
        """The model's log-probability of the whole continuation (see the module docstring)."""
        return float(sum(self.token_logprobs))


@torch.no_grad()
def _generate(lm: LoadedModel, prompt_ids, settings: DecodingSettings, n: int, max_new_tokens: int, seed: int):
    """``generate``'s ``_sample`` loop for ``n`` rows of the same prompt: greedy or seeded sampling."""
    _check_generative(lm)
    prompt_ids = _check_ids(lm, prompt_ids)
    max_new_tokens = _check_count(max_new_tokens, 1, MAX_NEW_TOKENS, "number of new tokens")
    settings.validate()
    _check_room(lm, len(prompt_ids), max_new_tokens)
    runner = _Runner(lm, prompt_ids, n)
    eos = eos_ids(lm)
    eos_t = torch.tensor(eos, device=lm.device, dtype=torch.long)
    pad = _pad_id(lm, eos)
    generator = None if settings.greedy else torch.Generator(device=lm.device).manual_seed(seed)
    running = torch.ones(n, dtype=torch.bool, device=lm.device)
    new = [[] for _ in range(n)]
    logps = [[] for _ in range(n)]
    for _ in range(max_new_tokens):
        logits = runner.next_logits()  # (n, V)
        final = transform(logits, runner.ids, settings)[-1]
        if settings.greedy:
            tokens = torch.argmax(final.logits, dim=-1)  # (n,)
        else:
            tokens = torch.multinomial(final.probs, num_samples=1, generator=generator).squeeze(1)
        if eos:
            tokens = torch.where(running, tokens, torch.full_like(tokens, pad))  # finished rows get padding
        model_logp = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)  # (n,)
        for row in range(n):
            if running[row]:
                new[row].append(int(tokens[row]))
                logps[row].append(float(model_logp[row]))
        runner.append(tokens)
        if eos:
            running &= ~torch.isin(tokens, eos_t)
            if not running.any():
                break
    start = list(runner.ids[0, : runner.prompt_len].tolist())
    return [
        GeneratedSequence(tuple(start + ids), tuple(ids), tuple(lp), _decode(lm, ids), bool(ids and ids[-1] in eos))
        for ids, lp in zip(new, logps)
    ]


def greedy(lm: LoadedModel, prompt_ids, max_new_tokens: int = 20) -> GeneratedSequence:
    """Always take the most probable token: equals ``generate(do_sample=False, num_beams=1)``."""
    return _generate(lm, prompt_ids, DecodingSettings(greedy=True), 1, max_new_tokens, 0)[0]


def sample(
    lm: LoadedModel, prompt_ids, settings: DecodingSettings, n_samples: int = 4, max_new_tokens: int = 20, seed: int = 0
) -> list[GeneratedSequence]:
    """``n_samples`` continuations drawn with ``settings``; the same seed gives the same texts.

    Equals ``torch.manual_seed(seed); generate(**settings.generate_kwargs(), num_return_sequences=n_samples)``
    on the same device (rows are drawn together from one generator seeded with ``seed``).
    """
    n_samples = _check_count(n_samples, 1, MAX_SAMPLES, "number of samples")
    return _generate(lm, prompt_ids, settings, n_samples, max_new_tokens, _check_seed(seed))


# ---------------------------------------------------------------- step by step (the UI's "choose the next token")


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
    state = np.random.SeedSequence([_check_seed(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)


def _candidates(lm: LoadedModel, ids: list[int], probs: torch.Tensor, model_probs: torch.Tensor, model_logits):
    rows = token_rows(lm.tokenizer, ids, None)
    return tuple(
        Candidate(t.id, t.display, float(probs[t.id]), float(model_probs[t.id]),
                  1 + int((model_logits > model_logits[t.id]).sum()))
        for t in rows
    )  # fmt: skip


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
    token) and ``source_ids`` the encoder's input. The model runs on the whole text, no cache.
    """
    _check_generative(lm)
    settings.validate()
    top_n = _check_count(top_n, 1, 100, "number of candidates")
    ids = _check_ids(lm, ids_so_far, "text so far")
    _check_room(lm, len(ids), 0)
    x = torch.tensor([ids], device=lm.device)
    if lm.spec.family == "encoder_decoder":
        if source_ids is None:
            raise InputError("An encoder-decoder model needs a source text to translate or answer.")
        src = torch.tensor([_check_ids(lm, source_ids, "source")], device=lm.device)
        logits = lm.model(input_ids=src, decoder_input_ids=x, use_cache=False).logits[0, -1].float()
    else:
        logits = lm.model(input_ids=x, use_cache=False).logits[0, -1].float()  # (V,)
    final = transform(logits, x[0], settings)[-1]
    if choice is not None:
        chosen, how = _check_ids(lm, [choice], "chosen token")[0], "clicked"
    elif settings.greedy:
        chosen, how = int(torch.argmax(final.logits)), "greedy"
    else:
        generator = torch.Generator().manual_seed(step_seed(seed, step_index))
        chosen, how = int(torch.multinomial(final.probs.cpu(), 1, generator=generator)), "sampled"
    model_probs = torch.softmax(logits, dim=-1)
    by_model = torch.argsort(model_probs.cpu(), descending=True, stable=True)  # ties: lower id first
    order = by_model[torch.argsort(final.probs.cpu()[by_model], descending=True, stable=True)][:top_n].tolist()
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
        _check_generative(lm)
        ids = _check_ids(lm, lm.tokenizer(check_text(text))["input_ids"])
        if lm.spec.family == "encoder_decoder":
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
        _check_room(lm, len(self.ids), 1)
        step = next_step(lm, self.ids, settings, seed, choice, step_index=len(self.steps),
                         source_ids=self.source_ids, top_n=top_n)  # fmt: skip
        return replace(self, steps=self.steps + (step,))

    def undo(self) -> StepHistory:
        """This history without its last step (unchanged when there is none)."""
        return replace(self, steps=self.steps[:-1])

    def text(self, lm: LoadedModel) -> str:
        return _decode(lm, self.ids)


# ---------------------------------------------------------------- beam search, recorded as a tree


@dataclass(frozen=True)
class BeamNode:
    """One hypothesis beam search looked at. Node 0 is the root (the prompt, step 0).

    At each step the ``2 * num_beams`` best continuations of the running beams are considered
    (more when there are several end-of-sequence ids). ``status`` is ``"kept"`` (continues as a
    beam), ``"finished"`` (ended and entered the list of finished hypotheses at this step; a better
    one may push it out later, ``BeamResult.finished`` is the final list), or ``"pruned"``.
    """

    id: int
    parent: int | None
    step: int
    token: int | None
    logprob: float  # running score: sum of the log-probs of the tokens since the root
    status: str
    score: float | None = None  # finished only: logprob / new_tokens ** length_penalty
    candidate_rank: int = 0  # 0 is the best continuation of its step


@dataclass(frozen=True)
class BeamHypothesis:
    node: int
    ids: tuple[int, ...]  # what generate returns: decoder prompt + new tokens
    new_ids: tuple[int, ...]
    logprob: float
    score: float  # the length-penalised score that ranks finished hypotheses (transformers' sequences_scores)
    text: str


@dataclass(frozen=True)
class BeamResult:
    """The whole search: every node considered, and the finished hypotheses best first."""

    nodes: tuple[BeamNode, ...]
    finished: tuple[BeamHypothesis, ...]
    num_beams: int
    length_penalty: float
    early_stopping: bool | str

    @property
    def best(self) -> BeamHypothesis:
        return self.finished[0]

    @property
    def n_steps(self) -> int:
        return max(n.step for n in self.nodes)

    def at_step(self, step: int) -> list[BeamNode]:
        return [n for n in self.nodes if n.step == step]

    def path(self, node: int) -> list[int]:
        """Node ids from the root's first child down to ``node``."""
        return _path(self.nodes, node)


@torch.no_grad()
def beam_search(
    lm: LoadedModel,
    prompt_ids,
    num_beams: int = 4,
    max_new_tokens: int = 20,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    eos_token_id: int | list[int] | None = None,
) -> BeamResult:
    """Beam search as ``generate(num_beams=..., do_sample=False)`` runs it, keeping every hypothesis.

    Each step (transformers' ``_beam_search``): add each running beam's score to the log-probs of
    its next token; take the top ``2 * num_beams`` of all beams' continuations; those among the
    first ``num_beams`` that end (an end-of-sequence token, or the last allowed position) enter the
    finished list with score ``logprob / new_tokens ** length_penalty`` if it beats its worst;
    the best ``num_beams`` that did not end run on. The search stops when the finished list is
    full and (``early_stopping=False``) no running beam, at its current length, could beat it;
    with ``early_stopping=True`` as soon as the list is full; with ``"never"`` assuming the best
    length; and always at ``max_new_tokens``. ``eos_token_id`` overrides the model's end ids.
    """
    _check_generative(lm)
    prompt_ids = _check_ids(lm, prompt_ids)
    k = _check_count(num_beams, 1, MAX_BEAMS, "number of beams")
    max_new_tokens = _check_count(max_new_tokens, 1, MAX_NEW_TOKENS, "number of new tokens")
    if early_stopping not in (True, False, "never"):
        raise InputError(f"Early stopping is True, False or 'never', not {early_stopping!r}.")
    if not np.isfinite(length_penalty) or abs(length_penalty) > 10:
        raise InputError(f"The length penalty must be a number from -10 to 10, not {length_penalty!r}.")
    eos = eos_ids(lm) if eos_token_id is None else [int(e) for e in np.atleast_1d(eos_token_id)]
    eos_t = torch.tensor(eos, dtype=torch.long, device=lm.device)
    _check_room(lm, len(prompt_ids), max_new_tokens)
    runner = _Runner(lm, prompt_ids, k)
    dev, prompt_len = lm.device, runner.prompt_len
    max_length, cur_len = prompt_len + max_new_tokens, prompt_len
    n_keep = max(2, 1 + len(eos)) * k  # candidates per step
    top_mask = torch.arange(n_keep, device=dev) < k  # only the first k candidates may finish

    nodes = [BeamNode(0, None, 0, None, 0.0, "root")]
    running_nodes = [0] * k
    running_scores = torch.zeros((1, k), device=dev)  # (1, k); beams 1.. start "impossible" so the
    running_scores[:, 1:] = NEG  # first step expands only one copy of the prompt
    pool_scores = torch.full((1, k), NEG, device=dev)  # finished list, best first
    pool_finished = torch.zeros((1, k), dtype=torch.bool, device=dev)
    pool_nodes: list[int | None] = [None] * k
    improvable = torch.ones((1, 1), dtype=torch.bool, device=dev)  # transformers' "heuristic unsatisfied"

    while True:
        logits = runner.next_logits()  # (k, V)
        vocab = logits.shape[-1]
        log_probs = torch.log_softmax(logits, dim=-1)[None] + running_scores[:, :, None]  # (1, k, V)
        top_scores, top_index = torch.topk(log_probs.reshape(1, -1), k=n_keep)  # (1, 2k)
        parent_beam, tokens = top_index // vocab, top_index % vocab
        ends = torch.isin(tokens, eos_t) | (cur_len + 1 >= max_length)  # (1, 2k)

        # the best k candidates that did not end run on
        run_scores = top_scores + ends.to(torch.float32) * NEG
        next_index = torch.topk(run_scores, k=k)[1]  # (1, k)
        # those of the first k that ended may enter the finished list (transformers' _update_finished_beams)
        just_finished = ends & top_mask[None, :]
        # (transformers also blocks additions when the list is full under early_stopping=True, or cannot
        # improve; for one prompt the loop has already stopped in both cases, so those terms are left out)
        penalised = top_scores / ((cur_len + 1 - prompt_len) ** length_penalty)
        penalised += (~just_finished) * NEG
        merged_scores = torch.cat((pool_scores, penalised), dim=1)  # (1, 3k): old list, then candidates
        merged = torch.topk(merged_scores, k=k)[1][0].tolist()

        first = len(nodes)
        entered = {i - k for i in merged if i >= k and bool(just_finished[0, i - k])}
        kept = {i for i in next_index[0].tolist() if not ends[0, i]}  # at the last position all end
        for i in range(n_keep):
            status = "kept" if i in kept else "finished" if i in entered else "pruned"
            score = float(penalised[0, i]) if status == "finished" else None
            nodes.append(BeamNode(first + i, running_nodes[int(parent_beam[0, i])], cur_len - prompt_len + 1,
                                  int(tokens[0, i]), float(top_scores[0, i]), status, score, i))  # fmt: skip
        merged_nodes = pool_nodes + [first + i for i in range(n_keep)]
        pool_scores = merged_scores[:, merged]
        pool_finished = torch.cat((pool_finished, just_finished), dim=1)[:, merged]
        pool_nodes = [merged_nodes[i] for i in merged]

        running_scores = run_scores.gather(1, next_index)
        running_nodes = [first + i for i in next_index[0].tolist()]
        parents = parent_beam.gather(1, next_index)[0]  # (k,) rows of the cache to continue from
        runner.append(tokens.gather(1, next_index)[0], parents)
        cur_len += 1

        # stopping (transformers' _check_early_stop_heuristic and _beam_search_has_unfinished_sequences)
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = max_length - prompt_len
        else:
            best_length = cur_len - prompt_len
        best_running = running_scores[:, :1] / (best_length**length_penalty)
        worst_finished = torch.where(pool_finished, torch.min(pool_scores, dim=1, keepdim=True)[0], NEG)
        improvable = improvable & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
        open_beam = not (bool(torch.all(pool_finished)) and early_stopping is True)
        if not (bool(improvable.any()) and open_beam and not bool(torch.all(ends))):
            break

    start = tuple(runner.ids[0, :prompt_len].tolist())  # the prompt, or the decoder start token
    finished = []
    for slot, node in enumerate(pool_nodes):
        if node is None or not bool(pool_finished[0, slot]):
            continue
        new_ids = tuple(nodes[i].token for i in _path(nodes, node))
        hypothesis = BeamHypothesis(node, start + new_ids, new_ids, nodes[node].logprob, float(pool_scores[0, slot]),
                                    _decode(lm, new_ids))  # fmt: skip
        finished.append(hypothesis)
    return BeamResult(tuple(nodes), tuple(finished), k, float(length_penalty), early_stopping)


def _path(nodes, node: int) -> list[int]:
    out = []
    while nodes[node].parent is not None:
        out.append(node)
        node = nodes[node].parent
    return out[::-1]


# ---------------------------------------------------------------- the logit lens

# Where the final normalisation sits, for the architectures we know (attribute path, stream).
FINAL_NORMS = {
    "transformer.ln_f": "input",  # GPT-2, GPT-J, ...
    "model.norm": "input",  # Llama, Mistral, Qwen, SmolLM, ...
    "gpt_neox.final_layer_norm": "input",  # Pythia
    "model.decoder.final_layer_norm": "input",  # OPT
    "decoder.final_layer_norm": "target",  # T5's decoder
}


@dataclass(frozen=True)
class LogitLens:
    """What each layer would predict if it were the last (nostalgebraist's logit lens).

    ``ids`` and ``probs`` are (L + 1, T, k): the k most probable next tokens at every layer and
    position (row 0 reads the embeddings). ``final_token_probs`` (L + 1, T) is the probability each
    layer gives the token the whole model ranks first. The last row equals the model's own output.
    """

    ids: np.ndarray
    probs: np.ndarray
    final_token_probs: np.ndarray
    stream: str


def _find_final_norm(lm: LoadedModel):
    for path, stream in FINAL_NORMS.items():
        module = lm.model
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, torch.nn.Module):
            return module, stream
    return None, None


@torch.no_grad()
def logit_lens(lm: LoadedModel, trace: Trace, top_k: int = 5) -> LogitLens:
    """Apply the final norm and the LM head to every layer's hidden state of ``trace``.

    transformers usually stores the last hidden state *after* the final norm (GPT-2's ``ln_f``,
    Llama's ``model.norm``); we test which holds by reproducing ``trace.logits`` from it, so the
    lens at the last layer is exactly the model's output and no layer is normalised twice.
    """
    head = lm.model.get_output_embeddings() if hasattr(lm.model, "get_output_embeddings") else None
    norm, stream = _find_final_norm(lm)
    if lm.spec.family == "encoder" or head is None or norm is None or trace.logits is None:
        raise InputError(
            f"The logit lens needs a decoder's final norm and language-model head, and '{lm.spec.key}' "
            f"({lm.spec.family_name}) has no such pair we know: it works for GPT-2, Llama-style, Pythia, OPT "
            "and T5 models."
        )
    top_k = _check_count(top_k, 1, 50, "number of tokens per layer")
    scale = lm.model.config.d_model**-0.5 if getattr(lm.model.config, "scale_decoder_outputs", False) else 1.0
    hidden = torch.from_numpy(np.array(trace.hidden[stream])).to(lm.device)  # (L + 1, T, d)
    target = torch.from_numpy(np.array(trace.logits)).to(lm.device)  # (T, V)

    def read(h: torch.Tensor, normed: bool) -> torch.Tensor:  # (T, d) -> (T, V)
        h = h.to(next(head.parameters()).dtype)
        return head((h if normed else norm(h)) * scale).float()

    def close(logits: torch.Tensor) -> bool:
        return logits.shape == target.shape and torch.allclose(logits, target, atol=1e-4, rtol=1e-4)

    last = hidden.shape[0] - 1
    if close(read(hidden[last], normed=True)):
        last_normed = True
    elif close(read(hidden[last], normed=False)):
        last_normed = False
    else:
        raise InputError(
            f"The logit lens could not reproduce the output of '{lm.spec.key}' from its last hidden state "
            "(this architecture transforms it in a way we do not know), so its layers cannot be read this way."
        )
    final_token = target.argmax(dim=-1)  # (T,)
    ids, probs, final_probs = [], [], []
    for layer in range(last + 1):
        logits = read(hidden[layer], normed=last_normed and layer == last)  # (T, V)
        p = torch.softmax(logits, dim=-1)
        top = torch.topk(p, min(top_k, p.shape[-1]), dim=-1)
        ids.append(top.indices.cpu().numpy())
        probs.append(top.values.cpu().numpy())
        final_probs.append(p.gather(1, final_token[:, None])[:, 0].cpu().numpy())
    return LogitLens(np.stack(ids), np.stack(probs), np.stack(final_probs), stream)
