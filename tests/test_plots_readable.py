"""Figures that stay readable: the logit lens's cell text (a floor on its size, none where a cell is too small,
tokens written as the rest of the app writes them) and the figures of a long text (every n-th token on the
axes, token links of a readable height with no blank band). Real bundled models, figures as the browser gets
them (plotly JSON)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from explorer.plots.attention import attention_heatmap, token_links
from explorer.plots.text import readable_token
from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import attention as attention_tab
from explorer.ui.tabs import decoding as decoding_tab
from tests.plotly_json import figure_dict

TIGER = "The tiger jumped out of a tree to get a drink because it was thirsty."
LONG = ("The quick brown fox jumps over the lazy dog. " * 120)[:5000]  # 5,000 characters: cut to 512 tokens
MAX_TICK_LABELS = 40  # what an axis may label at most: past that every n-th token
CELL_MIN_FONT = 10  # px: the smallest cell text at 1280 px
LINKS_TOKENS = 40  # token links of a long text: this many tokens a side


@pytest.fixture(scope="module")
def ctx():
    return AppContext()


def lens_of(ctx, text: str) -> dict:
    return figure_dict(decoding_tab.show_lens(ctx, Selection("tiny-gpt2", text)))


def cell_text(fig: dict) -> dict | None:
    """The trace that writes the predicted tokens into the cells (None: the cells carry no text)."""
    texts = [t for t in fig["data"] if t["type"] != "heatmap" and t.get("text") is not None]
    return texts[0] if texts else None


def test_logit_lens_cell_text_never_shrinks_below_a_floor(ctx):
    """Plotly fits a heatmap's own text to its cells, down to a pixel (8 px at 1280 px, 1 px with Large fonts
    in the ablation lenses): the cells' text has a fixed size, and where a cell is too small it is hidden."""
    fig = lens_of(ctx, TIGER)
    heatmap = fig["data"][0]
    assert not heatmap.get("texttemplate"), "the heatmap's own text is sized to the cells, however small"
    text = cell_text(fig)
    assert text is not None, "the cells name no tokens"
    assert text["textfont"]["size"] >= CELL_MIN_FONT >= 10
    assert fig["layout"]["uniformtext"] == {"minsize": CELL_MIN_FONT, "mode": "hide"}
    assert len(text["text"]) == 5 * 19  # a cell each: tiny-gpt2's embeddings and 4 layers, 19 tokens
    assert "predicts %{text}" in heatmap["hovertemplate"]  # the hover names the token whatever the cell shows


def test_undrawable_characters_are_written_as_their_codes():
    """A control character (``visible`` writes it ``\\x1c``), a zero-width one and a carriage return (``␍``,
    an empty box in the common fonts) are written as codes, the way half a character already is (``<d8>``)."""
    assert readable_token("\\x1c") == "<1c>" and readable_token("a␍") == "a<0d>"
    assert readable_token("\\u200d") == "<U+200D>"
    assert readable_token("<d8>") == "<d8>" and readable_token("␣the") == "␣the"


def test_logit_lens_writes_bytes_and_control_characters_readably(ctx):
    """Pieces of characters (an emoji is four byte tokens) and the control characters tiny-gpt2's layers may predict
    (which ones depends on the weights): none is shown in the raw form a figure cannot draw. The text has its own
    emoji since the bundled decoder's rows for bytes it never read were set to the mean: it no longer predicts them."""
    fig = lens_of(ctx, TIGER.replace("tiger", "tiger 🐯"))
    shown = json.dumps([cell_text(fig)["text"], fig["data"][0]["text"], fig["layout"]["xaxis"]["ticktext"]])
    assert "\\\\x" not in shown and "\\\\u" not in shown and "␍" not in shown, shown
    assert re.search(r"&lt;[0-9a-f]{2}&gt;", shown), "a piece of a character, written as its code"


def test_a_long_texts_logit_lens_labels_every_nth_token_and_no_cell(ctx):
    fig = lens_of(ctx, LONG)
    assert len(fig["data"][0]["x"]) == 512  # the text was cut to 512 tokens, one column each
    ticks = fig["layout"]["xaxis"]["ticktext"]
    assert MAX_TICK_LABELS // 2 <= len(ticks) <= MAX_TICK_LABELS, len(ticks)
    assert cell_text(fig) is None and not fig["data"][0].get("texttemplate")  # 2 px cells: no text at all


def test_a_long_texts_one_head_labels_every_nth_token_and_hover_names_each(ctx):
    fig = figure_dict(attention_tab.draw_head(ctx, Selection("tiny-gpt2", LONG), "self", 0, 0, "weights"))
    for axis in ("xaxis", "yaxis"):
        ticks = fig["layout"][axis]["ticktext"]
        assert MAX_TICK_LABELS // 2 <= len(ticks) <= MAX_TICK_LABELS, (axis, len(ticks))
        assert fig["layout"][axis]["tickfont"]["size"] >= 10
    heatmap = fig["data"][0]
    rows = heatmap["y"]
    assert len(rows) == 256 and len(set(rows)) == 256  # 2×2-token blocks, each row its own
    assert rows[1] == "2 ␣brown" and "%{y}" in heatmap["hovertemplate"]  # the hover names the row's token


def test_a_short_head_keeps_a_label_per_token_and_its_causal_triangle():
    labels = ["The", "␣cat", "␣sat", "␣on", "␣the", "␣mat"]
    weights = np.tril(np.ones((6, 6)))
    fig = attention_heatmap(weights / weights.sum(axis=1, keepdims=True), labels, labels, "tiny-gpt2", causal=True)
    assert list(fig.layout.xaxis.ticktext) == labels and list(fig.layout.yaxis.tickvals) == list(fig.data[0].y)
    assert fig.layout.shapes[0].path.startswith("M 0.5,-0.5 L 0.5,-0.5 L 0.5,0.5")  # the first row's masked cells


def test_a_long_texts_token_links_show_a_window_of_readable_height_with_no_blank_band(ctx):
    selection = Selection("tiny-gpt2", LONG)
    *_, fig = attention_tab.draw_links(ctx, selection, "self", 0, 0, -1, [])
    fig = figure_dict(fig)
    layout = fig["layout"]
    assert layout["height"] <= 1200, layout["height"]  # was 11,344 px
    assert layout["yaxis"]["range"] == [LINKS_TOKENS - 0.5, -0.5]  # the first token on the top row: no padding
    assert "tokens 0–39 of 512" in layout["title"]["text"].replace("<br>", " ")
    queries = next(t for t in fig["data"] if t.get("name") == "query tokens")
    assert len(queries["text"]) == LINKS_TOKENS

    *_, fig = attention_tab.draw_links(ctx, selection, "self", 0, 0, 300, [])
    fig = figure_dict(fig)
    shown = fig["layout"]["title"]["text"].replace("<br>", " ")
    assert "queries 280–319 of 512; the 40 of 512 keys it weighs most" in shown, shown
    queries = next(t for t in fig["data"] if t.get("name") == "query tokens")
    assert queries["customdata"][20][0] == 300  # the chosen token, in the middle, with its own position
    lines = [t for t in fig["data"] if t.get("mode") == "lines"]
    assert lines and all(y == 20 for t in lines for y in t["y"][0::3])  # only its lines


def test_token_links_of_a_short_text_have_no_blank_band():
    labels = ["a", "b", "c"]
    fig = token_links(np.full((3, 3), 1 / 3), labels, labels, None, "tiny-gpt2")
    assert tuple(fig.layout.yaxis.range) == (2.5, -0.5) and "of 3" not in fig.layout.title.text
