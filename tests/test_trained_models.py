"""Issue 21 item 3: a model trained in the Training tab opens in every other tab, private to its session,
bounded like LoRA copies, freed when the session ends; the shared pool and catalogue never see it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from explorer.analysis.lora.sessions import SessionBudget
from explorer.analysis.pretraining.configs import PretrainSettings
from explorer.analysis.pretraining.opened import TrainedModels, is_trained_name, open_run, shown_name
from explorer.analysis.pretraining.trainer import PretrainRun
from explorer.core.catalogue import catalogue
from explorer.core.errors import InputError
from explorer.ui.context import AppContext, Selection, about
from explorer.ui.tabs import training as tab

ALICE, BOB = SimpleNamespace(session_hash="alice"), SimpleNamespace(session_hash="bob")
TEXT = "And God said, Let there be light: and there was light."


def tiny_run(objective: str) -> PretrainRun:
    run = PretrainRun(PretrainSettings(objective=objective, steps=6, width=32, layers=1, warmup=1, checkpoints=1))
    run.train()
    return run


@pytest.fixture(scope="module")
def ctx():
    return AppContext()


@pytest.mark.parametrize("objective, family", [("next_token", "decoder"), ("masked", "encoder"),
                                               ("span", "encoder_decoder")])  # fmt: skip
def test_an_opened_model_is_traced_like_any_model_and_titles_name_it(ctx, objective, family):
    run = tiny_run(objective)
    update, note = tab.open_trained(ctx, run, ALICE)
    name = update["value"]
    assert is_trained_name(name) and (shown_name(name), name) in update["choices"]
    assert "your trained" in note and name not in note  # the token never shows
    ctx.reachable(name, ALICE)
    selection = Selection(name, TEXT)
    trace = ctx.trace(selection)  # one instrumented run on the session's own model
    lm = ctx.model(selection)
    assert (
        lm.spec.family == family
        and lm.spec.key == shown_name(name) == f"your trained {family.replace('_', '-')} (6 steps)"
    )
    assert all(len(t) > 3 for t in trace.tokens.values())
    assert about(selection).startswith("your trained ") and name not in about(selection)
    assert lm.model is not run.model  # a frozen copy: the run can go on or be freed


def test_another_session_cannot_reach_it_and_a_made_up_name_gets_a_sentence(ctx):
    update, _ = tab.open_trained(ctx, tiny_run("next_token"), ALICE)
    name = update["value"]
    with pytest.raises(InputError, match="not open in this browser session"):
        ctx.reachable(name, BOB)
    with pytest.raises(InputError, match="not open in this browser session"):
        ctx.reachable("trained:" + "0" * 32 + " your trained decoder (6 steps)", ALICE)
    ctx.reachable(name, ALICE)
    ctx.reachable("tiny-gpt2", BOB)  # shared models: anyone


def test_the_budget_refuses_when_full_and_keeps_what_was_open():
    run = tiny_run("next_token")
    lm = run.loaded_model()
    models = TrainedModels(SessionBudget(max_bytes=int(1.5 * lm.nbytes)))
    first = open_run(models, "alice", run)
    with pytest.raises(InputError, match="limit"):
        open_run(models, "bob", run)
    assert models.get(first, "alice") is not None and models.budget.held == lm.nbytes
    second = open_run(models, "alice", run)  # a session's new model replaces its previous one
    assert second != first and models.names("alice") == [second]
    with pytest.raises(InputError):
        models.get(first, "alice")


def test_closing_the_session_frees_its_model(ctx):
    update, _ = tab.open_trained(ctx, tiny_run("masked"), SimpleNamespace(session_hash="carol"))
    name = update["value"]
    held = ctx.trained.budget.held
    tab.unloaded(ctx, SimpleNamespace(session_hash="carol"))
    assert ctx.trained.names("carol") == [] and ctx.trained.budget.held < held
    with pytest.raises(InputError):
        ctx.model(Selection(name, TEXT))
    run = tiny_run("span")
    tab.release_run(ctx, run)  # the training tab's state expired: the run's own model goes too
    assert run.model is None


def test_opening_needs_a_run_and_shared_models_never_change(ctx):
    assert tab.open_trained(ctx, None, ALICE)[1].startswith("⚠️")
    shared = ctx.model(Selection("tiny-gpt2", TEXT))
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    update, _ = tab.open_trained(ctx, tiny_run("next_token"), ALICE)
    name = update["value"]
    ctx.trace(Selection(name, TEXT))
    assert name not in ctx.pool.loaded() and name not in catalogue()
    assert all(not is_trained_name(k) for k in ctx.pool.loaded())
    after = ctx.model(Selection("tiny-gpt2", TEXT)).model.state_dict()
    assert all((before[k] == after[k]).all() for k in before)
