"""What quantization changes: the model's predictions and its speed, a quantized copy against float32.

Per precision (``precision_report``): the next-token distribution on one text beside float32's, the KL
divergence KL(p_float32 ‖ p_quantized) in nats and the top-1 agreement at every position of a held-out text,
bits per byte on that text (decoders: how well the copy still predicts real text), and the forward and
per-token generation latency, float32 and the copy timed in turn in the same run so a busy host slows
both alike. ``compare_precisions`` makes one copy at a time and frees it before the next.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis.decoding.generate import Runner, check_count
from explorer.analysis.inference.quantization import PRECISIONS, QuantizedModel, precision, quantize
from explorer.core.errors import InputError
from explorer.core.limits import MAX_CHARS
from explorer.core.loading import LoadedModel
from explorer.core.tokens import token_label

DEFAULT_WINDOW = 512  # positions per forward pass where the model names no limit (T5)
MAX_REPEATS = 20


def _text_ids(lm: LoadedModel, text: str) -> list[int]:
    if not isinstance(text, str) or not text.strip():
        raise InputError("The text is empty: type or paste a few sentences.")
    if len(text) > MAX_CHARS:
        raise InputError(f"The text has {len(text):,} characters; at most {MAX_CHARS:,} are measured at once.")
    return lm.tokenizer(text, add_special_tokens=not lm.spec.adapter.continues_prompt)["input_ids"]


def _window(lm: LoadedModel) -> int:
    return min(lm.max_positions or DEFAULT_WINDOW, 1024)


@torch.no_grad()
def _logits(lm: LoadedModel, ids: list[int]) -> torch.Tensor:
    """(positions, vocab) float32 logits of one window: next-token (decoders), fill-in (encoders), or
    T5's decoder reading the same text as its target (its source and its shifted-right labels)."""
    x = torch.tensor([ids], device=lm.device)
    if lm.spec.adapter.is_encoder_decoder:
        start = torch.full((1, 1), lm.model.config.decoder_start_token_id, device=lm.device)
        out = lm.model(input_ids=x, decoder_input_ids=torch.cat([start, x[:, :-1]], dim=1))
    else:
        out = lm.model(input_ids=x)
    return out.logits[0].float()


def _windows(lm: LoadedModel, ids: list[int]) -> list[list[int]]:
    w = _window(lm)
    return [ids[i : i + w] for i in range(0, len(ids), w)]


# ---------------------------------------------------------------- predictions


@dataclass(frozen=True)
class NextTokenComparison:
    """The most probable next tokens after a text, float32 and the copy: the union of each one's top ``k``,
    ordered by float32's probability."""

    ids: tuple[int, ...]
    labels: tuple[str, ...]
    reference: np.ndarray  # (n,) float32 probabilities
    quantized: np.ndarray  # (n,)


def next_token_comparison(
    lm: LoadedModel, quantized: QuantizedModel, text: str, top_k: int = 10
) -> NextTokenComparison:
    """What float32 and the quantized copy predict after ``text`` (its last position)."""
    top_k = check_count(top_k, 1, 50, "number of tokens shown")
    ids = _text_ids(lm, text)[-_window(lm) :]
    p = torch.softmax(_logits(lm, ids)[-1], -1)
    q = torch.softmax(_logits(quantized.lm, ids)[-1], -1)
    union = sorted(set(p.topk(top_k).indices.tolist()) | set(q.topk(top_k).indices.tolist()), key=lambda i: -p[i])
    labels = tuple(token_label(lm.tokenizer, i) for i in union)
    return NextTokenComparison(tuple(union), labels, p[union].cpu().numpy(), q[union].cpu().numpy())


@dataclass(frozen=True)
class Agreement:
    """Per position of a held-out text: KL(p_float32 ‖ p_quantized) in nats and whether the top-1 tokens agree."""

    kl: np.ndarray  # (positions,)
    same_top1: np.ndarray  # (positions,) bool

    @property
    def mean_kl(self) -> float:
        return float(self.kl.mean())

    @property
    def top1_agreement(self) -> float:
        return float(self.same_top1.mean())


def agreement(lm: LoadedModel, quantized: QuantizedModel, text: str) -> Agreement:
    """KL divergence and top-1 agreement of the copy against float32 at every position of ``text``."""
    kl, same = [], []
    for ids in _windows(lm, _text_ids(lm, text)):
        logp = torch.log_softmax(_logits(lm, ids), -1)
        logq = torch.log_softmax(_logits(quantized.lm, ids), -1)
        kl.append((logp.exp() * (logp - logq)).sum(-1).clamp(min=0))  # (T,), rounding can dip below 0
        same.append(logp.argmax(-1) == logq.argmax(-1))
    return Agreement(torch.cat(kl).cpu().numpy(), torch.cat(same).cpu().numpy())


def bits_per_byte(lm: LoadedModel, text: str) -> float | None:
    """Held-out cross-entropy of a decoder in bits per UTF-8 byte of ``text`` (None: not a decoder).

    Every token is predicted: the text starts after the end-of-text token, and windows overlap by one token.
    """
    if not lm.spec.adapter.continues_prompt:
        return None
    ids = _text_ids(lm, text)
    start = lm.tokenizer.bos_token_id if lm.tokenizer.bos_token_id is not None else lm.tokenizer.eos_token_id
    ids = ([start] if start is not None else []) + ids
    w, nll = _window(lm), 0.0
    for i in range(0, len(ids) - 1, w - 1):
        chunk = ids[i : i + w]
        if len(chunk) < 2:
            break
        logits = _logits(lm, chunk)[:-1]
        nll += float(
            torch.nn.functional.cross_entropy(logits, torch.tensor(chunk[1:], device=lm.device), reduction="sum")
        )
    return nll / math.log(2) / len(text.encode("utf-8"))


# ---------------------------------------------------------------- speed


@dataclass(frozen=True)
class Latency:
    """Seconds per repeat, float32 (``reference``) and the copy timed in turn: one forward pass of the prompt,
    and the mean of a greedy generation's steps after the first (one new token each, KV cache on)."""

    forward_reference: np.ndarray
    forward_quantized: np.ndarray
    token_reference: np.ndarray | None  # None: the model does not generate
    token_quantized: np.ndarray | None

    @property
    def forward_ratio(self) -> float:
        """Median of the copy's time over float32's, pair by pair (> 1: the copy is slower)."""
        return float(np.median(self.forward_quantized / self.forward_reference))

    @property
    def token_ratio(self) -> float | None:
        if self.token_reference is None:
            return None
        return float(np.median(self.token_quantized / self.token_reference))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _time_forward(lm: LoadedModel, ids: list[int]) -> float:
    _sync(lm.device)
    start = time.perf_counter()
    _logits(lm, ids)
    _sync(lm.device)
    return time.perf_counter() - start


@torch.no_grad()
def _time_tokens(lm: LoadedModel, ids: list[int], new_tokens: int) -> float:
    runner = Runner(lm, ids, 1)
    steps = []
    for _ in range(new_tokens):
        _sync(lm.device)
        start = time.perf_counter()
        token = runner.next_logits().argmax(-1)
        _sync(lm.device)
        steps.append(time.perf_counter() - start)
        runner.append(token)
    return statistics.mean(steps[1:])  # step 0 reads the whole prompt


def measure_latency(
    lm: LoadedModel, quantized: QuantizedModel, prompt: str, new_tokens: int = 16, repeats: int = 5,
    should_stop: Callable[[], bool] | None = None,
) -> Latency:  # fmt: skip
    """Forward and per-token latency of float32 and the copy, alternating, after one untimed round."""
    repeats = check_count(repeats, 1, MAX_REPEATS, "number of repeats")
    new_tokens = check_count(new_tokens, 2, 256, "number of new tokens")
    ids = _text_ids(lm, prompt)[: _window(lm) - new_tokens]
    generates = lm.spec.adapter.can_generate and lm.spec.can("generate")
    times: dict[str, list[float]] = {"fr": [], "fq": [], "tr": [], "tq": []}
    for round_ in range(repeats + 1):
        if round_ > 1 and should_stop is not None and should_stop():
            break
        got = {"fr": _time_forward(lm, ids), "fq": _time_forward(quantized.lm, ids)}
        if generates:
            got |= {"tr": _time_tokens(lm, ids, new_tokens), "tq": _time_tokens(quantized.lm, ids, new_tokens)}
        if round_:  # round 0 warms both up
            for key, seconds in got.items():
                times[key].append(seconds)
    arr = {k: np.array(v) for k, v in times.items()}
    return Latency(arr["fr"], arr["fq"], arr["tr"] if generates else None, arr["tq"] if generates else None)


# ---------------------------------------------------------------- one precision, and all of them


@dataclass(frozen=True)
class PrecisionReport:
    """Everything measured for one precision (plain data; the copy itself is gone)."""

    name: str
    kind: str  # reference, cast, simulated, kernel
    note: str
    compute_dtype: str
    stored_bytes: int
    formula_bytes: int
    float32_bytes: int
    errors: dict[str, float]  # matrix name -> relative Frobenius error
    mean_kl: float  # nats, over the held-out text
    top1_agreement: float
    bits_per_byte: float | None
    bits_per_byte_float32: float | None
    latency: Latency

    @property
    def size_ratio(self) -> float:
        return self.stored_bytes / self.float32_bytes


def precision_report(
    lm: LoadedModel, name: str, heldout: str, prompt: str, new_tokens: int = 16, repeats: int = 5,
    should_stop: Callable[[], bool] | None = None, reference_bpb: float | None = None,
) -> PrecisionReport:  # fmt: skip
    """Quantize ``lm`` at ``name``, measure the copy against float32 and let the copy go."""
    q = quantize(lm, name)
    try:
        agree = agreement(lm, q, heldout)
        bpb = bits_per_byte(q.lm, heldout)
        ref_bpb = reference_bpb if reference_bpb is not None else bits_per_byte(lm, heldout)
        latency = measure_latency(lm, q, prompt, new_tokens, repeats, should_stop)
        return PrecisionReport(
            name, q.precision.kind, q.note, q.compute_dtype, q.stored_bytes, q.formula_bytes, q.float32_bytes,
            dict(q.errors), agree.mean_kl, agree.top1_agreement, bpb, ref_bpb, latency,
        )  # fmt: skip
    finally:
        del q


def compare_precisions(
    lm: LoadedModel, names: list[str] | None, heldout: str, prompt: str, new_tokens: int = 16, repeats: int = 5,
    progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None,
) -> list[PrecisionReport]:  # fmt: skip
    """``precision_report`` for each name in turn (all of ``PRECISIONS`` by default), one copy alive at a time.

    ``progress(fraction)`` after each precision; when ``should_stop()`` turns true, the reports finished so far.
    """
    names = list(PRECISIONS) if names is None else [precision(n).name for n in names]
    reference_bpb = bits_per_byte(lm, heldout)
    reports = []
    for i, name in enumerate(names):
        if should_stop is not None and should_stop():
            break
        reports.append(precision_report(lm, name, heldout, prompt, new_tokens, repeats, should_stop, reference_bpb))
        if progress is not None:
            progress((i + 1) / len(names))
    return reports
