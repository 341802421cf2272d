"""Preference tuning (DPO, IPO) with a LoRA adapter: the losses against their formulas on hand-made
log-probabilities, answer log-probabilities against a plain forward pass, and a short run on a real model."""

import math

import numpy as np
import pytest
import torch

from explorer.analysis.pretraining.preferences import (
    PreferenceRun,
    PreferenceSettings,
    answer_log_probs,
    bundled_preferences,
    dpo_loss,
    dpo_nll_loss,
    ipo_loss,
)
from explorer.core.errors import InputError


def test_dpo_loss_matches_the_formula_on_hand_made_log_probabilities():
    # policy chosen/rejected, reference chosen/rejected (sequence log-probabilities, nats)
    pc, pr, rc, rr = (
        torch.tensor([-10.0, -4.0, -7.0]),
        torch.tensor([-12.0, -3.0, -7.0]),
        torch.tensor([-11.0, -4.0, -6.0]),
        torch.tensor([-11.0, -4.0, -6.0]),
    )
    beta = 0.5
    got = dpo_loss(pc, pr, rc, rr, beta)
    # by hand: margins (1 - (-1)) = 2, (0 - 1) = -1, (-1 - (-1)) = 0
    expected = [-math.log(1 / (1 + math.exp(-beta * m))) for m in (2.0, -1.0, 0.0)]
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    assert got[2].item() == pytest.approx(math.log(2))  # no preference yet: ln 2


def test_ipo_loss_matches_the_formula():
    pc, pr, rc, rr = torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0])
    beta = 0.25  # target margin 1 / (2 β) = 2; margin here (1) - (-1) = 2: loss 0
    assert ipo_loss(pc, pr, rc, rr, beta).item() == pytest.approx(0.0)
    assert ipo_loss(pc, pr, rc, rr, 0.5).item() == pytest.approx((2 - 1) ** 2)


def test_answer_log_probs_equal_a_plain_forward_pass(tiny):
    lm = tiny["gpt2"]
    prompts, answers = ["The tiger jumped", "To be"], [" out of a tree", " or not to be"]
    got = answer_log_probs(lm.model, lm.tokenizer, prompts, answers)
    for k, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        n_prompt = len(lm.tokenizer(p)["input_ids"])
        ids = torch.tensor([lm.tokenizer(p + a)["input_ids"]])
        assert ids.shape[1] > n_prompt
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(ids).logits[0, :-1], -1)
        expected = sum(logp[t - 1, ids[0, t]].item() for t in range(n_prompt, ids.shape[1]))
        assert got[k].item() == pytest.approx(expected, abs=1e-4)


def test_the_bundled_pairs_plant_a_visible_preference():
    data = bundled_preferences()
    assert len(data.pairs) >= 20 and len(data.held_out_prompts) >= 4
    assert all(c.split()[0].rstrip(",") in data.polite_words for _, c, _ in data.pairs)
    assert all(r.split()[0] in data.rude_words for _, _, r in data.pairs)
    trained = {p for p, _, _ in data.pairs}
    assert not trained & set(data.held_out_prompts)


def test_dpo_widens_the_margin_and_never_changes_the_shared_model(tiny):
    lm = tiny["gpt2"]
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    run = PreferenceRun(lm, PreferenceSettings(steps=12, lr=1e-2, batch_size=4))
    record = run.train()
    assert len(record.loss) == 12 and record.loss[0] == pytest.approx(math.log(2), abs=1e-4)  # B = 0 at the start
    assert record.reward_margin[0] == pytest.approx(0, abs=1e-4)
    assert record.reward_margin[-3:].mean() > record.reward_margin[:3].mean() + 0.1
    assert np.all(np.diff(record.steps) == 1)
    shift = record.shifts[0]
    assert len(shift.tokens) == len(shift.before) == len(shift.after) >= 5
    assert 0 <= shift.polite_share[0] <= 1 and 0 <= shift.polite_share[1] <= 1
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    again = PreferenceRun(lm, PreferenceSettings(steps=12, lr=1e-2, batch_size=4)).train()
    assert np.array_equal(record.loss, again.loss)  # a seed reproduces the run


def test_preference_tuning_refuses_an_encoder_and_bad_settings(tiny):
    with pytest.raises(InputError):
        PreferenceRun(tiny["bert"], PreferenceSettings(steps=1))
    with pytest.raises(InputError):
        PreferenceSettings(loss="ppo").validate()
    with pytest.raises(InputError):
        PreferenceSettings(beta=0).validate()


def test_dpo_nll_loss_adds_the_chosen_answers_per_token_nll():
    pc, pr, rc, rr = (
        torch.tensor([-12.0, -6.0]),
        torch.tensor([-9.0, -8.0]),
        torch.tensor([-10.0, -7.0]),
        torch.tensor([-10.0, -7.0]),
    )
    tokens = torch.tensor([4.0, 3.0])
    got = dpo_nll_loss(pc, pr, rc, rr, 0.5, tokens)
    assert got.tolist() == pytest.approx((dpo_loss(pc, pr, rc, rr, 0.5) + torch.tensor([3.0, 2.0])).tolist())


def test_dpo_lowers_the_chosen_answer_too_and_dpo_nll_holds_it_up():
    """DPO's known failure, shown on the bundled decoder: it widens the gap by pushing both answers down;
    the NLL term keeps the chosen answer's likelihood rising, and the held-out prompts lean polite further.
    30 steps, as the lesson says (chosen -31.8 -> -33.2 nats under DPO, -10.4 under DPO + NLL). The decoder with
    WordNet's stage first raises the chosen answer: after 20 steps -30.7, after 40 back at -31.8."""
    from explorer.core.loading import load

    lm = load("tiny-gpt2")
    runs = {loss: PreferenceRun(lm, PreferenceSettings(loss=loss, steps=30)).train() for loss in ("dpo", "dpo+nll")}
    dpo, nll = runs["dpo"], runs["dpo+nll"]
    assert dpo.chosen_logp[-1] < dpo.chosen_logp[0]  # both answers fall under DPO
    assert dpo.rejected_logp[-1] < dpo.rejected_logp[0]
    assert nll.chosen_logp[-1] > nll.chosen_logp[0] + 5  # nats: the chosen answer rises
    assert nll.rejected_logp[-1] < nll.rejected_logp[0]
    assert nll.reward_accuracy[-1] > 0.5
    share = {loss: np.mean([s.polite_share[1] for s in run.shifts]) for loss, run in runs.items()}
    assert share["dpo+nll"] > share["dpo"]
