"""The Training tab's handlers, called directly (no server): tiny runs on the bundled texts and model."""

import re

import pytest

from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import training as tab
from tests.plotly_json import figure_dict


@pytest.fixture(scope="module")
def ctx():
    return AppContext()


@pytest.mark.parametrize("objective", ["next_token", "masked", "span"])
def test_pretraining_streams_its_views_and_ends_at_the_last_step(ctx, objective):
    updates = list(tab.pretrain(ctx, objective, 20, 32, 1, 0, None))
    note, curves, heads, pattern, mine, run = updates[-1]
    assert note.startswith("Step **20 of 20**"), note
    names = [t["name"] for t in figure_dict(curves)["data"]]
    assert any("held-out" in n for n in names) and any("train" in n for n in names)
    assert figure_dict(pattern)["data"][0]["type"] == "heatmap"
    assert mine["objective"] == objective and mine["loss"] > 0 and mine["parameters"] > 0
    assert run.done and run.step == 20 and run.optimizer is None and run.model is not None  # kept to be opened


def test_your_run_joins_the_scaling_study(ctx):
    mine = list(tab.pretrain(ctx, "next_token", 20, 32, 1, 0, None))[-1][4]
    note, figure = tab.scaling_view(ctx, "compute", mine)
    assert "Fit through the frontier" in note and "see your run" not in note
    assert any("your run" in (t.get("name") or "") for t in figure_dict(figure)["data"])
    assert "see your run" in tab.scaling_view(ctx, "compute", None)[0]


def test_preference_tuning_widens_the_margin_on_a_private_copy(ctx):
    selection = Selection("tiny-gpt2", "x")
    before = {k: v.clone() for k, v in ctx.model(selection).model.state_dict().items()}
    note, curves, bars = tab.tune(ctx, selection, "dpo", 0.1, 5, None)
    assert "reward margin 0.00 →" in note and "The shared model is unchanged" in note
    assert len(figure_dict(curves)["data"]) == 3 and len(figure_dict(bars)["data"]) == 2
    after = ctx.model(selection).model.state_dict()
    assert all((before[k] == after[k]).all() for k in before)


def test_a_dpo_run_that_lowers_both_answers_says_so_and_points_to_dpo_nll(ctx):
    selection = Selection("tiny-gpt2", "x")
    dpo_note = tab.tune(ctx, selection, "dpo", 0.1, 30, None)[0]  # the tab's default steps
    chosen = re.search(r"chosen log π (-?[\d.]+) → (-?[\d.]+)", dpo_note)
    assert float(chosen[2]) < float(chosen[1]) and "Both answers became less likely" in dpo_note
    nll_note, curves, _ = tab.tune(ctx, selection, "dpo+nll", 0.1, 5, None)  # it holds the chosen answer up:
    assert "Both answers" not in nll_note  # tests/test_preferences.py measures that
    assert "DPO+NLL" in figure_dict(curves)["layout"]["title"]["text"]


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda ctx: list(tab.pretrain(ctx, "next_token", 20, 999, 1, 0, None))[-1][0], "width"),
        (lambda ctx: list(tab.pretrain(ctx, "poetry", 20, 32, 1, 0, None))[-1][0], "objective"),
        (lambda ctx: tab.tune(ctx, Selection("tiny-bert", "x [MASK]"), "dpo", 0.1, 5, None)[0], "decoder"),
        (lambda ctx: tab.tune(ctx, Selection("tiny-gpt2", "x"), "dpo", float("nan"), 5, None)[0], "β"),
        (lambda ctx: tab.scaling_view(ctx, "vibes", None)[0], "scale"),
    ],
)
def test_bad_input_gets_a_sentence(ctx, call, words):
    note = call(ctx)
    assert note.startswith("⚠️") and words in note and "Something went wrong" not in note, note
