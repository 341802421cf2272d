"""The Attention tab's handlers called directly (no server) on the bundled models, and the analysis
behind each view (``analysis/attention/views.py``): clamping, one head, links, statistics, a step."""

import numpy as np
import pytest

from explorer.analysis.attention.heads import attention_rollout
from explorer.analysis.attention.views import (
    ROLLOUT_NEEDS_ONE_STREAM,
    all_heads,
    generation_step,
    head_name,
    head_statistics_of,
    one_head,
    parse_head_name,
    pick,
    token_links_of,
)
from explorer.ui.context import AppContext, Selection, bind
from explorer.ui.tabs import attention as tab
from tests.plotly_json import message, title

TEXT = "The tiger jumped out of a tree because it was thirsty."
SKIP = {"__type__": "update"}


@pytest.fixture(scope="module")
def app():
    return AppContext()


@pytest.fixture(scope="module")
def gpt2(app):
    return Selection(model="tiny-gpt2", text=TEXT)


@pytest.fixture(scope="module")
def t5(app):
    return Selection(model="tiny-t5", text=TEXT)


def heatmap(fig) -> np.ndarray:
    return np.asarray(fig.data[0].z, dtype=float)


# ------------------------------------------------------------------------------------------------ handlers


def test_one_head_weights_are_the_traces_row_by_row(app, gpt2):
    fig = tab.draw_head(app, gpt2, "self", 1, 2, "weights")
    assert title(fig).startswith("self-attention · layer 1 · head 2 · tiny-gpt2")
    z = heatmap(fig)
    expected = app.trace(gpt2).attn(1, 2, "self")
    np.testing.assert_allclose(np.nan_to_num(z), expected, atol=1e-6)  # the masked future drawn as gaps
    assert np.isnan(z[0, 1]) and np.nansum(z, axis=1) == pytest.approx(np.ones(len(z)), abs=1e-5)


def test_scores_and_rollout_and_a_kind_the_model_lacks(app, gpt2, t5):
    scores = tab.draw_head(app, gpt2, "cross", 1, 0, "scores")  # a decoder has no cross: its first kind
    assert "self-attention · layer 1 · head 0 · pre-softmax scores" in title(scores)
    np.testing.assert_allclose(heatmap(scores)[3, :4], app.scores(gpt2)["self"][1, 0, 3, :4], rtol=1e-5)
    rollout = tab.draw_head(app, gpt2, "self", 99, 0, "rollout")  # layer clamped to the last
    last = app.model(gpt2).spec.n_layers - 1
    assert f"rollout of all heads, layers 0–{last}" in title(rollout)
    np.testing.assert_allclose(
        np.nan_to_num(heatmap(rollout)), attention_rollout(app.trace(gpt2).attentions["self"])[last], atol=1e-6
    )
    assert message(tab.draw_head(app, t5, "cross", 0, 0, "rollout")) == ROLLOUT_NEEDS_ONE_STREAM


def test_views_before_any_analysis_say_so(app):
    assert message(tab.draw_head(app, None, "self", 0, 0, "weights")) == "Analyze a text to see its attention."
    assert message(tab.draw_grid(app, None, "self")[1]) == "Analyze a text first."
    assert message(tab.draw_statistics(app, None, "self", "entropy")[0]) == "Analyze a text first."
    skip, note, fig = tab.draw_step(app, None, 0, 0, 4, 1)
    assert skip == SKIP and note == "" and message(fig) == "Analyze a text first."


def test_the_grid_names_every_head_and_opening_one_shows_it(app, t5):
    choices, fig = tab.draw_grid(app, t5, "cross")
    spec = app.model(t5).spec
    assert len(choices["choices"]) == spec.n_layers * spec.n_heads and choices["value"] is None
    assert choices["choices"][1] == "L0 H1" and "cross-attention" in title(fig) and "tiny-t5" in title(fig)
    layer, head, tabs, active, figure = tab.open_selected(app, "L1 H2", t5, "cross", "weights")
    assert (layer, head, tabs.selected, active) == (1, 2, "one_head", "head")
    assert title(figure).startswith("cross-attention (decoder → encoder) · layer 1 · head 2")
    assert tab.open_selected(app, None, t5, "cross", "weights") == (SKIP,) * 5


def test_token_links_average_the_chosen_heads_from_one_token(app, gpt2):
    queries, heads, fig = tab.draw_links(app, gpt2, "self", 1, 0, "3", [0, 1])
    assert queries["value"] == 3 and queries["choices"][0] == ("all tokens", -1)
    assert heads["value"] == [0, 1] and len(heads["choices"]) == app.model(gpt2).spec.n_heads
    assert "layer 1 · mean of heads 0, 1" in title(fig)
    queries, heads, fig = tab.draw_links(app, gpt2, "self", 1, 2, "nonsense", [])
    assert queries["value"] == -1 and heads["value"] == [] and "layer 1 · head 2 · " in title(fig)


def test_statistics_table_has_a_row_per_head(app, t5):
    fig, rows = tab.draw_statistics(app, t5, "cross", "entropy")
    spec = app.model(t5).spec
    assert len(rows) == spec.n_layers * spec.n_heads and rows[1][:2] == [0, 1]
    assert rows[0][3] is None  # cross attention: no distances between two streams
    assert "cross-attention" in title(fig) and "entropy" in title(fig)


def test_a_generation_step_marks_the_new_token(app, gpt2):
    step, note, fig = tab.draw_step(app, gpt2, 1, 1, 5, 3)
    assert step == {"maximum": 5, "value": 3, "interactive": True, "__type__": "update"}
    trace = app.trace(tab.generation_selection(gpt2, 5))
    written = trace.labels("input")[trace.meta["prompt_tokens"] + 2]
    assert note.count("**[") == 1 and title(fig).startswith(f"step 3: “{written}” · layer 1 · head 1")
    step, note, fig = tab.draw_step(app, gpt2, 1, 1, 2, 9)  # step clamped to the tokens made
    assert step["value"] == 2 and step["maximum"] == 2


def test_a_generation_step_on_an_encoder_decoder_explains_itself(app, t5):
    skip, note, fig = tab.draw_step(app, t5, 0, 0, 4, 1)
    assert skip == SKIP and note == tab.NOT_A_DECODER and message(fig) == tab.NOT_A_DECODER


def test_refresh_fits_the_selectors_and_draws_only_the_view_on_screen(app, t5):
    out = tab.refresh_all(app, t5, "self", 99, 99, "grid", "weights", "entropy", 4, 1)
    spec = app.model(t5).spec
    assert len(out) == 14
    assert out[0]["value"] == "encoder_self"  # T5 has no plain self-attention, and its choice is not shown:
    assert out[0]["elem_classes"] == [
        "explorer-kinds",
        *(f"explorer-has-{k}" for k in ("encoder_self", "decoder_self", "cross")),
    ]
    assert out[1] == {"maximum": spec.n_layers - 1, "value": spec.n_layers - 1, "__type__": "update"}
    assert out[2] == {"maximum": spec.n_heads - 1, "value": spec.n_heads - 1, "__type__": "update"}
    assert out[3] == SKIP and out[4]["choices"][0] == "L0 H0" and out[5].data
    assert out[6:] == (SKIP,) * 8
    assert tab.refresh_all(app, None, "self", 0, 0, "grid", "weights", "entropy", 4, 1) == (SKIP,) * 14


# ------------------------------------------------------------------------------------------------ analysis


def test_pick_clamps_to_what_the_trace_has(app, t5):
    trace = app.trace(t5)
    assert pick(trace, "cross", 1, 1) == ("cross", 1, 1)
    assert pick(trace, "self", -4, None) == ("encoder_self", 0, 0)
    assert pick(trace, "decoder_self", 99, 99) == ("decoder_self", trace.n_layers - 1, trace.n_heads - 1)


def test_head_names_round_trip():
    assert head_name(3, 11) == "L3 H11" and parse_head_name("L3 H11") == (3, 11)


def test_one_head_needs_the_scores_to_show_them(app, gpt2):
    trace = app.trace(gpt2)
    with pytest.raises(ValueError, match="pre-softmax scores"):
        one_head(trace, "self", 0, 0, "scores")
    view = one_head(trace, "self", 0, 1, "weights")
    assert view.causal and view.refusal is None and view.query_labels == trace.labels("input")
    np.testing.assert_array_equal(view.matrix, trace.attn(0, 1, "self"))


def test_cross_attention_relates_target_queries_to_source_keys(app, t5):
    trace = app.trace(t5)
    view = one_head(trace, "cross", 0, 0, "weights")
    assert view.query_labels == trace.labels("target") and view.key_labels == trace.labels("source")
    assert not view.causal and view.matrix.shape == (len(view.query_labels), len(view.key_labels))
    grid = all_heads(trace, "cross")
    assert grid.weights.shape[:2] == (trace.n_layers, trace.n_heads) and len(grid.names) == grid.weights[..., 0, 0].size


def test_links_average_heads_and_drop_those_the_layer_lacks(app, gpt2):
    trace = app.trace(gpt2)
    links = token_links_of(trace, "self", 1, 0, -1, [1, 3, 40])
    layer = trace.attentions["self"][1]
    assert links.heads == [1, 3] and links.selected is None
    np.testing.assert_allclose(links.weights, (layer[1] + layer[3]) / 2)
    links = token_links_of(trace, "self", 1, 2, 99, [40])  # no head left: the selected one; no such query
    assert links.heads == [2] and links.selected is None
    assert token_links_of(trace, "self", 1, 2, "4", []).selected == 4


def test_statistics_of_a_causal_kind(app, gpt2):
    trace = app.trace(gpt2)
    stats = head_statistics_of(trace, "self")
    shape = (trace.n_layers, trace.n_heads)
    assert stats.kind == "self" and stats.values["entropy"].shape == shape == stats.values["self"].shape
    # causal: the first query sees only itself, so every head gives the first token some weight
    assert np.all(stats.values["first_token"] > 0) and len(stats.rows) == trace.n_layers * trace.n_heads
    first = trace.attentions["self"][0, 0]
    assert stats.values["self"][0, 0] == pytest.approx(np.diagonal(first).mean())


def test_a_generation_step_of_a_generating_trace(app, gpt2):
    trace = app.trace(tab.generation_selection(gpt2, 4))
    prompt = trace.meta["prompt_tokens"]
    found = generation_step(trace, 0, 0, 99)
    assert (found.made, found.step, found.position) == (4, 4, prompt + 3)
    assert found.weights.shape == (prompt + 4, prompt + 4) and found.labels == trace.labels("input")
    np.testing.assert_allclose(found.weights[-1].sum(), 1.0, atol=1e-5)
    assert generation_step(app.trace(gpt2), 0, 0, 1) is None  # nothing generated


def test_a_statistic_with_no_value_for_cross_attention_draws_one_that_has_and_says_why(app, t5):
    """ "Previous token", "distance" and "self" compare a query's position with a key's: cross-attention's queries
    and keys are two texts, so every head's value is missing. The figure was an empty grid without a word."""
    fig, rows = tab.draw_statistics(app, t5, "cross", "previous_token")
    assert np.isfinite(heatmap(fig)).all() and rows
    title = fig.layout.title.text
    assert "previous_token: none for two texts" in title and "entropy: Entropy" in title
    fig, _ = tab.draw_statistics(app, t5, "self", "previous_token")  # defined for self-attention: drawn as asked
    assert np.isfinite(heatmap(fig)).all() and "no value" not in fig.layout.title.text


def test_a_sub_tab_selected_before_any_analysis_or_already_on_screen_draws_nothing(app, gpt2):
    """Gradio selects the sub-tab on screen as the Attention tab mounts: before the first analysis a throwaway
    figure cost the first real one a plotly render; after one, the tab's own drawing on opening drew it a second
    time. A sub-tab picked from another one draws and is remembered; an API call always draws."""
    import gradio as gr

    select = tab.showing("head", bind(tab.draw_head, app))
    clicked = gr.EventData(None, {"value": "One head", "index": 0})  # what the browser sends
    assert select(clicked, "head", None, "self", 0, 0, "weights") == (SKIP, SKIP)  # mounted before an analysis
    assert select(clicked, "head", gpt2, "self", 0, 0, "weights") == (SKIP, SKIP)  # mounted: the tab draws it
    fig, active = select(clicked, "grid", gpt2, "self", 0, 0, "weights")  # back from "All heads"
    assert active == "head" and heatmap(fig).shape[0] > 1
    fig, _ = select(gr.EventData(None, None), "head", gpt2, "self", 0, 0, "weights")  # an API call draws
    assert heatmap(fig).shape[0] > 1
    fig, _ = select(gr.EventData(None, None), "head", None, "self", 0, 0, "weights")  # ... or says why not
    assert "Analyze a text" in message(fig)
