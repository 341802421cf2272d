"""What a LoRA fine-tune changed: next-token distributions before and after, generations, the update ΔW itself,
and full fine-tuning on the same data for comparison.

Every function takes a ``LoraSession`` and holds its lock while it uses the private copy.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis.decoding import generate as decoding
from explorer.analysis.decoding.sampling import DecodingSettings
from explorer.analysis.lora.finetune import (
    LoraSession,
    _optimizer,
    heldout_loss,
    lora_parameter_count,
    module_kind,
    parameter_count,
    training_mode,
    training_step,
)
from explorer.core.errors import InputError
from explorer.core.memory import to_host
from explorer.core.tokens import token_label

FULL_FINETUNE_MAX_PARAMS = 30_000_000  # full fine-tuning (4x the weights in memory) only for tiny models
GENERATION = DecodingSettings(temperature=0.8, top_k=40)
MAX_HEATMAP_CELLS = 96


# ---------------------------------------------------------------- next-token distributions


def kl_bits(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p ‖ q) in bits over the last axis: how surprised q would be by p (0 when equal)."""
    p, q = p.double(), q.double()
    terms = torch.where(p > 0, p * (torch.log2(p.clamp_min(1e-300)) - torch.log2(q.clamp_min(1e-300))), 0.0)
    return float(terms.sum())


@torch.no_grad()
def _last_probs(lm, prompt: str) -> torch.Tensor:
    ids = torch.tensor([lm.tokenizer(prompt)["input_ids"]], device=lm.device)
    return torch.softmax(lm.model(input_ids=ids).logits[0, -1].float(), dim=-1).cpu()


@dataclass(frozen=True)
class ProbeComparison:
    """Next-token distributions of one probe prompt: ``base`` and ``adapted`` (V,), and KL(adapted ‖ base)."""

    prompt: str
    base: torch.Tensor
    adapted: torch.Tensor

    @property
    def kl_bits(self) -> float:
        return kl_bits(self.adapted, self.base)


def compare_probes(session: LoraSession, probes: list[str]) -> list[ProbeComparison]:
    """Each probe's next-token distribution without and with the adapter, on the same private copy."""
    with session.lock:
        with session.using("base") as lm:
            base = [_last_probs(lm, p) for p in probes]
        with session.using("adapted") as lm:
            adapted = [_last_probs(lm, p) for p in probes]
    return [ProbeComparison(p, b, a) for p, b, a in zip(probes, base, adapted)]


def top_union(comparison: ProbeComparison, n: int = 10) -> list[int]:
    """Token ids among the ``n`` most probable of either distribution, most probable after training first."""
    ids = set(comparison.base.topk(n).indices.tolist()) | set(comparison.adapted.topk(n).indices.tolist())
    return sorted(ids, key=lambda i: -float(comparison.adapted[i]))


def moved_tokens(comparisons: list[ProbeComparison], n: int = 8) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The tokens whose next-token probability, averaged over the probes, rose or fell most.

    Returns (ids, mean probability before, after), the ``n`` biggest rises then the ``n`` biggest falls.
    """
    before = torch.stack([c.base for c in comparisons]).mean(0)
    after = torch.stack([c.adapted for c in comparisons]).mean(0)
    change = after - before
    up = change.topk(n).indices.tolist()
    down = [i for i in (-change).topk(n).indices.tolist() if i not in up]
    ids = up + down
    return ids, to_host(before[ids]), to_host(after[ids])


def generations(session: LoraSession, prompt: str, max_new_tokens: int = 24, seed: int = 0) -> tuple[str, str]:
    """(base, adapted) continuations of ``prompt``, sampled with the same seed and settings."""
    with session.lock:
        prompt_ids = session.base.tokenizer(prompt)["input_ids"]
        out = []
        for which in ("base", "adapted"):
            with session.using(which) as lm:
                out.append(decoding.sample(lm, prompt_ids, GENERATION, 1, max_new_tokens, seed)[0].text)
    return out[0], out[1]


@dataclass(frozen=True)
class ProbeRow:
    """One probe in the comparison table: KL(adapted ‖ base) and the three likeliest next tokens before and after."""

    prompt: str
    kl_bits: float
    base_top: tuple[tuple[str, float], ...]  # (token label, probability)
    adapted_top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ProbeView:
    """Everything the before-vs-after view shows: a row per probe, one probe's distributions on the tokens
    likeliest before or after, the tokens that moved most over all probes, and sampled continuations."""

    rows: tuple[ProbeRow, ...]
    shown: ProbeComparison
    labels: tuple[str, ...]  # tokens of ``shown``, most probable after training first
    base: np.ndarray  # (len(labels),) probabilities before
    adapted: np.ndarray  # and after
    moved_labels: tuple[str, ...]
    moved_before: np.ndarray
    moved_after: np.ndarray
    generations: tuple[tuple[str, str, str], ...]  # (probe, base continuation, adapted continuation)


def _top(tokenizer, probs: torch.Tensor, n: int = 3) -> tuple[tuple[str, float], ...]:
    return tuple((token_label(tokenizer, i), float(probs[i])) for i in probs.topk(n).indices.tolist())


def probe_view(session: LoraSession, probes: list[str], shown: int = 1) -> ProbeView:
    """Compare the base and adapted model on ``probes``; ``shown`` (1-based, clipped) picks the probe drawn."""
    tokenizer = session.base.tokenizer
    comparisons = compare_probes(session, probes)
    rows = tuple(
        ProbeRow(c.prompt, c.kl_bits, _top(tokenizer, c.base), _top(tokenizer, c.adapted)) for c in comparisons
    )
    c = comparisons[max(1, min(int(shown or 1), len(comparisons))) - 1]
    ids = top_union(c)
    moved_ids, before, after = moved_tokens(comparisons)
    return ProbeView(
        rows, c, tuple(token_label(tokenizer, i) for i in ids), to_host(c.base[ids]), to_host(c.adapted[ids]),
        tuple(token_label(tokenizer, i) for i in moved_ids), before, after,
        tuple((p, *generations(session, p, seed=session.settings.seed)) for p in probes),
    )  # fmt: skip


@torch.no_grad()
def merge_check(session: LoraSession, prompt: str) -> dict:
    """Logits of one prompt with the adapter on, merged into the weights, and off (the adapter state is restored)."""
    ids = torch.tensor([session.base.tokenizer(prompt)["input_ids"]], device=session.base.device)
    out = {}
    with session.lock:
        previous = session.mode
        for mode in ("on", "merged", "off"):
            session._set_mode(mode)
            out[mode] = session.lm.model(input_ids=ids).logits[0, -1].float().cpu()
        session._set_mode(previous)
    return out


@dataclass(frozen=True)
class ModeCheck:
    """The adapter switched to a mode: the greedy continuation of a prompt in that mode, and how far apart
    the next-token logits are with the adapter merged vs on (rounding only) and on vs off."""

    mode: str
    prompt: str
    greedy: str
    on_vs_merged: float
    on_vs_off: float


def switch_mode(session: LoraSession, mode: str, prompt: str, max_new_tokens: int = 16) -> ModeCheck:
    """Set the adapter ``on``, ``off`` or ``merged`` (it stays so) and check what that does on ``prompt``."""
    session.set_mode(mode)
    logits = merge_check(session, prompt)
    with session.lock:
        greedy = decoding.greedy(session.lm, session.base.tokenizer(prompt)["input_ids"], max_new_tokens).text
    return ModeCheck(
        mode, prompt, greedy,
        float((logits["on"] - logits["merged"]).abs().max()), float((logits["on"] - logits["off"]).abs().max()),
    )  # fmt: skip


# ---------------------------------------------------------------- inside the update


@dataclass(frozen=True)
class DeltaWeight:
    """One adapted matrix: its block label, module kind and ΔW = scaling · B · A as (out, in)."""

    block: str
    kind: str
    delta: torch.Tensor
    weight_norm: float

    @property
    def norm(self) -> float:
        return float(torch.linalg.matrix_norm(self.delta))

    def singular_values(self) -> np.ndarray:
        return to_host(torch.linalg.svdvals(self.delta.double()))


def _block_label(name: str) -> str:
    parts = name.split(".")
    i = max(k for k, p in enumerate(parts) if p.isdigit())
    return ".".join(parts[max(0, i - 1) : i + 1])


def delta_weights(session: LoraSession) -> list[DeltaWeight]:
    """ΔW of every adapted matrix, in model order (computed from A and B, whatever the adapter mode)."""
    from peft.tuners.lora import LoraLayer  # imported when used: see finetune.lora_config

    out = []
    shared = dict(session.base.model.named_modules())
    with session.lock, torch.no_grad():
        for name, module in session.lm.model.named_modules():
            if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
                continue
            a = module.lora_A["default"].weight  # (r, in)
            b = module.lora_B["default"].weight  # (out, r)
            delta = (module.scaling["default"] * b @ a).detach().float().cpu()  # (out, in)
            original = shared[name].weight  # the shared model's W: read only, never changed by merging
            norm = float(torch.linalg.matrix_norm(original.float()))
            out.append(DeltaWeight(_block_label(name), module_kind(name) or name, delta, norm))
    return out


def norm_grid(deltas: list[DeltaWeight]) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(blocks, kinds, ‖ΔW‖ (blocks, kinds), ‖ΔW‖/‖W‖) with NaN where a kind is not adapted in a block."""
    blocks = list(dict.fromkeys(d.block for d in deltas))
    kinds = list(dict.fromkeys(d.kind for d in deltas))
    norms = np.full((len(blocks), len(kinds)), np.nan)
    relative = np.full_like(norms, np.nan)
    for d in deltas:
        i, j = blocks.index(d.block), kinds.index(d.kind)
        norms[i, j] = d.norm
        relative[i, j] = d.norm / d.weight_norm if d.weight_norm else np.nan
    return blocks, kinds, norms, relative


def numerical_rank(singular_values: np.ndarray) -> int:
    """How many singular values are above float32 round-off of the largest (numpy's matrix_rank rule)."""
    s = np.asarray(singular_values, float)
    if s.size == 0 or s[0] == 0:
        return 0
    return int((s > s[0] * max(s.size, 1) * np.finfo(np.float32).eps).sum())


def downsampled(matrix: torch.Tensor, max_cells: int = MAX_HEATMAP_CELLS) -> np.ndarray:
    """``matrix`` (out, in) averaged in blocks to at most ``max_cells`` per side (a projection: rank is kept ≤)."""
    rows, cols = min(matrix.shape[0], max_cells), min(matrix.shape[1], max_cells)
    pooled = torch.nn.functional.adaptive_avg_pool2d(matrix[None, None].float(), (rows, cols))
    return to_host(pooled[0, 0])


@dataclass(frozen=True)
class UpdateView:
    """What the "inside the update" view shows: ‖ΔW‖ of every adapted matrix on a (blocks, kinds) grid, and
    one matrix (``name``) in detail: its singular values, numerical rank and ΔW averaged down for drawing."""

    blocks: list[str]
    kinds: list[str]
    norms: np.ndarray  # (blocks, kinds), NaN where not adapted
    relative: np.ndarray  # ‖ΔW‖ / ‖W‖
    names: list[str]  # "<block> <kind>" of every adapted matrix, in model order
    name: str  # the one shown
    shape: tuple[int, int]  # its ΔW: (out, in)
    norm: float
    weight_norm: float
    singular_values: np.ndarray
    rank: int
    pooled: np.ndarray  # ΔW averaged to at most MAX_HEATMAP_CELLS a side
    r: int
    steps: int

    @property
    def pooled_from(self) -> tuple[int, int] | None:
        """ΔW's own shape where ``pooled`` is smaller (for the figure to say so), else None."""
        return self.shape if self.pooled.shape != self.shape else None


def update_view(session: LoraSession, chosen: str | None = None) -> UpdateView:
    """The adapter's update, with ``chosen`` (a name from ``names``) in detail, else the matrix that moved most."""
    deltas = delta_weights(session)
    blocks, kinds, norms, relative = norm_grid(deltas)
    names = [f"{d.block} {d.kind}" for d in deltas]
    pick = names.index(chosen) if chosen in names else int(np.argmax([d.norm for d in deltas]))
    d = deltas[pick]
    values = d.singular_values()
    return UpdateView(
        blocks, kinds, norms, relative, names, names[pick], tuple(d.delta.shape), d.norm, d.weight_norm, values,
        numerical_rank(values), downsampled(d.delta), session.settings.r, len(session.losses),
    )  # fmt: skip


# ---------------------------------------------------------------- full fine-tuning for comparison


@dataclass(frozen=True)
class FineTuneReport:
    """One way of training on the data: what trained, memory it needed, time, and the result."""

    method: str
    trainable: int
    total: int
    training_bytes: int  # weights + gradients + AdamW's two moments of the trainable ones
    seconds: float
    steps: int
    heldout_before: float
    heldout_after: float
    mean_kl_bits: float


def lora_report(session: LoraSession, probes: list[str]) -> FineTuneReport:
    trainable = lora_parameter_count(session.base.model, session.settings.targets, session.settings.r)
    total = parameter_count(session.base.model)
    comparisons = compare_probes(session, probes)
    return FineTuneReport(
        f"LoRA r={session.settings.r} (lr {session.settings.lr:g})", trainable, total + trainable,
        4 * (total + 4 * trainable), session.seconds, len(session.losses), session.heldout_before, session.finish(),
        float(np.mean([c.kl_bits for c in comparisons])),
    )  # fmt: skip


def full_finetune(
    session: LoraSession, probes: list[str], lr: float | None = None, progress=None, should_stop=None
) -> FineTuneReport:
    """Train every weight of another private copy on the same batches, as many steps as the LoRA run took.

    The learning rate defaults to a tenth of LoRA's (full fine-tuning moves every weight, so it
    needs smaller steps). The copy is dropped at the end; only the report is kept. ``progress(fraction)``
    is called after every step; ``should_stop()`` is asked before each, and a stop raises ``InputError``
    saying how far the run got (the copy is dropped all the same).
    """
    base = session.base
    total = parameter_count(base.model)
    if total > FULL_FINETUNE_MAX_PARAMS:
        raise InputError(
            f"Full fine-tuning of {total / 1e6:.0f}M parameters needs about {16 * total / 2**30:.1f} GB "
            f"(weights, gradients, optimizer state); it is offered for models up to {FULL_FINETUNE_MAX_PARAMS / 1e6:.0f}M."
        )
    steps = len(session.losses) or session.settings.steps
    lr = lr or session.settings.lr / 10
    model = copy.deepcopy(base.model).requires_grad_(True)
    optimizer = _optimizer(model, lr)
    generator = torch.Generator().manual_seed(session.settings.seed)  # the same batches as the LoRA run
    training_mode(model)  # no dropout: the same seed gives the same run
    t0 = time.perf_counter()
    for step in range(steps):
        if should_stop is not None and should_stop():
            del model, optimizer
            raise InputError(f"Stopped: full fine-tuning ran {step} of {steps} steps; nothing to compare.")
        training_step(model, optimizer, session.data.batch(session.settings.batch_size, generator))
        if progress is not None:
            progress((step + 1) / steps)
    seconds = time.perf_counter() - t0
    model.eval().requires_grad_(False)
    after = heldout_loss(model, session.data)
    probe_ids = [torch.tensor([base.tokenizer(p)["input_ids"]], device=base.device) for p in probes]
    with torch.no_grad():
        kls = [
            kl_bits(torch.softmax(model(input_ids=x).logits[0, -1], -1), torch.softmax(base.model(input_ids=x).logits[0, -1], -1))
            for x in probe_ids
        ]  # fmt: skip
    del model, optimizer
    return FineTuneReport(
        f"full fine-tuning (lr {lr:g})", total, total, 4 * total * 4, seconds, steps, session.heldout_before, after,
        float(np.mean(kls)),
    )  # fmt: skip
