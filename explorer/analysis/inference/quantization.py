"""Quantization, measured on a copy: the loaded model's weights stored in fewer bits.

``quantize(lm, name)`` deep-copies the model (the shared one is never touched) and stores its weight
matrices at one precision of ``PRECISIONS``:

===============  ===========  ================================================================================
precision        how it runs  what is stored
===============  ===========  ================================================================================
float32          reference    the weights as loaded
float16          cast         every float tensor as float16; the forward runs in float16 on torch's kernels
bfloat16         cast         every float tensor as bfloat16; the forward runs in bfloat16 on torch's kernels
int8             simulated    each output channel's weights as int8, ``w ≈ q · s`` with one float32 scale s
int4-g32/g128    simulated    groups of 32 or 128 input weights as 4-bit integers, two to a byte, one float32
  -sym / -asym                scale per group; asymmetric groups add an 8-bit zero point z: ``w ≈ (q − z) · s``
int8-dynamic     kernel       torch's ``quantize_dynamic``: nn.Linear weights as int8 (per channel), activations
                              quantized on the fly; a real int8 matrix-multiply kernel
===============  ===========  ================================================================================

*Simulated* means the integers are really computed and packed (their bytes are what the size counts), but the
copy then runs on the weights rounded back to float32: the answers are the quantized model's, the speed is not.
The matrices quantized are those of every linear layer (``nn.Linear`` and GPT-2's ``Conv1D``) and the token
embedding (which GPT-2 ties to its output head); position embeddings, norms and biases stay float32.
For ``int8-dynamic``, GPT-2's ``Conv1D`` layers (a linear layer with its weight stored transposed) are first
turned into ``nn.Linear``, so the kernel covers them too; without that it would cover only the output head.

Sizes: ``stored_bytes`` adds up the tensors as stored; ``formula_bytes`` is bits × weights + scales and zero
points, + 32 bits for everything left in float32. The two agree (a test says so).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers.pytorch_utils import Conv1D

from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel

SCALE_BITS = 32  # scales are stored as float32, so a rounded weight is never more than half a step off
ZERO_BITS = 8  # asymmetric zero points are stored one to a byte
KERNEL_SCALE_BITS = 64 + 64  # torch's per-channel int8 weights keep a float64 scale and an int64 zero point


@dataclass(frozen=True)
class Precision:
    """One way to store the weights; ``kind`` is ``reference``, ``cast``, ``simulated`` or ``kernel``."""

    name: str
    kind: str
    bits: int
    group: int | None = None  # input weights that share a scale (None: a whole output channel)
    symmetric: bool = True
    dtype: torch.dtype | None = None  # cast precisions

    @property
    def label(self) -> str:
        how = {"reference": "as loaded", "cast": "weights cast, computed in this dtype",
               "simulated": "simulated: integers stored, weights rounded back to float32 to run",
               "kernel": "real int8 kernel (torch dynamic quantization)"}[self.kind]  # fmt: skip
        return f"{self.name} ({how})"


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in [
        Precision("float32", "reference", 32, dtype=torch.float32),
        Precision("float16", "cast", 16, dtype=torch.float16),
        Precision("bfloat16", "cast", 16, dtype=torch.bfloat16),
        Precision("int8", "simulated", 8),
        Precision("int4-g32-sym", "simulated", 4, 32, True),
        Precision("int4-g32-asym", "simulated", 4, 32, False),
        Precision("int4-g128-sym", "simulated", 4, 128, True),
        Precision("int4-g128-asym", "simulated", 4, 128, False),
        Precision("int8-dynamic", "kernel", 8),
    ]
}


def precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise InputError(f"Pick a precision: {', '.join(PRECISIONS)}.")
    return PRECISIONS[name]


# ---------------------------------------------------------------- integer formats (pure tensor functions)


@dataclass(frozen=True)
class QuantizedMatrix:
    """A (rows, cols) matrix as integers: ``codes`` packed (int8, or two 4-bit codes per uint8), ``scales``
    (rows, groups) float32 and, for asymmetric formats, ``zeros`` (rows, groups) uint8. Rows are output channels."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    shape: tuple[int, int]
    bits: int
    group: int  # columns per scale (cols for per-channel int8)

    @property
    def nbytes(self) -> int:
        parts = [self.codes, self.scales] + ([self.zeros] if self.zeros is not None else [])
        return sum(t.numel() * t.element_size() for t in parts)

    @property
    def formula_bytes(self) -> int:
        """bits × weights (rounded up to whole bytes) + 32 bits per scale + 8 bits per zero point."""
        rows, cols = self.shape
        groups = rows * math.ceil(cols / self.group)
        zeros = groups if self.zeros is not None else 0
        return math.ceil(self.bits * rows * cols / 8) + groups * SCALE_BITS // 8 + zeros * ZERO_BITS // 8

    def integers(self) -> torch.Tensor:
        """The integer codes (rows, cols) as int32: −127…127 (int8), −8…7 (int4 symmetric), 0…15 (asymmetric)."""
        rows, cols = self.shape
        if self.bits == 8:
            return self.codes.to(torch.int32)
        nibbles = torch.stack([self.codes & 15, self.codes >> 4], dim=-1).flatten()[: rows * cols]
        codes = nibbles.to(torch.int32).reshape(rows, cols)
        return codes - 8 if self.zeros is None else codes

    def step(self) -> torch.Tensor:
        """Each weight's scale (rows, cols): the rounding step of its group."""
        return self.scales.repeat_interleave(self.group, dim=1)[:, : self.shape[1]]

    def dequantize(self) -> torch.Tensor:
        """The float32 matrix these integers stand for: ``q · s`` or ``(q − z) · s``."""
        q = self.integers().float()
        if self.zeros is not None:
            q = q - self.zeros.float().repeat_interleave(self.group, dim=1)[:, : self.shape[1]]
        return q * self.step()


def _grouped(w: torch.Tensor, group: int) -> torch.Tensor:
    """(rows, cols) -> (rows, groups, group), the last group padded with zeros."""
    rows, cols = w.shape
    pad = -cols % group
    return torch.nn.functional.pad(w, (0, pad)).reshape(rows, (cols + pad) // group, group)


def quantize_int8(w: torch.Tensor) -> QuantizedMatrix:
    """Symmetric int8 per output channel (row): ``s = max|w| / 127``, ``q = round(w / s)``, so |w − q·s| ≤ s/2."""
    w = w.detach().float()
    scales = w.abs().amax(dim=1, keepdim=True) / 127  # (rows, 1)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # an all-zero row: any scale is exact
    codes = torch.round(w / scales).clamp(-127, 127).to(torch.int8)
    return QuantizedMatrix(codes, scales, None, tuple(w.shape), 8, w.shape[1])


def quantize_int4(w: torch.Tensor, group: int, symmetric: bool) -> QuantizedMatrix:
    """4-bit codes in groups of ``group`` input weights, each group with its own scale.

    Symmetric: ``s = max|w| / 7``, ``q = round(w / s)`` in −8…7. Asymmetric: ``s = (max − min) / 15``,
    ``z = round(−min / s)``, ``q = round(w / s) + z`` in 0…15. Either way |w − dequantized| ≤ s/2.
    """
    w = w.detach().float()
    rows, cols = w.shape
    g = _grouped(w, group)  # (rows, groups, group)
    if symmetric:
        scales = g.abs().amax(dim=2) / 7
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        codes = torch.round(g / scales[..., None]).clamp(-8, 7) + 8  # stored 0…15
        zeros = None
    else:
        low, high = g.amin(dim=2).clamp(max=0), g.amax(dim=2).clamp(min=0)  # zero stays exactly representable
        scales = (high - low) / 15
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        zeros = torch.round(-low / scales).clamp(0, 15)
        codes = (torch.round(g / scales[..., None]) + zeros[..., None]).clamp(0, 15)
        zeros = zeros.to(torch.uint8)
    flat = codes.reshape(rows, -1)[:, :cols].flatten().to(torch.uint8)
    flat = torch.nn.functional.pad(flat, (0, flat.numel() % 2))
    packed = flat[0::2] | (flat[1::2] << 4)  # two codes to a byte, low nibble first
    return QuantizedMatrix(packed, scales, zeros, (rows, cols), 4, group)


def quantize_matrix(w: torch.Tensor, p: Precision) -> QuantizedMatrix:
    return quantize_int8(w) if p.bits == 8 else quantize_int4(w, p.group, p.symmetric)


# ---------------------------------------------------------------- which matrices


def weight_matrices(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, bool]]:
    """name -> (module, transposed) for every matrix quantized: linear layers and the token embedding.

    ``transposed``: GPT-2's ``Conv1D`` stores (in, out), so its output channels are columns. A weight
    tied to another (GPT-2's head and embedding) is listed once, under its first name.
    """
    found, seen = {}, set()
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    for name, module in model.named_modules():
        is_matrix = isinstance(module, (torch.nn.Linear, Conv1D)) or module is embedding
        weight = getattr(module, "weight", None)
        if is_matrix and isinstance(weight, torch.Tensor) and weight.dim() == 2 and id(weight) not in seen:
            seen.add(id(weight))
            found[f"{name}.weight"] = (module, isinstance(module, Conv1D))
    return found


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _held_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return list(model.parameters()) + list(model.buffers())


# ---------------------------------------------------------------- the copy


@dataclass
class QuantizedModel:
    """A private copy of a model at one precision, with what it costs and what rounding did to each matrix.

    ``lm`` wraps the copy like the shared model (same spec and tokenizer), so every analysis runs on it.
    ``errors``: name -> relative Frobenius error ‖W − Ŵ‖ / ‖W‖ of each matrix. ``nbytes`` is the memory the
    copy holds while it lives (simulated precisions run on float32 weights), for a session budget.
    """

    precision: Precision
    lm: LoadedModel
    stored_bytes: int
    formula_bytes: int
    float32_bytes: int
    errors: dict[str, float]
    compute_dtype: str
    note: str
    _reconstructed: dict[str, Callable[[], torch.Tensor]] = field(repr=False, default_factory=dict)

    @property
    def size_ratio(self) -> float:
        return self.stored_bytes / self.float32_bytes

    @property
    def nbytes(self) -> int:
        return _tensor_bytes(_held_tensors(self.lm.model)) + sum(_dynamic_bytes(m) for m in _dynamic(self.lm.model))

    @property
    def matrix_names(self) -> list[str]:
        return list(self._reconstructed)

    def reconstructed(self, name: str) -> torch.Tensor:
        """The matrix ``name`` as the copy computes with it, float32, in the original model's orientation."""
        if name not in self._reconstructed:
            raise InputError(f"No weight matrix '{name}' was quantized; pick one of {len(self._reconstructed)}.")
        return self._reconstructed[name]()


def copy_bytes(lm: LoadedModel) -> int:
    """What making a quantized copy of ``lm`` may hold at its peak (a float32 deep copy): reserve this first."""
    return lm.nbytes


def _relative_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    norm = torch.linalg.norm(w.float())
    return float(torch.linalg.norm(w.float() - w_hat.float()) / norm) if norm > 0 else 0.0


def _dynamic(model: torch.nn.Module) -> list[torch.nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return [m for m in model.modules() if isinstance(m, DynamicLinear)]


def _dynamic_bytes(module) -> int:
    """Bytes of one dynamic int8 layer: int8 weights, a float64 scale and an int64 zero point per channel, bias."""
    w, b = module.weight(), module.bias()
    return _tensor_bytes(
        [w.int_repr(), w.q_per_channel_scales(), w.q_per_channel_zero_points(), *([b] if b is not None else [])]
    )


def _oriented(w: torch.Tensor, transposed: bool) -> torch.Tensor:
    return w.t() if transposed else w


def _as_linear(conv: Conv1D) -> torch.nn.Linear:
    """A ``Conv1D`` (x @ W + b, W of shape (in, out)) as the ``nn.Linear`` computing the same product."""
    n_in, n_out = conv.weight.shape
    linear = torch.nn.Linear(n_in, n_out, bias=conv.bias is not None)
    linear.weight.data = conv.weight.data.t().contiguous()
    if conv.bias is not None:
        linear.bias.data = conv.bias.data.clone()
    return linear


def _replace(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _cast(lm: LoadedModel, p: Precision, model: torch.nn.Module) -> tuple:
    originals = weight_matrices(lm.model)
    model.to(p.dtype)
    copies = weight_matrices(model)
    recon = {name: (lambda m=m: m.weight.detach().float()) for name, (m, _) in copies.items()}
    errors = {name: _relative_error(m.weight, recon[name]()) for name, (m, _) in originals.items()}
    stored = _tensor_bytes(_held_tensors(model))
    formula = sum(t.numel() * (p.bits if t.is_floating_point() else t.element_size() * 8) for t in _held_tensors(model))
    return errors, recon, stored, formula // 8, ""


def _simulated(lm: LoadedModel, p: Precision, model: torch.nn.Module) -> tuple:
    errors, recon, stored, formula, done = {}, {}, 0, 0, set()
    for name, (module, transposed) in weight_matrices(model).items():
        w = module.weight.detach()
        q = quantize_matrix(w.t() if transposed else w, p)  # rows = output channels
        w_hat = q.dequantize()
        w_hat = w_hat.t() if transposed else w_hat
        errors[name] = _relative_error(w, w_hat)
        module.weight.data.copy_(w_hat)  # the copy computes with the rounded weights (simulated)
        recon[name] = lambda m=module: m.weight.detach().float()
        stored, formula = stored + q.nbytes, formula + q.formula_bytes
        done.add(id(module.weight))
    rest = [t for t in _held_tensors(model) if id(t) not in done]
    rest_bytes = _tensor_bytes(rest)
    note = "simulated: the integers are computed and packed, then rounded back to float32 to run (no int kernel)"
    return errors, recon, stored + rest_bytes, formula + rest_bytes, note


def _kernel(lm: LoadedModel, p: Precision, model: torch.nn.Module) -> tuple:
    import torch.ao.quantization as tq

    converted = [name for name, m in model.named_modules() if isinstance(m, Conv1D)]
    for name in converted:
        _replace(model, name, _as_linear(model.get_submodule(name)))
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao (not installed here)
        warnings.simplefilter("ignore")
        model = tq.quantize_dynamic(model, {torch.nn.Linear: tq.per_channel_dynamic_qconfig}, dtype=torch.qint8)
    dynamic = {id(m) for m in _dynamic(model)}
    errors, recon, stored, formula = {}, {}, 0, 0
    for name, module in model.named_modules():
        if id(module) not in dynamic:
            continue
        key, transposed = f"{name}.weight", name in converted
        recon[key] = lambda m=module, t=transposed: _oriented(m.weight().dequantize(), t)
        errors[key] = _relative_error(lm.model.get_parameter(key), recon[key]())
        w, b = module.weight(), module.bias()
        stored += _dynamic_bytes(module)
        formula += w.numel() + w.shape[0] * KERNEL_SCALE_BITS // 8 + (b.numel() * 4 if b is not None else 0)
    rest = _tensor_bytes(_held_tensors(model))
    note = (
        f"real int8 kernel on {len(recon)} nn.Linear layers"
        + (f", {len(converted)} of them GPT-2 Conv1D layers turned into nn.Linear first" if converted else "")
        + "; embeddings, norms and biases stay float32; activations are quantized to int8 on the fly"
    )
    return errors, recon, stored + rest, formula + rest, note, model


def quantize(lm: LoadedModel, name: str) -> QuantizedModel:
    """A deep copy of ``lm`` at precision ``name`` (see ``PRECISIONS``); ``lm`` itself is never modified."""
    p = precision(name)
    if p.kind == "kernel" and lm.device.type != "cpu":
        raise InputError("torch's dynamic int8 kernels run on the CPU only; load the model on the CPU to try them.")
    model = copy.deepcopy(lm.model)
    if p.kind in ("reference", "cast"):
        errors, recon, stored, formula, note = _cast(lm, p, model)
    elif p.kind == "simulated":
        errors, recon, stored, formula, note = _simulated(lm, p, model)
    else:
        errors, recon, stored, formula, note, model = _kernel(lm, p, model)
    model.eval().requires_grad_(False)
    copy_lm = LoadedModel(replace(lm.spec, key=f"{lm.spec.key} ({p.name})"), model, lm.tokenizer, lm.device)
    compute = _compute_dtype(p, lm.device)
    if p.kind == "cast" and not note:
        note = f"weights cast to {p.name}; the forward runs in {compute} on torch's {lm.device.type} kernels"
        if p.name == "float16" and lm.spec.adapter.is_encoder_decoder:
            note += " (T5 models are known to overflow in float16)"
    return QuantizedModel(p, copy_lm, stored, formula, lm.nbytes, errors, compute, note, recon)


def _compute_dtype(p: Precision, device: torch.device) -> str:
    if p.kind == "cast" or p.kind == "reference":
        return p.name
    if p.kind == "kernel":
        return "int8 matmul (activations quantized per call), float32 elsewhere"
    return "float32 (weights rounded to the integer grid)"


# ---------------------------------------------------------------- a matrix before and after


@dataclass(frozen=True)
class WeightHistogram:
    """One matrix's weights before and after, counted in the same ``bins + 1`` edges."""

    name: str
    edges: np.ndarray
    before: np.ndarray  # counts
    after: np.ndarray
    distinct_after: int  # distinct values in the rounded matrix (a 4-bit grid has few per group)
    relative_error: float


def weight_histogram(lm: LoadedModel, quantized: QuantizedModel, name: str, bins: int = 60) -> WeightHistogram:
    """The histogram of matrix ``name`` in ``lm`` and in its quantized copy."""
    if not 2 <= int(bins) <= 400:
        raise InputError("The number of bins must be from 2 to 400.")
    after = quantized.reconstructed(name).cpu().numpy().ravel()
    before = lm.model.get_parameter(name).detach().float().cpu().numpy().ravel()
    low, high = float(min(before.min(), after.min())), float(max(before.max(), after.max()))
    edges = np.linspace(low, high if high > low else low + 1e-6, int(bins) + 1)
    return WeightHistogram(
        name, edges, np.histogram(before, edges)[0], np.histogram(after, edges)[0],
        int(np.unique(after).size), quantized.errors.get(name, _relative_error(torch.from_numpy(before), torch.from_numpy(after))),
    )  # fmt: skip


# ---------------------------------------------------------------- a session's copy, within a memory budget


def budget_key(owner: str) -> str:
    return f"{owner}/quantized"


def quantize_within(budget, owner: str, lm: LoadedModel, name: str) -> QuantizedModel:
    """``owner``'s quantized copy of ``lm``, its memory counted in ``budget`` (a ``SessionBudget``, such as the
    one bounding LoRA copies) under ``budget_key(owner)``: ``copy_bytes`` while it is made, then what it holds.
    A refused reservation raises ``InputError`` before any copy is made; ``budget.release(budget_key(owner))``
    frees the count when the copy is dropped."""
    key = budget_key(owner)
    budget.reserve(key, copy_bytes(lm))
    try:
        quantized = quantize(lm, name)
    except BaseException:
        budget.release(key)
        raise
    budget.reserve(key, quantized.nbytes)  # never more than was reserved for the making
    return quantized
