"""Attention figures: one head as a heatmap or as token links, every head as a grid, a statistic per head."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

MASKED_COLOR = "rgba(200, 200, 200, 0.35)"


def attention_heatmap(
    weights: np.ndarray,
    query_labels: list[str],
    key_labels: list[str],
    title: str = "",
    causal: bool = False,
    value_name: str = "weight",
) -> go.Figure:
    """Heatmap of one head: rows are query tokens, columns key tokens, colour the value.

    ``weights`` has shape (queries, keys): attention weights in [0, 1], or with another
    ``value_name`` (e.g. pre-softmax scores) any real values on a diverging scale centred on 0.
    Masked cells — above the diagonal with ``causal``, or any non-finite value such as the
    ``-inf`` of a masked score — are drawn grey and hover says "masked", so a decoder's triangle
    reads as "cannot look ahead". Axes are positions with token ticks, so repeated tokens keep
    their own rows.
    """
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape != (len(query_labels), len(key_labels)):
        raise ValueError(
            f"weights of shape {weights.shape} do not match {len(query_labels)} query and {len(key_labels)} key labels"
        )
    n_q, n_k = weights.shape
    masked = ~np.isfinite(weights)
    if causal:
        masked |= np.triu(np.ones((n_q, n_k), bool), k=1)
    shown = np.where(masked, np.nan, weights)
    hover = np.array(
        [
            [
                f"query {i}: {query_labels[i]}<br>key {j}: {key_labels[j]}<br>"
                + ("masked (future token)" if masked[i, j] else f"{value_name} {weights[i, j]:.3f}")
                for j in range(n_k)
            ]
            for i in range(n_q)
        ]
    )
    finite = shown[np.isfinite(shown)]
    if value_name == "weight":
        scale = {"zmin": 0, "zmax": max(1e-9, float(finite.max()) if finite.size else 1.0), "colorscale": "Blues"}
    else:
        bound = max(1e-9, float(np.abs(finite).max()) if finite.size else 1.0)
        scale = {"zmin": -bound, "zmax": bound, "colorscale": "RdBu_r"}
    fig = go.Figure(
        go.Heatmap(
            z=shown, x=list(range(n_k)), y=list(range(n_q)), text=hover, hoverinfo="text",
            colorbar={"title": value_name}, hoverongaps=False, **scale,
        )
    )  # fmt: skip
    if masked.any():
        fig.add_trace(
            go.Heatmap(
                z=np.where(masked, 1.0, np.nan), x=list(range(n_k)), y=list(range(n_q)),
                colorscale=[[0, MASKED_COLOR], [1, MASKED_COLOR]], showscale=False, hoverinfo="skip",
            )
        )  # fmt: skip
    tick_font = {"size": 11 if max(n_q, n_k) <= 40 else 8}
    fig.update_layout(
        title=title,
        xaxis={"title": "key (attended to)", "tickvals": list(range(n_k)), "ticktext": key_labels,
               "side": "top", "tickangle": -60, "tickfont": tick_font},
        yaxis={"title": "query (attending)", "tickvals": list(range(n_q)), "ticktext": query_labels,
               "autorange": "reversed", "tickfont": tick_font},
        margin={"l": 90, "r": 20, "t": 110, "b": 20},
        height=max(360, min(900, 120 + 18 * n_q)),
        plot_bgcolor="white",
    )  # fmt: skip
    return fig


GRID_MAX_TOKENS = 64
LINK_MIN_WEIGHT = 0.01
LINK_BINS = 20  # lines are drawn in this many weight bands, one trace each, to keep the figure light
LINK_COLOR = "31, 119, 180"


def attention_grid(weights: np.ndarray, title: str = "") -> go.Figure:
    """Every head at once: one small heatmap per (layer, head) of (L, H, Q, K), rows layers, columns heads.

    Made for spotting a head worth a closer look. All cells share one 0..1 colour scale; above
    ``GRID_MAX_TOKENS`` queries or keys only the first ones are drawn, and the title says so.
    """
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 4 or 0 in weights.shape:
        raise ValueError(f"weights must have shape (layers, heads, queries, keys), got {weights.shape}")
    n_layers, n_heads, n_q, n_k = weights.shape
    if n_q > GRID_MAX_TOKENS or n_k > GRID_MAX_TOKENS:
        shown_q, shown_k = min(n_q, GRID_MAX_TOKENS), min(n_k, GRID_MAX_TOKENS)
        title = f"{title} (first {shown_q} of {n_q} queries × first {shown_k} of {n_k} keys)".strip()
        weights = weights[:, :, :GRID_MAX_TOKENS, :GRID_MAX_TOKENS]
    shown = weights.astype(np.float32)  # sent to the browser as a typed array: half the bytes of float64
    fig = make_subplots(
        rows=n_layers,
        cols=n_heads,
        subplot_titles=[f"L{layer} H{head}" for layer in range(n_layers) for head in range(n_heads)],
        horizontal_spacing=min(0.02, 0.5 / max(n_heads - 1, 1)),
        vertical_spacing=min(0.04, 0.5 / max(n_layers - 1, 1)),
    )
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    fig.add_traces(  # all heads in one call rather than one add_trace per head
        [
            go.Heatmap(
                z=shown[layer, head],
                coloraxis="coloraxis",
                name=f"L{layer} H{head}",
                hovertemplate=f"layer {layer}, head {head}<br>query %{{y}}, key %{{x}}<br>weight %{{z:.3f}}<extra></extra>",
            )
            for layer, head in heads
        ],
        rows=[layer + 1 for layer, _ in heads],
        cols=[head + 1 for _, head in heads],
    )
    cell = int(np.clip(840 / max(n_layers, n_heads), 60, 160))
    fig.update_xaxes(showticklabels=False, ticks="")
    fig.update_yaxes(showticklabels=False, ticks="", autorange="reversed")
    fig.update_annotations(font_size=9 if max(n_layers, n_heads) > 6 else 11)
    fig.update_layout(
        title=title,
        coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1, "colorbar": {"title": "weight", "thickness": 12}},
        height=80 + n_layers * cell,
        margin={"l": 20, "r": 20, "t": 70, "b": 20},
        plot_bgcolor="white",
    )
    return fig


def token_links(
    weights: np.ndarray,
    query_labels: list[str],
    key_labels: list[str],
    selected: int | None = None,
    title: str = "",
) -> go.Figure:
    """bertviz-style view of one head: queries on the left, keys on the right, a line per weight.

    ``weights`` has shape (queries, keys). Line opacity and width grow with the weight; weights
    below ``LINK_MIN_WEIGHT`` are not drawn. With ``selected`` (a query index) only that query's
    lines are drawn and its label is highlighted.
    """
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape != (len(query_labels), len(key_labels)):
        raise ValueError(
            f"weights of shape {weights.shape} do not match {len(query_labels)} query and {len(key_labels)} key labels"
        )
    n_q, n_k = weights.shape
    if selected is not None and not 0 <= selected < n_q:
        raise ValueError(f"selected query {selected} out of range: there are {n_q} queries")

    # Bin the lines by weight so a 64-token head is ~20 traces, not thousands.
    queries = range(n_q) if selected is None else [selected]
    edges = np.linspace(LINK_MIN_WEIGHT, 1.0, LINK_BINS + 1)
    bands: list[tuple[list, list]] = [([], []) for _ in range(LINK_BINS)]
    for i in queries:
        for j in np.flatnonzero(weights[i] >= LINK_MIN_WEIGHT):
            xs, ys = bands[min(int(np.searchsorted(edges, weights[i, j], side="right")) - 1, LINK_BINS - 1)]
            xs.extend([0, 1, None])
            ys.extend([i, j, None])
    fig = go.Figure()
    for band, (xs, ys) in enumerate(bands):
        if xs:
            level = float(edges[band + 1])  # the band's upper edge, so the top band is fully opaque
            fig.add_trace(
                go.Scatter(
                    x=xs, y=ys, mode="lines", line={"color": f"rgba({LINK_COLOR}, {level:.2f})", "width": 0.5 + 4 * level},
                    hoverinfo="skip", showlegend=False, name=f"weight {edges[band]:.2f}–{level:.2f}",
                )
            )  # fmt: skip

    def tokens(labels: list[str], x: int, role: str, position: str) -> go.Scatter:
        emphasis = [selected is not None and role == "query" and i == selected for i in range(len(labels))]
        dimmed = selected is not None and role == "query"
        return go.Scatter(
            x=[x] * len(labels), y=list(range(len(labels))), mode="markers+text", text=labels, textposition=position,
            marker={"size": [12 if e else 7 for e in emphasis],
                    "color": ["crimson" if e else "lightgray" if dimmed else f"rgb({LINK_COLOR})" for e in emphasis]},
            textfont={"color": ["crimson" if e else "gray" if dimmed else "black" for e in emphasis]},
            customdata=labels, hovertemplate=f"{role} %{{y}}: %{{customdata}}<extra></extra>",
            name=f"{role} tokens", showlegend=False,
        )  # fmt: skip

    fig.add_trace(tokens(query_labels, 0, "query", "middle left"))
    fig.add_trace(tokens(key_labels, 1, "key", "middle right"))
    fig.update_layout(
        title=title,
        xaxis={"visible": False, "range": [-0.8, 1.8], "fixedrange": True},
        yaxis={"visible": False, "autorange": "reversed"},
        annotations=[{"x": 0, "y": 1, "xref": "x", "yref": "paper", "text": "query", "showarrow": False, "yanchor": "bottom"},
                     {"x": 1, "y": 1, "xref": "x", "yref": "paper", "text": "key", "showarrow": False, "yanchor": "bottom"}],
        height=max(300, 80 + 22 * max(n_q, n_k)),
        margin={"l": 20, "r": 20, "t": 70, "b": 20},
        plot_bgcolor="white",
    )  # fmt: skip
    return fig


def statistic_heatmap(values: np.ndarray, name: str, description: str = "") -> go.Figure:
    """One head statistic (L, H) as a layer × head grid: layer 0 on top, heads across, the value in each cell."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"values of {name!r} must have shape (layers, heads), got {values.shape}")
    n_layers, n_heads = values.shape
    text = [[f"{v:.2f}" if np.isfinite(v) else "" for v in row] for row in values]
    fig = go.Figure(
        go.Heatmap(
            z=values, x=list(range(n_heads)), y=list(range(n_layers)), text=text, texttemplate="%{text}",
            colorscale="Viridis", colorbar={"title": name}, hoverongaps=False,
            hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title={"text": f"{name}<br><sup>{description}</sup>" if description else name},
        xaxis={"title": "head", "tickvals": list(range(n_heads)), "ticktext": [f"H{h}" for h in range(n_heads)], "side": "top"},
        yaxis={"title": "layer", "tickvals": list(range(n_layers)), "ticktext": [f"L{layer}" for layer in range(n_layers)], "autorange": "reversed"},
        height=max(300, 140 + 32 * n_layers),
        margin={"l": 60, "r": 20, "t": 110, "b": 20},
        plot_bgcolor="white",
    )  # fmt: skip
    return fig
