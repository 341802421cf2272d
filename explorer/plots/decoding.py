"""Decoding figures: a distribution through the decoding transforms (or its logits, or a fill-in's guesses),
a beam-search tree, the logit lens."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.plots.text import (
    COLORBAR_ROOM,
    colorbar_above,
    fit_title,
    plot_text,
    plot_texts,
    readable_token,
    shorten,
    title_layout,
    token_axis,
    token_texts,
)

STATUS_COLORS = {"root": "#444", "kept": "#2a9d8f", "finished": "#1d4ed8", "pruned": "#bbbbbb"}


def stage_bars(
    labels: list[str], stage_names: list[str], probs: np.ndarray, kept: np.ndarray, title: str = ""
) -> go.Figure:
    """Grouped bars: the same candidate tokens (x) under each decoding stage (one colour per stage).

    ``probs`` and ``kept`` are (stages, tokens); a token filtered out at a stage shows an empty bar
    and "removed" on hover, so the user sees which tokens survive each filter.
    """
    probs, kept = np.asarray(probs, float), np.asarray(kept, bool)
    if probs.shape != kept.shape or probs.shape != (len(stage_names), len(labels)):
        raise ValueError(f"probs {probs.shape} and kept {kept.shape} must be ({len(stage_names)}, {len(labels)})")
    fig = go.Figure()
    shown = plot_texts(labels)
    for s, name in enumerate(stage_names):
        name = plot_text(name)
        text = [f"{p:.3f}" if k else "removed" for p, k in zip(probs[s], kept[s])]
        fig.add_trace(
            go.Bar(
                x=list(range(len(labels))), y=np.where(kept[s], probs[s], 0.0), name=name, text=text,
                hovertemplate="%{customdata}<br>" + name + ": %{text}<extra></extra>", customdata=shown,
                textposition="none",
            )
        )  # fmt: skip
    fig.update_layout(
        title=title_layout(title), barmode="group", height=440, plot_bgcolor="white",
        margin={"l": 50, "r": 20, "t": 30, "b": 10},
        xaxis={"tickvals": list(range(len(labels))), "ticktext": shown, "tickangle": -45, "automargin": True},
        yaxis={"title": "probability", "rangemode": "tozero"},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "bottom", "yref": "container"},
        showlegend=len(stage_names) > 1,
    )  # fmt: skip
    return fit_title(fig)


def logit_bars(labels: list[str], logits: np.ndarray, title: str = "") -> go.Figure:
    """The candidate tokens' raw logits (N,), before the softmax: one series, the axis free to go negative."""
    fig = stage_bars(labels, ["logit"], np.asarray(logits, float)[None], np.ones((1, len(labels)), bool), title)
    fig.update_layout(yaxis={"title": "logit (softmax turns these into probabilities)", "rangemode": "normal"})
    return fig


def prediction_bars(labels: list[str], probs, name: str, title: str = "") -> go.Figure:
    """One model's probabilities (N,) for candidate tokens, as bars of one series called ``name``."""
    return stage_bars(labels, [name], np.array([probs], float), np.ones((1, len(labels)), bool), title)


def beam_tree(nodes: list[dict], title: str = "") -> go.Figure:
    """Beam search as a tree: x is the step, each node a token, coloured by status (kept, finished, pruned).

    ``nodes``: dicts with ``id``, ``parent``, ``step``, ``label``, ``score`` and ``status``. Nodes of a
    step are stacked by score (best on top); lines join each node to its parent.
    """
    if not nodes:
        raise ValueError("a beam tree needs at least its root")
    y: dict[int, float] = {}
    for step in sorted({n["step"] for n in nodes}):
        layer = sorted((n for n in nodes if n["step"] == step), key=lambda n: -n["score"])
        for i, n in enumerate(layer):
            y[n["id"]] = -(i - (len(layer) - 1) / 2)
    fig = go.Figure()
    xs, ys = [], []
    for n in nodes:
        if n["parent"] is not None:
            xs += [n["step"] - 1, n["step"], None]
            ys += [y[n["parent"]], y[n["id"]], None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#cccccc", "width": 1}, hoverinfo="skip",
                             showlegend=False))  # fmt: skip
    for status, color in STATUS_COLORS.items():
        group = [n for n in nodes if n["status"] == status]
        if not group:
            continue
        fig.add_trace(
            go.Scatter(
                x=[n["step"] for n in group], y=[y[n["id"]] for n in group], mode="markers+text", name=status,
                text=plot_texts([n["label"] for n in group]), textposition="middle right",
                marker={"color": color, "size": 9}, customdata=[round(n["score"], 3) for n in group],
                hovertemplate="%{text}<br>log-prob %{customdata}<extra>" + status + "</extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        title=title_layout(title), height=max(340, 40 * max(1, len({round(v, 2) for v in y.values()}))),
        plot_bgcolor="white", legend={"orientation": "h", "y": -0.15},
        xaxis={"title": "step", "dtick": 1}, yaxis={"visible": False}, margin={"l": 20, "r": 20, "t": 50, "b": 40},
    )  # fmt: skip
    return fit_title(fig)


CELL_FONT = 12  # px: a logit-lens cell's text at its largest; plotly shrinks it to fit the cell ...
CELL_MIN_FONT = 10  # ... but never below this: a cell too small for it shows no text (its hover still does)
CELL_CHARS = 6  # a predicted token longer than this is cut in its cell, with an ellipsis (whole in the hover)
CELL_TEXT_MAX_POSITIONS = 64  # beyond this many positions no screen gives a cell room for text: none is sent
DARK_CELL = 0.55  # p(top) from which a Greens cell is dark enough for white text


def logit_lens_grid(
    top_labels: np.ndarray, top_probs: np.ndarray, position_labels: list[str], title: str = ""
) -> go.Figure:
    """Layer × position grid: each cell the token that layer would predict next, coloured by its probability.

    ``top_labels`` and ``top_probs`` are (layers + 1, positions); row 0 reads the embeddings. Each cell names
    its token in text of ``CELL_MIN_FONT`` to ``CELL_FONT`` px, or not at all where the cell is too small on
    the screen at hand (plotly's ``uniformtext`` decides as it draws, so a phone and a projector both get
    readable text or none); the hover always names the token. Past ``MAX_TICK_LABELS`` positions the axis
    labels every n-th token.
    """
    top_probs = np.asarray(top_probs, float)
    n_layers, n_pos = top_probs.shape
    if np.shape(top_labels) != top_probs.shape or len(position_labels) != n_pos:
        raise ValueError("labels, probabilities and positions must agree in shape")
    flat = [str(label) for label in np.asarray(top_labels).ravel()]
    predicted = np.array(token_texts(flat), dtype=object).reshape(top_probs.shape)
    after = np.array(token_texts(position_labels), dtype=object)
    fig = go.Figure(
        go.Heatmap(
            z=top_probs, x=list(range(n_pos)), y=list(range(n_layers)), text=predicted,
            customdata=np.broadcast_to(after, top_probs.shape), colorscale="Greens", zmin=0, zmax=1,
            colorbar=colorbar_above("p(top)"),  # above the plot: a phone keeps its width for the cells
            hovertemplate="layer %{y}, after token %{x}: %{customdata}<br>predicts %{text} (%{z:.2f})<extra></extra>",
        )
    )  # fmt: skip
    if n_pos <= CELL_TEXT_MAX_POSITIONS:
        fig.add_trace(_cell_text(flat, top_probs))
    fig.update_layout(
        title=title_layout(title), height=max(360, 140 + 34 * n_layers), plot_bgcolor="white",
        margin={"l": 60, "r": 10, "t": 10, "b": 10}, barmode="overlay",
        uniformtext={"minsize": CELL_MIN_FONT, "mode": "hide"},
        xaxis={**token_axis(position_labels), "tickangle": -45, "automargin": True, "range": [-0.5, n_pos - 0.5]},
        yaxis={"title": "layer (0 = embeddings)", "dtick": 1, "range": [-0.5, n_layers - 0.5]},
    )  # fmt: skip
    return fit_title(fig, COLORBAR_ROOM)


def _cell_text(labels: list[str], probs: np.ndarray) -> go.Bar:
    """The cells' text as see-through bars, one per cell: plotly hides a bar's text that would be smaller than
    ``uniformtext.minsize`` (a heatmap's own text only shrinks, to a pixel if need be)."""
    layers, positions = np.indices(probs.shape)
    cut = [plot_text(shorten(readable_token(label), CELL_CHARS)) for label in labels]
    return go.Bar(
        x=positions.ravel(), y=np.ones(probs.size), base=layers.ravel() - 0.5, width=1.0, text=cut,
        textposition="inside", insidetextanchor="middle", textangle=0, cliponaxis=True,
        textfont={"size": CELL_FONT, "color": np.where(probs.ravel() >= DARK_CELL, "white", "#1a1a1a").tolist()},
        marker={"color": "rgba(0, 0, 0, 0)", "line": {"width": 0}}, hoverinfo="skip", showlegend=False,
        name="predicted tokens",
    )  # fmt: skip
