"""LoRA fine-tuning on a session-owned copy of a shared model (peft).

LoRA freezes a weight W (out × in) and learns a low-rank update beside it::

    h = W x + (alpha / r) · B (A x)        A: (r, in), random;  B: (out, r), zeros at the start

so a fresh adapter changes nothing (B = 0) and the trained update ΔW = (alpha / r) · B · A has rank
at most r. Only A and B train: r · (in + out) numbers per adapted matrix instead of in · out.

Isolation: models in the pool are shared read-only by every user, and peft's ``get_peft_model``
rewrites a module in place. So each ``LoraSession`` deep-copies the base model first (refused past
``EXPLORER_LORA_MAX_MB``) and the shared model is never touched. ``sessions`` bounds the
memory all sessions hold together (``EXPLORER_LORA_TOTAL_MB``).
"""

from __future__ import annotations

import copy
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers.pytorch_utils import Conv1D

from explorer.analysis.lora.data import TrainingData
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.settings import settings
from explorer.core.spec import FINE_TUNE

MAX_STEPS = 500
MAX_RANK = 64
MODES = ("on", "off", "merged")
_BLOCK_INDEX = re.compile(r"^(.*)\.(\d+)\.(.+)$")  # "transformer.h.3.attn.c_attn" -> kind "attn.c_attn"


def session_max_bytes() -> int:
    """The largest model copy one session may hold (``EXPLORER_LORA_MAX_MB``, default 1024 MB)."""
    return settings().lora_max_bytes


# ---------------------------------------------------------------- what can be adapted, and what it costs


def module_kind(name: str) -> str | None:
    """The name of a module inside its (numbered) block, or None outside the blocks (embeddings, head)."""
    match = _BLOCK_INDEX.match(name)
    return match.group(3) if match else None


def adaptable_modules(model: torch.nn.Module) -> dict[str, list[str]]:
    """Linear (or GPT-2 Conv1D) layers inside the transformer blocks, grouped by kind: kind -> full names."""
    kinds: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        kind = module_kind(name)
        if kind and isinstance(module, (torch.nn.Linear, Conv1D)):
            kinds.setdefault(kind, []).append(name)
    return kinds


def is_attention(kind: str) -> bool:
    return "att" in kind.lower()


def default_targets(model: torch.nn.Module) -> list[str]:
    """The attention projections (the original LoRA paper's choice)."""
    kinds = list(adaptable_modules(model))
    return [k for k in kinds if is_attention(k)] or kinds[:1]


def check_targets(model: torch.nn.Module, targets) -> list[str]:
    kinds = adaptable_modules(model)
    targets = [t for t in (targets or []) if t]
    if not targets:
        raise InputError("Pick at least one kind of module to adapt (e.g. the attention projections).")
    unknown = [t for t in targets if t not in kinds]
    if unknown:
        raise InputError(f"This model has no module '{unknown[0]}'; it has: {', '.join(kinds)}.")
    return targets


def lora_parameter_count(model: torch.nn.Module, targets, r: int) -> int:
    """Trainable numbers of a LoRA on ``targets``: r · (in + out) per adapted matrix."""
    kinds = adaptable_modules(model)
    modules = dict(model.named_modules())
    return sum(r * sum(modules[name].weight.shape) for t in check_targets(model, targets) for name in kinds[t])


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class LoraSettings:
    """Everything that defines one LoRA run."""

    targets: tuple[str, ...]
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    lr: float = 3e-3
    steps: int = 100
    batch_size: int = 8
    seed: int = 0

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def validate(self) -> LoraSettings:
        whole = ("r", "steps", "batch_size", "seed")
        for name in whole:  # from a file or an API call: 8.5, true or "8" are not ranks
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"The setting {name} must be a whole number, not {value!r:.20}.")
        for name in ("alpha", "dropout", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"The setting {name} must be a finite number, not {value!r:.20}.")
        if not all(isinstance(t, str) for t in self.targets):
            raise InputError("The modules to adapt must be given by their names (e.g. attn.c_attn).")
        checks = [
            (1 <= self.r <= MAX_RANK, f"The rank r must be from 1 to {MAX_RANK}."),
            (0 < self.alpha <= 1024, "Alpha must be above 0 and at most 1024."),
            (0 <= self.dropout < 1, "Dropout must be from 0 to below 1."),
            (1e-6 <= self.lr <= 1.0, "The learning rate must be from 0.000001 to 1."),
            (1 <= self.steps <= MAX_STEPS, f"Steps must be from 1 to {MAX_STEPS}."),
            (1 <= self.batch_size <= 32, "The batch size must be from 1 to 32."),
            (self.seed >= 0, "The seed must be 0 or more."),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        return self

    def to_dict(self) -> dict:
        return {**self.__dict__, "targets": list(self.targets)}


def lora_config(model: torch.nn.Module, settings: LoraSettings) -> LoraConfig:  # noqa: F821 (peft, imported when used)
    """peft's config for ``settings``: exact module names, so kinds that end alike never mix."""
    from peft import LoraConfig  # peft takes ~3 s to import: loaded at the first fine-tune, not at the app's start

    kinds = adaptable_modules(model)
    names = [name for t in check_targets(model, settings.targets) for name in kinds[t]]
    modules = dict(model.named_modules())
    return LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=names,
        fan_in_fan_out=isinstance(modules[names[0]], Conv1D), bias="none", task_type="CAUSAL_LM",
    )  # fmt: skip


def check_trainable(lm: LoadedModel, max_bytes: int | None = None) -> None:
    """Refuse, with a sentence, a model that cannot be fine-tuned here: not a decoder, or a copy larger than
    ``max_bytes`` (default: the process's ``EXPLORER_LORA_MAX_MB``)."""
    lm.spec.require(FINE_TUNE)
    limit = session_max_bytes() if max_bytes is None else max_bytes
    if lm.nbytes > limit:
        raise InputError(
            f"'{lm.spec.key}' takes {lm.nbytes / 2**20:,.0f} MB and each session fine-tunes its own copy; "
            f"this server allows {limit / 2**20:,.0f} MB per session (EXPLORER_LORA_MAX_MB). "
            "Pick a smaller model."
        )


class SeededDropout(torch.nn.Module):
    """LoRA's dropout drawn from a generator seeded by the run's seed: the same seed drops the same numbers.

    (``nn.Dropout`` draws from torch's process-wide generator, which every other request also advances.)
    """

    def __init__(self, p: float, seed: int):
        super().__init__()
        self.p, self.seed = p, seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device not in self._generators:
            self._generators[x.device] = torch.Generator(device=x.device).manual_seed(self.seed)
        keep = torch.rand(x.shape, generator=self._generators[x.device], device=x.device) >= self.p
        return x * keep / (1 - self.p)


def seed_lora_dropout(model: torch.nn.Module, settings: LoraSettings) -> None:
    """Replace peft's LoRA dropout layers by ``SeededDropout`` (one generator per layer, seeds from the run's)."""
    layers = [m for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)]
    for i, layer in enumerate(layers):
        for name, dropout in layer.lora_dropout.items():
            if isinstance(dropout, torch.nn.Dropout):
                layer.lora_dropout[name] = SeededDropout(dropout.p, settings.seed * 100_003 + i)


def training_mode(model: torch.nn.Module) -> None:
    """Train with the base model's own dropout off: every module in eval mode (transformers reads
    ``module.training`` for attention dropout too) except LoRA's seeded dropout, so a run is reproducible."""
    model.eval()
    for module in model.modules():
        if isinstance(module, SeededDropout):
            module.train()


def session_bytes(lm: LoadedModel, settings: LoraSettings, data: TrainingData | None = None) -> int:
    """What one fine-tune holds, counted from its parts (measured against a process's memory in
    ``bench/lora_memory.py``):

    - the private copy of the model (``lm.nbytes``);
    - the LoRA matrices, their gradients and AdamW's two moments: 4 numbers per trainable parameter;
    - the training text's token ids;
    - a training step's activations, which the allocator keeps for the next step: the logits
      (batch × block × vocabulary) and about 8 numbers per layer and width per token.
    """
    model, config = lm.model, lm.model.config
    trainable = lora_parameter_count(model, settings.targets, settings.r) * 4
    block = data.block if data is not None else 64
    tokens = settings.batch_size * block
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    width = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0) or 0)
    activations = tokens * (vocab + 8 * width * lm.spec.n_layers) * 4
    text = data.n_tokens * 8 if data is not None else 0
    return lm.nbytes + 4 * trainable + text + activations


def adapted_copy(lm: LoadedModel, settings: LoraSettings):
    """A private deep copy of ``lm.model`` with a fresh LoRA adapter (the shared model is only read)."""
    check_trainable(lm)
    settings.validate()
    config = lora_config(lm.model, settings)
    private = copy.deepcopy(lm.model)
    from peft import get_peft_model

    peft_model = get_peft_model(private, config).eval()  # peft leaves the model in train mode (dropout on)
    generator = torch.Generator().manual_seed(settings.seed)
    for name, p in peft_model.named_parameters():  # peft's A init, from our own generator (not the global RNG)
        if "lora_A" in name:
            torch.nn.init.kaiming_uniform_(p.data, a=math.sqrt(5), generator=generator)
    seed_lora_dropout(peft_model, settings)
    return peft_model


# ---------------------------------------------------------------- training


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> float:
    """One optimizer step of next-token loss on ``batch`` (B, T); returns the loss."""
    batch = batch.to(_device(model))  # the data lives on the CPU; the model may be on a GPU
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, data: TrainingData, batch_size: int = 8) -> float:
    """Mean next-token loss (nats) on the held-out windows, in eval mode."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for chunk in data.heldout.to(_device(model)).split(batch_size):
        total += model(input_ids=chunk, labels=chunk).loss.item() * len(chunk)
        n += len(chunk)
    model.train(was_training)
    return total / n


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)


class LoraSession:
    """One user's fine-tune: a private adapted copy, its data, loss history and adapter state.

    Every use of the copy goes through ``self.lock``; training holds it for a few steps at a time,
    so a stopped (cancelled) run never leaves it taken.
    """

    def __init__(self, lm: LoadedModel, settings: LoraSettings, data: TrainingData):
        self.base = lm  # shared: read for its spec and tokenizer only
        self.settings = settings.validate()
        self.data = data
        self.peft = adapted_copy(lm, settings)
        self.lm = LoadedModel(lm.spec, self.peft.get_base_model(), lm.tokenizer, lm.device)  # for analysis code
        self.lock = threading.Lock()
        self.optimizer = _optimizer(self.peft, settings.lr)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.losses: list[float] = []
        self.seconds = 0.0
        self.mode = "on"
        self.heldout_before = heldout_loss(self.peft, data)  # B = 0: this is the base model's loss
        self.heldout_after: float | None = None
        self.nbytes = session_bytes(lm, self.settings, data)

    @property
    def closed(self) -> bool:
        return self.peft is None

    @property
    def done(self) -> bool:
        return self.closed or len(self.losses) >= self.settings.steps

    def train(self, n_steps: int) -> None:
        """Run up to ``n_steps`` more steps (never past ``settings.steps``)."""
        with self.lock:
            if self.closed:  # replaced by a newer fine-tune of the same user
                return
            self._set_mode("on")
            training_mode(self.peft)
            t0 = time.perf_counter()
            for _ in range(min(n_steps, self.settings.steps - len(self.losses))):
                batch = self.data.batch(self.settings.batch_size, self.generator)
                self.losses.append(training_step(self.peft, self.optimizer, batch))
            self.seconds += time.perf_counter() - t0
            self.peft.eval()
            self.heldout_after = None

    def finish(self) -> float:
        """The held-out loss with the adapter as trained so far (kept until training goes on)."""
        with self.lock:
            if self.closed:
                raise InputError("This fine-tune was replaced by a newer one.")
            if self.heldout_after is None:
                with self.using("adapted"):
                    self.heldout_after = heldout_loss(self.peft, self.data)
            return self.heldout_after

    def _set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise InputError(f"The adapter can be {', '.join(MODES)}, not {mode!r}.")
        if self.mode == mode:
            return
        if self.mode == "merged":
            self.peft.unmerge_adapter()
        if mode == "off":
            self.peft.base_model.disable_adapter_layers()
        else:
            self.peft.base_model.enable_adapter_layers()
        if mode == "merged":
            self.peft.merge_adapter()
        self.mode = mode

    def set_mode(self, mode: str) -> None:
        """Adapter ``on`` (LoRA layers add B·A·x), ``off`` (the base model) or ``merged`` (W + ΔW, no extra layers)."""
        with self.lock:
            self._set_mode(mode)

    @contextmanager
    def using(self, which: str):
        """The copy as the ``base`` model (adapter off) or ``adapted`` (on, or merged if so); call with the lock held."""
        previous = self.mode
        wanted = "off" if which == "base" else ("merged" if previous == "merged" else "on")
        self._set_mode(wanted)
        try:
            yield self.lm
        finally:
            self._set_mode(previous)

    def close(self) -> None:
        """Drop the copy and the optimizer state (the session ended); waits for a training step under way."""
        with self.lock:
            self.peft = self.lm = self.optimizer = None


def train_live(
    session: LoraSession, progress: Callable[[int, int], None] | None = None, every_s: float = 0.5
) -> Iterator[int]:
    """Train ``session`` to its step count a few steps at a time, for a screen that shows it live.

    Steps run in chunks of a fiftieth of the run (at least one), each holding the session's lock, so a
    caller that stops iterating (a cancelled request) leaves the adapter as trained so far and the lock
    free. ``progress(done, total)`` is called after every chunk; the count of steps done is yielded at
    most every ``every_s`` seconds and after the last chunk. A session closed meanwhile (replaced by a
    newer fine-tune of its owner) ends the loop.
    """
    total = session.settings.steps
    chunk, last = max(1, total // 50), float("-inf")  # the first chunk is always reported
    while not session.done:
        session.train(chunk)
        if progress is not None:
            progress(len(session.losses), total)
        if time.perf_counter() - last > every_s or session.done:
            last = time.perf_counter()
            yield len(session.losses)
