"""Attribution figures: scores over tokens as coloured text and as bars, and a target × source matrix.

Positive scores (the token raised the output) are red, negative ones (it lowered it) blue, in
every view; the strength of a colour is the score over the largest absolute score shown.
"""

from __future__ import annotations

from html import escape

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

POSITIVE = (214, 96, 77)  # RdBu's red
NEGATIVE = (67, 147, 195)  # RdBu's blue
MISSING_COLOR = "rgba(200, 200, 200, 0.35)"


def _check(scores, labels) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1 or scores.shape[0] != len(labels):
        raise ValueError(f"scores of shape {scores.shape} do not match {len(labels)} token labels")
    return scores


def _scale(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return max(1e-12, float(finite.max())) if finite.size else 1.0


def _rgba(value: float, scale: float, alpha_max: float = 0.85) -> str:
    r, g, b = POSITIVE if value >= 0 else NEGATIVE
    return f"rgba({r}, {g}, {b}, {alpha_max * min(1.0, abs(value) / scale):.3f})"


# The spans sit side by side with nothing between them, so a line could not break there: each is an inline box,
# between which a line may break, inside its strip's own column (two strips stand side by side), and a token
# longer than the column breaks inside. Inline boxes, as in the token strips (``plots.tokens``), not a flex row:
# the strip's text still reads as the text.
STRIP_STYLE = "line-height:2;min-width:0"
TOKEN_STYLE = (
    "display:inline-block;max-width:100%;padding:1px 2px;margin:1px;border-radius:3px;font-family:monospace;"
    "white-space:pre-wrap;overflow-wrap:anywhere"
)


def attribution_text_html(labels: list[str], scores, title: str = "") -> str:
    """The tokens as text, each on a background whose colour is its score (hover shows the value).

    ``attribution_text_html(["The", "␣cat"], [0.5, -1.0])`` -> the first token light red, the second
    full blue. Labels are HTML-escaped.
    """
    scores = _check(scores, labels)
    scale = _scale(scores)
    spans = [
        f'<span title="{escape(label, quote=True)}: {score:+.4g}" style="background:{_rgba(score, scale)};{TOKEN_STYLE}">'
        f"{escape(label)}</span>"
        for label, score in zip(labels, scores)
    ]
    head = f"<div style='font-weight:600;margin-bottom:4px'>{escape(title)}</div>" if title else ""
    return f"{head}<div class='attribution-strip' style='{STRIP_STYLE}'>{''.join(spans)}</div>"


def attribution_bars(labels: list[str], scores: dict[str, np.ndarray], title: str = "") -> go.Figure:
    """One bar chart per method, stacked, sharing the token axis: red bars up, blue bars down.

    ``scores`` maps a method's name to its (tokens,) scores; methods keep their own y scale, since
    their units differ (a change in probability, a gradient norm...).
    """
    if not scores:
        raise ValueError("no method's scores to draw")
    names = list(scores)
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, subplot_titles=plot_texts(names),
                        vertical_spacing=0.18)  # fmt: skip
    x = list(range(len(labels)))
    shown = plot_texts(labels)
    for row, name in enumerate(names, start=1):
        values = _check(scores[name], labels)
        colors = [f"rgb{POSITIVE}" if v >= 0 else f"rgb{NEGATIVE}" for v in values]
        fig.add_trace(
            go.Bar(
                x=x, y=values.astype(np.float32), marker_color=colors, customdata=shown, name=plot_text(name),
                showlegend=False, hovertemplate="%{customdata}<br>" + plot_text(name) + ": %{y:.4g}<extra></extra>",
            ),
            row=row, col=1,
        )  # fmt: skip
        fig.update_yaxes(zeroline=True, zerolinecolor="#888", row=row, col=1)
    fig.update_xaxes(tickvals=x, ticktext=shown, tickangle=-45, automargin=True, row=len(names), col=1)
    fig.update_layout(
        title=title_layout(title), height=160 + 220 * len(names), margin={"l": 60, "r": 20, "t": 40, "b": 20},
        plot_bgcolor="white", bargap=0.25,
    )  # fmt: skip
    return fit_title(fig, 34)


def attribution_heatmap(scores, row_labels: list[str], column_labels: list[str], title: str = "") -> go.Figure:
    """Target × source: row r holds the scores of the r-th explained token over the input tokens.

    ``scores`` is (rows, columns); NaN cells (an input token that came after the row's prediction)
    are drawn grey. One diverging scale centred on 0 for the whole matrix.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape != (len(row_labels), len(column_labels)):
        raise ValueError(
            f"scores of shape {scores.shape} do not match {len(row_labels)} rows and {len(column_labels)} columns"
        )
    bound = _scale(scores)
    n_rows, n_cols = scores.shape
    row_ticks, column_ticks = tick_texts(row_labels), tick_texts(column_labels)
    row_labels, column_labels = plot_texts(row_labels), plot_texts(column_labels)
    fig = go.Figure(
        go.Heatmap(
            z=scores.astype(np.float32), x=list(range(n_cols)), y=list(range(n_rows)), zmin=-bound, zmax=bound,
            colorscale="RdBu_r", colorbar=colorbar_above("attribution"), hoverongaps=False,
            customdata=np.array([[f"{r} ← {c}" for c in column_labels] for r in row_labels]),
            hovertemplate="%{customdata}<br>attribution %{z:.4g}<extra></extra>",
        )
    )  # fmt: skip
    tick_font = {"size": 11 if max(n_rows, n_cols) <= 40 else 8}
    fig.update_layout(
        title=title_layout(title), plot_bgcolor=MISSING_COLOR,
        xaxis={"title": "input token (source)", "tickvals": list(range(n_cols)), "automargin": True,
               "ticktext": column_ticks, "tickangle": -60, "tickfont": tick_font, "showgrid": False},
        yaxis={"title": "explained token", "tickvals": list(range(n_rows)), "ticktext": row_ticks, "automargin": True,
               "autorange": "reversed", "tickfont": tick_font, "showgrid": False},
        margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=max(360, min(900, 220 + 26 * n_rows)),
    )  # fmt: skip
    return fit_title(fig, COLORBAR_ROOM)
