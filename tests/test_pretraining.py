"""The live trainer (analysis/pretraining): losses at initialisation, reproducibility, the held-out split,
what a run records, the trained model as a LoadedModel, and that shared models never change."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from explorer.analysis.pretraining import corpus, probes
from explorer.analysis.pretraining.configs import OBJECTIVES, PretrainSettings, build_model, build_tokenizer
from explorer.analysis.pretraining.trainer import PretrainRun
from explorer.core.errors import InputError
from explorer.core.run import run as traced_run

SMALL = PretrainSettings(
    width=32, layers=2, heads=2, seq_len=32, batch=4, steps=6, warmup=2, eval_every=3, checkpoints=2
)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_loss_at_initialisation_is_near_ln_vocabulary(objective):
    """A model that knows nothing spreads its guesses evenly: loss ≈ ln(vocabulary size)."""
    run = PretrainRun(dataclasses.replace(SMALL, objective=objective))
    expected = math.log(len(run.tokenizer))
    assert run.record().held_out_loss[0] == pytest.approx(expected, rel=0.02)
    run.advance(1)
    assert run.record().train_loss[0] == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_a_seed_reproduces_a_run_bit_for_bit(objective):
    settings = dataclasses.replace(SMALL, objective=objective, steps=4)
    first, second = PretrainRun(settings), PretrainRun(settings)
    a, b = first.train(), second.train()
    assert np.array_equal(a.train_loss, b.train_loss) and np.array_equal(a.held_out_loss, b.held_out_loss)
    for (name, p), q in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert [c.samples for c in a.checkpoints] == [c.samples for c in b.checkpoints]
    other = PretrainRun(dataclasses.replace(settings, seed=1)).train()
    assert not np.array_equal(a.train_loss, other.train_loss)


def test_held_out_documents_are_never_trained_on():
    split = corpus.bundled_split()
    assert split.held_out and split.train and not set(split.held_out) & set(split.train)
    assert all(corpus.is_held_out(d) for d in split.held_out) and not any(corpus.is_held_out(d) for d in split.train)
    whole = "".join(split.train)
    # a held-out line long enough to be unique appears nowhere in the training text
    line = max((ln for d in split.held_out for ln in d.splitlines()), key=len)
    assert len(line) > 40 and line not in whole
    run = PretrainRun(SMALL)
    stream = run.train_stream
    held = run.held_out_stream[:24]  # a held-out token sequence is not a window of the training stream
    windows = np.lib.stride_tricks.sliding_window_view(stream, len(held))
    assert not (windows == held).all(axis=1).any()


def test_training_lowers_the_held_out_loss_and_records_everything():
    settings = dataclasses.replace(SMALL, steps=30, warmup=3, eval_every=10, checkpoints=3, lr=1e-2)
    record = PretrainRun(settings).train()
    assert list(record.eval_steps) == [0, 10, 20, 30] and list(record.eval_tokens) == [0, 1280, 2560, 3840]
    assert record.held_out_loss[-1] < record.held_out_loss[0] - 0.3
    assert np.allclose(record.held_out_bpb * record.held_out_loss[0], record.held_out_loss * record.held_out_bpb[0])
    assert len(record.train_loss) == 30 and record.tokens_seen[-1] == 30 * 4 * 32
    assert [c.step for c in record.checkpoints] == [0, 10, 20, 30]
    c = record.checkpoints[-1]
    n = 2 * probes.REPEAT_LENGTH
    assert c.attention.shape == (2, 2, n, n) and np.allclose(c.attention.sum(-1), 1, atol=1e-5)
    assert c.previous_token.shape == c.induction.shape == (2, 2)
    assert len(record.repeat_tokens) == n and len(c.samples) == len(probes.PROMPTS["next_token"])
    steps, scores = record.score_history("induction")
    assert list(steps) == [0, 10, 20, 30] and scores.shape == (4, 2, 2)
    assert record.compute == 6 * record.non_embedding_parameters * record.tokens_seen[-1]


def test_induction_score_finds_a_planted_induction_pattern():
    period, n = 5, 10
    w = np.zeros((1, 2, n, n))
    w[0, 0, np.arange(n), np.arange(n)] = 1  # head 0 attends to itself
    for i in range(n):  # head 1: from the second copy, to the token after the earlier occurrence
        w[0, 1, i, i - period + 1 if i >= period else 0] = 1
    scores = probes.induction_scores(w, period)
    assert scores[0, 0] == 0 and scores[0, 1] == 1


def test_stop_and_progress():
    run = PretrainRun(dataclasses.replace(SMALL, steps=20))
    seen, calls = [], iter(range(100))
    record = run.train(progress=seen.append, should_stop=lambda: next(calls) >= 5)
    assert record.stopped and len(record.train_loss) == 5 and seen == [s / 20 for s in range(1, 6)]


def test_the_trained_model_opens_like_any_loaded_model():
    run = PretrainRun(SMALL)
    run.train()
    lm = run.loaded_model()
    assert lm.spec.can("generate") and lm.spec.family == "decoder" and lm.spec.n_layers == 2
    assert run.id in lm.spec.source  # a private key: no shared cache confuses it with another user's model
    trace = traced_run(lm, "And God said, let there be light.")
    assert trace.attentions["self"].shape[:2] == (2, 2)
    with torch.no_grad():  # the copy is frozen: training on does not change it
        before = {k: v.clone() for k, v in lm.model.state_dict().items()}
        run.close()
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    with pytest.raises(InputError):
        run.loaded_model()


@pytest.mark.parametrize("objective", ["masked", "span"])
def test_other_families_open_with_their_capabilities(objective):
    run = PretrainRun(dataclasses.replace(SMALL, objective=objective, steps=2))
    run.train()
    lm = run.loaded_model()
    assert lm.spec.family == OBJECTIVES[objective].family
    assert lm.spec.can("mlm") == (objective == "masked")


def test_a_run_never_changes_the_shared_bundled_model():
    from explorer.core.loading import load

    shared = load("tiny-gpt2", device=torch.device("cpu"))
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    PretrainRun(SMALL).train()
    assert all(torch.equal(before[k], v) for k, v in shared.model.state_dict().items())


def test_settings_are_bounded():
    for bad in (dict(objective="diffusion"), dict(steps=10_000), dict(width=30, heads=4), dict(lr=float("nan"))):
        with pytest.raises(InputError):
            dataclasses.replace(SMALL, **bad).validate()


def test_the_model_is_drawn_from_the_run_generator_only():
    tok = build_tokenizer(SMALL, corpus.bundled_split().train[:5])
    torch.manual_seed(1)
    a = build_model(SMALL, tok)
    torch.manual_seed(2)
    b = build_model(SMALL, tok)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_the_span_probe_stops_where_the_blank_it_asked_for_is_closed():
    """With room for 40 tokens, tiny-t5 wrote spans for blanks the prompt does not have."""
    from explorer.core.loading import load

    lm = load("tiny-t5")
    for prompt in probes.PROMPTS["span"]:
        written = probes.fill_span(lm.model, lm.tokenizer, prompt, n_new=40)
        assert written.startswith("<extra_id_0>") and "<extra_id_2>" not in written, written
