"""The Interventions tab's handlers, called directly (no server) on the bundled models."""

import numpy as np
import pytest

from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import interventions as tab
from tests.plotly_json import figure_dict

IOI = "When Mary and John went to the store, John gave a drink to"
TEXTS = {"tiny-gpt2": IOI, "tiny-bert": "When Mary and John went to the store, John gave a drink to [MASK].",
         "tiny-t5": "When Mary and John went to the store, John gave a drink to <extra_id_0>."}  # fmt: skip
CORRUPTED = {"tiny-gpt2": tab.IOI_CORRUPTED, "tiny-bert": tab.IOI_CORRUPTED + " [MASK].",
             "tiny-t5": tab.IOI_CORRUPTED + " <extra_id_0>."}  # fmt: skip


@pytest.fixture(scope="module")
def ctx():
    return AppContext()


@pytest.mark.parametrize("model", TEXTS)
def test_ablating_a_head_shows_both_distributions_and_both_runs(ctx, model):
    selection = Selection(model, TEXTS[model])
    parts, kinds, streams, _, _ = tab.options(ctx, selection)
    assert len(parts["choices"]) > 10 and parts["value"][0].split("|")[2] == "head"
    whole_layer = next(key for label, key in parts["choices"] if "attention (all heads)" in label)
    note, bars, attn_clean, attn_ablated, lens_clean, lens_ablated = tab.ablate_view(
        ctx, selection, [whole_layer], "zero", "", ""
    )
    assert note.startswith("Switched off") and "→" in note, note
    traces = figure_dict(bars)["data"]
    assert [t["name"] for t in traces] == ["clean", "ablated"]
    assert any(label.startswith("★") for label in traces[0]["y"])  # the followed answer is marked
    clean, ablated = figure_dict(attn_clean)["data"][0]["z"], figure_dict(attn_ablated)["data"][0]["z"]
    assert "clean" in figure_dict(attn_clean)["layout"]["title"]["text"]
    assert model in figure_dict(attn_ablated)["layout"]["title"]["text"]
    assert clean is not None and ablated is not None
    lens = figure_dict(lens_ablated)
    assert bool(lens["data"]) == (model != "tiny-bert")  # an encoder has no logit lens: a sentence instead
    assert not lens["data"] or lens["data"][0]["type"] == "heatmap"


def test_mean_ablation_and_a_followed_answer(ctx):
    selection = Selection("tiny-gpt2", IOI)
    key = tab.ablation.ablation_key(tab.ablation.Ablation("input", 3, "mlp"))
    zero = tab.ablate_view(ctx, selection, [key], "zero", "", " Mary")[0]
    mean = tab.ablate_view(ctx, selection, [key], "mean", "", " Mary")[0]
    assert "Mary" in zero and "mean over a reference text" in mean and zero != mean


@pytest.mark.parametrize("model", TEXTS)
def test_the_head_map_and_its_ranked_heads(ctx, model):
    selection = Selection(model, TEXTS[model])
    note, figure, picked = tab.importance_view(ctx, selection, None, "change", "zero", "", "", None)
    heat = figure_dict(figure)["data"][0]
    lm = ctx.model(selection)
    assert np.array(heat["z"]["bdata"] if isinstance(heat["z"], dict) else heat["z"]).size > 0
    assert len(picked["choices"]) == lm.spec.n_layers * lm.spec.n_heads or model == "tiny-t5"
    drops = [float(label.rsplit("Δ", 1)[1]) for label, _ in picked["choices"]]
    assert drops == sorted(drops)  # largest drop first
    assert "ablations in 1 forward pass." in note  # every head of these small models in one batched pass
    assert tab.ablate_picked(ctx, picked["value"], []) == [picked["value"]]


@pytest.mark.parametrize("model", TEXTS)
def test_patching_maps_layers_and_heads_by_position(ctx, model):
    selection = Selection(model, TEXTS[model])
    note, figure = tab.patch_view(ctx, selection, CORRUPTED[model], "resid", None, "", "", None)
    assert note.startswith("Logit difference"), note
    heat = figure_dict(figure)["data"][0]
    assert any("→" in str(x) for x in figure_dict(figure)["layout"]["xaxis"]["ticktext"])  # the changed token
    assert heat["zmin"] == -heat["zmax"]
    note, figure = tab.patch_heads_view(ctx, selection, CORRUPTED[model], 0, None, "", "", None)
    assert "Logit difference" in note and figure_dict(figure)["layout"]["yaxis"]["ticktext"][0] == "H0"


@pytest.mark.parametrize("model", TEXTS)
def test_the_patching_preset_loads_a_pair_that_patches_for_each_family(ctx, model):
    """The tab's first press failed: the app's default text and the default corrupted text differ in length.
    Its preset puts the Mary and John text in the text box and its twin below, with the family's answer slot."""
    default = tab.patch_view(ctx, Selection(model, "The tiger jumped out of a tree."), tab.IOI_CORRUPTED, "resid",
                             None, "", "", None)[0]  # fmt: skip
    assert default.startswith("⚠️")
    text, corrupted = tab.patching_pair(ctx, Selection(model, "The tiger jumped out of a tree."))
    assert (text, corrupted) == (TEXTS[model], CORRUPTED[model])
    note, _ = tab.patch_view(ctx, Selection(model, text), corrupted, "resid", None, "", "", None)
    assert note.startswith("Logit difference"), note


def test_patching_texts_of_different_lengths_get_a_sentence(ctx):
    note, _ = tab.patch_view(ctx, Selection("tiny-gpt2", IOI), "A much shorter text", "resid", None, "", "", None)
    assert note.startswith("⚠️") and "same number of tokens" in note


@pytest.mark.parametrize("model", TEXTS)
def test_steering_writes_with_and_without_the_direction(ctx, model):
    selection = Selection(model, TEXTS[model])
    note, figure = tab.steer_view(ctx, selection, "love, joy", "hate, grief", 1, 20, 6)
    assert "Direction: mean of 2 minus mean of 2 after layer 1" in note
    assert ("**with**" in note) == (model != "tiny-bert")
    assert [t["name"] for t in figure_dict(figure)["data"]] == ["plain", "steered"]


@pytest.mark.parametrize(
    "call",
    [
        lambda ctx: tab.ablate_view(ctx, None, [], "zero", "", "")[0],
        lambda ctx: tab.ablate_view(ctx, Selection("tiny-gpt2", IOI), [], "zero", "", "")[0],
        lambda ctx: tab.ablate_view(ctx, Selection("tiny-gpt2", IOI), ["input|99|head|self|0"], "zero", "", "")[0],
        lambda ctx: tab.ablate_view(ctx, Selection("tiny-gpt2", IOI), ["<svg onload=alert(1)>"], "zero", "", "")[0],
        lambda ctx: tab.ablate_view(ctx, Selection("tiny-bert", "no mask here"), ["input|0|mlp||"], "zero", "", "")[0],
        lambda ctx: tab.steer_view(ctx, Selection("tiny-gpt2", IOI), "", "sad", 1, 5, 5)[0],
        lambda ctx: tab.steer_view(ctx, Selection("tiny-gpt2", IOI), "joy", "sad", 1, float("nan"), 5)[0],
        lambda ctx: tab.steer_view(ctx, Selection("tiny-gpt2", IOI), "joy", "sad", 40, 5, 5)[0],
        lambda ctx: tab.importance_view(ctx, Selection("tiny-gpt2", IOI), "cross", "change", "zero", "", "", None)[0],
    ],
)
def test_bad_input_gets_a_sentence(ctx, call):
    note = call(ctx)
    assert note.startswith("⚠️") and "Something went wrong" not in note and "<svg" not in note


def test_patching_two_texts_with_the_same_answer_maps_the_raw_difference(ctx):
    """Clean and corrupted alike: no share restored to divide by; the map shows the logit difference moved."""
    note, figure = tab.patch_view(ctx, Selection("tiny-gpt2", IOI), IOI, "resid", None, "", "", None)
    assert "less than 0.25 apart" in note
    heat = figure_dict(figure)["data"][0]
    assert heat["colorbar"]["title"]["text"] == "Δ logit diff"
    z = np.array(heat["z"]) if not isinstance(heat["z"], dict) else None
    assert z is None or np.allclose(np.nan_to_num(z), 0.0, atol=1e-5)  # nothing differs: patching changes nothing
