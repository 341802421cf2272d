"""The Quantize & speculate tab's handlers, called directly (no server) on the bundled models."""

import gradio as gr
import pytest

from explorer.analysis.inference.quantized_sessions import QuantizedCopies
from explorer.analysis.lora.sessions import SessionBudget
from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import inference as tab
from tests.plotly_json import figure_dict, message, title

TEXT = "The tiger jumped out of a tree to get a drink because it was thirsty. The tiger jumped out of a"


@pytest.fixture(scope="module")
def ctx():
    return AppContext()


@pytest.fixture
def copies():
    return QuantizedCopies(SessionBudget(2**30))


def test_quantization_table_and_views(ctx, copies):
    note, rows, sizes, errors, histogram, pair, matrices = tab.quantize_view(
        ctx, copies, Selection("tiny-gpt2", TEXT), ["float16", "int4-g32-sym"], "int4-g32-sym", None
    )
    assert [r[0] for r in rows] == ["float16", "int4-g32-sym"] and rows[1][1] == "simulated"
    # numbers and short words only in the table (a sentence in a cell hid the numbers at 1280 px): how each
    # precision ran is said under it
    assert len(rows[0]) == len(tab.TABLE_COLUMNS) and all(len(str(cell)) <= 16 for row in rows for cell in row)
    assert "\n- **float16**: weights cast to float16" in note and "\n- **int4\\-g32\\-sym**: simulated\\: " in note
    assert float(rows[0][3]) == pytest.approx(0.5, abs=0.01) and float(rows[1][3]) < 0.25  # size against float32
    assert [t["name"] for t in figure_dict(sizes)["data"]] == ["measured", "formula"]
    assert len(figure_dict(errors)["data"][0]["x"]) > 10  # one bar per weight matrix
    assert [t["name"] for t in figure_dict(histogram)["data"]] == ["float32", "quantized"]
    assert [t["name"] for t in figure_dict(pair)["data"]] == ["float32", "int4-g32-sym"]
    assert "tiny\\-gpt2" in note
    assert "transformer.wte.weight" in matrices["choices"] and matrices["value"] == "transformer.wte.weight"  # biggest
    assert copies.held("local") == [("tiny-gpt2", "int4-g32-sym")]


def test_looking_at_another_matrix_or_again_reuses_the_sessions_copy(ctx, copies):
    selection = Selection("tiny-gpt2", TEXT)
    alice, bob = gr.Request(session_hash="alice"), gr.Request(session_hash="bob")
    errors, histogram, pair, matrices = tab.inside_view(ctx, copies, selection, "int8", None, alice)
    name = "transformer.h.1.mlp.c_fc.weight"
    _, other, _, picked = tab.inside_view(ctx, copies, selection, "int8", name, alice)
    assert copies.made == 1 and picked["value"] == name and name in title(other)
    assert title(other) != title(histogram)
    tab.inside_view(ctx, copies, selection, "int8", name, bob)
    assert copies.made == 2 and copies.held("alice") == copies.held("bob") == [("tiny-gpt2", "int8")]
    tab.unloaded(ctx, copies, alice)
    assert copies.held("alice") == [] and copies.held("bob") and copies.budget.held > 0
    figures = tab.inside_view(ctx, copies, selection, "float32", None, bob)
    assert "Pick a precision" in message(figures[0])


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
    assert [t["name"] for t in data] == ["measured", "formula", "formula, real pass costs"]
    assert list(data[0]["x"]) == list(data[2]["x"]) == [1, 2, 4, 8] and "measured costs" in note


@pytest.mark.parametrize(
    "call, words",
    [
        (
            lambda ctx: tab.quantize_view(ctx, QuantizedCopies(), Selection("tiny-gpt2", TEXT), [], "int8", None)[0],
            "at least one",
        ),
        (
            lambda ctx: tab.quantize_view(ctx, QuantizedCopies(), Selection("tiny-gpt2", TEXT), ["int3"], "int3", None)[
                0
            ],
            "precision",
        ),
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


def test_the_bundled_draft_model_is_offered_only_for_its_vocabulary(ctx):
    layers, drafts = tab.layer_range(ctx, Selection("tiny-gpt2", TEXT), "model")
    n = ctx.pool.get("tiny-gpt2").spec.n_layers
    assert (layers["maximum"], layers["value"]) == (n - 1, n // 2)  # an early exit: below the last layer
    assert [k for _, k in drafts["choices"]] == ["early", "lookup", "model"] and drafts["value"] == "model"
    _, drafts = tab.layer_range(ctx, Selection("tiny-t5", "The <extra_id_0> sat."), "model")
    assert [k for _, k in drafts["choices"]] == ["early", "lookup"] and drafts["value"] == "early"
    note, steps, figure = tab.speculate_view(ctx, Selection("tiny-gpt2", TEXT), "model", 2, 4, 16, 0, 0, None)
    assert "exactly plain greedy" in note and tab.ACCEPTED in {label for _, label in steps}
    assert tab.DRAFT_MODEL in title(figure)
    refused = tab.speculate_view(ctx, Selection("tiny-t5", "The <extra_id_0> sat."), "model", 2, 4, 8, 0, 0, None)[0]
    assert refused.startswith("⚠️") and "vocabulary" in refused


def test_the_app_counts_fine_tunes_and_quantized_copies_in_the_contexts_one_budget():
    from explorer.analysis.lora.sessions import SessionRegistry
    from explorer.ui.app import build_app

    ctx = AppContext()
    demo = build_app(ctx)
    held = [obj for fn in demo.fns.values() for obj in closure_objects(fn.fn, (SessionRegistry, QuantizedCopies))]
    assert {type(o) for o in held} == {SessionRegistry, QuantizedCopies}
    assert all(o.budget is ctx.copies_budget for o in held)


def closure_objects(fn, kinds) -> list:
    """The objects of ``kinds`` an event function holds, through the wrappers (``bind``, ``guarded``, ``on_gpu``)."""
    found, todo, seen = [], [fn], set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, kinds):
            found.append(obj)
        elif isinstance(obj, tuple):
            todo.extend(obj)
        elif callable(obj):
            for cell in getattr(obj, "__closure__", None) or ():
                try:
                    todo.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
            todo.extend(w for w in (getattr(obj, "__wrapped__", None),) if w is not None)
    return found
