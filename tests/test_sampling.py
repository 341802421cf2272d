"""Our logits transforms against transformers' own processors, plus top-p sets, entropy and settings checks."""

import doctest
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from explorer.analysis.decoding import sampling
from explorer.analysis.decoding.sampling import (
    DecodingSettings,
    entropy_bits,
    min_p_filter,
    next_token_distribution,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
    top_p_set,
    transform,
)
from explorer.core.errors import InputError
from explorer.core.run import run

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Logits drawn from a small pool give ties; the extremes test overflow and -inf handling.
POOL = [0.0, 1.0, -1.0, 2.5, 2.5001, -30.0, 1e4, -1e4, 88.0, -float("inf")]
logit_values = st.one_of(st.sampled_from(POOL), st.floats(-50, 50, width=32))


@st.composite
def logits_and_ids(draw, batch: int = 0):
    vocab = draw(st.integers(2, 40))
    rows = []
    for _ in range(max(batch, 1)):
        row = draw(st.lists(logit_values, min_size=vocab, max_size=vocab))
        assume(any(math.isfinite(x) for x in row))  # a row of -inf has no distribution
        rows.append(row)
    previous = draw(st.lists(st.integers(0, vocab - 1), min_size=0, max_size=12))
    logits = torch.tensor(rows if batch else rows[0], dtype=torch.float32)
    ids = torch.tensor([previous] * max(batch, 1) if batch else previous, dtype=torch.long)
    return logits, ids


decoding_settings = st.builds(
    DecodingSettings,
    temperature=st.one_of(st.just(1.0), st.floats(0.05, 5.0)),
    top_k=st.one_of(st.just(0), st.integers(1, 45)),
    top_p=st.one_of(st.just(1.0), st.floats(0.01, 1.0)),
    min_p=st.one_of(st.just(0.0), st.floats(0.0, 0.99)),
    repetition_penalty=st.one_of(st.just(1.0), st.floats(0.1, 10.0)),
)


def transformers_chain(s: DecodingSettings) -> LogitsProcessorList:
    """The processors generate builds for these settings, in generate's order (see _get_logits_processor)."""
    chain = LogitsProcessorList()
    if s.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(float(s.repetition_penalty)))
    if s.temperature != 1.0:
        chain.append(TemperatureLogitsWarper(float(s.temperature)))
    if s.top_k:
        chain.append(TopKLogitsWarper(top_k=s.top_k, min_tokens_to_keep=1))
    if s.top_p < 1.0:
        chain.append(TopPLogitsWarper(top_p=s.top_p, min_tokens_to_keep=1))
    if s.min_p > 0:
        chain.append(MinPLogitsWarper(min_p=s.min_p, min_tokens_to_keep=1))
    return chain


def assert_identical(ours: torch.Tensor, theirs: torch.Tensor):
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


# ------------------------------------------------------------------ each processor alone


@PROPERTY
@given(logits_and_ids(), st.floats(0.1, 10.0))
def test_repetition_penalty_equals_transformers(case, penalty):
    logits, ids = case
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(ids[None], logits[None].clone())[0]
    assert_identical(repetition_penalty(logits, ids, penalty), theirs)


@PROPERTY
@given(logits_and_ids(), st.integers(1, 45))
def test_top_k_equals_transformers_ties_included(case, k):
    logits, _ = case
    assert_identical(top_k_filter(logits, k), TopKLogitsWarper(k)(None, logits[None])[0])


@PROPERTY
@given(logits_and_ids(), st.floats(0.0, 1.0, exclude_max=True))
def test_top_p_equals_transformers(case, p):
    """(generate adds no top-p processor at p = 1, which would drop tokens of probability exactly 0.)"""
    logits, _ = case
    assert_identical(top_p_filter(logits, p), TopPLogitsWarper(p)(None, logits[None])[0])


@PROPERTY
@given(logits_and_ids(), st.floats(0.0, 1.0))
def test_min_p_equals_transformers(case, min_p):
    logits, _ = case
    assert_identical(min_p_filter(logits, min_p), MinPLogitsWarper(min_p)(None, logits[None])[0])


# ------------------------------------------------------------------ the whole chain


@PROPERTY
@given(logits_and_ids(), decoding_settings)
def test_transform_chain_equals_transformers_chain(case, s):
    logits, ids = case
    stages = transform(logits, ids, s)
    theirs = transformers_chain(s)(ids[None], logits[None].clone())[0]
    assert_identical(stages[-1].logits, theirs)
    assert stages[0].name == "model"
    assert [st.name for st in stages[1:]] == [
        name
        for name, on in [
            ("repetition penalty", s.repetition_penalty != 1.0 and len(ids) > 0),
            ("temperature", s.temperature != 1.0),
            ("top-k", s.top_k != 0),
            ("top-p", s.top_p < 1.0),
            ("min-p", s.min_p > 0),
        ]
        if on
    ]
    for before, after in zip(stages, stages[1:]):  # filters only ever remove tokens
        assert not (after.kept_mask & ~before.kept_mask).any()
    assert stages[-1].kept_mask.any()  # at least one token always survives


@settings(max_examples=100, deadline=None)
@given(logits_and_ids(batch=3), decoding_settings)
def test_transform_works_on_batches(case, s):
    logits, ids = case
    theirs = transformers_chain(s)(ids, logits.clone())
    assert_identical(transform(logits, ids, s)[-1].logits, theirs)


def test_chain_order_is_generates_own(tiny):
    """generate's processor list for our settings has the classes, in the order, our stages follow."""
    model = tiny["gpt2"].model
    s = DecodingSettings(temperature=0.7, top_k=20, top_p=0.8, min_p=0.05, repetition_penalty=1.3)
    config = GenerationConfig(**s.generate_kwargs())
    chain = model._get_logits_processor(generation_config=config, input_ids_seq_length=4, device="cpu")
    assert [type(p) for p in chain] == [type(p) for p in transformers_chain(s)]


@pytest.fixture(scope="module")
def gpt2_logits(tiny):
    trace = run(tiny["gpt2"], "To be, or not to be: that is the question.")
    return torch.from_numpy(np.array(trace.logits)), [t.id for t in trace.tokens["input"]]


@pytest.mark.parametrize(
    "s",
    [
        DecodingSettings(),
        DecodingSettings(temperature=0.3, top_k=5),
        DecodingSettings(temperature=1.7, top_p=0.5, repetition_penalty=1.5),
        DecodingSettings(top_k=50, top_p=0.95, min_p=0.1, repetition_penalty=0.7),
        DecodingSettings(repetition_penalty=2.0, greedy=True),
    ],
)
def test_transform_equals_generates_processors_on_real_logits(tiny, gpt2_logits, s):
    logits, ids = gpt2_logits
    config = GenerationConfig(**s.generate_kwargs())
    chain = tiny["gpt2"].model._get_logits_processor(generation_config=config, input_ids_seq_length=1, device="cpu")
    for t in range(1, len(ids)):
        previous = torch.tensor(ids[:t])
        theirs = chain(previous[None], logits[t - 1][None].clone())[0]
        assert_identical(transform(logits[t - 1], previous, s)[-1].logits, theirs)


# ------------------------------------------------------------------ top-p sets


def test_top_p_set_docstring_examples():
    assert doctest.testmod(sampling, raise_on_error=False).failed == 0


@PROPERTY
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60), st.floats(0.001, 1.0))
def test_top_p_set_is_the_smallest_set_reaching_p(weights, p):
    probs = np.asarray(weights, dtype=np.float64)
    assume(probs.sum() > 0)
    probs = probs / probs.sum()
    chosen = top_p_set(probs, p)
    mass = probs[chosen].sum()
    assert mass >= p - 1e-9  # it reaches p
    assert probs[chosen[:-1]].sum() < p - 1e-9  # one token fewer does not
    outside = np.setdiff1d(np.arange(len(probs)), chosen)
    if len(outside):  # and it holds the most probable tokens
        assert probs[chosen].min() >= probs[outside].max()


@PROPERTY
@given(st.lists(st.floats(-8, 8), min_size=2, max_size=60), st.floats(0.05, 0.99))
def test_top_p_filter_keeps_the_top_p_set(values, p):
    logits = torch.tensor(values, dtype=torch.float32)
    probs = torch.softmax(logits.double(), -1).numpy()
    totals = np.cumsum(np.sort(probs)[::-1])
    assume(np.abs(totals - p).min() > 1e-4)  # away from float32 rounding at the boundary
    assume(len(np.unique(probs)) == len(probs))  # ties at the boundary are order-dependent
    kept = set(torch.nonzero(top_p_filter(logits, p) > -math.inf).flatten().tolist())
    assert kept == set(top_p_set(probs, p).tolist())


def test_top_p_set_known_answer():
    assert top_p_set([0.05, 0.6, 0.1, 0.25], 0.8).tolist() == [1, 3]
    assert top_p_set([0.05, 0.6, 0.1, 0.25], 1.0).tolist() == [1, 3, 2, 0]
    with pytest.raises(InputError):
        top_p_set([0.5, 0.5], 0.0)


# ------------------------------------------------------------------ temperature, entropy, distributions


def test_small_temperature_gives_argmax_all_the_mass(gpt2_logits):
    logits, _ = gpt2_logits
    for row in logits:
        top2 = torch.topk(row, 2).values
        gap = float(top2[0] - top2[1])
        t = max(gap / 50, 1e-6)  # exp(-50): the runner-up is negligible
        final = transform(row, None, DecodingSettings(temperature=t))[-1]
        assert float(final.probs.max()) > 0.999
        assert int(final.probs.argmax()) == int(row.argmax())
    sharper = [transform(logits[0], None, DecodingSettings(temperature=t))[-1].probs.max() for t in (2, 1, 0.5, 0.1)]
    assert all(a < b for a, b in zip(sharper, sharper[1:]))


def test_entropy_bits_known_answers():
    assert entropy_bits(torch.full((8,), 1 / 8)) == pytest.approx(3.0)
    assert entropy_bits(torch.tensor([0.0, 1.0, 0.0])) == 0.0
    assert entropy_bits([0.5, 0.5]) == pytest.approx(1.0)
    batch = entropy_bits(torch.tensor([[0.25] * 4, [1.0, 0, 0, 0]]))
    assert batch.tolist() == pytest.approx([2.0, 0.0])


def test_next_token_distribution(gpt2_logits):
    logits, _ = gpt2_logits
    d = next_token_distribution(logits[-1].numpy(), top_n=5)
    probs = torch.softmax(logits[-1].double(), -1)
    assert d["ids"] == torch.argsort(probs, descending=True)[:5].tolist()
    assert d["probs"] == sorted(d["probs"], reverse=True)
    assert sum(d["probs"]) + d["rest"] == pytest.approx(1.0, abs=1e-5)
    assert d["entropy_bits"] == pytest.approx(entropy_bits(probs), abs=1e-4)
    assert 0 < d["entropy_bits"] <= math.log2(len(probs))


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(temperature=0), "greedy"),
        (dict(temperature=-1.0), "Temperature"),
        (dict(temperature=5.5), "Temperature"),
        (dict(temperature=float("nan")), "Temperature"),
        (dict(top_k=-1), "Top-k"),
        (dict(top_k=2.5), "Top-k"),
        (dict(top_p=0.0), "Top-p"),
        (dict(top_p=1.2), "Top-p"),
        (dict(min_p=1.0), "Min-p"),
        (dict(min_p=-0.1), "Min-p"),
        (dict(repetition_penalty=0.0), "repetition penalty"),
        (dict(repetition_penalty=11.0), "repetition penalty"),
    ],
)
def test_settings_out_of_range_are_refused_with_a_sentence(bad, words):
    with pytest.raises(InputError, match=words) as err:
        DecodingSettings(**bad).validate()
    assert str(err.value).endswith(".")
    with pytest.raises(InputError):
        transform(torch.zeros(4), None, DecodingSettings(**bad))


def test_settings_in_range_pass():
    for s in [DecodingSettings(), DecodingSettings(5.0, 0, 1.0, 0.0, 10.0), DecodingSettings(0.01, 3, 0.01, 0.9, 0.01)]:
        assert s.validate() is s
