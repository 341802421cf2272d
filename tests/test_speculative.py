"""Speculative decoding: greedy writes exactly plain greedy's tokens for every draft kind and family that
generates, sampling follows the model's distribution (chi-square, fixed seeds), and the bookkeeping and the
speed-up formula give known answers."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers import GPT2Config, GPT2LMHeadModel

from explorer.analysis.decoding.generate import greedy
from explorer.analysis.inference.speculative import (
    PromptLookupDraft,
    SpeculativeResult,
    SpeculativeStep,
    accept_or_resample,
    early_exit_draft,
    early_exit_model,
    expected_speedup,
    model_draft,
    speculative_generate,
)
from explorer.analysis.inference.speculative_speedup import speedup_by_k
from explorer.core.errors import InputError
from explorer.core.loading import load

GPT2_PROMPT = "On Monday morning the bus was late again, so I walked to work. On Monday morning the bus"
TINY_PROMPT = "To be, or not to be: that is the question. Whether 'tis nobler in the mind to suffer"
T5_PROMPT = "The cat sat on the <extra_id_0> and the dog <extra_id_1> in the garden."


@pytest.fixture(scope="module")
def bundled():
    return {"gpt2": load("tiny-gpt2"), "t5": load("tiny-t5")}


@pytest.fixture(scope="module")
def small_draft(bundled, tmp_path_factory):
    """A tiny random GPT-2 with the bundled decoder's tokenizer (a trained draft is not bundled yet)."""
    folder = tmp_path_factory.mktemp("draft")
    tok = bundled["gpt2"].tokenizer
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=32, n_layer=1, n_head=2)).save_pretrained(
        folder
    )
    tok.save_pretrained(folder)
    return load(str(folder))


def _cases(bundled, tiny, small_draft):
    gpt2, llama, t5 = bundled["gpt2"], tiny["llama"], bundled["t5"]
    return [
        (gpt2, GPT2_PROMPT, [early_exit_draft(gpt2, 1), early_exit_draft(gpt2, 2), PromptLookupDraft(3),
                             model_draft(gpt2, small_draft)]),
        (llama, TINY_PROMPT, [early_exit_draft(llama, 1), PromptLookupDraft(2), model_draft(llama, tiny["gpt2"])]),
        (t5, T5_PROMPT, [early_exit_draft(t5, 1), early_exit_draft(t5, 2), PromptLookupDraft(2)]),
    ]  # fmt: skip


def test_greedy_speculative_decoding_writes_plain_greedys_tokens(bundled, tiny, small_draft):
    kept = refused = 0
    for lm, text, drafts in _cases(bundled, tiny, small_draft):
        prompt = lm.tokenizer(text)["input_ids"]
        plain = greedy(lm, prompt, 32)
        assert len(set(plain.new_ids)) > 4, lm.spec.key  # a text worth checking, not one token repeated
        for draft in drafts:
            for k in (1, 4):
                result = speculative_generate(lm, prompt, draft, k, 32)
                assert result.new_ids == plain.new_ids, (lm.spec.key, draft.name, k)
                assert result.ids == plain.ids
                kept += result.accepted_count
                refused += sum(s.refused for s in result.steps)
    assert kept > 40 and refused > 40  # both paths of the rule were taken, many times


def test_the_bundled_draft_model_writes_plain_greedys_tokens_and_is_often_right(bundled):
    lm, draft = bundled["gpt2"], load("tiny-gpt2-draft")
    assert sum(p.numel() for p in draft.model.parameters()) * 5 < sum(p.numel() for p in lm.model.parameters())
    kept = proposed = 0
    for text in (GPT2_PROMPT, "In the beginning God created the heaven and the earth. And the earth was"):
        prompt = lm.tokenizer(text)["input_ids"]
        plain = greedy(lm, prompt, 40)
        for k in (1, 3, 6):
            result = speculative_generate(lm, prompt, model_draft(lm, draft), k, 40)
            assert result.new_ids == plain.new_ids and result.ids == plain.ids, (text, k)
            kept, proposed = kept + result.accepted_count, proposed + result.proposed_count
    # Trained on the same text: far more often right than chance (1 in 12,288). Since tiny-gpt2 learned to copy
    # from its context (its copy stage) it agrees with this draft less: 75 of 486 proposals kept (15%), where the
    # draft, too narrow for the copy start (a previous-token head of 0.11 at width 64), cannot follow it. Since its
    # loop stage, 51 of 566 (9%): its greedy text left the loops the draft still falls into (85% of the draft's
    # greedy tokens loop on the modern sample's openings, tiny-gpt2's 9%), and a loop is easy to guess. Since
    # its fifth stage, 49 of 594 (8%).
    assert kept / proposed > 0.05


def test_the_whole_model_as_its_own_draft_is_always_accepted(bundled):
    lm = bundled["gpt2"]
    prompt = lm.tokenizer(GPT2_PROMPT)["input_ids"]
    result = speculative_generate(lm, prompt, early_exit_draft(lm, 4), 3, 16)
    assert result.alpha == 1.0 and [len(s.written) for s in result.steps] == [4, 4, 4, 4]
    assert np.array_equal(result.acceptance_by_position, np.ones(3))


def test_t5_stops_at_its_end_token_like_plain_greedy(bundled):
    """A text the bundled T5 ends with </s> greedily within 60 tokens (27, three spans): on T5_PROMPT the third
    stage writes a span for a blank the text lacks and loops in it ("the oot, the oot, …")."""
    lm = bundled["t5"]
    prompt = lm.tokenizer("The cat sat on the <extra_id_0> and the dog slept in the garden.")["input_ids"]
    plain = greedy(lm, prompt, 60)
    assert plain.finished and len(plain.new_ids) < 60
    assert speculative_generate(lm, prompt, early_exit_draft(lm, 2), 4, 60).new_ids == plain.new_ids


def test_drafting_leaves_the_shared_model_as_it_was(bundled):
    lm = bundled["gpt2"]
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    view = early_exit_model(lm, 1)
    speculative_generate(lm, lm.tokenizer(GPT2_PROMPT)["input_ids"], early_exit_draft(lm, 1), 3, 8)
    assert len(view.model.transformer.h) == 1 and view.model.config.n_layer == 1
    assert len(lm.model.transformer.h) == 4 and lm.model.config.n_layer == 4
    assert view.model.transformer.wte.weight is lm.model.transformer.wte.weight  # shared, not copied
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())


# ---------------------------------------------------------------- sampling follows the model


def _chi_square(samples: list[int], probs: np.ndarray, top: list[int]) -> float:
    """p-value of the samples against ``probs``, counted over the ``top`` tokens and all others together."""
    counts = [sum(s == t for s in samples) for t in top]
    counts.append(len(samples) - sum(counts))
    expected = np.array([probs[t] for t in top] + [1 - sum(probs[t] for t in top)]) * len(samples)
    return float(chisquare(counts, expected).pvalue)


@pytest.mark.parametrize("point_mass", [False, True])
def test_the_accept_reject_rule_samples_the_target_distribution(point_mass):
    """A tiny vocabulary of 5 tokens: whatever the draft proposes, the first written token follows p."""
    p = torch.tensor([[0.40, 0.25, 0.20, 0.10, 0.05], [0.2] * 5], dtype=torch.float64)
    q = torch.tensor([[0.05, 0.15, 0.20, 0.30, 0.30]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(1234)
    first = []
    for _ in range(20_000):
        x = 3 if point_mass else int(torch.multinomial(q[0], 1, generator=generator))
        kept, token = accept_or_resample(p, None if point_mass else q, [x], generator)
        first.append(x if kept else token)
    assert _chi_square(first, p[0].numpy(), [0, 1, 2, 3]) > 1e-3
    wrong = q[0].numpy() if not point_mass else np.eye(5)[3] * 0.5 + 0.1  # what a broken rule would give
    assert _chi_square(first, wrong, [0, 1, 2, 3]) < 1e-12


def test_speculative_sampling_matches_the_models_distribution(tiny):
    """End to end on the RoPE + grouped-query decoder, its first layer as the draft, 1000 seeds: the first token
    written follows the model's own distribution at that temperature, not the draft's."""
    lm, temperature = tiny["llama"], 0.03
    prompt = lm.tokenizer(TINY_PROMPT.removesuffix(" suffer"))["input_ids"]
    draft = early_exit_draft(lm, 1)
    with torch.no_grad():
        p = torch.softmax(lm.model(torch.tensor([prompt])).logits[0, -1].double() / temperature, -1).numpy()
        q = torch.softmax(draft.lm.model(torch.tensor([prompt])).logits[0, -1].double() / temperature, -1).numpy()
    top = list(np.argsort(-p)[:5])
    assert 0.5 * np.abs(p - q).sum() > 0.2  # the draft is clearly wrong, so a broken rule would show
    first = []
    for seed in range(1000):
        result = speculative_generate(lm, prompt, draft, 2, 2, temperature=temperature, seed=seed)
        first.append(result.new_ids[0])
        assert result.steps[0].proposed  # the first token always went through the rule
    assert _chi_square(first, p, top) > 1e-3
    assert _chi_square(first, q, top) < 1e-12


# ---------------------------------------------------------------- bookkeeping, formula, drafts


def test_acceptance_by_position_and_overall():
    steps = (
        SpeculativeStep((1, 2, 3), 3, 9, 0.0, 1.0),  # all kept, a bonus
        SpeculativeStep((1, 2, 3), 1, 9, 0.0, 1.0),  # second refused
        SpeculativeStep((1, 2, 3), 0, 9, 0.0, 1.0),  # first refused
        SpeculativeStep((1,), 1, 9, 0.0, 1.0),  # a short proposal, kept
    )
    result = SpeculativeResult("d", 3, True, (0,) * 11, (0,) * 10, steps, 1.0)
    assert np.allclose(result.acceptance_by_position, [3 / 4, 1 / 2, 1 / 1])
    assert result.accepted_count == 5 and result.proposed_count == 10
    assert result.alpha == 5 / 7 and result.accepted_fraction == 0.5 and result.tokens_per_step == 2.5
    assert steps[1].written == (1, 9) and steps[0].written == (1, 2, 3, 9) and steps[1].refused


def test_expected_speedup_formula():
    assert expected_speedup(0.0, 4, 0.0) == 1.0  # nothing kept: one token per verifier pass
    assert expected_speedup(1.0, 4, 0.0) == 5.0
    assert expected_speedup(0.5, 2, 0.0) == pytest.approx(1.75)  # 1 + 0.5 + 0.25
    assert expected_speedup(0.8, 4, 0.1) == pytest.approx((1 - 0.8**5) / (0.2 * 1.4))
    with pytest.raises(InputError):
        expected_speedup(1.5, 4, 0.1)


def test_prompt_lookup_known_answers():
    draft = PromptLookupDraft(2)
    assert draft.lookup([1, 2, 3, 4, 1, 2], 2) == [3, 4]
    assert draft.lookup([5, 1, 2, 9, 2, 7, 1, 2], 3) == [9, 2, 7]  # the 2-gram beats the later 1-gram match of 2
    assert draft.lookup([7, 2, 8, 3, 2], 2) == [8, 3]  # no 2-gram: the latest 1-gram
    assert draft.lookup([1, 2, 3], 4) == []


def test_bad_drafts_and_settings_get_a_sentence(bundled, tiny, small_draft):
    with pytest.raises(InputError, match="same vocabulary"):
        model_draft(bundled["gpt2"], tiny["gpt2"])
    with pytest.raises(InputError, match="number of draft layers"):
        early_exit_model(bundled["gpt2"], 5)
    prompt = bundled["gpt2"].tokenizer(GPT2_PROMPT)["input_ids"]
    with pytest.raises(InputError, match="Temperature"):
        speculative_generate(bundled["gpt2"], prompt, PromptLookupDraft(), 4, 8, temperature=0)
    with pytest.raises(InputError):
        speculative_generate(tiny["bert"], [5, 6, 7], PromptLookupDraft(), 4, 8)


def test_speedup_by_k_pairs_plain_and_speculative_runs(bundled):
    lm = bundled["gpt2"]
    seen = []
    points = speedup_by_k(lm, lm.tokenizer(GPT2_PROMPT)["input_ids"], PromptLookupDraft(3), (1, 4), 12, 1, seen.append)
    assert [p.k for p in points] == [1, 4] and all(p.same_tokens for p in points) and seen[-1] == 1.0
    for p in points:
        assert p.plain_seconds.shape == p.speculative_seconds.shape == (1,) and p.measured > 0
        assert p.result.cost_ratio == pytest.approx(0.0, abs=0.05)  # a lookup costs next to nothing
        assert math.isclose(p.expected, expected_speedup(p.alpha, p.k, p.result.cost_ratio))
        steps = p.result.steps
        busy = sum(s.draft_seconds + s.verify_seconds for s in steps) / len(steps)
        per_token = float(p.plain_seconds[0]) / len(p.result.new_ids)
        assert math.isclose(p.explained, p.result.tokens_per_step * per_token / busy)
        assert 0.3 < p.explained / p.measured < 3  # the passes are most of a run's time
