"""The Retrieval tab's handlers, called directly (no server) on the bundled models."""

import pytest

from explorer.analysis.retrieval.generation import PRESETS
from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import retrieval as tab
from tests.plotly_json import figure_dict

QUESTION, ANSWER = PRESETS[0]


@pytest.fixture(scope="module")
def ctx():
    return AppContext()


def search(ctx, model, **kw):
    args = dict(set_name="facts", pasted="", uploads=None, size=60, overlap=10, unit="words", layer=4,
                question=QUESTION, k=5)  # fmt: skip
    args.update(kw)
    return tab.search_view(ctx, Selection(model, "x [MASK]"), *args.values(), None)


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-bert", "tiny-t5"])
def test_search_ranks_passages_three_ways_and_maps_them(ctx, model):
    note, rows, bars, ranks, shown = search(ctx, model, layer=2)
    assert "passages" in note and "layer 2" in note and model.replace("-", "\\-") in note, note
    assert len(rows) == 5 and [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert any(ANSWER.split()[0] in r[4] for r in rows)  # BM25 finds the fact, and fusion keeps it
    assert model in figure_dict(bars)["layout"]["title"]["text"]
    assert len(figure_dict(ranks)["data"]) >= 1 and len(figure_dict(shown)["data"]) >= 2


def test_the_index_is_built_once(ctx):
    first = search(ctx, "tiny-gpt2", size=40, overlap=5)[0]
    again = search(ctx, "tiny-gpt2", size=40, overlap=5, question=PRESETS[1][0])[0]
    assert "built in" in first and "found built" in again


def test_answer_with_and_without_the_passages(ctx):
    note, pair, lines, heat = tab.answer_view(
        ctx, Selection("tiny-gpt2", "x"), "facts", "", None, 60, 10, "words", 4, QUESTION, 5, 2, 4, None
    )
    assert note.startswith("- without the passages") and "**with** the top 2 passages" in note
    assert [t["name"] for t in figure_dict(lines)["data"]] == ["the passages", "the question"]
    assert len(figure_dict(heat)["data"][0]["y"]) == 4
    assert len(figure_dict(pair)["data"]) == 2


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"set_name": "none"}, "empty"),
        ({"question": "the of and"}, "stop"),
        ({"overlap": 80}, "overlap"),
        ({"layer": 99}, "layer"),
        ({"uploads": ["/etc/passwd"]}, ""),
        ({"pasted": "<svg onload=alert(1)>"}, ""),
    ],
)
def test_bad_input_gets_a_sentence(ctx, kw, words):
    note = search(ctx, "tiny-gpt2", **kw)[0]
    if kw.get("pasted"):  # a pasted text is searched, and quoted escaped
        assert "<svg" not in note
        return
    assert note.startswith("⚠️") and words in note.lower() and "Something went wrong" not in note, note


def test_an_encoder_cannot_answer_but_says_why(ctx):
    note = tab.answer_view(ctx, Selection("tiny-bert", "x [MASK]"), "facts", "", None, 60, 10, "words", 4,
                           QUESTION, 5, 2, 4, None)[0]  # fmt: skip
    assert note.startswith("⚠️") and "does not generate text" in note


def test_the_answer_attributed_to_the_passages_and_the_question(ctx):
    note, figure = tab.attribution_view(
        ctx, Selection("tiny-gpt2", "x"), "facts", "", None, 60, 10, "words", 4, QUESTION, 5, 2,
        "integrated_gradients", 1, None,
    )  # fmt: skip
    assert note.startswith("Integrated gradients") and "the passages hold" in note and "delta" in note, note
    names = {t["name"] for t in figure_dict(figure)["data"]}
    assert {"the passages", "the question"} <= names and "tiny-gpt2" in figure_dict(figure)["layout"]["title"]["text"]
    refused = tab.attribution_view(ctx, Selection("tiny-gpt2", "x"), "facts", "", None, 60, 10, "words", 4, QUESTION,
                                   5, 2, "vibes", 1, None)[0]  # fmt: skip
    assert refused.startswith("⚠️") and "Unknown attribution method" in refused


def test_the_embedding_layer_slider_spans_the_analysed_model(ctx):
    n = ctx.pool.get("tiny-gpt2").spec.n_layers
    update = tab.layer_range(ctx, Selection("tiny-gpt2", "x"))
    assert (update["maximum"], update["value"]) == (n, n)  # 0 (token embeddings) … the last layer, at the last
