"""Figures of the retrieval view: the top passages' scores, where two rankers disagree, the question among
the passages on a map, the next token without and with retrieval, attention shares through the layers, and
the answer's attribution to the prompt's tokens by segment."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.plots.text import (
    COLORBAR_ROOM,
    colorbar_above,
    fit_title,
    plot_text,
    plot_texts,
    shorten,
    tick_texts,
    title_layout,
)

LEGEND_BELOW = {"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "bottom", "yref": "container"}
DENSE_COLOR, LEXICAL_COLOR, QUESTION_COLOR, OTHER_COLOR = "#2a9d8f", "#e76f51", "#d62728", "rgba(90, 110, 160, 0.45)"
CLOSED_COLOR, OPEN_COLOR = "#4393c3", "#d6604d"
LABEL_CHARS = 48


def score_bars(labels: list[str], scores, title: str = "", value_name: str = "cosine similarity") -> go.Figure:
    """One ranking's top passages as horizontal bars, the first on top (hover: the passage's words)."""
    scores = np.asarray(scores, float)
    if scores.ndim != 1 or len(scores) != len(labels):
        raise ValueError(f"scores {scores.shape} must be (n,) with one label each")
    shown = [plot_text(f"{i + 1}. {shorten(label, LABEL_CHARS)}") for i, label in enumerate(labels)]
    fig = go.Figure(
        go.Bar(x=scores, y=shown, orientation="h", text=[f"{v:.3f}" for v in scores], textposition="auto",
               marker={"color": DENSE_COLOR}, hovertext=plot_texts(labels), hoverinfo="text+x")
    )  # fmt: skip
    fig.update_layout(
        title=title_layout(title), height=max(260, 90 + 30 * len(labels)), plot_bgcolor="white",
        xaxis={"title": value_name}, yaxis={"autorange": "reversed", "automargin": True},
        margin={"l": 10, "r": 20, "t": 30, "b": 40},
    )  # fmt: skip
    return fit_title(fig)


def rank_comparison(labels: list[str], dense_ranks, lexical_ranks, title: str = "", k: int | None = None) -> go.Figure:
    """Each passage's rank by embeddings (left) and by BM25 (right), joined by a line: a steep line is a
    disagreement. A lexical rank of 0 (no shared word) is drawn at the bottom, below the last rank."""
    dense = np.asarray(dense_ranks, int)
    lexical = np.asarray(lexical_ranks, int)
    if dense.shape != lexical.shape or len(dense) != len(labels):
        raise ValueError("one dense and one lexical rank per label")
    bottom = int(max(dense.max(initial=1), lexical.max(initial=1))) + 1
    right = np.where(lexical > 0, lexical, bottom)
    fig = go.Figure()
    for label, a, b, missing in zip(plot_texts([shorten(x, LABEL_CHARS) for x in labels]), dense, right, lexical == 0):
        color = DENSE_COLOR if a <= b else LEXICAL_COLOR
        fig.add_trace(
            go.Scatter(x=[0, 1], y=[a, b], mode="lines+markers", line={"color": color, "width": 2},
                       name=label, showlegend=False, hovertext=[f"{label}: rank {a} by embeddings",
                       f"{label}: " + ("no shared word" if missing else f"rank {b} by BM25")], hoverinfo="text")
        )  # fmt: skip
    ticks = list(range(1, bottom)) + [bottom]
    fig.update_layout(
        title=title_layout(title), height=max(320, 80 + 26 * bottom), plot_bgcolor="white",
        xaxis={"tickvals": [0, 1], "ticktext": ["embeddings (cosine)", "BM25"], "range": [-0.15, 1.15]},
        yaxis={"autorange": "reversed", "tickvals": ticks, "ticktext": [str(t) for t in ticks[:-1]] + ["none"],
               "title": "rank"},
        margin={"l": 50, "r": 20, "t": 30, "b": 40},
    )  # fmt: skip
    if k is not None:
        fig.add_hline(y=k + 0.5, line={"dash": "dot", "color": "#888"}, annotation_text=f"top {k}")
    return fit_title(fig)


def passage_map(coords, labels: list[str], retrieved, question: str, title: str = "") -> go.Figure:
    """Passages as points (retrieved ones highlighted) and the question as a star; ``coords`` is
    (m + 1, 2) with the question's point last."""
    coords = np.asarray(coords, np.float32)
    retrieved = np.asarray(retrieved, bool)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(labels) + 1 or len(retrieved) != len(labels):
        raise ValueError(f"coords {coords.shape} must be (m + 1, 2) for m labels and the question")
    hover = np.array(plot_texts([shorten(x, 80) for x in labels]), dtype=object)
    fig = go.Figure()
    for mask, name, color, size in (
        (~retrieved, "other passages", OTHER_COLOR, 7),
        (retrieved, "retrieved", DENSE_COLOR, 12),
    ):
        fig.add_trace(
            go.Scatter(x=coords[:-1][mask, 0], y=coords[:-1][mask, 1], mode="markers", name=name,
                       marker={"color": color, "size": size}, hovertext=hover[mask].tolist(), hoverinfo="text")
        )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=coords[-1:, 0], y=coords[-1:, 1], mode="markers", name="the question",
                   marker={"color": QUESTION_COLOR, "size": 18, "symbol": "star"},
                   hovertext=[plot_text(question)], hoverinfo="text")  # a label beside the star ran off narrow screens
    )  # fmt: skip
    fig.update_layout(
        title=title_layout(title), height=560, plot_bgcolor="white", legend=LEGEND_BELOW,
        xaxis={"title": "PC 1"}, yaxis={"title": "PC 2"}, margin={"l": 20, "r": 20, "t": 30, "b": 60},
    )  # fmt: skip
    return fit_title(fig)


def next_token_pair(without: dict[str, float], with_context: dict[str, float], title: str = "") -> go.Figure:
    """Grouped bars: each token's probability without and with the passages in the prompt (the union of
    both top lists, ordered by the probability with them)."""
    labels = list(dict.fromkeys([*with_context, *without]))
    labels.sort(key=lambda t: -with_context.get(t, 0.0))
    fig = go.Figure()
    for name, probs, color in (
        ("without retrieval", without, CLOSED_COLOR),
        ("with retrieval", with_context, OPEN_COLOR),
    ):
        fig.add_bar(
            y=plot_texts(labels), x=[probs.get(t, 0.0) for t in labels], name=name, orientation="h",
            marker_color=color, hovertemplate="%{y}: %{x:.3f}<extra>" + name + "</extra>",
        )  # fmt: skip
    fig.update_layout(
        title=title_layout(title), barmode="group", height=max(360, 90 + 34 * len(labels)),
        xaxis={"title": "probability of the next token", "rangemode": "tozero"},
        yaxis={"autorange": "reversed", "automargin": True}, legend=LEGEND_BELOW,
        margin={"l": 10, "r": 10, "t": 10, "b": 60}, plot_bgcolor="white",
    )  # fmt: skip
    return fit_title(fig, 30)


def share_lines(passage_share, question_share, title: str = "", attention: str = "self-attention") -> go.Figure:
    """Per layer (x from 1), the share of attention the generated tokens pay to the passages and to the
    question, averaged over the generated tokens; inputs are (g, L)."""
    passage = np.asarray(passage_share, float)
    question = np.asarray(question_share, float)
    if passage.ndim != 2 or passage.shape != question.shape:
        raise ValueError("passage and question shares must both be (generated tokens, layers)")
    layers = list(range(1, passage.shape[1] + 1))
    fig = go.Figure()
    for name, values, color in (("the passages", passage, DENSE_COLOR), ("the question", question, QUESTION_COLOR)):
        fig.add_trace(go.Scatter(x=layers, y=values.mean(axis=0) if len(values) else [0.0] * len(layers),
                                 mode="lines+markers", name=name, line={"color": color}))  # fmt: skip
    fig.update_layout(
        title=title_layout(title), height=400, plot_bgcolor="white", legend=LEGEND_BELOW,
        xaxis={"title": "layer", "dtick": 1}, yaxis={"title": f"share of {attention}", "range": [0, 1]},
        margin={"l": 60, "r": 20, "t": 30, "b": 60},
    )  # fmt: skip
    return fit_title(fig)


def share_heatmap(shares, token_labels: list[str], title: str = "", what: str = "share on the passages") -> go.Figure:
    """Generated token (rows) × layer (columns): the share of attention each token paid to the passages."""
    shares = np.asarray(shares, float)
    if shares.ndim != 2 or len(shares) != len(token_labels):
        raise ValueError(f"shares {shares.shape} must be (generated tokens, layers) with one label per row")
    fig = go.Figure(
        go.Heatmap(z=shares, x=list(range(1, shares.shape[1] + 1)), y=list(range(len(token_labels))), zmin=0, zmax=1,
                   colorscale="Blues", colorbar=colorbar_above(what),
                   hovertemplate="layer %{x} · token %{y}: %{z:.2f}<extra></extra>")
    )  # fmt: skip
    fig.update_layout(
        title=title_layout(title), height=max(300, 120 + 28 * len(token_labels)), plot_bgcolor="white",
        xaxis={"title": "layer", "dtick": 1},
        yaxis={"tickvals": list(range(len(token_labels))), "ticktext": tick_texts(token_labels), "autorange": "reversed"},
        margin={"l": 20, "r": 20, "t": 30, "b": 40},
    )  # fmt: skip
    return fit_title(fig, COLORBAR_ROOM)


SEGMENT_COLORS = {"passage": DENSE_COLOR, "question": QUESTION_COLOR, "other": OTHER_COLOR}
SEGMENT_NAMES = {"passage": "the passages", "question": "the question", "other": "template and other tokens"}


def attribution_bars(scores, token_labels: list[str], segments: list[str], title: str = "",
                     value_name: str = "attribution") -> go.Figure:  # fmt: skip
    """One bar per input token (x in prompt order), coloured by its segment (passages, question, other), so the
    passages' part of an answer token's attribution shows at a glance; NaN scores are left out."""
    scores = np.asarray(scores, float)
    if scores.ndim != 1 or len(scores) != len(token_labels) or len(segments) != len(token_labels):
        raise ValueError("scores, token labels and segments must be one per token")
    fig = go.Figure()
    for segment, color in SEGMENT_COLORS.items():
        where = [i for i, s in enumerate(segments) if s == segment and np.isfinite(scores[i])]
        if not where:
            continue
        fig.add_bar(
            x=where, y=scores[where], name=SEGMENT_NAMES[segment], marker_color=color,
            customdata=plot_texts([token_labels[i] for i in where]),
            hovertemplate="%{customdata}: %{y:.3g}<extra>" + SEGMENT_NAMES[segment] + "</extra>",
        )  # fmt: skip
    step = max(1, len(token_labels) // 40)  # at most about 40 tick labels
    ticks = list(range(0, len(token_labels), step))
    fig.update_layout(
        title=title_layout(title), height=500, plot_bgcolor="white", legend=LEGEND_BELOW, bargap=0.1,
        xaxis={"title": "prompt token", "tickvals": ticks, "ticktext": tick_texts([token_labels[i] for i in ticks]),
               "tickangle": -60},
        yaxis={"title": value_name, "zeroline": True, "zerolinecolor": "#888"},
        margin={"l": 60, "r": 20, "t": 30, "b": 110},
    )  # fmt: skip
    return fit_title(fig)
