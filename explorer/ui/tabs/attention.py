"""Attention tab: one head of one layer as a heatmap, for every attention kind the model has."""

from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from explorer.core.trace import KIND_NAMES
from explorer.plots.attention import attention_heatmap
from explorer.ui.context import AppContext, Selection, guarded

EXPLANATION = (
    "Each token's **query** is compared with every token's **key** (a dot product scaled by √d); a softmax "
    "turns the scores of each row into weights that sum to 1, and the row's output is the weighted mix of "
    "the **values**. A decoder may not look ahead, so its grid is empty above the diagonal. Each layer has "
    "several **heads**, each free to learn its own pattern. T5 adds **cross-attention**: target tokens "
    "looking at the source."
)
CAUSAL_KINDS = {"decoder_self"}


def message_figure(text: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 15})
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=300, plot_bgcolor="white")
    return fig


def build(ctx: AppContext, shared) -> None:
    with gr.Tab("Attention", id="attention"):
        gr.Markdown(EXPLANATION)
        with gr.Row():
            kind = gr.Radio(
                [(name, k) for k, name in KIND_NAMES.items()], value="self", label="Attention kind", scale=2
            )
            layer = gr.Slider(0, 1, value=0, step=1, label="Layer", scale=1)
            head = gr.Slider(0, 1, value=0, step=1, label="Head", scale=1)
        plot = gr.Plot(label="Attention weights")

    def figure(selection: Selection, kind_value: str, layer_value, head_value) -> go.Figure:
        trace = ctx.trace(selection)
        kind_value = kind_value if kind_value in trace.kinds else trace.kinds[0]
        layer_i = int(min(max(0, layer_value or 0), trace.n_layers - 1))
        head_i = int(min(max(0, head_value or 0), trace.n_heads - 1))
        q_stream, k_stream = trace.streams_of(kind_value)
        causal = kind_value in CAUSAL_KINDS or (kind_value == "self" and trace.family == "decoder")
        title = f"{selection.model} · {KIND_NAMES[kind_value]} · layer {layer_i} · head {head_i}"
        return attention_heatmap(
            trace.attn(layer_i, head_i, kind_value), trace.labels(q_stream), trace.labels(k_stream), title, causal
        )

    @guarded(lambda msg: message_figure(msg))
    def redraw(selection: Selection | None, kind_value: str, layer_value, head_value):
        """Re-plot from the cached trace: moving a selector never re-runs the model."""
        if selection is None:
            return message_figure("Analyze a text to see its attention.")
        return figure(selection, kind_value, layer_value, head_value)

    @guarded(lambda msg: (gr.skip(), gr.skip(), gr.skip(), message_figure(msg)))
    def reset(selection: Selection | None, kind_value: str, layer_value, head_value):
        """After a new analysis: fit the selectors to the model, then plot."""
        if selection is None:
            return gr.skip(), gr.skip(), gr.skip(), message_figure("Analyze a text to see its attention.")
        trace = ctx.trace(selection)
        kind_value = kind_value if kind_value in trace.kinds else trace.kinds[0]
        layer_value = min(int(layer_value or 0), trace.n_layers - 1)
        head_value = min(int(head_value or 0), trace.n_heads - 1)
        return (
            gr.update(choices=[(KIND_NAMES[k], k) for k in trace.kinds], value=kind_value),
            gr.update(maximum=trace.n_layers - 1, value=layer_value),
            gr.update(maximum=trace.n_heads - 1, value=head_value),
            figure(selection, kind_value, layer_value, head_value),
        )

    inputs = [shared.state, kind, layer, head]
    shared.on_analyzed(reset, inputs, [kind, layer, head, plot], api_name=False)
    for control in (kind, layer, head):
        control.change(
            redraw, inputs, plot, api_name="attention" if control is kind else False, trigger_mode="always_last"
        )
