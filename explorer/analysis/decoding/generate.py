"""Decoding whole sequences: greedy, sampling and streaming, the way ``model.generate`` runs them.

Every loop here runs the model as ``generate`` does (a KV cache, the same batch layout, the same
order of operations), so ``greedy`` and ``sample`` (for a given seed) equal what ``generate``
returns; ``tests/test_decoding.py`` checks it. The step-by-step view lives in ``stepwise``, the
beam-search tree in ``beam_search`` and the logit lens in ``logit_lens``; the checks and the
``Runner`` here serve them all.

``GeneratedSequence.logprob`` (greedy, sampling, step by step) is the *model's own* log-probability
of the new tokens, in nats: the sum of ``log_softmax(logits)`` of the unmodified model distribution
at each chosen token, whatever the decoding settings were. It says how likely the model finds the text.

For encoder-decoders (T5) the prompt is the source text: the encoder runs once, and the decoder
starts from ``decoder_start_token_id``, as in ``generate``. Output ids then start with that token.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from explorer.analysis.decoding.sampling import DecodingSettings, transform
from explorer.core.errors import InputError
from explorer.core.limits import MAX_NEW_TOKENS, MAX_STREAM_TOKENS
from explorer.core.loading import LoadedModel
from explorer.core.spec import GENERATE

MAX_SAMPLES = 16

# ---------------------------------------------------------------- checks and model facts


def check_generative(lm: LoadedModel) -> None:
    lm.spec.require(GENERATE)


def _vocab_size(lm: LoadedModel) -> int:
    return int(lm.model.get_output_embeddings().weight.shape[0])


def check_ids(lm: LoadedModel, ids, what: str = "prompt") -> list[int]:
    ids = [int(i) for i in ids]
    if not ids:
        raise InputError(f"The {what} has no tokens: type a few words.")
    vocab = _vocab_size(lm)
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise InputError(f"The {what} holds token id {bad[0]}, outside this model's vocabulary of {vocab} tokens.")
    return ids


def check_count(value, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InputError(f"The {what} must be a whole number from {low} to {high}, not {value!r}.")
    return int(value)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise InputError(f"The seed must be a whole number, 0 or more, not {seed!r}.")
    return int(seed)


def check_room(lm: LoadedModel, prompt_len: int, new_tokens: int) -> None:
    """A decoder's prompt plus its continuation must fit the model's positions."""
    limit = lm.max_positions
    if lm.spec.adapter.continues_prompt and limit and prompt_len + new_tokens > limit:
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


def decode_text(lm: LoadedModel, ids) -> str:
    return lm.tokenizer.decode(list(ids), skip_special_tokens=True)


def shared_prefix(a, b) -> int:
    """How many leading tokens two id sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ---------------------------------------------------------------- running the model like generate


class Runner:
    """A batch of sequences grown one token at a time with a KV cache, laid out as ``generate`` lays it out.

    ``ids`` (B, T) holds the decoder side: the prompt for decoders, ``[decoder_start]`` for
    encoder-decoders, whose source is encoded once and repeated per row.
    """

    def __init__(self, lm: LoadedModel, prompt_ids: list[int], batch: int, use_cache: bool = True):
        self.model, self.device, self.use_cache = lm.model, lm.device, use_cache
        self.encoder_decoder = lm.spec.adapter.is_encoder_decoder
        self.cache = None
        params = inspect.signature(self.model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        # as generate does: only the last position's logits are computed, where the model allows it
        self.keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
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

    @property
    def cached_length(self) -> int:
        """How many leading tokens of ``ids`` the KV cache holds."""
        return 0 if self.cache is None else int(self.cache.get_seq_length())

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        """Logits (B, V) for the token after ``ids``, float32; feeds only the tokens the cache lacks.

        Without the cache (``use_cache=False``) every call runs the whole decoder side again.
        """
        new = self.ids[:, self.cached_length :]
        if self.encoder_decoder:
            inputs = {"decoder_input_ids": new, **self.extra}
        else:
            inputs = {"input_ids": new, "attention_mask": torch.ones_like(self.ids)}
        if self.use_cache:
            inputs[self.cache_arg] = self.cache
        out = self.model(**inputs, **self.keep, use_cache=self.use_cache, return_dict=True)
        if self.use_cache:
            self.cache = out.get("cache", None) if "cache" in out else out.get("past_key_values", None)
        return out.logits[:, -1].to(dtype=torch.float32, copy=True)

    def rewind(self, ids: list[int]) -> None:
        """Make ``ids`` the decoder side (batch of one), keeping the cache of the prefix they share with the old ids.

        At least the last token is left out of the cache, so ``next_logits`` has a token to feed.
        """
        keep = min(shared_prefix(self.ids[0].tolist(), ids), len(ids) - 1, self.cached_length)
        if keep < self.cached_length:
            self.cache.crop(keep - self.cached_length)  # a negative count removes that many tokens
        self.ids = torch.tensor([ids], dtype=torch.long, device=self.device)

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


def _decode_steps(lm: LoadedModel, prompt_ids, settings: DecodingSettings, n: int, max_new_tokens: int,
                  seed: int, limit: int = MAX_NEW_TOKENS):  # fmt: skip
    """``generate``'s ``_sample`` loop for ``n`` rows of the same prompt, greedy or seeded sampling.

    Yields, after each step, ``(runner, tokens, model_logp, running)``: the tokens (n,) just taken,
    their log-probabilities under the unmodified model, and which rows were still running before
    them (finished rows get padding). Stops at ``max_new_tokens`` or when every row has ended.
    """
    check_generative(lm)
    prompt_ids = check_ids(lm, prompt_ids)
    max_new_tokens = check_count(max_new_tokens, 1, limit, "number of new tokens")
    settings.validate()
    check_room(lm, len(prompt_ids), max_new_tokens)
    runner = Runner(lm, prompt_ids, n)
    eos = eos_ids(lm)
    eos_t = torch.tensor(eos, device=lm.device, dtype=torch.long)
    pad = _pad_id(lm, eos)
    generator = None if settings.greedy else torch.Generator(device=lm.device).manual_seed(seed)
    running = torch.ones(n, dtype=torch.bool, device=lm.device)
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = runner.next_logits()  # (n, V)
            final = transform(logits, runner.ids, settings)[-1]
            if settings.greedy:
                tokens = torch.argmax(final.logits, dim=-1)  # (n,)
            else:
                tokens = torch.multinomial(final.probs, num_samples=1, generator=generator).squeeze(1)
            if eos:
                tokens = torch.where(running, tokens, torch.full_like(tokens, pad))
            model_logp = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)  # (n,)
        runner.append(tokens)
        yield runner, tokens, model_logp, running.clone()
        if eos:
            running &= ~torch.isin(tokens, eos_t)
            if not running.any():
                return


def _generate(lm: LoadedModel, prompt_ids, settings: DecodingSettings, n: int, max_new_tokens: int, seed: int):
    """``n`` whole sequences from ``_decode_steps``."""
    new = [[] for _ in range(n)]
    logps = [[] for _ in range(n)]
    steps = list(_decode_steps(lm, prompt_ids, settings, n, max_new_tokens, seed))
    for _, tokens, model_logp, running in steps:
        for row in range(n):
            if running[row]:
                new[row].append(int(tokens[row]))
                logps[row].append(float(model_logp[row]))
    runner = steps[-1][0]
    start = list(runner.ids[0, : runner.prompt_len].tolist())
    eos = eos_ids(lm)
    return [
        GeneratedSequence(tuple(start + ids), tuple(ids), tuple(lp), decode_text(lm, ids), bool(ids and ids[-1] in eos))
        for ids, lp in zip(new, logps)
    ]


def stream(lm: LoadedModel, prompt_ids, settings: DecodingSettings, max_new_tokens: int = 200, seed: int = 0):
    """One continuation token by token, for long generation shown as it comes: yields
    ``(token_id, model_logprob)`` per new token; the same tokens as ``sample``/``greedy`` with the
    same seed. Allows up to ``MAX_STREAM_TOKENS`` (and the model's positions); the caller may stop early.
    """
    for _, tokens, model_logp, _ in _decode_steps(lm, prompt_ids, settings, 1, max_new_tokens, check_seed(seed),
                                                  limit=MAX_STREAM_TOKENS):  # fmt: skip
        yield int(tokens[0]), float(model_logp[0])


@dataclass(frozen=True)
class StreamProgress:
    """A streamed continuation so far: its new tokens and their text, the model's log-probability of them
    (nats), seconds since the stream began, and the number of tokens asked for. ``done`` marks the last
    report; ``ended`` that the stream stopped at an end-of-sequence token (only on the last report)."""

    new_ids: tuple[int, ...]
    text: str
    logprob: float
    seconds: float
    limit: int
    done: bool = False
    ended: bool = False

    @property
    def tokens_per_second(self) -> float:
        return len(self.new_ids) / self.seconds if self.seconds > 0 else 0.0


def stream_progress(
    lm: LoadedModel, text: str, settings: DecodingSettings, limit: int, seed: int = 0, every: float = 0.1
):
    """Continue ``text`` by up to ``limit`` tokens (``stream``), reporting a ``StreamProgress`` at most every
    ``every`` seconds, when the limit is reached, and once more (``done``) at the end: what a view shows as
    the text is written, without redrawing for every token."""
    prompt = lm.tokenizer(text)["input_ids"]
    limit = check_count(limit, 1, MAX_STREAM_TOKENS, "number of tokens to write")
    new, logprob, start, last = [], 0.0, time.perf_counter(), 0.0
    for token, token_logprob in stream(lm, prompt, settings, limit, seed):
        new.append(token)
        logprob += token_logprob
        now = time.perf_counter()
        if now - last >= every or len(new) == limit:
            last = now
            yield StreamProgress(tuple(new), decode_text(lm, new), logprob, now - start, limit)
    ended = bool(new) and new[-1] in eos_ids(lm)
    yield StreamProgress(tuple(new), decode_text(lm, new), logprob, time.perf_counter() - start, limit, True, ended)


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
    n_samples = check_count(n_samples, 1, MAX_SAMPLES, "number of samples")
    return _generate(lm, prompt_ids, settings, n_samples, max_new_tokens, check_seed(seed))
