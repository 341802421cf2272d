"""What figures say and how they say it: model text escaped, titles wrapped and naming the model, and the
small defects a teacher saw (faint links, a pale 3-D map, unlabelled neighbours, raw ``**``, ``Ġ``, a stray
share-link setting, a lesson path longer than the tabs)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from explorer.analysis.tokens.bpe import train_bpe
from explorer.plots.attention import attention_heatmap, link_opacity, token_links
from explorer.plots.attribution import attribution_heatmap
from explorer.plots.embeddings import FOCUS_NEIGHBOURS, token_map
from explorer.plots.text import TITLE_LINE, plot_text, plot_texts, wrap_title
from explorer.ui.assets import sample_texts

SPECIAL = ["<pad>", "</s>", "<unk>", "a&b"]


def test_model_text_is_escaped_for_plotly():
    assert plot_text("</s>") == "&lt;/s&gt;"
    assert plot_texts(np.array([["<pad>", "x"]])) == [["&lt;pad&gt;", "x"]]


@pytest.mark.parametrize("draw", [
    lambda: attention_heatmap(np.full((4, 4), 0.25), SPECIAL, SPECIAL, "tiny-t5 · </s> <b>bold</b>"),
    lambda: attribution_heatmap(np.ones((2, 4)), ["<pad>", "</s>"], SPECIAL, "tiny-t5 · </s>"),
    lambda: token_links(np.full((4, 4), 0.25), SPECIAL, SPECIAL, None, "tiny-t5 · </s>"),
])  # fmt: skip
def test_no_raw_tag_from_model_text_reaches_a_figure(draw):
    """Every label, hover and title of the figure: a token like ``</s>`` arrives escaped, never as a tag."""
    fig = json.dumps(draw().to_plotly_json(), default=lambda v: repr(np.asarray(v).tolist()))
    for token in ("</s>", "<pad>", "<unk>", "<b>bold", "a&b"):
        assert token not in fig, token
    assert "&lt;/s&gt;" in fig


def test_titles_wrap_to_a_phone_and_keep_every_part():
    title = "cross-attention (decoder → encoder) · layer 3 · head 1 · tiny-t5 · “Let there be light: and there was”"
    lines = wrap_title(title).split("<br>")
    assert len(lines) > 1 and all(len(line) <= TITLE_LINE for line in lines)
    assert " ".join(lines).replace(" ·", "").split() == title.replace(" ·", "").split()


def test_a_word_longer_than_a_line_is_cut():
    lines = wrap_title("Position similarity · roberta_prelayernorm.embeddings.position_embeddings").split("<br>")
    assert all(len(line) <= TITLE_LINE for line in lines) and "".join(lines).endswith("position_embeddings")


def test_faint_attention_still_draws_a_visible_line():
    assert link_opacity(0.02) >= 0.3 and link_opacity(0.1) >= 0.45 and link_opacity(1.0) == pytest.approx(1.0)
    fig = token_links(np.array([[0.9, 0.1], [0.5, 0.5]]), ["a", "b"], ["a", "b"])
    alphas = [float(re.search(r"([\d.]+)\)$", t.line.color).group(1)) for t in fig.data if t.mode == "lines"]
    assert min(alphas) >= 0.45


def test_a_three_d_map_is_dark_enough_and_fills_its_box():
    coords = np.random.default_rng(0).normal(size=(50, 3))
    fig = token_map(coords, [f"t{i}" for i in range(50)], np.arange(50), "tiny-gpt2 · PCA 3D")
    alpha = float(re.search(r"([\d.]+)\)$", fig.data[0].marker.color).group(1))
    assert alpha >= 0.7 and fig.data[0].marker.size >= 3
    assert fig.layout.scene.aspectmode == "cube" and fig.layout.margin.l == 0


def test_a_searched_token_has_its_neighbours_labelled():
    coords = np.random.default_rng(1).normal(size=(40, 2))
    labels = [f"w{i}" for i in range(40)]
    fig = token_map(coords, labels, np.arange(40), "tiny-gpt2", focus=(coords[3], "w3"))
    named = [t for t in fig.data if t.name == "its nearest tokens here"]
    assert named and len(named[0].text) == FOCUS_NEIGHBOURS and "w3" in named[0].text


def test_the_trained_bpe_shows_bold_as_html_and_spaces_as_the_app_does():
    from explorer.ui.tabs.tokens import merge_rows, trained_view

    trained = train_bpe(next(iter(sample_texts().values()))[:20_000], 300)
    rows = merge_rows(trained.merges)
    shown = " ".join(str(cell) for row in rows for cell in row)
    assert "Ġ" not in shown and "␣" in shown
    html = trained_view(trained.tokenizer, "The tiger <b>jumped</b>.")
    assert "**" not in html and "<b>" in html and "<b>jumped</b>" not in html


@pytest.fixture(scope="module")
def top_tabs():
    import gradio as gr

    from explorer.ui.app import build_app

    demo = build_app()
    tabs = next(b for b in demo.blocks.values() if isinstance(b, gr.Tabs) and isinstance(b.parent, gr.Blocks))
    return [t for t in tabs.children if isinstance(t, gr.Tab)]


def test_the_lesson_path_has_one_step_per_tab_in_tab_order(top_tabs):
    from explorer.ui.lessons import lesson_path

    steps = re.findall(r"^\d+\. \*\*(.+?)\*\*", lesson_path(), flags=re.M)
    assert steps == [t.label for t in top_tabs]


def test_a_share_link_leaves_out_settings_filled_from_the_model(top_tabs):
    from explorer.ui.share import tab_settings

    kv = next(t for t in top_tabs if t.id == "kv_cache")
    keys = set(tab_settings(kv))
    assert "kv_cache.layers" not in keys and "kv_cache.kv_heads" not in keys
    assert "kv_cache.new_tokens" in keys  # the user's own settings stay
