"""Attention tab: one head, every head, token links, head statistics and attention during generation.

Everything here re-plots from the cached trace; only the pre-softmax scores (one extra forward
pass) and "during generation" (one generate + forward) run the model, once per selection.
"""

from __future__ import annotations

import dataclasses

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from explorer.analysis.attention.heads import (
    STAT_COLUMNS,
    STATISTICS,
    attention_rollout,
    average_heads,
    head_statistics,
    head_statistics_table,
)
from explorer.core.trace import KIND_NAMES, Trace
from explorer.plots.attention import attention_grid, attention_heatmap, statistic_heatmap, token_links
from explorer.plots.text import message_figure
from explorer.ui.context import AppContext, Selection, about, guarded, md_escape, warning

EXPLANATION = """Each token's **query** is compared with every token's **key**: a dot product scaled by \
1/√d<sub>k</sub> (so scores do not grow with the head width). A **softmax** turns each row of scores into \
weights that sum to 1, and the token's output is the weighted mix of the **values**. A decoder may not \
look ahead: a **mask** sets future scores to −∞, so its grid is empty above the diagonal. Each layer has \
several **heads**, each free to learn its own pattern (the previous token, the first token, the same \
word...). T5 adds **cross-attention**: target tokens looking at the source. Try the preset below and \
look for the head where *it* attends to *tiger*."""
TIGER = "The tiger jumped out of a tree to get a drink because it was thirsty."
VALUES = {
    "weights": "attention weights (after softmax)",
    "scores": "pre-softmax scores Q·Kᵀ/√d (masked cells grey)",
    "rollout": "attention rollout through layers 0..L (Abnar & Zuidema)",
}
MAX_GENERATE = 32
MAX_INDEX = 63


def is_causal(trace: Trace, kind: str) -> bool:
    return trace.adapter.is_causal(kind)


def _pick(trace: Trace, kind, layer, head) -> tuple[str, int, int]:
    kind = kind if kind in trace.kinds else trace.kinds[0]
    layer = int(min(max(0, layer or 0), trace.n_layers - 1))
    head = int(min(max(0, head or 0), trace.n_heads - 1))
    return kind, layer, head


def head_figure(ctx: AppContext, selection: Selection, kind, layer, head, values) -> go.Figure:
    trace = ctx.trace(selection)
    kind, layer, head = _pick(trace, kind, layer, head)
    q_stream, k_stream = trace.streams_of(kind)
    q_labels, k_labels = trace.labels(q_stream), trace.labels(k_stream)
    where = f"{KIND_NAMES[kind]} · layer {layer}"
    if values == "scores":
        scores = ctx.scores(selection)[kind][layer, head]
        title = f"{where} · head {head} · pre-softmax scores · {about(selection)}"
        return attention_heatmap(scores, q_labels, k_labels, title, is_causal(trace, kind), value_name="score")
    if values == "rollout":
        if q_stream != k_stream:
            return message_figure("Rollout follows attention through one stream's layers; pick a self-attention kind.")
        rolled = attention_rollout(trace.attentions[kind])[layer]
        title = f"{where} · rollout of all heads, layers 0–{layer} · {about(selection)}"
        return attention_heatmap(rolled, q_labels, k_labels, title, is_causal(trace, kind))
    title = f"{where} · head {head} · {about(selection)}"
    return attention_heatmap(trace.attn(layer, head, kind), q_labels, k_labels, title, is_causal(trace, kind))


def statistics_of(trace: Trace, kind: str) -> dict[str, np.ndarray]:
    q_stream, k_stream = trace.streams_of(kind)
    return head_statistics(trace.attentions[kind], is_causal(trace, kind), same_stream=q_stream == k_stream)


def build(ctx: AppContext, shared) -> None:  # noqa: C901  (one tab, many small views)
    with gr.Tab("Attention", id="attention"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        shared.preset_button("Preset: “The tiger … because it was thirsty.”", TIGER)
        with gr.Row():
            kind = gr.Radio(
                [(name, k) for k, name in KIND_NAMES.items()],
                value="self",
                label="Attention kind (one the model lacks shows its first; the title says which)",
                scale=3,
            )
            # Wide initial ranges (fitted to the model after each analysis) so API calls validate.
            layer = gr.Slider(0, MAX_INDEX, value=0, step=1, label="Layer", scale=1)
            head = gr.Slider(0, MAX_INDEX, value=0, step=1, label="Head", scale=1)
        with gr.Tabs() as views:
            with gr.Tab("One head", id="one_head") as head_tab:
                values = gr.Radio([(v, k) for k, v in VALUES.items()], value="weights", label="Show")
                head_plot = gr.Plot(label="One head")
            with gr.Tab("All heads") as grid_tab:
                gr.Markdown("Every layer (rows) × head (columns) at a glance. Pick one to open it in *One head*.")
                open_head = gr.Dropdown([], label="Open head", interactive=True)
                grid_plot = gr.Plot(label="All heads")
            with gr.Tab("Token links") as links_tab:
                gr.Markdown(
                    "Lines from each query token (left) to the keys it attends to (right); thicker = more weight."
                )
                with gr.Row():
                    # Choices are filled per model when the view is drawn; API calls may pass any index.
                    query = gr.Dropdown(
                        [("all tokens", -1)], value=-1, label="From token", interactive=True, allow_custom_value=True
                    )
                    heads = gr.CheckboxGroup(
                        list(range(MAX_INDEX + 1)), label="Average these heads (none: the head selected above)"
                    )
                links_plot = gr.Plot(label="Token links")
            with gr.Tab("Head statistics") as stats_tab:
                statistic = gr.Dropdown(
                    [(f"{k}: {v}", k) for k, v in STATISTICS.items()], value="previous_token", label="Statistic"
                )
                stat_plot = gr.Plot(label="Statistic per head")
                stat_table = gr.Dataframe(
                    headers=STAT_COLUMNS, interactive=False, label="All heads (click a column to sort)"
                )
            with gr.Tab("During generation") as gen_tab:
                gr.Markdown(
                    "A decoder writes one token at a time. Generate a few tokens, then step through them: each "
                    "step shows what the new token attended to (the selected layer and head) when it was written."
                )
                with gr.Row():
                    n_new = gr.Slider(1, MAX_GENERATE, value=8, step=1, label="Tokens to generate")
                    generate = gr.Button("Generate")
                step = gr.Slider(1, MAX_GENERATE, value=1, step=1, label="Step")
                step_text = gr.Markdown()
                step_plot = gr.Plot(label="Attention of the new token")
        active = gr.State("head")  # the sub-tab on screen: only its figure is drawn and sent
    selectors = [shared.state, kind, layer, head]

    @guarded(message_figure)
    def draw_head(selection, kind_v, layer_v, head_v, values_v):
        if selection is None:
            return message_figure("Analyze a text to see its attention.")
        return head_figure(ctx, selection, kind_v, layer_v, head_v, values_v)

    @guarded(lambda msg: (gr.skip(), message_figure(msg)))
    def draw_grid(selection, kind_v):
        if selection is None:
            return gr.skip(), message_figure("Analyze a text first.")
        trace = ctx.trace(selection)
        kind_v, _, _ = _pick(trace, kind_v, 0, 0)
        choices = [f"L{l} H{h}" for l in range(trace.n_layers) for h in range(trace.n_heads)]  # noqa: E741
        fig = attention_grid(trace.attentions[kind_v], f"All heads · {KIND_NAMES[kind_v]} · {about(selection)}")
        return gr.update(choices=choices, value=None), fig

    def open_selected(choice, selection, kind_v, values_v):
        """Open the head picked in the grid in the one-head view."""
        if not choice:
            return (gr.skip(),) * 5
        layer_s, head_s = choice.split()
        layer_v, head_v = int(layer_s[1:]), int(head_s[1:])
        figure = draw_head(selection, kind_v, layer_v, head_v, values_v)
        return layer_v, head_v, gr.Tabs(selected="one_head"), "head", figure

    @guarded(lambda msg: (gr.skip(), gr.skip(), message_figure(msg)))
    def draw_links(selection, kind_v, layer_v, head_v, query_v, heads_v):
        if selection is None:
            return gr.skip(), gr.skip(), message_figure("Analyze a text first.")
        trace = ctx.trace(selection)
        kind_v, layer_v, head_v = _pick(trace, kind_v, layer_v, head_v)
        q_stream, k_stream = trace.streams_of(kind_v)
        q_labels = trace.labels(q_stream)
        chosen = [int(h) for h in heads_v or [] if int(h) < trace.n_heads] or [head_v]
        weights = average_heads(trace.attentions[kind_v][layer_v], chosen)
        query_v = int(query_v) if str(query_v).lstrip("-").isdigit() else -1
        selected = query_v if 0 <= query_v < len(q_labels) else None
        which = f"head {chosen[0]}" if len(chosen) == 1 else f"mean of heads {', '.join(map(str, chosen))}"
        title = f"{KIND_NAMES[kind_v]} · layer {layer_v} · {which} · {about(selection)}"
        fig = token_links(weights, q_labels, trace.labels(k_stream), selected, title)
        query_choices = [("all tokens", -1)] + [(f"{i}: {label}", i) for i, label in enumerate(q_labels)]
        heads_choices = [(f"head {h}", h) for h in range(trace.n_heads)]
        return (
            gr.update(choices=query_choices, value=selected if selected is not None else -1),
            gr.update(choices=heads_choices, value=[h for h in chosen if heads_v]),
            fig,
        )

    @guarded(lambda msg: (message_figure(msg), []))
    def draw_statistics(selection, kind_v, statistic_v):
        if selection is None:
            return message_figure("Analyze a text first."), []
        trace = ctx.trace(selection)
        kind_v, _, _ = _pick(trace, kind_v, 0, 0)
        stats = statistics_of(trace, kind_v)
        fig = statistic_heatmap(
            stats[statistic_v], statistic_v, STATISTICS[statistic_v], f"{KIND_NAMES[kind_v]} · {about(selection)}"
        )
        return fig, head_statistics_table(stats)

    def generation_selection(selection: Selection, n) -> Selection:
        return dataclasses.replace(selection, generate=int(np.clip(n or 1, 1, MAX_GENERATE)))

    @guarded(lambda msg: (gr.skip(), warning(msg), message_figure(msg)))
    def draw_step(selection, layer_v, head_v, n, step_v):
        if selection is None:
            return gr.skip(), "", message_figure("Analyze a text first.")
        if not ctx.model(selection).spec.adapter.continues_prompt:
            note = "Step-by-step generation is shown for decoders (GPT-style models); pick one above."
            return gr.skip(), note, message_figure(note)
        trace = ctx.trace(generation_selection(selection, n))
        prompt = trace.meta.get("prompt_tokens", len(trace.tokens["input"]))
        made = len(trace.tokens["input"]) - prompt
        if made <= 0:
            return gr.skip(), "The text already fills the model's context.", message_figure("Nothing generated.")
        step_v = int(min(max(1, step_v or 1), made))
        _, layer_v, head_v = _pick(trace, "self", layer_v, head_v)
        position = prompt + step_v - 1
        labels = trace.labels("input")
        weights = trace.attn(layer_v, head_v, "self")[: position + 1, : position + 1]
        shown = " ".join(
            f"**[{md_escape(label)}]**" if i == position else md_escape(label)
            for i, label in enumerate(labels[: prompt + made])
        )
        fig = token_links(weights, labels[: position + 1], labels[: position + 1], position,
                          f"step {step_v}: “{labels[position]}” · layer {layer_v} · head {head_v} · {about(selection)}")  # fmt: skip
        # a slider needs its maximum above its minimum: with one token made, it stays put
        return gr.update(maximum=max(made, 2), value=step_v, interactive=made > 1), shown, fig

    def refresh_all(selection, kind_v, layer_v, head_v, active_v, values_v, statistic_v, n_v, step_v):
        """After a new analysis: fit the selectors to the model, then redraw the view on screen only."""
        outputs = 3 + 1 + 2 + 3 + 2 + 3
        if selection is None:
            return (gr.skip(),) * outputs
        try:
            trace = ctx.trace(selection)
        except Exception:  # the analysis itself reported the error; leave the views as they were
            return (gr.skip(),) * outputs
        kind_v, layer_v, head_v = _pick(trace, kind_v, layer_v, head_v)
        views = {
            "head": lambda: (draw_head(selection, kind_v, layer_v, head_v, values_v),),
            "grid": lambda: draw_grid(selection, kind_v),
            "links": lambda: draw_links(selection, kind_v, layer_v, head_v, -1, []),
            "statistics": lambda: draw_statistics(selection, kind_v, statistic_v),
            "generation": lambda: draw_step(selection, layer_v, head_v, n_v, step_v),
        }
        sizes = {"head": 1, "grid": 2, "links": 3, "statistics": 2, "generation": 3}
        drawn = []
        for view, size in sizes.items():
            drawn += list(views[view]()) if view == active_v else [gr.skip()] * size
        return (
            # the value only: narrowing the choices made gradio refuse events still carrying the old kind
            gr.update(value=kind_v),
            gr.update(maximum=trace.n_layers - 1, value=layer_v),
            gr.update(maximum=trace.n_heads - 1, value=head_v),
            *drawn,
        )

    def on_screen(view: str, fn, n_outputs: int):
        """``fn`` for events of a view's own controls: skipped while another sub-tab is on screen."""

        def gated(active_v, *args):
            if active_v != view:
                return gr.skip() if n_outputs == 1 else (gr.skip(),) * n_outputs
            return fn(*args)

        return gated

    def showing(view: str, fn):
        """``fn`` for a sub-tab's select event: draw it and remember it is on screen."""

        def select(*args):
            out = fn(*args)
            return (*out, view) if isinstance(out, tuple) else (out, view)

        return select

    head_out, grid_out = [head_plot], [open_head, grid_plot]
    links_out, stats_out = [query, heads, links_plot], [stat_plot, stat_table]
    step_out = [step, step_text, step_plot]
    head_in, grid_in = [*selectors, values], [shared.state, kind]
    links_in, stats_in = [*selectors, query, heads], [shared.state, kind, statistic]
    step_in = [shared.state, layer, head, n_new, step]
    shared.on_analyzed(
        refresh_all,
        [*selectors, active, values, statistic, n_new, step],
        [kind, layer, head, *head_out, *grid_out, *links_out, *stats_out, *step_out],
    )
    # Selecting a sub-tab draws it; these are also the named API endpoints for gradio_client users.
    head_tab.select(showing("head", draw_head), head_in, [*head_out, active], api_name="attention")
    grid_tab.select(showing("grid", draw_grid), grid_in, [*grid_out, active], api_name="attention_grid")
    links_tab.select(showing("links", draw_links), links_in, [*links_out, active], api_name="token_links")
    stats_tab.select(showing("statistics", draw_statistics), stats_in, [*stats_out, active], api_name="head_statistics")
    gen_tab.select(showing("generation", draw_step), step_in, [*step_out, active], api_name="generation_attention")
    always_last = {"trigger_mode": "always_last", "api_name": False}
    for control in (kind, layer, head, values):
        control.change(on_screen("head", draw_head, 1), [active, *head_in], head_out, **always_last)
    kind.change(on_screen("grid", draw_grid, 2), [active, *grid_in], grid_out, **always_last)
    open_head.input(
        open_selected, [open_head, shared.state, kind, values], [layer, head, views, active, head_plot], api_name=False
    )
    for control in (kind, layer, head, query, heads):
        control.change(on_screen("links", draw_links, 3), [active, *links_in], links_out, **always_last)
    for control in (kind, statistic):
        control.change(on_screen("statistics", draw_statistics, 2), [active, *stats_in], stats_out, **always_last)
    generate.click(lambda: 1, None, step, api_name=False).then(draw_step, step_in, step_out, api_name=False)
    for control in (step, layer, head):
        control.change(on_screen("generation", draw_step, 3), [active, *step_in], step_out, **always_last)
