"""Figures of the quantization and speculative-decoding views: sizes, errors, histograms, acceptance, speed-up."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.plots.text import fit_title, plot_text, plot_texts, shorten, tick_texts, title_layout

BEFORE, AFTER, EXPECTED = "#4393c3", "#d6604d", "#7f7f7f"
LEGEND = {"orientation": "h", "x": 0, "y": 1, "yanchor": "bottom"}
LEGEND_BELOW = {"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "bottom", "yref": "container"}


def _bars_layout(fig: go.Figure, title: str, x_title: str, n: int) -> go.Figure:
    fig.update_layout(
        title=title_layout(title), height=max(320, 110 + 30 * n), plot_bgcolor="white", legend=LEGEND,
        xaxis={"title": x_title, "rangemode": "tozero"}, yaxis={"autorange": "reversed", "automargin": True},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )  # fmt: skip
    return fit_title(fig, 30)


def size_bars(names: list[str], measured, formula, title: str = "") -> go.Figure:
    """Bytes of the weights per precision: measured from the tensors, and by the formula (bits × weights + scales)."""
    fig = go.Figure()
    for label, values, color in (("measured", measured, AFTER), ("formula", formula, EXPECTED)):
        fig.add_bar(y=plot_texts(names), x=np.asarray(values, float) / 2**20, name=label, orientation="h",
                    marker_color=color, hovertemplate="%{y}: %{x:.2f} MiB<extra>" + label + "</extra>")  # fmt: skip
    fig.update_layout(barmode="group")
    return _bars_layout(fig, title, "weights, MiB", 2 * len(names))


def error_bars(errors: dict[str, float], title: str = "") -> go.Figure:
    """One bar per weight matrix: its relative reconstruction error ‖W − Ŵ‖ / ‖W‖."""
    names = list(errors)
    fig = go.Figure(go.Bar(
        y=tick_texts([n.removeprefix("transformer.").removeprefix("model.") for n in names]),
        x=[errors[n] for n in names], orientation="h", marker_color=AFTER,
        customdata=plot_texts(names), hovertemplate="%{customdata}: %{x:.4f}<extra></extra>",
    ))  # fmt: skip
    return _bars_layout(fig, title, "relative error ‖W − Ŵ‖ / ‖W‖", len(names))


def weight_histogram(edges, before, after, title: str = "") -> go.Figure:
    """A matrix's weights before and after rounding, counted in the same bins."""
    edges = np.asarray(edges, float)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    for label, counts, color in (("float32", before, BEFORE), ("quantized", after, AFTER)):
        fig.add_bar(x=centers, y=np.asarray(counts), name=label, marker_color=color, opacity=0.6)
    fig.update_layout(
        title=title_layout(title), barmode="overlay", bargap=0, height=360, plot_bgcolor="white", legend=LEGEND,
        xaxis={"title": "weight value"}, yaxis={"title": "count"}, margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )  # fmt: skip
    return fit_title(fig, 30)


def acceptance_bars(acceptance, title: str = "") -> go.Figure:
    """The share of proposals kept at each position of a draft's k (among steps that reached it)."""
    acceptance = np.asarray(acceptance, float)
    fig = go.Figure(go.Bar(
        x=[f"#{i + 1}" for i in range(len(acceptance))], y=np.nan_to_num(acceptance), marker_color=AFTER,
        hovertemplate="proposal %{x}: %{y:.0%} kept<extra></extra>",
    ))  # fmt: skip
    fig.update_layout(
        title=title_layout(title), height=320, plot_bgcolor="white", margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"title": "position among the k proposals"}, yaxis={"title": "kept", "range": [0, 1], "tickformat": ".0%"},
    )  # fmt: skip
    return fit_title(fig)


EXPLAINED_LABEL = "formula, real pass costs"


def speedup_lines(ks, measured, expected, title: str = "", explained=None) -> go.Figure:
    """Speed-up over plain greedy decoding against k: measured, the formula's from the acceptance rate, and
    (``explained``, optional) the steps' tokens over the passes' measured costs."""
    fig = go.Figure()
    lines = [("measured", measured, AFTER, "solid"), ("formula", expected, EXPECTED, "dash")]
    if explained is not None:
        lines.append((EXPLAINED_LABEL, explained, BEFORE, "dot"))
    for label, values, color, dash in lines:
        fig.add_scatter(
            x=list(ks), y=list(values), name=label, mode="lines+markers", line={"color": color, "dash": dash}
        )
    fig.add_hline(y=1, line={"color": "#bbb", "dash": "dot"})
    fig.update_layout(
        title=title_layout(title), height=360, plot_bgcolor="white", legend=LEGEND,
        xaxis={"title": "k (tokens proposed per step)", "tickvals": list(ks)}, yaxis={"title": "× plain greedy"},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )  # fmt: skip
    return fit_title(fig, 30)


VARIANT_COLORS = {"multi-head": "#4393c3", "grouped-query": "#2a9d8f", "multi-query": "#d6604d"}
LOADED_SUFFIX = " (loaded)"
BUILT_OUTLINE, BUILT_WIDTH = "#222222", 2.5  # the variant a model was built with


def variant_bars(models, variants, mib, built, loaded: str | None = None, title: str = "") -> go.Figure:
    """KV-cache MiB per model (one row each) under each attention variant (one colour each), on a log axis.

    One entry per (model, variant): ``models[i]``, ``variants[i]``, ``mib[i]``, ``built[i]`` (the variant that model
    was built with, drawn with a dark outline). Rows are labelled by the model's short name (its preset note, in
    brackets, only in the hover: a phone has no room), the row of ``loaded`` marked as the loaded model."""
    rows_of = {m: _variant_row(m, m == loaded) for m in models}
    order = list(dict.fromkeys(rows_of[m] for m in models))
    fig = go.Figure()
    for variant in dict.fromkeys(variants):
        rows = [i for i, v in enumerate(variants) if v == variant]
        fig.add_bar(
            y=[rows_of[models[i]] for i in rows], x=[float(mib[i]) for i in rows], name=variant, orientation="h",
            marker={"color": VARIANT_COLORS.get(variant, EXPECTED), "line": {"color": BUILT_OUTLINE,
                    "width": [BUILT_WIDTH if built[i] else 0 for i in rows]}},
            customdata=[[plot_text(models[i]), " (as built)" if built[i] else ""] for i in rows],
            hovertemplate="%{customdata[0]}%{customdata[1]}: %{x:.3g} MiB<extra>" + variant + "</extra>",
        )  # fmt: skip
    fig.update_layout(barmode="group", yaxis={"categoryorder": "array", "categoryarray": order})
    fig = _bars_layout(fig, title, "MiB (log scale)<br>outlined: as built", 2 * len(order))
    fig.update_xaxes(type="log", rangemode=None)
    # three variants' names wrap on a phone: below the axis, not between the title and the bars
    fig.update_layout(legend=LEGEND_BELOW, margin={"b": 90})
    return fig


def _variant_row(model: str, loaded: bool) -> str:
    """A row's label: ``Llama-3-8B`` for ``Llama-3-8B (grouped-query: 8 kv-heads)``; the loaded one on two lines."""
    short = plot_text(shorten(model.split(" (")[0], 14))
    return short + "<br>" + LOADED_SUFFIX.strip() if loaded else short
