"""Quantization: integer formats with known error bounds, sizes equal to the formula, float32 as the identity,
and the shared model untouched, on the bundled decoder and the tiny random models of every family."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.pytorch_utils import Conv1D

from explorer.analysis.inference.quantization import (
    PRECISIONS,
    budget_key,
    copy_bytes,
    quantize,
    quantize_int4,
    quantize_int8,
    quantize_within,
    weight_histogram,
    weight_matrices,
)
from explorer.analysis.inference.quantization_effects import (
    agreement,
    bits_per_byte,
    compare_precisions,
    measure_latency,
    next_token_comparison,
)
from explorer.analysis.lora.sessions import SessionBudget
from explorer.core.errors import InputError as CoreInputError
from explorer.core.loading import LoadedModel, load

HELDOUT = (Path(__file__).resolve().parents[1] / "assets" / "heldout" / "modern.txt").read_text(encoding="utf-8")
SHORT = HELDOUT[:600]
PROMPT = "On Monday morning the bus was late again, so I walked"


@pytest.fixture(scope="module")
def bundled():
    return load("tiny-gpt2")


def _matrix(rows=6, cols=70, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05
    w[1] = 0.0  # an all-zero row
    w[2, :5] = torch.tensor([0.9, -0.8, 0.0, 1e-6, -1e-6])  # outliers in one group
    w[3] += 0.2  # a row far from symmetric
    return w


# ---------------------------------------------------------------- integer formats


def test_int8_round_trip_is_within_half_a_step_per_element():
    w = _matrix()
    q = quantize_int8(w)
    codes = q.integers()
    assert codes.abs().max() <= 127 and q.codes.dtype == torch.int8
    err = (w - q.dequantize()).abs()
    assert torch.all(err <= q.step() / 2 * (1 + 1e-6) + 1e-12)
    # each non-zero row's largest weight lands exactly on ±127
    assert torch.equal(codes.abs().amax(dim=1)[[0, 2, 3, 4, 5]], torch.full((5,), 127, dtype=torch.int32))
    assert torch.equal(q.dequantize()[1], torch.zeros(70))


@pytest.mark.parametrize("group", [32, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_round_trip_is_within_half_a_step_per_element(group, symmetric):
    w = _matrix()
    q = quantize_int4(w, group, symmetric)
    codes = q.integers()
    low, high = (-8, 7) if symmetric else (0, 15)
    assert codes.min() >= low and codes.max() <= high
    assert q.scales.shape == (6, math.ceil(70 / group))
    err = (w - q.dequantize()).abs()
    assert torch.all(err <= q.step() / 2 * (1 + 1e-6) + 1e-12)
    assert torch.equal(q.dequantize()[1], torch.zeros(70))  # zero is exact in both formats
    # packed two codes to a byte
    assert q.codes.dtype == torch.uint8 and q.codes.numel() == math.ceil(6 * 70 / 2)


def test_int4_known_answer():
    w = torch.tensor([[0.7, -0.32, 0.1, 0.0]])
    q = quantize_int4(w, 4, True)  # s = 0.7 / 7 = 0.1
    assert q.integers().tolist() == [[7, -3, 1, 0]]
    assert torch.allclose(q.dequantize(), torch.tensor([[0.7, -0.3, 0.1, 0.0]]))
    a = quantize_int4(torch.tensor([[0.0, 0.3, 1.5, 0.6]]), 4, False)  # min 0, max 1.5: s = 0.1, z = 0
    assert a.zeros.tolist() == [[0]] and a.integers().tolist() == [[0, 3, 15, 6]]


def test_finer_groups_and_more_bits_round_less(bundled):
    errors = {name: sum(quantize(bundled, name).errors.values()) for name in ("int8", "int4-g32-sym", "int4-g128-sym")}
    assert errors["int8"] < errors["int4-g32-sym"] < errors["int4-g128-sym"]


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("name", list(PRECISIONS))
@pytest.mark.parametrize("model", ["gpt2", "llama", "bert", "t5"])
def test_stored_bytes_equal_the_formula(tiny, model, name):
    q = quantize(tiny[model], name)
    assert q.stored_bytes == q.formula_bytes
    assert q.nbytes <= copy_bytes(tiny[model])


def test_sizes_by_hand_on_the_bundled_decoder(bundled):
    matrices = weight_matrices(bundled.model)
    shapes = [m.weight.shape for m, _ in matrices.values()]
    quantized = sum(r * c for r, c in shapes)
    rest = sum(p.numel() for p in bundled.model.parameters()) - quantized
    assert (
        quantize(bundled, "int8").stored_bytes
        == quantized + 4 * sum((c if t else r) for (m, t), (r, c) in zip(matrices.values(), shapes)) + 4 * rest
    )  # one float32 scale per output channel
    groups = sum((c if t else r) * math.ceil((r if t else c) / 32) for (m, t), (r, c) in zip(matrices.values(), shapes))
    assert (
        quantize(bundled, "int4-g32-asym").stored_bytes
        == sum(math.ceil(r * c / 2) for r, c in shapes) + 5 * groups + 4 * rest
    )
    assert quantize(bundled, "float16").stored_bytes * 2 == bundled.nbytes
    assert quantize(bundled, "float32").stored_bytes == bundled.nbytes


# ---------------------------------------------------------------- the copy and the shared model


def test_the_shared_model_is_untouched(bundled):
    before = {k: v.clone() for k, v in bundled.model.state_dict().items()}
    kinds = [type(m) for m in bundled.model.modules()]
    for name in PRECISIONS:
        quantize(bundled, name)
    after = bundled.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [type(m) for m in bundled.model.modules()] == kinds and Conv1D in kinds
    assert all(p.dtype == torch.float32 for p in bundled.model.parameters())


def test_float32_quantization_is_the_identity(bundled):
    q = quantize(bundled, "float32")
    agree = agreement(bundled, q, SHORT)
    assert agree.mean_kl == 0.0 and agree.top1_agreement == 1.0 and agree.kl.size > 100
    assert set(q.errors.values()) == {0.0}
    assert bits_per_byte(q.lm, SHORT) == bits_per_byte(bundled, SHORT)


def test_quantized_copies_move_the_predictions_by_their_rounding(bundled):
    kl = {name: agreement(bundled, quantize(bundled, name), SHORT).mean_kl for name in ("int8", "int4-g128-sym")}
    assert 0 < kl["int8"] < kl["int4-g128-sym"]
    dynamic = quantize(bundled, "int8-dynamic")
    linear = [m for m in dynamic.lm.model.modules() if isinstance(m, torch.nn.Linear)]
    assert not any(isinstance(m, Conv1D) for m in dynamic.lm.model.modules()) and not linear  # all run the kernel
    assert len(dynamic.errors) == 4 * 4 + 1  # four Conv1D per block, and the head
    agree = agreement(bundled, dynamic, SHORT)
    assert 0 < agree.mean_kl < 0.05 and agree.top1_agreement > 0.9


def test_a_budget_bounds_the_copies(bundled):
    budget = SessionBudget(max_bytes=int(1.4 * bundled.nbytes))
    q = quantize_within(budget, "alice", bundled, "float16")
    assert budget.held == q.nbytes == bundled.nbytes // 2
    with pytest.raises(CoreInputError):
        quantize_within(budget, "bob", bundled, "int8")  # a float32 copy would not fit beside alice's
    assert budget.held == q.nbytes
    budget.release(budget_key("alice"))
    assert budget.held == 0


# ---------------------------------------------------------------- what the views show


def test_histogram_counts_every_weight_before_and_after(bundled):
    q = quantize(bundled, "int4-g128-sym")
    name = "transformer.h.0.attn.c_attn.weight"
    h = weight_histogram(bundled, q, name, bins=40)
    n = bundled.model.get_parameter(name).numel()
    assert h.before.sum() == h.after.sum() == n and h.edges.size == 41
    rows, groups = 3 * 256, 256 // 128  # Conv1D (in 256, out 768): 768 output channels × 2 groups
    assert h.distinct_after <= 16 * rows * groups and h.relative_error == q.errors[name]
    with pytest.raises(CoreInputError):
        weight_histogram(bundled, q, "transformer.h.0.ln_1.weight")


def test_next_token_comparison_orders_by_float32(bundled):
    cmp = next_token_comparison(bundled, quantize(bundled, "int8"), PROMPT, top_k=5)
    assert len(cmp.ids) >= 5 and np.all(np.diff(cmp.reference) <= 0)
    assert np.allclose(cmp.reference, cmp.quantized, atol=0.02)


def test_bits_per_byte_of_a_uniform_model_is_log2_vocab_per_token(bundled):
    """Zero logits everywhere: every token costs log2(V) bits, and every token of the text is predicted once."""
    model = copy.deepcopy(bundled.model)
    model.transformer.ln_f.weight.data.zero_()
    model.transformer.ln_f.bias.data.zero_()
    uniform = LoadedModel(bundled.spec, model, bundled.tokenizer, bundled.device)
    tokens = len(bundled.tokenizer(HELDOUT)["input_ids"])  # longer than one 512-position window
    assert tokens > 1024
    expected = tokens * math.log2(model.config.vocab_size) / len(HELDOUT.encode("utf-8"))
    assert bits_per_byte(uniform, HELDOUT) == pytest.approx(expected, rel=1e-5)
    assert bits_per_byte(bundled, HELDOUT) < 0.7 * expected  # the trained model: 2.04 against 3.21


def test_other_families_are_compared_where_it_applies(tiny):
    for name in ("bert", "t5", "llama"):
        q = quantize(tiny[name], "int4-g32-asym")
        agree = agreement(tiny[name], q, SHORT)
        assert agree.kl.size > 10 and 0 < agree.mean_kl and 0 < agree.top1_agreement <= 1
    assert bits_per_byte(tiny["bert"], SHORT) is None and bits_per_byte(tiny["t5"], SHORT) is None


def test_latency_pairs_float32_with_the_copy(tiny):
    latency = measure_latency(tiny["gpt2"], quantize(tiny["gpt2"], "bfloat16"), PROMPT, new_tokens=4, repeats=2)
    assert latency.forward_reference.shape == latency.token_quantized.shape == (2,)
    assert latency.forward_ratio > 0 and latency.token_ratio > 0
    encoder = measure_latency(tiny["bert"], quantize(tiny["bert"], "int8"), PROMPT, new_tokens=4, repeats=1)
    assert encoder.token_ratio is None and encoder.forward_quantized.shape == (1,)


def test_compare_precisions_reports_and_stops(tiny):
    seen = []
    reports = compare_precisions(tiny["gpt2"], ["float32", "int8"], SHORT, PROMPT, new_tokens=3, repeats=1,
                                 progress=seen.append)  # fmt: skip
    assert [r.name for r in reports] == ["float32", "int8"] and seen == [0.5, 1.0]
    assert reports[0].mean_kl == 0 and reports[0].size_ratio == 1 and reports[1].size_ratio < 0.4
    assert reports[1].bits_per_byte_float32 == reports[0].bits_per_byte
    assert compare_precisions(tiny["gpt2"], None, SHORT, PROMPT, should_stop=lambda: True) == []


def test_bad_requests_get_a_sentence(tiny):
    with pytest.raises(CoreInputError, match="Pick a precision"):
        quantize(tiny["gpt2"], "int3")
    with pytest.raises(CoreInputError, match="empty"):
        agreement(tiny["gpt2"], quantize(tiny["gpt2"], "float32"), "  ")
