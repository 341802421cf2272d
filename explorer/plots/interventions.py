"""Figures of the Interventions tab: a distribution before and after, and layer × head / layer × position maps."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.plots.text import COLORBAR_ROOM, colorbar_above, fit_title, plot_texts, tick_texts, title_layout

CLEAN_COLOR, CHANGED_COLOR = "#4393c3", "#d6604d"


def distribution_pair(
    clean: dict[str, float], changed: dict[str, float], title: str = "", changed_name: str = "ablated",
    answer: str | None = None, clean_name: str = "clean",
) -> go.Figure:  # fmt: skip
    """Grouped bars: each token's probability in the clean run and in the changed run (the union of both
    top lists, ordered by the clean probability); the chosen answer's label is marked with a ★."""
    labels = list(dict.fromkeys([*clean, *changed]))
    labels.sort(key=lambda t: -clean.get(t, 0.0))
    shown = [f"★ {t}" if t == answer else t for t in labels]
    fig = go.Figure()
    for name, probs, color in ((clean_name, clean, CLEAN_COLOR), (changed_name, changed, CHANGED_COLOR)):
        fig.add_bar(
            y=plot_texts(shown), x=[probs.get(t, 0.0) for t in labels], name=name, orientation="h",
            marker_color=color, hovertemplate="%{y}: %{x:.3f}<extra>" + name + "</extra>",
        )  # fmt: skip
    fig.update_layout(
        title=title_layout(title), barmode="group", height=max(360, 90 + 34 * len(labels)),
        xaxis={"title": "probability", "rangemode": "tozero"},
        yaxis={"autorange": "reversed", "automargin": True},
        legend={"orientation": "h", "x": 0, "y": 1, "yanchor": "bottom"},
        margin={"l": 10, "r": 10, "t": 10, "b": 10}, plot_bgcolor="white",
    )  # fmt: skip
    return fit_title(fig, 30)


def effect_heatmap(
    values: np.ndarray, row_labels: list[str], column_labels: list[str], title: str = "", value_name: str = "",
    cell_text: np.ndarray | None = None, x_title: str = "", y_title: str = "", bound: float | None = None,
) -> go.Figure:  # fmt: skip
    """A diverging heatmap centred on 0 (red up, blue down): rows are layers (or heads), columns heads (or
    positions); ``cell_text`` writes a short label in cells (e.g. a head's role). NaN cells stay blank."""
    values = np.asarray(values, dtype=float)
    if values.shape != (len(row_labels), len(column_labels)):
        raise ValueError(f"values of shape {values.shape} do not match {len(row_labels)} × {len(column_labels)} labels")
    finite = values[np.isfinite(values)]
    bound = bound or max(1e-9, float(np.abs(finite).max()) if finite.size else 1.0)
    n_rows, n_cols = values.shape
    text = {}
    if cell_text is not None:
        text = {"text": plot_texts(np.asarray(cell_text, dtype=object)), "texttemplate": "%{text}"}
    fig = go.Figure(
        go.Heatmap(
            z=values.astype(np.float32), x=list(range(n_cols)), y=list(range(n_rows)), zmin=-bound, zmax=bound,
            colorscale="RdBu_r", colorbar=colorbar_above(value_name), hoverongaps=False,
            customdata=np.array([[f"{r} · {c}" for c in plot_texts(column_labels)] for r in plot_texts(row_labels)]),
            hovertemplate="%{customdata}<br>" + value_name + " %{z:.3g}<extra></extra>", **text,
        )
    )  # fmt: skip
    tick_font = {"size": 11 if max(n_rows, n_cols) <= 40 else 8}
    fig.update_layout(
        title=title_layout(title), plot_bgcolor="white",
        xaxis={"title": x_title, "tickvals": list(range(n_cols)), "ticktext": tick_texts(column_labels),
               "tickangle": -60 if n_cols > 12 else 0, "tickfont": tick_font, "automargin": True, "showgrid": False},
        yaxis={"title": y_title, "tickvals": list(range(n_rows)), "ticktext": tick_texts(row_labels),
               "autorange": "reversed", "tickfont": tick_font, "automargin": True, "showgrid": False},
        margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=max(460, min(900, 220 + 36 * n_rows)),
    )  # fmt: skip
    return fit_title(fig, COLORBAR_ROOM)
