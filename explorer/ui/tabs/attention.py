"""Attention tab: one head, every head, token links, head statistics and attention during generation.

Everything here re-plots from the cached trace; only the pre-softmax scores (one extra forward
pass) and "during generation" (one generate + forward) run the model, once per selection.
"""

from __future__ import annotations

import dataclasses

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from explorer.analysis.attention.heads import STAT_COLUMNS, STATISTICS
from explorer.analysis.attention.views import (
    HeadView,
    all_heads,
    generation_step,
    head_statistics_of,
    one_head,
    parse_head_name,
    pick,
    token_links_of,
)
from explorer.core.trace import KIND_NAMES
from explorer.plots.attention import attention_grid, attention_heatmap, statistic_heatmap, token_links
from explorer.plots.text import message_figure
from explorer.ui.context import AppContext, Selection, about, bind, guarded, md_escape, warning
from explorer.ui.replots import replot

EXPLANATION = """Each token's **query** is compared with every token's **key**: a dot product scaled by \
1/√d<sub>k</sub> (so scores do not grow with the head width). A **softmax** turns each row of scores into \
weights that sum to 1, and the token's output is the weighted mix of the **values**. A decoder may not \
look ahead: a **mask** sets future scores to −∞, so its grid is empty above the diagonal. Each layer has \
several **heads**, each free to learn its own pattern (the previous token, the first token, the same \
word...). T5 adds **cross-attention**: target tokens looking at the source. Try the preset below and \
look for the head where *it* attends to *tiger*. Only the attention kinds the model has are offered (a \
link or an API call naming another draws the model's first; the title says which)."""
TIGER = "The tiger jumped out of a tree to get a drink because it was thirsty."
VALUES = {
    "weights": "attention weights (after softmax)",
    "scores": "pre-softmax scores Q·Kᵀ/√d (masked cells grey)",
    "rollout": "attention rollout through layers 0..L (Abnar & Zuidema)",
}
MAX_GENERATE = 32
MAX_INDEX = 63


NOT_A_DECODER = (
    "Step-by-step attention is shown for decoder-only models (GPT-style): choose one such as tiny-gpt2 in the "
    "Model box at the top."
)


def head_figure(view: HeadView, about_: str) -> go.Figure:
    """The one-head heatmap of a ``HeadView``, titled with what it shows and ``about_`` (model and text)."""
    if view.refusal:
        return message_figure(view.refusal)
    where = f"{KIND_NAMES[view.kind]} · layer {view.layer}"
    labels = (view.matrix, view.query_labels, view.key_labels)
    if view.values == "scores":
        title = f"{where} · head {view.head} · pre-softmax scores · {about_}"
        return attention_heatmap(*labels, title, view.causal, value_name="score")
    if view.values == "rollout":
        title = f"{where} · rollout of all heads, layers 0–{view.layer} · {about_}"
        return attention_heatmap(*labels, title, view.causal)
    return attention_heatmap(*labels, f"{where} · head {view.head} · {about_}", view.causal)


@guarded(message_figure)
def draw_head(ctx: AppContext, selection, kind_v, layer_v, head_v, values_v):
    if selection is None:
        return message_figure("Analyze a text to see its attention.")
    scores = ctx.scores(selection) if values_v == "scores" else None  # one extra forward pass, remembered
    view = one_head(ctx.trace(selection), kind_v, layer_v, head_v, values_v, scores)
    return head_figure(view, about(selection))


@guarded(lambda msg: (gr.skip(), message_figure(msg)))
def draw_grid(ctx: AppContext, selection, kind_v):
    if selection is None:
        return gr.skip(), message_figure("Analyze a text first.")
    grid = all_heads(ctx.trace(selection), kind_v)
    fig = attention_grid(grid.weights, f"All heads · {KIND_NAMES[grid.kind]} · {about(selection)}")
    return gr.update(choices=grid.names, value=None), fig


def open_selected(ctx: AppContext, choice, selection, kind_v, values_v):
    """Open the head picked in the grid in the one-head view."""
    if not choice:
        return (gr.skip(),) * 5
    layer_v, head_v = parse_head_name(choice)
    figure = draw_head(ctx, selection, kind_v, layer_v, head_v, values_v)
    return layer_v, head_v, gr.Tabs(selected="one_head"), "head", figure


@guarded(lambda msg: (gr.skip(), gr.skip(), message_figure(msg)))
def draw_links(ctx: AppContext, selection, kind_v, layer_v, head_v, query_v, heads_v):
    if selection is None:
        return gr.skip(), gr.skip(), message_figure("Analyze a text first.")
    links = token_links_of(ctx.trace(selection), kind_v, layer_v, head_v, query_v, heads_v)
    chosen = links.heads
    which = f"head {chosen[0]}" if len(chosen) == 1 else f"mean of heads {', '.join(map(str, chosen))}"
    title = f"{KIND_NAMES[links.kind]} · layer {links.layer} · {which} · {about(selection)}"
    fig = token_links(links.weights, links.query_labels, links.key_labels, links.selected, title)
    query_choices = [("all tokens", -1)] + [(f"{i}: {label}", i) for i, label in enumerate(links.query_labels)]
    heads_choices = [(f"head {h}", h) for h in range(links.n_heads)]
    return (
        gr.update(choices=query_choices, value=links.selected if links.selected is not None else -1),
        gr.update(choices=heads_choices, value=[h for h in chosen if heads_v]),
        fig,
    )


@guarded(lambda msg: (message_figure(msg), []))
def draw_statistics(ctx: AppContext, selection, kind_v, statistic_v):
    if selection is None:
        return message_figure("Analyze a text first."), []
    stats = head_statistics_of(ctx.trace(selection), kind_v)
    title = f"{KIND_NAMES[stats.kind]} · {about(selection)}"
    shown = statistic_v
    if np.isnan(stats.values[statistic_v]).all():  # "previous token" compares positions: cross-attention has two texts
        shown = next(name for name in STATISTICS if not np.isnan(stats.values[name]).all())
        title = f"{statistic_v}: none for two texts · {title}"  # one line on a phone; the next names what is shown
    fig = statistic_heatmap(stats.values[shown], shown, STATISTICS[shown], title)
    return fig, stats.rows


def generation_selection(selection: Selection, n) -> Selection:
    """The selection extended by ``n`` (1 .. 32) greedy tokens: its trace holds the attention of each."""
    return dataclasses.replace(selection, generate=int(min(max(n or 1, 1), MAX_GENERATE)))


@guarded(lambda msg: (gr.skip(), warning(msg), message_figure(msg)))
def draw_step(ctx: AppContext, selection, layer_v, head_v, n, step_v):
    if selection is None:
        return gr.skip(), "", message_figure("Analyze a text first.")
    if not ctx.model(selection).spec.adapter.continues_prompt:
        return gr.skip(), NOT_A_DECODER, message_figure(NOT_A_DECODER)
    step = generation_step(ctx.trace(generation_selection(selection, n)), layer_v, head_v, step_v)
    if step is None:
        return gr.skip(), "The text already fills the model's context.", message_figure("Nothing generated.")
    shown = " ".join(
        f"**[{md_escape(label)}]**" if i == step.position else md_escape(label) for i, label in enumerate(step.labels)
    )
    seen = step.labels[: step.position + 1]
    title = f"step {step.step}: “{seen[-1]}” · layer {step.layer} · head {step.head} · {about(selection)}"
    fig = token_links(step.weights, seen, seen, step.position, title)
    # a slider needs its maximum above its minimum: with one token made, it stays put
    return gr.update(maximum=max(step.made, 2), value=step.step, interactive=step.made > 1), shown, fig


VIEW_OUTPUTS = {"head": 1, "grid": 2, "links": 3, "statistics": 2, "generation": 3}  # in the order of the outputs


def refresh_all(ctx: AppContext, selection, kind_v, layer_v, head_v, active_v, values_v, statistic_v, n_v, step_v):
    """After a new analysis: fit the selectors to the model, then redraw the view on screen only."""
    outputs = 3 + sum(VIEW_OUTPUTS.values())
    if selection is None:
        return (gr.skip(),) * outputs
    try:
        trace = ctx.trace(selection)
    except Exception:  # the analysis itself reported the error; leave the views as they were
        return (gr.skip(),) * outputs
    kind_v, layer_v, head_v = pick(trace, kind_v, layer_v, head_v)
    views = {
        "head": lambda: (draw_head(ctx, selection, kind_v, layer_v, head_v, values_v),),
        "grid": lambda: draw_grid(ctx, selection, kind_v),
        "links": lambda: draw_links(ctx, selection, kind_v, layer_v, head_v, -1, []),
        "statistics": lambda: draw_statistics(ctx, selection, kind_v, statistic_v),
        "generation": lambda: draw_step(ctx, selection, layer_v, head_v, n_v, step_v),
    }
    drawn = []
    for view, size in VIEW_OUTPUTS.items():
        drawn += list(views[view]()) if view == active_v else [gr.skip()] * size
    return (
        # The value and which choices show: narrowing the choices themselves made gradio refuse events still
        # carrying the old kind, so the others stay, hidden (CSS), and a kind the model lacks draws its first.
        gr.update(value=kind_v, elem_classes=kind_classes(trace.kinds)),
        gr.update(maximum=trace.n_layers - 1, value=layer_v),
        gr.update(maximum=trace.n_heads - 1, value=head_v),
        *drawn,
    )


def kind_classes(kinds) -> list[str]:
    """The attention-kind radio's classes: ``explorer-has-<kind>`` for each kind the model has; the app's CSS
    hides the choices of the others (a GPT or BERT shows only self-attention)."""
    return ["explorer-kinds", *(f"explorer-has-{k}" for k in kinds)]


def on_screen(view: str, fn, n_outputs: int):
    """``fn`` for events of a view's own controls: skipped while another sub-tab is on screen."""

    def gated(active_v, *args):
        if active_v != view:
            return gr.skip() if n_outputs == 1 else (gr.skip(),) * n_outputs
        return fn(*args)

    return gated


def showing(view: str, fn):
    """``fn`` for a sub-tab's select event: draw it and remember it is on screen.

    Gradio selects the sub-tab on screen as the Attention tab mounts. Nothing is drawn for that select in the
    browser: before the first analysis there is nothing to draw (a throwaway figure cost the page's first
    figure a plotly render), and after one the tab's own drawing on opening draws the sub-view on screen (a
    second draw was a second model read for one click). A sub-tab the person picks is another view than the
    one on screen; an API call (no event data) always draws."""

    def select(event: gr.EventData, active_v, selection, *args):
        if getattr(event, "_data", None) and (selection is None or active_v == view):  # the browser's, not needed
            return (gr.skip(),) * (VIEW_OUTPUTS[view] + 1)
        out = fn(selection, *args)
        return (*out, view) if isinstance(out, tuple) else (out, view)

    return select


def build(ctx: AppContext, shared) -> None:
    """The tab's layout, and its events wired to the handlers above."""
    with gr.Tab("Attention", id="attention"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        shared.preset_button("Preset: “The tiger … because it was thirsty.”", TIGER, presenting=False)
        with gr.Row():
            kind = gr.Radio(
                [(name, k) for k, name in KIND_NAMES.items()],
                value="self",
                label="Attention kind",
                elem_classes=kind_classes(KIND_NAMES),  # every choice until a model is analyzed
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

    draw = {
        view: bind(handler, ctx)
        for view, handler in [("head", draw_head), ("grid", draw_grid), ("links", draw_links),
                              ("statistics", draw_statistics), ("generation", draw_step)]
    }  # fmt: skip
    head_out, grid_out = [head_plot], [open_head, grid_plot]
    links_out, stats_out = [query, heads, links_plot], [stat_plot, stat_table]
    step_out = [step, step_text, step_plot]
    head_in, grid_in = [*selectors, values], [shared.state, kind]
    links_in, stats_in = [*selectors, query, heads], [shared.state, kind, statistic]
    step_in = [shared.state, layer, head, n_new, step]
    shared.on_analyzed(
        bind(refresh_all, ctx),
        [*selectors, active, values, statistic, n_new, step],
        [kind, layer, head, *head_out, *grid_out, *links_out, *stats_out, *step_out],
    )
    redraw = replot(ctx.settings)  # re-plots from the kept trace: one HTTP request each, not the queue
    # Selecting a sub-tab draws it; these are also the named API endpoints for gradio_client users. Only
    # "During generation" runs the model (it generates), so it stays in the queue.
    sub_views = [(head_tab, "head", head_in, head_out, "attention"), (grid_tab, "grid", grid_in, grid_out, "attention_grid"),
                 (links_tab, "links", links_in, links_out, "token_links"),
                 (stats_tab, "statistics", stats_in, stats_out, "head_statistics"),
                 (gen_tab, "generation", step_in, step_out, "generation_attention")]  # fmt: skip
    for tab, view, inputs, outputs, name in sub_views:
        how = {} if view == "generation" else redraw
        tab.select(showing(view, draw[view]), [active, *inputs], [*outputs, active], api_name=name, **how)
    always_last = {"trigger_mode": "always_last", "api_name": False}
    redrawn = {**always_last, **redraw}  # a control's change re-plots from the kept trace
    for control in (kind, layer, head, values):
        control.change(on_screen("head", draw["head"], 1), [active, *head_in], head_out, **redrawn)
    kind.change(on_screen("grid", draw["grid"], 2), [active, *grid_in], grid_out, **redrawn)
    opened = [layer, head, views, active, head_plot]
    open_head.input(bind(open_selected, ctx), [open_head, shared.state, kind, values], opened, api_name=False, **redraw)
    for control in (kind, layer, head, query, heads):
        control.change(on_screen("links", draw["links"], 3), [active, *links_in], links_out, **redrawn)
    for control in (kind, statistic):
        control.change(on_screen("statistics", draw["statistics"], 2), [active, *stats_in], stats_out, **redrawn)
    generate.click(lambda: 1, None, step, api_name=False).then(draw["generation"], step_in, step_out, api_name=False)
    for control in (step, layer, head):
        control.change(on_screen("generation", draw["generation"], 3), [active, *step_in], step_out, **always_last)
