"""The Quantize & speculate tab's handlers, called directly (no server) on the bundled models."""

import pytest

from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import inference as tab
from tests.plotly_json import figure_dict

TEXT = "The tiger jumped out of a tree to get a drink because it was thirsty. The tiger jumped out of a"


@pytest.fixture(scope="module")
def ctx():
    return AppContext()


def test_quantization_table_and_views(ctx):
    note, rows, sizes, errors, histogram, pair = tab.quantize_view(
        ctx, Selection("tiny-gpt2", TEXT), ["float16", "int4-g32-sym"], "int4-g32-sym", None
    )
    assert [r[0] for r in rows] == ["float16", "int4-g32-sym"] and "simulated" in rows[1][1]
    assert float(rows[0][3]) == pytest.approx(0.5, abs=0.01) and float(rows[1][3]) < 0.25  # size against float32
    assert [t["name"] for t in figure_dict(sizes)["data"]] == ["measured", "formula"]
    assert len(figure_dict(errors)["data"][0]["x"]) > 10  # one bar per weight matrix
    assert [t["name"] for t in figure_dict(histogram)["data"]] == ["float32", "quantized"]
    assert [t["name"] for t in figure_dict(pair)["data"]] == ["float32", "int4-g32-sym"]
    assert "tiny\\-gpt2" in note


@pytest.mark.parametrize("kind", ["early", "lookup"])
def test_speculative_steps_are_marked_and_counted(ctx, kind):
    note, steps, figure = tab.speculate_view(ctx, Selection("tiny-gpt2", TEXT), kind, 2, 4, 12, 0, 0, None)
    assert "exactly plain greedy" in note and "acceptance α" in note
    marks = {label for _, label in steps}
    assert tab.REPLACED in marks and marks <= {tab.ACCEPTED, tab.REFUSED, tab.REPLACED, None}
    assert len(figure_dict(figure)["data"][0]["x"]) == 4  # one bar per proposal position


def test_the_speed_up_against_k_has_both_lines(ctx):
    note, figure = tab.speedup_view(ctx, Selection("tiny-gpt2", TEXT), "lookup", 2, 8, None)
    assert "every run wrote exactly plain greedy" in note
    data = figure_dict(figure)["data"]
    assert [t["name"] for t in data] == ["measured", "formula"] and list(data[0]["x"]) == [1, 2, 4, 8]


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda ctx: tab.quantize_view(ctx, Selection("tiny-gpt2", TEXT), [], "int8", None)[0], "at least one"),
        (lambda ctx: tab.quantize_view(ctx, Selection("tiny-gpt2", TEXT), ["int3"], "int3", None)[0], "precision"),
        (
            lambda ctx: tab.speculate_view(ctx, Selection("tiny-bert", "a [MASK]"), "early", 2, 4, 8, 0, 0, None)[0],
            "does not generate",
        ),
        (lambda ctx: tab.speculate_view(ctx, Selection("tiny-gpt2", TEXT), "early", 2, 99, 8, 0, 0, None)[0], "k"),
        (lambda ctx: tab.speculate_view(ctx, None, "early", 2, 4, 8, 0, 0, None)[0], "analyze"),
    ],
)
def test_bad_input_gets_a_sentence(ctx, call, words):
    note = call(ctx)
    assert note.startswith("⚠️") and words in note.lower() and "Something went wrong" not in note, note
