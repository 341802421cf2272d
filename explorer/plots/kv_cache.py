"""KV-cache figures: per-token latency by position with and without the cache, cache bytes, what the cache holds."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.plots.text import COLORBAR_ROOM, colorbar_above, fit_title, plot_texts, tick_texts, title_layout

COLORS = {"with": "#2a9d8f", "without": "#e76f51"}
LAYOUT = {"height": 420, "margin": {"l": 60, "r": 20, "t": 30, "b": 10}, "plot_bgcolor": "white"}
HEATMAP_MARGIN = {"l": 10, "r": 10, "t": 30, "b": 10}
LEGEND_BELOW = {"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "bottom", "yref": "container"}


def latency_plot(positions: np.ndarray, with_cache: np.ndarray, without_cache: np.ndarray,
                 slopes: tuple[float, float], title: str = "") -> go.Figure:  # fmt: skip
    """Each step's latency (ms) against the position it writes: the median over repeats as a line,
    the fastest and slowest repeat as a band, and a fitted straight line per run (its slope in the
    legend). Step 0 (the prompt, prefill) is marked apart.
    """
    positions = np.asarray(positions, float)
    fig = go.Figure()
    for key, name, latencies, slope in (("with", "cache on", with_cache, slopes[0]),
                                        ("without", "cache off", without_cache, slopes[1])):  # fmt: skip
        ms = np.asarray(latencies, float) * 1e3  # (repeats, steps)
        color = COLORS[key]
        fig.add_trace(go.Scatter(x=np.r_[positions[1:], positions[1:][::-1]],
                                 y=np.r_[ms.max(0)[1:], ms.min(0)[1:][::-1]], fill="toself", fillcolor=color,
                                 opacity=0.15, line={"width": 0}, hoverinfo="skip", showlegend=False))  # fmt: skip
        median = np.median(ms, axis=0)
        fig.add_trace(go.Scatter(x=positions[1:], y=median[1:], mode="lines", line={"color": color}, name=name,
                                 hovertemplate="position %{x}: %{y:.1f} ms<extra>" + name + "</extra>"))  # fmt: skip
        fig.add_trace(go.Scatter(x=positions[:1], y=median[:1], mode="markers", marker={"color": color, "size": 10,
                                 "symbol": "diamond"}, name=f"{name}: prompt (prefill)",
                                 hovertemplate="prompt: %{y:.1f} ms<extra></extra>"))  # fmt: skip
        if len(positions) > 2:
            intercept = np.median(median[1:] - slope * 1e3 * positions[1:])
            fit = intercept + slope * 1e3 * positions[1:]
            fig.add_trace(go.Scatter(x=positions[1:], y=fit, mode="lines", line={"color": color, "dash": "dot"},
                                     name=f"{name}: {slope * 1e3:+.3f} ms per position", hoverinfo="skip"))  # fmt: skip
    fig.update_layout(title=title_layout(" · ".join(filter(None, ["Time for each new token", title]))),
                      xaxis={"title": "position of the new token"}, yaxis={"title": "milliseconds", "rangemode": "tozero"},
                      legend=LEGEND_BELOW, **{**LAYOUT, "height": 520})  # fmt: skip
    return fit_title(fig)


def memory_plot(
    positions: np.ndarray, measured: np.ndarray, formula: np.ndarray, cross_bytes: int = 0, title: str = ""
) -> go.Figure:
    """Bytes the cache holds after each step, measured from the cache object, over the formula's line."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=positions, y=np.asarray(formula) / 2**20, mode="lines", name="formula",
                             line={"color": "#888", "dash": "dash"}))  # fmt: skip
    fig.add_trace(go.Scatter(x=positions, y=np.asarray(measured) / 2**20, mode="markers", name="measured",
                             marker={"color": COLORS["with"], "size": 6},
                             hovertemplate="%{x} positions: %{y:.3f} MiB<extra></extra>"))  # fmt: skip
    what = "Bytes in the cache (self-attention keys and values)"
    if cross_bytes:
        what += f" · plus {cross_bytes / 2**20:.3f} MiB of the encoder's, cached once"
    fig.update_layout(title=title_layout(" · ".join(filter(None, [what, title]))), xaxis={"title": "positions held"},
                      yaxis={"title": "MiB", "rangemode": "tozero"}, legend=LEGEND_BELOW, **LAYOUT)  # fmt: skip
    return fit_title(fig)


def cache_heatmap(matrix: np.ndarray, tokens: list[str], title: str) -> go.Figure:
    """One head's cached keys or values: a row per position (a token), a column per dimension."""
    matrix = np.asarray(matrix, float)
    ticks, tokens = tick_texts(tokens), plot_texts(tokens)
    fig = go.Figure(go.Heatmap(z=matrix, y=list(range(len(matrix))), colorscale="RdBu", zmid=0,
                               colorbar=colorbar_above("value"),
                               customdata=np.array(tokens, dtype=object)[:, None].repeat(matrix.shape[1], 1),
                               hovertemplate="%{customdata} (position %{y}), dim %{x}: %{z:.3f}<extra></extra>"))  # fmt: skip
    fig.update_layout(title=title_layout(title), xaxis={"title": "dimension of the head"},
                      yaxis={"title": "position", "autorange": "reversed", "tickvals": list(range(len(tokens))),
                             "ticktext": ticks if len(tokens) <= 40 else None, "automargin": True},
                      **{**LAYOUT, "margin": HEATMAP_MARGIN, "height": max(300, min(700, 18 * len(tokens) + 120))})  # fmt: skip
    return fit_title(fig, COLORBAR_ROOM)
