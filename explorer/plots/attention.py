"""Attention figures: one head as a query × key heatmap."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

MASKED_COLOR = "rgba(200, 200, 200, 0.35)"


def attention_heatmap(
    weights: np.ndarray,
    query_labels: list[str],
    key_labels: list[str],
    title: str = "",
    causal: bool = False,
) -> go.Figure:
    """Heatmap of one head: rows are query tokens, columns key tokens, colour the weight.

    ``weights`` has shape (queries, keys). With ``causal`` the masked cells above the diagonal are
    drawn grey and hover says "masked", so the triangle of a decoder reads as "cannot look ahead".
    Axes are positions with token ticks, so repeated tokens keep their own rows.
    """
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape != (len(query_labels), len(key_labels)):
        raise ValueError(
            f"weights of shape {weights.shape} do not match {len(query_labels)} query and {len(key_labels)} key labels"
        )
    n_q, n_k = weights.shape
    masked = np.triu(np.ones((n_q, n_k), bool), k=1) if causal else np.zeros((n_q, n_k), bool)
    shown = np.where(masked, np.nan, weights)
    hover = np.array(
        [
            [
                f"query {i}: {query_labels[i]}<br>key {j}: {key_labels[j]}<br>"
                + ("masked (future token)" if masked[i, j] else f"weight {weights[i, j]:.3f}")
                for j in range(n_k)
            ]
            for i in range(n_q)
        ]
    )
    fig = go.Figure(
        go.Heatmap(
            z=shown,
            x=list(range(n_k)),
            y=list(range(n_q)),
            zmin=0,
            zmax=max(1e-9, float(np.nanmax(shown)) if np.isfinite(shown).any() else 1.0),
            colorscale="Blues",
            text=hover,
            hoverinfo="text",
            colorbar={"title": "weight"},
            hoverongaps=False,
        )
    )
    if causal and masked.any():
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
