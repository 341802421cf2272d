"""Embedding figures: the token map, trajectories through the layers, similarity matrices, position encodings."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.plots.text import (
    COLORBAR_ROOM,
    colorbar_above,
    fit_title,
    plot_text,
    plot_texts,
    tick_texts,
    title_layout,
)

BASE_COLOR = "rgba(90, 110, 160, 0.45)"
BASE_COLOR_3D = "rgba(60, 80, 150, 0.75)"  # a 3-D scene's small points need more ink to read on a projector
FOCUS_NEIGHBOURS = 12  # the searched token's nearest points on the map get their labels
LEGEND_BELOW = {"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "bottom", "yref": "container"}
INPUT_COLOR = "#d62728"
FOCUS_COLOR = "#ff7f0e"
TEXT_COLORS = ("#1f77b4", "#d62728")
HOVER_LABELS_MAX = 128  # similarity matrices larger than this name positions in hover, tokens on the ticks


def _scatter(coords: np.ndarray, **kwargs):
    """A 2D (WebGL) or 3D scatter trace for coords (n, 2 or 3)."""
    coords = np.asarray(coords, np.float32)
    if coords.shape[1] == 3:
        return go.Scatter3d(x=coords[:, 0], y=coords[:, 1], z=coords[:, 2], **kwargs)
    return go.Scattergl(x=coords[:, 0], y=coords[:, 1], **kwargs)


def token_map(
    coords: np.ndarray,
    labels: list[str],
    ids: np.ndarray,
    title: str = "",
    marked: tuple[np.ndarray, list[str]] | None = None,
    focus: tuple[np.ndarray, str] | None = None,
) -> go.Figure:
    """Every projected token as a point (hover: the token and its id).

    ``marked``: (coords (m, k), labels) of the input's tokens, drawn red and labelled. ``focus``:
    (coords (k,), label) of a searched token, drawn as a star; in 2D the view is zoomed around it.
    """
    coords = np.asarray(coords, np.float32)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3) or len(coords) != len(labels) or len(ids) != len(labels):
        raise ValueError(f"coords {coords.shape} must be (n, 2 or 3) with one label and id per row")
    three_d = coords.shape[1] == 3
    size = 3 if three_d else 4
    labels = plot_texts(labels)
    hover = [f"{label}  (id {i})" for label, i in zip(labels, np.asarray(ids).tolist())]
    fig = go.Figure(
        _scatter(coords, mode="markers", marker={"size": size, "color": BASE_COLOR_3D if three_d else BASE_COLOR},
                 text=hover, hoverinfo="text", name=f"{len(labels):,} tokens")
    )  # fmt: skip
    if marked is not None and len(marked[1]):
        m_coords, m_labels = marked[0], plot_texts(marked[1])
        fig.add_trace(
            _scatter(np.asarray(m_coords), mode="markers+text", text=m_labels, textposition="top center",
                     marker={"size": 6 if three_d else 9, "color": INPUT_COLOR}, name="the text's tokens",
                     hoverinfo="text", textfont={"color": INPUT_COLOR})
        )  # fmt: skip
    if focus is not None:
        point, label = np.asarray(focus[0], np.float32), plot_text(focus[1])
        fig.add_trace(
            _scatter(point[None], mode="markers+text", text=[label], textposition="bottom center", name=f"“{label}”",
                     marker={"size": 9 if three_d else 18, "color": FOCUS_COLOR, "symbol": "diamond" if three_d else "star"},
                     textfont={"size": 15, "color": FOCUS_COLOR})
        )  # fmt: skip
        near = np.argsort(np.linalg.norm(coords - point, axis=1))[:FOCUS_NEIGHBOURS]
        fig.add_trace(
            _scatter(coords[near], mode="markers+text", text=[labels[i] for i in near], textposition="top center",
                     marker={"size": 7, "color": "#555"}, name="its nearest tokens here", hoverinfo="text",
                     textfont={"size": 13, "color": "#333"})
        )  # fmt: skip
        if not three_d:
            span = np.ptp(coords, axis=0) * 0.08 + 1e-6
            fig.update_layout(
                xaxis={"range": [point[0] - span[0], point[0] + span[0]]},
                yaxis={"range": [point[1] - span[1], point[1] + span[1]]},
            )
    fig.update_layout(
        title=title_layout(title), height=650, plot_bgcolor="white", legend=LEGEND_BELOW,
        margin={"l": 20, "r": 20, "t": 30, "b": 50},
    )  # fmt: skip
    if three_d:  # fill the box: equal axes, no wasted margin, a camera a little closer than plotly's default
        fig.update_layout(scene={"aspectmode": "cube", "camera": {"eye": {"x": 1.4, "y": 1.4, "z": 1.0}}},
                          margin={"l": 0, "r": 0, "t": 30, "b": 50})  # fmt: skip
    return fit_title(fig)


def similarity_heatmap(
    matrix: np.ndarray, row_labels: list[str], col_labels: list[str], title: str = "", value_name: str = "cosine"
) -> go.Figure:
    """A (rows, columns) matrix of similarities in [−1, 1] on a diverging scale, tokens on the axes."""
    matrix = np.asarray(matrix, np.float32)
    if matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"matrix {matrix.shape} does not match {len(row_labels)} × {len(col_labels)} labels")
    n_r, n_c = matrix.shape
    row_ticks, col_ticks = tick_texts(row_labels), tick_texts(col_labels)
    row_labels, col_labels = plot_texts(row_labels), plot_texts(col_labels)
    if max(n_r, n_c) <= HOVER_LABELS_MAX:
        text = [
            [f"{r} ↔ {c}<br>{value_name} {v:.3f}" for c, v in zip(col_labels, row)]
            for r, row in zip(row_labels, matrix)
        ]
        hover = {"text": text, "hoverinfo": "text"}
    else:
        hover = {"hovertemplate": f"%{{y}} ↔ %{{x}}<br>{value_name} %{{z:.3f}}<extra></extra>"}
    fig = go.Figure(
        go.Heatmap(z=matrix, x=list(range(n_c)), y=list(range(n_r)), zmin=-1, zmax=1, colorscale="RdBu_r",
                   colorbar=colorbar_above(value_name), **hover)
    )  # fmt: skip
    ticks = {"tickfont": {"size": 11 if max(n_r, n_c) <= 40 else 8}}
    if max(n_r, n_c) <= HOVER_LABELS_MAX:
        ticks_x = {"tickvals": list(range(n_c)), "ticktext": col_ticks, "tickangle": -60}
        ticks_y = {"tickvals": list(range(n_r)), "ticktext": row_ticks}
    else:
        ticks_x, ticks_y = {}, {}
    fig.update_layout(
        title=title_layout(title), height=max(400, min(850, 200 + 16 * n_r)), plot_bgcolor="white",
        xaxis={"automargin": True, **ticks, **ticks_x},
        yaxis={"autorange": "reversed", "automargin": True, **ticks, **ticks_y},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )  # fmt: skip
    return fit_title(fig, COLORBAR_ROOM)


def trajectories(
    paths: list[np.ndarray], labels: list[list[str]], names: list[str], title: str = "", followed=None
) -> go.Figure:
    """Each token's state from layer 0 (the embedding, small marker) to the last layer (labelled), one line per token.

    ``paths``: one (L + 1, T_i, 2 or 3) array per text; ``names`` name the texts (one colour each);
    ``followed``: per text, positions drawn thick (e.g. the word compared across texts).
    """
    fig = go.Figure()
    followed = followed or [[] for _ in paths]
    for t, (path, token_labels, name) in enumerate(zip(paths, labels, names)):
        path, token_labels, name = np.asarray(path, np.float32), plot_texts(token_labels), plot_text(name)
        n_layers = path.shape[0]
        color = TEXT_COLORS[t % len(TEXT_COLORS)]
        for i, label in enumerate(token_labels):
            thick = i in followed[t]
            text = [""] * (n_layers - 1) + [label]
            hover = [f"{name}: “{label}” (position {i}), layer {layer}" for layer in range(n_layers)]
            fig.add_trace(
                _scatter(path[:, i], mode="lines+markers+text", text=text, hovertext=hover, hoverinfo="text",
                         textposition="top center", showlegend=i == 0, legendgroup=name, name=name,
                         line={"color": color, "width": 5 if thick else 1.5},
                         marker={"color": color, "size": np.linspace(3, 9 if thick else 6, n_layers),
                                 "opacity": 1.0 if thick or not any(followed[t]) else 0.5},
                         textfont={"color": color, "size": 14 if thick else 11})
            )  # fmt: skip
    fig.update_layout(title=title_layout(title), height=650, plot_bgcolor="white", legend=LEGEND_BELOW,
                      margin={"l": 20, "r": 20, "t": 30, "b": 50})  # fmt: skip
    if path.shape[-1] == 3:
        fig.update_layout(scene={"aspectmode": "cube"}, margin={"l": 0, "r": 0, "t": 30, "b": 50})
    return fit_title(fig)


def layer_lines(series: dict[str, np.ndarray], title: str = "", y_title: str = "cosine similarity") -> go.Figure:
    """One line per named series over the layers (x: 0 = the embedding output)."""
    fig = go.Figure()
    for name, values in series.items():
        values = np.asarray(values, float)
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=values, mode="lines+markers", name=plot_text(name)))
    fig.update_layout(
        title=title_layout(title), height=440, plot_bgcolor="white", xaxis={"title": "layer (0 = embeddings)", "dtick": 1},
        yaxis={"title": y_title}, legend=LEGEND_BELOW, margin={"l": 60, "r": 20, "t": 30, "b": 10},
    )  # fmt: skip
    return fit_title(fig)


def bars(labels: list[str], values: np.ndarray, title: str = "", value_name: str = "cosine similarity") -> go.Figure:
    """Horizontal bars, first item on top (neighbour lists, analogy results)."""
    values = np.asarray(values, float)
    labels = plot_texts(labels)
    fig = go.Figure(
        go.Bar(x=values, y=list(range(len(labels))), orientation="h", text=[f"{v:.3f}" for v in values],
               textposition="auto", marker={"color": "#2a9d8f"}, hovertext=labels, hoverinfo="text+x")
    )  # fmt: skip
    fig.update_layout(
        title=title_layout(title), height=max(280, 100 + 24 * len(labels)), plot_bgcolor="white",
        xaxis={"title": value_name},
        yaxis={"tickvals": list(range(len(labels))), "ticktext": labels, "autorange": "reversed", "automargin": True},
        margin={"l": 20, "r": 20, "t": 30, "b": 40},
    )  # fmt: skip
    return fit_title(fig)


def position_comparison(
    model_sims: np.ndarray | None, sinusoid_sims: np.ndarray, model_title: str, title: str = ""
) -> go.Figure:
    """Position × position cosine similarity: the model's learned table (if any) beside the sinusoidal encoding."""
    panels = [(model_sims, model_title)] if model_sims is not None else []
    panels.append((sinusoid_sims, "sinusoidal"))  # Vaswani et al., 2017; short, to fit beside it on a phone
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[plot_text(t) for _, t in panels],
                        horizontal_spacing=0.12)  # fmt: skip
    for col, (sims, _) in enumerate(panels, start=1):
        fig.add_trace(
            go.Heatmap(z=np.asarray(sims, np.float32), zmin=-1, zmax=1, colorscale="RdBu_r", showscale=col == 1,
                       colorbar={"title": "cosine"}, hovertemplate="position %{y} ↔ %{x}<br>cosine %{z:.3f}<extra></extra>"),
            row=1, col=col,
        )  # fmt: skip
        fig.update_xaxes(title_text="position", row=1, col=col)
        fig.update_yaxes(title_text="position" if col == 1 else None, autorange="reversed", row=1, col=col)
    fig.update_layout(title=title_layout(title), height=480, plot_bgcolor="white",
                      margin={"l": 60, "r": 20, "t": 80, "b": 40})  # fmt: skip
    return fit_title(fig, 34)


def encoding_heatmap(encoding: np.ndarray, title: str = "", x_title: str = "dimension") -> go.Figure:
    """A (positions, dimensions) encoding as a heatmap (the classic striped sinusoid picture)."""
    encoding = np.asarray(encoding, np.float32)
    fig = go.Figure(
        go.Heatmap(z=encoding, colorscale="RdBu_r", zmid=0, colorbar={"title": "value"},
                   hovertemplate=f"position %{{y}}, {x_title} %{{x}}<br>%{{z:.3f}}<extra></extra>")
    )  # fmt: skip
    fig.update_layout(
        title=title_layout(title), height=420, plot_bgcolor="white", xaxis={"title": x_title},
        yaxis={"title": "position", "autorange": "reversed"}, margin={"l": 60, "r": 20, "t": 30, "b": 40},
    )  # fmt: skip
    return fit_title(fig)


def relative_bias(distances: np.ndarray, buckets: np.ndarray, bias: np.ndarray, title: str = "") -> go.Figure:
    """T5: top, the bucket each relative distance falls in; bottom, each head's learned bias (heads, distances)."""
    bias = np.asarray(bias, np.float32)
    if bias.shape[1] != len(distances) or len(buckets) != len(distances):
        raise ValueError("bias must be (heads, distances), with one bucket per distance")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.35, 0.65], vertical_spacing=0.06,
                        subplot_titles=["bucket of each distance", "bias added to the score, per head"])  # fmt: skip
    fig.add_trace(go.Scatter(x=distances, y=buckets, mode="lines", line={"shape": "hv"}, name="bucket"), row=1, col=1)
    fig.add_trace(
        go.Heatmap(z=bias, x=distances, y=list(range(bias.shape[0])), colorscale="RdBu_r", zmid=0,
                   colorbar={"title": "bias", "y": 0.32, "len": 0.65, "thickness": 10},
                   hovertemplate="head %{y}, key − query = %{x}<br>bias %{z:.3f}<extra></extra>"),
        row=2, col=1,
    )  # fmt: skip
    fig.update_xaxes(title_text="distance: key − query position", row=2, col=1)
    fig.update_yaxes(title_text="bucket", row=1, col=1)
    fig.update_yaxes(title_text="head", dtick=1, row=2, col=1)
    fig.update_layout(title=title_layout(title), height=660, plot_bgcolor="white", showlegend=False,
                      margin={"l": 50, "r": 10, "t": 90, "b": 40})  # fmt: skip
    return fit_title(fig, 34)


def rope(angles: np.ndarray, distances: np.ndarray, scores: np.ndarray, title: str = "") -> go.Figure:
    """RoPE: left, cos of the rotation angle (positions, pairs); right, the relative score against distance."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.1,
                        subplot_titles=["rotation of each pair of dimensions: cos(position × θᵢ)",
                                        "q·k after rotating both, relative to no rotation"])  # fmt: skip
    fig.add_trace(
        go.Heatmap(z=np.cos(np.asarray(angles, np.float32)), colorscale="RdBu_r", zmin=-1, zmax=1,
                   colorbar={"title": "cos", "x": 0.5},
                   hovertemplate="position %{y}, pair %{x}<br>cos %{z:.3f}<extra></extra>"),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(go.Scatter(x=distances, y=scores, mode="lines", name="relative score"), row=1, col=2)
    fig.update_xaxes(title_text="pair i (fast → slow)", row=1, col=1)
    fig.update_yaxes(title_text="position", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="distance between query and key", row=1, col=2)
    fig.update_layout(title=title_layout(title), height=500, plot_bgcolor="white", showlegend=False,
                      margin={"t": 100})  # fmt: skip
    return fit_title(fig, 34)
