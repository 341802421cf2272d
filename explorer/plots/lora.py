"""LoRA figures: the loss curve, before-vs-after distributions, what moved, and the update ΔW itself."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.plots.text import fit_title, plot_texts, title_layout

BASE_COLOR, ADAPTED_COLOR = "#8d99ae", "#e76f51"
_LAYOUT = {"plot_bgcolor": "white", "margin": {"l": 60, "r": 20, "t": 30, "b": 10}}
LEGEND_BELOW = {"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "bottom", "yref": "container"}


def loss_curve(losses, total_steps: int, heldout_before: float | None = None, heldout_after: float | None = None,
               title: str = "") -> go.Figure:  # fmt: skip
    """Training loss per step (and its running mean), with the held-out loss before and after as dashed lines."""
    losses = np.asarray(losses, float)
    steps = np.arange(1, losses.size + 1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=losses, mode="lines", name="training loss (batch)",
                             line={"color": "#bbbbbb", "width": 1}))  # fmt: skip
    if losses.size:
        window = max(1, min(10, losses.size // 5))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        fig.add_trace(go.Scatter(x=steps[window - 1 :], y=smooth, mode="lines", name=f"mean of {window} steps",
                                 line={"color": ADAPTED_COLOR, "width": 2}))  # fmt: skip
    for value, name, color in ((heldout_before, "held-out, before", BASE_COLOR),
                               (heldout_after, "held-out, after", "#2a9d8f")):  # fmt: skip
        if value is not None:
            fig.add_trace(go.Scatter(x=[0, total_steps], y=[value, value], mode="lines", name=f"{name}: {value:.3f}",
                                     line={"color": color, "dash": "dash"}))  # fmt: skip
    fig.update_layout(
        title=title_layout(title), height=420, xaxis={"title": "step", "range": [0, max(total_steps, 1)]},
        yaxis={"title": "loss (nats per token)"}, legend=LEGEND_BELOW, **_LAYOUT,
    )  # fmt: skip
    return fit_title(fig)


def before_after_bars(labels: list[str], before: np.ndarray, after: np.ndarray, title: str = "") -> go.Figure:
    """Next-token probabilities of the same candidates without (grey) and with (orange) the adapter."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    if before.shape != after.shape or before.shape != (len(labels),):
        raise ValueError(f"before {before.shape} and after {after.shape} must both be ({len(labels)},)")
    x = list(range(len(labels)))
    labels = plot_texts(labels)
    fig = go.Figure()
    for values, name, color in ((before, "base", BASE_COLOR), (after, "adapted", ADAPTED_COLOR)):
        fig.add_trace(go.Bar(x=x, y=values, name=name, marker_color=color, customdata=labels,
                             hovertemplate="%{customdata}<br>" + name + ": %{y:.3f}<extra></extra>"))  # fmt: skip
    fig.update_layout(
        title=title_layout(title), barmode="group", height=420, legend=LEGEND_BELOW,
        xaxis={"tickvals": x, "ticktext": labels, "tickangle": -45, "automargin": True}, yaxis={"title": "probability"},
        **_LAYOUT,
    )  # fmt: skip
    return fit_title(fig)


def moved_bars(labels: list[str], before: np.ndarray, after: np.ndarray, title: str = "") -> go.Figure:
    """Horizontal bars of the change in probability, biggest rise on top; hover shows before → after."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    change = after - before
    labels = plot_texts(labels)
    order = np.argsort(change)
    text = [f"{b:.4f} → {a:.4f}" for b, a in zip(before[order], after[order])]
    fig = go.Figure(
        go.Bar(
            x=change[order], y=[labels[i] for i in order], orientation="h", text=text, textposition="none",
            marker_color=[ADAPTED_COLOR if c > 0 else BASE_COLOR for c in change[order]],
            hovertemplate="%{y}: %{text}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title=title_layout(" · ".join(filter(None, ["Tokens whose probability moved most (mean over the probes)", title]))),
        height=120 + 26 * len(labels), xaxis={"title": "change in next-token probability", "zeroline": True},
        yaxis={"automargin": True}, **_LAYOUT,
    )  # fmt: skip
    return fit_title(fig)


def norm_heatmap(
    blocks: list[str], kinds: list[str], norms: np.ndarray, relative: np.ndarray, title: str = ""
) -> go.Figure:
    """‖ΔW‖ per block (rows) and module kind (columns); hover adds ‖ΔW‖ / ‖W‖."""
    norms, relative = np.asarray(norms, float), np.asarray(relative, float)
    if norms.shape != (len(blocks), len(kinds)) or relative.shape != norms.shape:
        raise ValueError(f"norms {norms.shape} and relative {relative.shape} must be ({len(blocks)}, {len(kinds)})")
    fig = go.Figure(
        go.Heatmap(
            z=norms, x=plot_texts(kinds), y=plot_texts(blocks), customdata=relative, colorscale="Oranges",
            colorbar={"title": "‖ΔW‖", "thickness": 12},
            hovertemplate="%{y} %{x}<br>‖ΔW‖ = %{z:.4f}<br>‖ΔW‖/‖W‖ = %{customdata:.4f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(title=title_layout(" · ".join(filter(None, ["Size of the update per layer and module (Frobenius norm)", title]))),
                      height=160 + 30 * len(blocks), yaxis={"autorange": "reversed", "automargin": True},
                      xaxis={"automargin": True}, **_LAYOUT)  # fmt: skip
    return fit_title(fig)


def singular_values(values: np.ndarray, r: int, title: str = "") -> go.Figure:
    """Singular values of one ΔW on a log axis, with the rank r marked: beyond r they are round-off."""
    values = np.asarray(values, float)
    shown = values[: max(4 * r, 32)]
    floor = max(float(shown.max()) * 1e-12, 1e-30) if shown.size else 1e-30
    fig = go.Figure(
        go.Bar(x=np.arange(1, shown.size + 1), y=np.maximum(shown, floor), marker_color=ADAPTED_COLOR,
               hovertemplate="σ%{x} = %{y:.3g}<extra></extra>")
    )  # fmt: skip
    fig.add_vline(x=r + 0.5, line_dash="dash", line_color="#444", annotation_text=f"r = {r}")
    fig.update_layout(title=title_layout(title), height=340, xaxis={"title": "index"},
                      yaxis={"title": "singular value", "type": "log"},
                      **_LAYOUT)  # fmt: skip
    return fit_title(fig)


def delta_heatmap(matrix: np.ndarray, title: str = "", shape: tuple[int, int] | None = None) -> go.Figure:
    """One ΔW (rows: outputs, columns: inputs), symmetric colours around 0; ``shape`` is the full size if pooled."""
    matrix = np.asarray(matrix, float)
    limit = float(np.abs(matrix).max()) or 1.0
    rows, cols = shape or matrix.shape
    note = f"{rows} × {cols}" + (f", shown as {matrix.shape[0]} × {matrix.shape[1]} block means" if shape else "")
    fig = go.Figure(go.Heatmap(z=matrix, colorscale="RdBu", zmid=0, zmin=-limit, zmax=limit,
                               colorbar={"title": "ΔW", "thickness": 12}))  # fmt: skip
    fig.update_layout(title=title_layout(f"{title} · {note}"), height=440, xaxis={"title": "input"},
                      yaxis={"title": "output", "autorange": "reversed"}, **_LAYOUT)  # fmt: skip
    return fit_title(fig)
