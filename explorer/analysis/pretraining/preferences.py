"""Preference tuning of a decoder with a LoRA adapter: DPO and IPO on pairs of answers.

Each pair is a prompt x with a chosen answer y_w and a rejected answer y_l. The policy π is the model
with a trainable LoRA adapter; the reference π_ref is the same model with the adapter off (so the shared
model is never changed: the adapter lives on a session-owned copy, ``explorer.analysis.lora``). With
log-ratios h_w = log π(y_w|x) − log π_ref(y_w|x) and h_l likewise,

- DPO (Rafailov et al. 2023):   loss = −log σ(β · (h_w − h_l))
- IPO (Azar et al. 2023):       loss = (h_w − h_l − 1 / (2β))²

β · h is the *implicit reward* of an answer; the reward margin β · (h_w − h_l) grows as the policy learns
to prefer the chosen answers. Log-probabilities are sums over the answer's tokens.

The bundled pairs (``assets/preferences/polite.json``) plant a visible preference: the same answer
ending politely (chosen) or rudely (rejected). On held-out questions the next-token distribution at
the end of the answer shows the shift, before and after.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from explorer.analysis.lora.finetune import LoraSettings, adapted_copy, default_targets, session_bytes, training_mode
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.memory import to_host

PREFERENCES_DIR = Path(__file__).resolve().parents[3] / "assets" / "preferences"
LOSSES = ("dpo", "ipo", "dpo+nll")
TOP_K = 5


@dataclass(frozen=True)
class PreferenceSet:
    name: str
    about: str
    pairs: tuple[tuple[str, str, str], ...]  # (prompt, chosen, rejected)
    held_out_prompts: tuple[str, ...]
    polite_words: tuple[str, ...]
    rude_words: tuple[str, ...]


@cache
def bundled_preferences(name: str = "polite") -> PreferenceSet:
    """The pairs in ``assets/preferences/<name>.json`` (written for the project)."""
    data = json.loads((PREFERENCES_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return PreferenceSet(
        data["name"], data["about"], tuple((p["prompt"], p["chosen"], p["rejected"]) for p in data["pairs"]),
        tuple(data["held_out_prompts"]), tuple(data["polite_words"]), tuple(data["rude_words"]),
    )  # fmt: skip


# ---------------------------------------------------------------- the losses


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, chosen_tokens=None) -> torch.Tensor:
    """Per-pair DPO loss −log σ(β · ((π_w − ref_w) − (π_l − ref_l))) from sequence log-probabilities (B,)."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)


def ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, chosen_tokens=None) -> torch.Tensor:
    """Per-pair IPO loss ((π_w − ref_w) − (π_l − ref_l) − 1/(2β))² (B,)."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return (margin - 1 / (2 * beta)) ** 2


def dpo_nll_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, chosen_tokens) -> torch.Tensor:
    """DPO plus the chosen answer's negative log-likelihood per token (B,), as in Pang et al. 2024 (RPO).

    DPO only widens the gap between the answers, and often does it by lowering both; the NLL term holds the
    chosen answer's likelihood up. ``chosen_tokens`` (B,) counts each chosen answer's tokens."""
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) - policy_chosen / chosen_tokens


LOSS_FUNCTIONS = {"dpo": dpo_loss, "ipo": ipo_loss, "dpo+nll": dpo_nll_loss}


def answer_log_probs(model, tokenizer, prompts: list[str], answers: list[str]) -> torch.Tensor:
    """log π(answer | prompt), summed over the answer's tokens: (B,). Gradients flow when enabled."""
    rows, starts = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        rows.append(p + a)
        starts.append(len(p))
    width = max(len(r) for r in rows)
    pad = tokenizer.eos_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])  # (B, T)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()  # (B, T-1, V)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None].to(device))[..., 0]  # (B, T-1)
    positions = torch.arange(1, width)[None]  # the token each row of logp predicts
    answer = (positions >= torch.tensor(starts)[:, None]) & (mask[:, 1:] == 1)
    return (logp * answer.to(device)).sum(dim=-1)


# ---------------------------------------------------------------- a run


@dataclass(frozen=True)
class PreferenceSettings:
    loss: str = "dpo"
    beta: float = 0.1
    r: int = 8
    alpha: float = 16.0
    lr: float = 1e-3
    steps: int = 40
    batch_size: int = 8
    seed: int = 0

    def validate(self) -> PreferenceSettings:
        if self.loss not in LOSSES:
            raise InputError(f"The loss must be one of {', '.join(LOSSES)}, not {self.loss!r:.20}.")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not 0.001 <= self.beta <= 10:
            raise InputError("β must be a number from 0.001 to 10.")
        return self

    def lora(self, model: torch.nn.Module) -> LoraSettings:
        return LoraSettings(
            tuple(default_targets(model)), r=self.r, alpha=self.alpha, lr=self.lr, steps=self.steps,
            batch_size=self.batch_size, seed=self.seed,
        ).validate()  # fmt: skip


@dataclass
class NextTokenShift:
    """The next-token distribution at the end of one held-out prompt, before and after tuning."""

    prompt: str
    tokens: list[str]  # the union of both top-k lists, most likely after tuning first
    before: np.ndarray  # (k,) probabilities
    after: np.ndarray  # (k,)
    polite_before: float  # probability mass on the first tokens of the polite words
    polite_after: float
    rude_before: float
    rude_after: float

    @property
    def polite_share(self) -> tuple[float, float]:
        """Polite words' share of the polite and rude words' mass, (before, after): the planted preference.

        DPO can lower both answers' likelihood while it widens their gap, so the share shows the preference
        more plainly than either mass."""
        return (
            self.polite_before / max(self.polite_before + self.rude_before, 1e-30),
            self.polite_after / max(self.polite_after + self.rude_after, 1e-30),
        )


@dataclass
class PreferenceRecord:
    settings: PreferenceSettings
    steps: np.ndarray  # (n,)
    loss: np.ndarray  # (n,) mean over the batch
    chosen_logp: np.ndarray  # (n,) mean policy log π(y_w | x) over the batch, nats
    rejected_logp: np.ndarray  # (n,)
    reward_margin: np.ndarray  # (n,) mean β · (h_w − h_l)
    reward_accuracy: np.ndarray  # (n,) share of pairs whose chosen answer has the larger implicit reward
    shifts: list[NextTokenShift] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False


class PreferenceRun:
    """One user's preference tuning of ``lm`` on a private adapted copy (``lm`` is only read)."""

    def __init__(self, lm: LoadedModel, settings: PreferenceSettings, data: PreferenceSet | None = None):
        self.settings = settings.validate()
        self.data = data or bundled_preferences()
        self.lora = settings.lora(lm.model)
        self.tokenizer = lm.tokenizer
        self.peft = adapted_copy(lm, self.lora)  # checks the model can be fine-tuned and fits
        self.nbytes = session_bytes(lm, self.lora)
        self.optimizer = torch.optim.AdamW([p for p in self.peft.parameters() if p.requires_grad], lr=settings.lr)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.lock = threading.Lock()
        prompts, chosen, rejected = (list(c) for c in zip(*self.data.pairs, strict=True))
        counts = [len(self.tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in chosen]
        self.chosen_tokens = torch.tensor(counts, dtype=torch.float32)
        with torch.no_grad(), self.peft.disable_adapter():
            self.ref_chosen = answer_log_probs(self.peft, self.tokenizer, prompts, chosen)
            self.ref_rejected = answer_log_probs(self.peft, self.tokenizer, prompts, rejected)
        self.before = self._distributions()
        self.history: list[tuple[float, float, float, float, float]] = []
        self.seconds, self.stopped = 0.0, False

    @property
    def done(self) -> bool:
        return self.peft is None or len(self.history) >= self.settings.steps

    @torch.no_grad()
    def _distributions(self) -> list[torch.Tensor]:
        out = []
        for prompt in self.data.held_out_prompts:
            ids = torch.tensor([self.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
            logits = self.peft(input_ids=ids.to(next(self.peft.parameters()).device)).logits[0, -1].float().cpu()
            out.append(torch.softmax(logits, dim=-1))
        return out

    def step(self) -> None:
        pairs = self.data.pairs
        pick = torch.randperm(len(pairs), generator=self.generator)[: self.settings.batch_size].tolist()
        prompts = [pairs[i][0] for i in pick]
        training_mode(self.peft)
        chosen = answer_log_probs(self.peft, self.tokenizer, prompts, [pairs[i][1] for i in pick])
        rejected = answer_log_probs(self.peft, self.tokenizer, prompts, [pairs[i][2] for i in pick])
        ref_w, ref_l = self.ref_chosen[pick], self.ref_rejected[pick]
        lengths = self.chosen_tokens[pick].to(chosen.device)
        loss = LOSS_FUNCTIONS[self.settings.loss](chosen, rejected, ref_w, ref_l, self.settings.beta, lengths).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.peft.eval()
        with torch.no_grad():
            margin = self.settings.beta * ((chosen - ref_w) - (rejected - ref_l))
            self.history.append(
                (loss.item(), chosen.mean().item(), rejected.mean().item(), margin.mean().item(),
                 (margin > 0).float().mean().item())
            )  # fmt: skip

    def train(self, progress: Callable[[float], None] | None = None, should_stop=None) -> PreferenceRecord:
        """Run the remaining steps; ``progress(fraction)`` after each, ``should_stop()`` ends early."""
        with self.lock:
            if self.peft is None:
                raise InputError("This preference tuning was closed; start a new one.")
            t0 = time.perf_counter()
            while not self.done:
                if should_stop is not None and should_stop():
                    self.stopped = True
                    break
                self.step()
                if progress is not None:
                    progress(len(self.history) / self.settings.steps)
            self.seconds += time.perf_counter() - t0
            return self._record()

    def _mass(self, probs: torch.Tensor, words) -> float:
        first = {self.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words}
        return float(probs[sorted(first)].sum())

    def _record(self) -> PreferenceRecord:
        after = self._distributions()
        shifts = []
        for prompt, p0, p1 in zip(self.data.held_out_prompts, self.before, after, strict=True):
            ids = list(dict.fromkeys(p1.topk(TOP_K).indices.tolist() + p0.topk(TOP_K).indices.tolist()))
            shifts.append(
                NextTokenShift(
                    prompt, [self.tokenizer.decode([i]) for i in ids], to_host(p0[ids]), to_host(p1[ids]),
                    self._mass(p0, self.data.polite_words), self._mass(p1, self.data.polite_words),
                    self._mass(p0, self.data.rude_words), self._mass(p1, self.data.rude_words),
                )
            )  # fmt: skip
        h = np.array(self.history).reshape(-1, 5)
        return PreferenceRecord(
            self.settings, np.arange(1, len(h) + 1), *h.T, shifts=shifts, seconds=self.seconds, stopped=self.stopped
        )

    def close(self) -> None:
        """Drop the private copy and the optimiser's state."""
        with self.lock:
            self.peft = self.optimizer = None
