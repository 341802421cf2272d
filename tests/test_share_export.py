"""Share links round-trip the settings they hold; exports write the numbers a figure shows."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import gradio as gr
import numpy as np
import pandas as pd

from explorer.plots.attention import attention_heatmap
from explorer.plots.decoding import stage_bars
from explorer.ui.export import write_export
from explorer.ui.share import restore, share_url, tab_names, tab_settings


def a_tab():
    with gr.Blocks():
        with gr.Tabs():
            with gr.Tab("Attention", id="attention") as tab:
                layer = gr.Slider(0, 63, value=0, step=1, label="Layer")
                show = gr.Radio([("weights", "w"), ("scores", "s")], value="w", label="Show")
                gr.Dropdown([], label="From token", allow_custom_value=True)  # per-model choices: not in links
    return tab, layer, show


def test_a_link_holds_changed_settings_only_and_restores_them():
    tab, layer, show = a_tab()
    settings = tab_settings(tab)
    assert list(settings) == ["attention.layer", "attention.show"]
    url = share_url("http://host/app?old=1", {"model": "tiny-t5", "text": "a b", "large": False}, "attention",
                    settings, [5, "w"])  # fmt: skip
    assert url.startswith("http://host/app?") and "old" not in url and "attention.show" not in url
    query = dict(parse_qsl(urlsplit(url).query))
    assert query == {"model": "tiny-t5", "text": "a b", "tab": "attention", "attention.layer": "5"}
    with gr.Blocks():
        shell = {"model": gr.Dropdown(["tiny-gpt2", "tiny-t5"], allow_custom_value=False), "text": gr.Textbox()}
    values = restore(query, shell, settings, tab_names([tab]))
    assert values[:2] == ["tiny-t5", "a b"] and values[3] == 5


def test_a_link_may_name_a_tab_by_its_label():
    """``?tab=next_token`` opened Tokens: the Next token tab's id is ``decoding``. Every tab of the app opens by
    its id and by its label, in any case."""
    from explorer.ui.app import build_app

    demo = build_app()
    (top,) = [b for b in demo.blocks.values() if isinstance(b, gr.Tabs) and isinstance(b.parent, gr.Blocks)]
    tabs = [t for t in top.children if isinstance(t, gr.Tab)]
    names = tab_names(tabs)
    for tab in tabs:
        for name in (tab.id, tab.label, tab.label.upper().replace(" ", "-")):
            (selected,) = restore({"tab": name}, {}, {}, names)
            assert selected.selected == tab.id, name
    assert names["next_token"] == "decoding"
    (nowhere,) = restore({"tab": "nowhere"}, {}, {}, names)
    assert isinstance(nowhere, type(gr.skip()))


def test_values_that_do_not_fit_are_ignored():
    tab, _, _ = a_tab()
    with gr.Blocks():
        shell = {"model": gr.Dropdown(["tiny-gpt2"], allow_custom_value=False)}  # hosted mode: catalogue only
    query = {"model": "someone/else", "tab": "nowhere", "attention.layer": "99", "attention.show": "x"}
    values = restore(query, shell, tab_settings(tab), {"attention": "attention"})
    assert all(isinstance(v, type(gr.skip())) for v in values)


def test_export_writes_each_cell_with_its_token_labels():
    weights = np.array([[1.0, 0.0], [0.25, 0.75]])
    fig = attention_heatmap(weights, ["The", "cat"], ["The", "cat"], "one head", True)
    table = pd.read_csv(write_export({"plot": fig.to_json()}, "csv"))
    cells = {(r.row, r.column): r.value for r in table.itertuples()}
    assert cells[("cat", "The")] == 0.25 and cells[("cat", "cat")] == 0.75 and np.isnan(cells[("The", "cat")])
    data = json.loads(open(write_export({"plot": fig.to_json()}, "json"), encoding="utf-8").read())
    assert data["traces"][0]["z"][1] == [0.25, 0.75]
    html = open(write_export({"plot": fig.to_json()}, "html"), encoding="utf-8").read()
    assert "plotly" in html.lower() and "one head" in html


def test_export_of_bars_keeps_labels_and_values():
    fig = stage_bars(["a", "b"], ["model"], np.array([[0.6, 0.4]]), np.ones((1, 2), bool))
    table = pd.read_csv(write_export({"plot": fig.to_json()}, "csv"))
    assert list(zip(table.x, table.y)) == [("a", 0.6), ("b", 0.4)]


def test_files_handed_to_users_are_removed_after_a_while():
    import os
    import time

    from explorer.ui.export import SCRATCH_TTL_S, scratch_folder

    old, recent = scratch_folder(), scratch_folder()
    (old / "figure.html").write_text("x")
    os.utime(old, (time.time() - SCRATCH_TTL_S - 5,) * 2)
    fresh = scratch_folder()
    assert not old.exists() and recent.is_dir() and fresh.is_dir() and fresh != recent


def test_a_long_text_is_left_out_of_the_link():
    url = share_url("http://host/app", {"model": "tiny-gpt2", "text": "word " * 1000}, "tokens", {}, [])
    assert "text=" not in url and "model=tiny-gpt2" in url and len(url) < 200
