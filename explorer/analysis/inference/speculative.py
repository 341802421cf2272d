"""Speculative decoding: a cheap draft proposes k tokens, the model checks them all in one forward pass.

Each step, the draft writes up to ``k`` tokens; the model (the *verifier*) reads the text with all of them
appended and so predicts, at once, the token after the text and after each proposed token. Greedy: the
proposals are kept while each equals the model's own choice; at the first that differs the model's choice
replaces it, and if all are kept the model's next token is added as a bonus. Every step thus writes 1 to
k + 1 tokens, and exactly the tokens plain greedy decoding would have written. Sampling: Leviathan et al.
(2023) / Chen et al. (2023): proposal x, drawn from the draft's q, is kept with probability
min(1, p(x) / q(x)); the first one refused is replaced by a draw from max(p − q, 0), renormalised; the
tokens written then follow the model's own distribution p exactly, whatever the draft.

Drafts that need no network (``Draft``):

- ``early_exit_draft``: the same model cut after its first layers, then its final norm and head (the logit
  lens used as a draft). The view shares the model's weights; nothing is copied or changed.
- ``PromptLookupDraft``: the last few tokens looked up earlier in the prompt and the text written so far; the
  tokens that followed that match are proposed (costs no forward pass).
- ``model_draft``: any other loaded model with the same vocabulary (a smaller decoder with the same tokenizer).

``speculative_generate`` records every step (what was proposed, how many were kept, what the verifier wrote),
the acceptance rate by position and overall, and ``expected_speedup``'s formula from it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from explorer.analysis.decoding.generate import Runner, check_count, check_generative, check_ids, check_room, eos_ids
from explorer.core.errors import InputError
from explorer.core.limits import MAX_TIMED_TOKENS
from explorer.core.loading import LoadedModel

MAX_K = 16
MAX_TEMPERATURE = 5.0
# Where each architecture keeps its stack of layers (attribute path); the same list as the logit lens's norms.
LAYER_STACKS = ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers", "decoder.block")


# ---------------------------------------------------------------- the formula


def expected_speedup(alpha: float, k: int, c: float) -> float:
    """(1 − α^(k+1)) / ((1 − α)(c·k + 1)): tokens per step (each step 1 verifier pass and k draft passes) over
    the cost of a step, in verifier passes. α: each proposal's chance of being kept; c: a draft pass's cost
    as a fraction of a verifier pass (Leviathan et al. 2023, eq. 1 and theorem 3.8)."""
    if not 0 <= alpha <= 1 or k < 0 or c < 0:
        raise InputError("The acceptance rate must lie in 0…1, and k and the cost ratio must not be negative.")
    tokens = k + 1 if alpha == 1 else (1 - alpha ** (k + 1)) / (1 - alpha)
    return tokens / (c * k + 1)


# ---------------------------------------------------------------- drafts


class Draft:
    """Proposes tokens after a text. ``start`` is called once per generation with the prompt, then
    ``propose(ids, k, temperature, generator)`` with the decoder-side ids so far returns the proposed tokens and,
    when sampling, their draft distributions (len, V) (None: the draft is deterministic, a point mass)."""

    name = "draft"
    runs_a_model = True

    def start(self, prompt_ids: list[int]) -> None:
        pass

    def propose(
        self, ids: list[int], k: int, temperature: float | None, generator
    ) -> tuple[list[int], torch.Tensor | None]:
        raise NotImplementedError


class ModelDraft(Draft):
    """A language model as the draft, with its own KV cache, cut back to the tokens kept after every step."""

    def __init__(self, draft: LoadedModel, name: str):
        self.lm, self.name, self.runner = draft, name, None

    def start(self, prompt_ids: list[int]) -> None:
        self.runner = Runner(self.lm, prompt_ids, 1)

    def propose(self, ids, k, temperature, generator):
        self.runner.rewind(ids)
        tokens, rows = [], []
        for _ in range(k):
            logits = self.runner.next_logits()[0]  # (V,)
            if temperature is None:
                token = int(logits.argmax())
            else:
                q = torch.softmax(logits.double() / temperature, -1)
                token = int(torch.multinomial(q, 1, generator=generator))
                rows.append(q)
            tokens.append(token)
            self.runner.append(torch.tensor([token], device=self.lm.device))
        return tokens, (torch.stack(rows) if rows else None)


class PromptLookupDraft(Draft):
    """Finds the last ``n`` tokens (n from ``max_ngram`` down to 1) earlier in the text and proposes what followed
    their latest earlier occurrence (Saxena 2023, "prompt lookup decoding"). For an encoder-decoder the source is
    searched too. No model runs; its proposals are certain (a point mass)."""

    runs_a_model = False

    def __init__(self, max_ngram: int = 3):
        self.max_ngram = check_count(max_ngram, 1, 8, "longest n-gram looked up")
        self.name = f"prompt lookup (n-grams up to {self.max_ngram})"
        self.source: list[int] = []

    def start(self, prompt_ids: list[int]) -> None:
        self.source = list(prompt_ids)

    def lookup(self, text: list[int], k: int) -> list[int]:
        """The ``k`` tokens after the latest earlier match of ``text``'s last n-gram (longest n first)."""
        for n in range(min(self.max_ngram, len(text) - 1), 0, -1):
            tail = text[-n:]
            for start in range(len(text) - n - 1, -1, -1):  # latest match first, never the tail itself
                if text[start : start + n] == tail:
                    return text[start + n : start + n + k]
        return []

    def propose(self, ids, k, temperature, generator):
        searched = self.source + list(ids) if self.source != list(ids[: len(self.source)]) else list(ids)
        return self.lookup(searched, k), None


def _shallow(module: torch.nn.Module) -> torch.nn.Module:
    """A new module object sharing every parameter with ``module``, whose children can be swapped freely."""
    view = copy.copy(module)
    view.__dict__["_modules"] = dict(module._modules)
    return view


def early_exit_model(lm: LoadedModel, layers: int) -> LoadedModel:
    """``lm`` cut after its first ``layers`` layers (the decoder's, for T5), then its final norm and head.

    A view: it shares the model's weights (no copy), and the shared model is not changed.
    """
    for path in LAYER_STACKS:
        try:
            stack = lm.model.get_submodule(path)
        except AttributeError:
            continue
        layers = check_count(layers, 1, len(stack), f"number of draft layers (the model has {len(stack)})")
        *parents, last = path.split(".")
        view = owner = _shallow(lm.model)
        for name in parents:
            owner._modules[name] = _shallow(owner._modules[name])
            owner = owner._modules[name]
        owner._modules[last] = torch.nn.ModuleList(list(stack)[:layers])
        for holder in {id(view): view, id(owner): owner}.values():  # the layer count the forward and cache read
            config = copy.deepcopy(holder.config)
            attribute = (
                "num_decoder_layers"
                if holder is view and getattr(config, "is_encoder_decoder", False)
                else "num_hidden_layers"
            )
            setattr(config, attribute, layers)
            holder.config = config
        view.generation_config = copy.deepcopy(lm.model.generation_config)  # assisted generation writes to it
        spec = replace(lm.spec, key=f"{lm.spec.key} (first {layers} layers)")
        return LoadedModel(spec, view, lm.tokenizer, lm.device)
    raise InputError(
        f"'{lm.spec.key}' keeps its layers where no known architecture does, so it cannot be cut into an "
        "early-exit draft: it works for GPT-2, Llama-style, Pythia, OPT and T5 models."
    )


def early_exit_draft(lm: LoadedModel, layers: int) -> ModelDraft:
    return ModelDraft(early_exit_model(lm, layers), f"early exit after layer {layers}")


def model_draft(target: LoadedModel, draft: LoadedModel) -> ModelDraft:
    """Another model as the draft; it must write the same kind of text with the same vocabulary."""
    check_generative(draft)
    same_kind = draft.spec.adapter.is_encoder_decoder == target.spec.adapter.is_encoder_decoder
    sizes = (draft.model.get_output_embeddings().weight.shape[0], target.model.get_output_embeddings().weight.shape[0])
    if not same_kind or sizes[0] != sizes[1] or draft.tokenizer.get_vocab() != target.tokenizer.get_vocab():
        raise InputError(
            f"'{draft.spec.key}' cannot draft for '{target.spec.key}': a draft needs the same vocabulary "
            "(the same tokenizer) and the same family."
        )
    return ModelDraft(draft, f"draft model {draft.spec.key}")


# ---------------------------------------------------------------- the verifier and the accept/reject rule


class _Verifier(Runner):
    """The model, fed the text plus the proposals at once: logits at the last ``last`` positions it was fed."""

    @torch.no_grad()
    def logits_of_new(self, last: int) -> torch.Tensor:
        new = self.ids[:, self.cached_length :]
        if self.encoder_decoder:
            inputs = {"decoder_input_ids": new, **self.extra}
        else:
            inputs = {"input_ids": new, "attention_mask": torch.ones_like(self.ids)}
        # Only the positions checked need the output layer (12,288 x 256, half of tiny-gpt2's weights): the first
        # step feeds the whole prompt, and on a 20-token prompt its logits everywhere made that pass 1.2x slower.
        keep = {"logits_to_keep": last} if self.keep else {}
        out = self.model(**inputs, **{self.cache_arg: self.cache}, **keep, use_cache=True, return_dict=True)
        self.cache = out.get("cache", None) if "cache" in out else out.get("past_key_values", None)
        return out.logits[0, -last:].float()  # (last, V)


def accept_or_resample(p: torch.Tensor, q: torch.Tensor | None, proposed: list[int], generator) -> tuple[int, int]:
    """The standard rule on one step: ``p`` (len + 1, V) the model's distributions after the text and after each
    proposal, ``q`` (len, V) the draft's (None: point masses on the proposals). Returns (kept, next token)."""
    for i, x in enumerate(proposed):
        qx = 1.0 if q is None else float(q[i, x])
        if float(torch.rand((), generator=generator, dtype=torch.float64)) < min(1.0, float(p[i, x]) / qx):
            continue
        residual = p[i].clone()
        if q is None:
            residual[x] = 0.0
        else:
            residual = (residual - q[i]).clamp(min=0)
        if float(residual.sum()) <= 0:  # only when p equals q, where nothing is refused
            residual = p[i]
        return i, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
    return len(proposed), int(torch.multinomial(p[len(proposed)], 1, generator=generator))


# ---------------------------------------------------------------- decoding


@dataclass(frozen=True)
class SpeculativeStep:
    """One draft-and-verify step. ``token`` is the verifier's: the replacement of proposal ``accepted`` when a
    proposal was refused, else the bonus token after them all."""

    proposed: tuple[int, ...]
    accepted: int
    token: int
    draft_seconds: float
    verify_seconds: float

    @property
    def refused(self) -> bool:
        return self.accepted < len(self.proposed)

    @property
    def written(self) -> tuple[int, ...]:
        return self.proposed[: self.accepted] + (self.token,)


@dataclass(frozen=True)
class SpeculativeResult:
    draft: str
    k: int
    greedy: bool
    ids: tuple[int, ...]  # decoder side at the end: prompt (or start token) + new tokens
    new_ids: tuple[int, ...]
    steps: tuple[SpeculativeStep, ...]
    seconds: float

    @property
    def acceptance_by_position(self) -> np.ndarray:
        """(k,) the share of proposals at position i that were kept, among steps that reached position i
        (every earlier proposal kept); NaN where no step reached it."""
        reached, kept = np.zeros(self.k), np.zeros(self.k)
        for s in self.steps:
            n = min(len(s.proposed), s.accepted + 1)  # positions looked at: the kept ones and the first refused
            reached[:n] += 1
            kept[: s.accepted] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return kept / reached

    @property
    def proposed_count(self) -> int:
        return sum(len(s.proposed) for s in self.steps)

    @property
    def accepted_count(self) -> int:
        return sum(s.accepted for s in self.steps)

    @property
    def alpha(self) -> float:
        """Overall acceptance rate α: proposals kept over proposals looked at (kept + refused), pooled over all
        positions, the estimate of the formula's α (each proposal kept with the same chance)."""
        looked = self.accepted_count + sum(s.refused for s in self.steps)
        return self.accepted_count / looked if looked else 0.0

    @property
    def accepted_fraction(self) -> float:
        """Proposals kept over all proposed (a refusal also discards the proposals after it)."""
        return self.accepted_count / self.proposed_count if self.proposed_count else 0.0

    @property
    def tokens_per_step(self) -> float:
        return len(self.new_ids) / len(self.steps) if self.steps else 0.0

    @property
    def cost_ratio(self) -> float:
        """c: the draft's seconds per proposed token over the verifier's seconds per pass (0 for prompt lookup)."""
        draft = sum(s.draft_seconds for s in self.steps) / max(self.proposed_count, 1)
        verify = sum(s.verify_seconds for s in self.steps) / max(len(self.steps), 1)
        return draft / verify if verify > 0 else 0.0

    @property
    def expected_speedup(self) -> float:
        return expected_speedup(self.alpha, self.k, self.cost_ratio)


def _check_temperature(temperature) -> float | None:
    if temperature is None:
        return None
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 < temperature <= MAX_TEMPERATURE
    ):
        raise InputError(f"Temperature must be above 0 and at most {MAX_TEMPERATURE:g}, or none for greedy decoding.")
    return float(temperature)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speculative_generate(
    lm: LoadedModel, prompt_ids, draft: Draft, k: int = 4, max_new_tokens: int = 32, temperature: float | None = None,
    seed: int = 0, progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None,
) -> SpeculativeResult:  # fmt: skip
    """Up to ``max_new_tokens`` tokens by draft-and-verify steps of ``k`` proposals each.

    ``temperature`` None: greedy, the very tokens of plain greedy decoding. Otherwise sampling at that temperature
    (no other filters), seeded by ``seed``. Stops after an end-of-sequence token, at ``max_new_tokens``, or when
    ``should_stop()`` turns true (the tokens so far); ``progress(fraction)`` after every step.
    """
    check_generative(lm)
    prompt_ids = check_ids(lm, prompt_ids)
    k = check_count(k, 1, MAX_K, "number of proposed tokens k")
    max_new_tokens = check_count(max_new_tokens, 1, MAX_TIMED_TOKENS, "number of new tokens")
    temperature = _check_temperature(temperature)
    check_room(lm, len(prompt_ids), max_new_tokens + k)
    generator = torch.Generator().manual_seed(int(seed))
    eos = set(eos_ids(lm))
    start = time.perf_counter()
    verifier = _Verifier(lm, prompt_ids, 1)
    draft.start(prompt_ids)
    ids = verifier.ids[0].tolist()
    prompt_length, steps = len(ids), []
    while len(ids) - prompt_length < max_new_tokens and not (should_stop is not None and should_stop()):
        room = max_new_tokens - (len(ids) - prompt_length)
        t0 = time.perf_counter()
        proposed, q = draft.propose(ids, min(k, room - 1), temperature, generator) if room > 1 else ([], None)
        _sync(lm.device)
        t1 = time.perf_counter()
        verifier.rewind(ids + proposed)
        logits = verifier.logits_of_new(len(proposed) + 1)  # after the text, after each proposal
        if temperature is None:
            choices = logits.argmax(-1).tolist()
            kept = next((i for i, x in enumerate(proposed) if x != choices[i]), len(proposed))
            token = choices[kept]
        else:
            p = torch.softmax(logits.double() / temperature, -1).cpu()
            kept, token = accept_or_resample(p, None if q is None else q.cpu(), proposed, generator)
        _sync(lm.device)
        step = SpeculativeStep(tuple(proposed), kept, token, t1 - t0, time.perf_counter() - t1)
        steps.append(step)
        written = list(step.written)
        ended = next((i for i, x in enumerate(written) if x in eos), None)
        ids += written if ended is None else written[: ended + 1]
        if progress is not None:
            progress(min(1.0, (len(ids) - prompt_length) / max_new_tokens))
        if ended is not None:
            break
    return SpeculativeResult(
        draft.name, k, temperature is None, tuple(ids), tuple(ids[prompt_length:]), tuple(steps),
        time.perf_counter() - start,
    )  # fmt: skip
