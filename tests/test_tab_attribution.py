"""The Attribution tab's handlers, called directly (no server) on the bundled models."""

import pytest

from explorer.ui.context import AppContext, Selection, md_escape
from explorer.ui.tabs import attribution as tab
from tests.plotly_json import figure_dict


@pytest.fixture(scope="module")
def ctx():
    return AppContext()


def test_predictions_are_listed_and_explained_with_the_completeness_check(ctx):
    selection = Selection("tiny-gpt2", "The tiger jumped out of a tree")
    listed = tab.list_predictions(ctx, selection, 3)
    assert len(listed["choices"]) == 3 and listed["value"] == 0
    note, html_a, html_b, figure = tab.attribute_view(
        ctx, selection, "integrated_gradients", "saliency", "probability", "pad", 3, 8, 0, None
    )
    assert "convergence delta" in note and "Saliency" in note and "⚠️" not in note.split("·")[0]
    assert "␣tree" in html_a and "␣jump" in html_b
    bars = figure_dict(figure)
    assert {t["name"] for t in bars["data"]} == {"Integrated gradients", "Saliency (gradient norm)"}
    assert "tiny-gpt2" in bars["layout"]["title"]["text"]


def test_bad_choices_are_sentences_not_errors(ctx):
    selection = Selection("tiny-gpt2", "The tiger jumped")
    for index in ("x", tab.MAX_NEW_TOKENS):  # not a number; past any list the tab shows
        note, _, _, figure = tab.attribute_view(
            ctx, selection, "saliency", None, "probability", "pad", 2, 4, index, None
        )
        assert note.startswith("⚠️") and "predictions listed" in note
    assert tab.attribute_view(ctx, None, "saliency", None, "probability", "pad", 2, 4, 0, None)[0].startswith("⚠️")


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-t5"])
def test_a_choice_from_a_longer_list_explains_the_first_word_and_says_so(ctx, model):
    """The list follows "Tokens to generate", but a click can go out with the old list's choice (index 3 of 6)
    before the one-item list arrives: the first word is explained, and the note says so."""
    selection = Selection(model, "The tiger jumped")
    listed = tab.list_predictions(ctx, selection, 1)
    note, _, _, figure = tab.attribute_view(ctx, selection, "saliency", None, "probability", "pad", 1, 4, 3, None)
    assert note.startswith("Prediction 4 is not among the 1 listed now; the first word instead:"), note
    assert f"**{md_escape(listed['choices'][listed['value']][0])}**" in note
    assert "Why" in figure_dict(figure)["layout"]["title"]["text"]


def test_the_whole_generation_streams_rows_then_the_matrix(ctx):
    selection = Selection("tiny-t5", "Let there be light.")
    updates = list(tab.matrix_view(ctx, selection, "saliency", "probability", "pad", 3, 4, None))
    assert updates[0][0].startswith("⏳ 1 of")
    note, figure = updates[-1]
    heatmap = figure_dict(figure)["data"][0]
    assert heatmap["type"] == "heatmap" and "rows" in note
    assert len(heatmap["y"]) == 3 and len(heatmap["x"]) >= 5
    assert not any("</s>" in str(label) for label in heatmap["x"])  # model text escaped for plotly


def test_stop_sets_only_the_requesting_sessions_flag():
    class Request:
        def __init__(self, session):
            self.session_hash = session

    with tab.STOPS.running(Request("a")) as stop_a, tab.STOPS.running(Request("b")) as stop_b:
        tab.STOPS.stop(Request("a"))  # what the Stop button calls (tests/test_stops.py: through the app)
        assert stop_a() and not stop_b()


def test_one_explained_row_is_one_row_not_one_rows(ctx):
    updates = list(tab.matrix_view(ctx, Selection("tiny-t5", "Let there be light."), "saliency", "probability",
                                   "pad", 1, 4, None))  # fmt: skip
    note, _ = updates[-1]
    assert " 1 row " in note and "1 rows" not in note  # the note read "1 rows"
