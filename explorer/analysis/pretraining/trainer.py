"""The live trainer: a tiny model trained from scratch on the bundled texts, watched while it learns.

``PretrainRun(settings)`` trains its own tokenizer on the training documents, builds a fresh model
and an AdamW optimiser; ``run.train(progress, should_stop)`` (or ``train_live`` for a screen that
updates) runs the steps and records, in ``run.record()``:

- the training loss of every step, against steps and tokens seen;
- every ``eval_every`` steps, the loss on held-out documents (the same fixed windows, masks and spans
  each time) in nats per predicted token and in bits per byte of text;
- at ``checkpoints`` evenly spaced steps (and at step 0): samples from fixed prompts, every head's
  attention on a repeated sequence, and each head's previous-token and induction scores.

The model is the run's own (nothing shared is touched); ``run.loaded_model()`` hands out a frozen
copy as a ``LoadedModel`` that every other view can open. On CPU a seed reproduces a run bit for bit.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from explorer.analysis.pretraining import probes
from explorer.analysis.pretraining.configs import (
    OBJECTIVES,
    PretrainSettings,
    batch_maker,
    build_model,
    build_tokenizer,
    parameter_counts,
    separator_id,
)
from explorer.analysis.pretraining.corpus import TextSplit, bundled_split
from explorer.core import objectives
from explorer.core.errors import InputError
from explorer.core.family import adapter
from explorer.core.loading import LoadedModel
from explorer.core.spec import spec_from_config

HELD_OUT_WINDOWS = 16  # held-out batches are at most this many windows: a few thousand tokens
HELD_OUT_SEED = 1234  # the held-out masks and spans, the same in every run


@dataclass
class Checkpoint:
    """What the model did at one step: samples, and its attention on the repeated sequence."""

    step: int
    samples: list[tuple[str, str]]  # (prompt, output)
    attention: np.ndarray  # (L, H, T, T) on ``PretrainRecord.repeat_tokens``
    previous_token: np.ndarray  # (L, H)
    induction: np.ndarray  # (L, H)


@dataclass
class PretrainRecord:
    """Everything measured so far, as plain data (a copy: later steps do not change it)."""

    settings: PretrainSettings
    parameters: int  # all of them
    non_embedding_parameters: int
    vocab_size: int
    train_tokens_available: int  # tokens in the training stream
    held_out_tokens: int
    steps: np.ndarray  # (n,) 1, 2, ...
    tokens_seen: np.ndarray  # (n,)
    train_loss: np.ndarray  # (n,) nats per predicted token
    eval_steps: np.ndarray  # (m,) 0, eval_every, ...
    eval_tokens: np.ndarray  # (m,)
    held_out_loss: np.ndarray  # (m,) nats per predicted token
    held_out_bpb: np.ndarray  # (m,) bits per byte of held-out text
    checkpoints: list[Checkpoint] = field(default_factory=list)
    repeat_tokens: list[str] = field(default_factory=list)  # the repeated sequence's pieces (labels)
    repeat_period: int = probes.REPEAT_LENGTH
    seconds: float = 0.0
    stopped: bool = False

    @property
    def done_steps(self) -> int:
        return int(self.steps[-1]) if len(self.steps) else 0

    @property
    def compute(self) -> float:
        """Training compute so far, 6 · N · D floating-point operations (N non-embedding parameters)."""
        return 6.0 * self.non_embedding_parameters * (float(self.tokens_seen[-1]) if len(self.tokens_seen) else 0.0)

    def score_history(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """(checkpoint steps (k,), scores (k, L, H)) for ``which`` = ``previous_token`` or ``induction``."""
        steps = np.array([c.step for c in self.checkpoints])
        return steps, np.stack([getattr(c, which) for c in self.checkpoints]) if self.checkpoints else np.zeros((0,))


def lr_at(step: int, settings: PretrainSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak at the last step."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def held_out_batches(settings: PretrainSettings, tokenizer, stream: np.ndarray) -> list[dict[str, torch.Tensor]]:
    """Fixed held-out batches: consecutive windows of the held-out stream, masked or corrupted with a fixed seed."""
    length = settings.seq_len
    n = max(1, min(HELD_OUT_WINDOWS, len(stream) // length))
    windows = [stream[i * length : (i + 1) * length] for i in range(n)]
    rng = np.random.default_rng(HELD_OUT_SEED)
    out = []
    for start in range(0, n, settings.batch):
        chunk = np.stack(windows[start : start + settings.batch])
        if settings.objective == "next_token":
            ids = torch.from_numpy(chunk)
            out.append({"input_ids": ids, "labels": ids.clone()})
        elif settings.objective == "masked":
            cls = np.full((len(chunk), 1), tokenizer.cls_token_id)
            sep = np.full((len(chunk), 1), tokenizer.sep_token_id)
            ids = np.concatenate([cls, chunk[:, : length - 2], sep], axis=1)
            inputs, labels = objectives.mask_tokens(ids, tokenizer, rng, rate=settings.mask_rate)
            out.append({"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)})
        else:
            out.append(objectives.span_corrupt_windows(chunk[:, : length - 1], rng, tokenizer))
    return out


class PretrainRun:
    """One live run: tokenizer, model, optimiser and what has been measured. Thread-safe through ``lock``."""

    def __init__(self, settings: PretrainSettings, split: TextSplit | None = None):
        self.settings = settings.validate()
        self.id = uuid.uuid4().hex[:12]
        split = split or bundled_split()
        self.split = split
        self.tokenizer = build_tokenizer(settings, split.train)
        sep = separator_id(settings, self.tokenizer)
        self.train_stream = objectives.token_stream(self.tokenizer, list(split.train), sep)
        self.held_out_stream = objectives.token_stream(self.tokenizer, list(split.held_out), sep)
        if len(self.train_stream) <= settings.seq_len + 1 or len(self.held_out_stream) < settings.seq_len:
            raise InputError("The training text is too short for windows of this length; pick a shorter window.")
        held_bytes = sum(len(d.encode("utf-8")) + 1 for d in split.held_out)
        self.bytes_per_token = held_bytes / len(self.held_out_stream)
        self.model = build_model(settings, self.tokenizer)
        self.is_encoder_decoder = adapter(self.settings.family).is_encoder_decoder
        decay = [p for _, p in sorted(self.model.named_parameters()) if p.dim() >= 2]
        no_decay = [p for _, p in sorted(self.model.named_parameters()) if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=settings.lr, betas=(0.9, 0.98),
        )  # fmt: skip
        self.next_batch = batch_maker(settings, self.tokenizer, self.train_stream)
        self.rng = np.random.default_rng(settings.seed)
        self.held_out = held_out_batches(settings, self.tokenizer, self.held_out_stream)
        self.repeat = probes.repeated_sequence(self.train_stream)
        if settings.objective == "masked":  # the encoder sees [CLS] ... [SEP]
            self.repeat = np.concatenate([[self.tokenizer.cls_token_id], self.repeat, [self.tokenizer.sep_token_id]])
        self.checkpoint_steps = sorted(
            {round(k * settings.steps / settings.checkpoints) for k in range(settings.checkpoints + 1)}
        )
        self.lock = threading.Lock()
        total, body = parameter_counts(self.model)
        self._record = PretrainRecord(
            settings, total, body, len(self.tokenizer), len(self.train_stream), len(self.held_out_stream),
            *(np.zeros(0) for _ in range(7)),
            repeat_tokens=[self.tokenizer.decode([int(i)]) for i in self.repeat],
        )  # fmt: skip
        self._losses: list[float] = []
        self._evals: list[tuple[int, float]] = []
        self._measure(0)

    # ------------------------------------------------------------ state

    @property
    def step(self) -> int:
        return len(self._losses)

    @property
    def done(self) -> bool:
        return self.model is None or self.optimizer is None or self.step >= self.settings.steps

    @property
    def nbytes(self) -> int:
        """The model, its gradients and AdamW's two moments (4 copies; 1 once training ended), plus the token streams."""
        if self.model is None:
            return 0
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return (4 if self.optimizer is not None else 1) * weights + 8 * (
            len(self.train_stream) + len(self.held_out_stream)
        )

    # ------------------------------------------------------------ measuring

    @torch.no_grad()
    def held_out_loss(self) -> float:
        """Mean loss per predicted token over the fixed held-out batches (nats)."""
        total, count = 0.0, 0
        for batch in self.held_out:
            n = (
                int((batch["labels"] != -100).sum())
                if self.settings.objective != "next_token"
                else batch["labels"][:, 1:].numel()
            )
            total += objectives.objective_loss(self.model, batch).item() * n
            count += n
        return total / count

    def _measure(self, step: int) -> None:
        if step % self.settings.eval_every == 0 or step == self.settings.steps:
            self._evals.append((step, self.held_out_loss()))
        if step in self.checkpoint_steps:
            self._checkpoint(step)

    def _checkpoint(self, step: int) -> None:
        attention = probes.attention_on(self.model, self.repeat, self.is_encoder_decoder)
        causal = self.settings.objective == "next_token"
        offset = 1 if self.settings.objective == "masked" else 0
        self._record.checkpoints.append(
            Checkpoint(
                step,
                probes.samples(self.settings.objective, self.model, self.tokenizer, self.settings.seed),
                attention,
                probes.previous_token_scores(attention, causal),
                probes.induction_scores(attention, probes.REPEAT_LENGTH, offset),
            )
        )

    # ------------------------------------------------------------ training

    def advance(self, n_steps: int) -> int:
        """Run up to ``n_steps`` more steps (never past ``settings.steps``), measuring where due; returns steps run."""
        with self.lock:
            if self.model is None or self.optimizer is None:
                return 0
            t0 = time.perf_counter()
            n = min(n_steps, self.settings.steps - self.step)
            for _ in range(n):
                self._step()
                self._measure(self.step)
            self._record.seconds += time.perf_counter() - t0
            return n

    def _step(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.settings)
        batch = self.next_batch(self.rng)
        self.model.train()
        loss = objectives.objective_loss(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.model.eval()
        self._losses.append(loss.item())

    def train(
        self, progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None
    ) -> PretrainRecord:
        """Train to ``settings.steps``; ``progress(fraction)`` after each step; ``should_stop()`` ends early
        (the record then says ``stopped`` and holds what was done)."""
        while not self.done:
            if should_stop is not None and should_stop():
                self.stop()
                break
            self.advance(1)
            if progress is not None:
                progress(self.step / self.settings.steps)
        return self.record()

    def stop(self) -> None:
        """Mark the run as stopped early (its record says so)."""
        with self.lock:
            self._record.stopped = True

    def record(self) -> PretrainRecord:
        """A copy of everything measured so far."""
        with self.lock:
            r = copy.copy(self._record)
            tokens = self.settings.tokens_per_step
            r.steps = np.arange(1, self.step + 1)
            r.tokens_seen = r.steps * tokens
            r.train_loss = np.array(self._losses)
            r.eval_steps = np.array([s for s, _ in self._evals])
            r.eval_tokens = r.eval_steps * tokens
            r.held_out_loss = np.array([v for _, v in self._evals])
            r.held_out_bpb = r.held_out_loss / math.log(2) / self.bytes_per_token
            r.checkpoints = list(self._record.checkpoints)
            return r

    # ------------------------------------------------------------ the trained model, for other views

    def loaded_model(self) -> LoadedModel:
        """A frozen copy of the model as it is now, openable in every view; private to this run's owner.

        Its spec's source names this run and step, so no cache shared between users can mix it up
        with another model."""
        with self.lock:
            if self.model is None:
                raise InputError("This training run was closed; train a new model.")
            model = copy.deepcopy(self.model).eval().requires_grad_(False)
            step = self.step
        objective = OBJECTIVES[self.settings.objective]
        key = f"trained here: {self.settings.objective} ({self._record.parameters:,} parameters, step {step})"
        spec = spec_from_config(
            key, f"session-run/{self.id}/step-{step}", model.config, True,
            description=f"{objective.about} Trained in this session for {step} steps on the bundled texts.",
        )  # fmt: skip
        return LoadedModel(spec, model, self.tokenizer, torch.device("cpu"))

    def end_training(self) -> None:
        """No more steps: free the optimiser's state, keep the model (to open it in other views) and the record."""
        with self.lock:
            self.optimizer = None

    def close(self) -> None:
        """Free the model and the optimiser's state (the session ended or a new run replaced this one)."""
        with self.lock:
            self.model = self.optimizer = None


def train_live(run: PretrainRun, every_s: float = 0.5, should_stop=None) -> Iterator[PretrainRecord]:
    """Train ``run`` a few steps at a time, yielding its record at most every ``every_s`` seconds and at the
    end, for a view that redraws while it learns. A caller that stops iterating leaves the run as trained
    so far (resume by iterating a new ``train_live``)."""
    chunk, last = max(1, run.settings.steps // 100), time.perf_counter()
    while not run.done:
        if should_stop is not None and should_stop():
            run.stop()
            break
        run.advance(chunk)
        if time.perf_counter() - last > every_s and not run.done:
            last = time.perf_counter()
            yield run.record()
    yield run.record()
