"""Training figures: loss against steps or tokens, head scores against steps, the scaling study with its
fitted power law (and a live run on the same axes), and preference tuning's log-probabilities and margin.
Numpy arrays and labels in, plotly figures out."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.plots.text import fit_title, plot_text, title_layout

TRAIN_COLOR, HELD_OUT_COLOR, FIT_COLOR, LIVE_COLOR = "#bbbbbb", "#2a9d8f", "#e76f51", "#264653"
_LAYOUT = {"plot_bgcolor": "white", "margin": {"l": 60, "r": 20, "t": 30, "b": 10}}
LEGEND_BELOW = {"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "bottom", "yref": "container"}


def _same_length(**arrays) -> dict[str, np.ndarray]:
    out = {k: np.asarray(v, float) for k, v in arrays.items()}
    pairs = list(out.items())
    for (n1, a), (n2, b) in zip(pairs[::2], pairs[1::2], strict=True):
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"{n1} {a.shape} and {n2} {b.shape} must be 1-d arrays of one length")
    return out


def loss_curves(x_train, train_loss, x_eval, held_out_loss, x_title: str = "step", title: str = "",
                y_title: str = "loss (nats per token)") -> go.Figure:  # fmt: skip
    """Training loss per step (light) and held-out loss at its evaluations (markers), against steps or tokens."""
    a = _same_length(x_train=x_train, train_loss=train_loss, x_eval=x_eval, held_out_loss=held_out_loss)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=a["x_train"], y=a["train_loss"], mode="lines", name="training batch",
                             line={"color": TRAIN_COLOR, "width": 1}))  # fmt: skip
    fig.add_trace(go.Scatter(x=a["x_eval"], y=a["held_out_loss"], mode="lines+markers", name="held-out text",
                             line={"color": HELD_OUT_COLOR, "width": 2}))  # fmt: skip
    fig.update_layout(title=title_layout(title), height=400, xaxis={"title": x_title}, yaxis={"title": y_title},
                      legend=LEGEND_BELOW, **_LAYOUT)  # fmt: skip
    return fit_title(fig)


def head_score_curves(steps, scores, score_name: str, title: str = "") -> go.Figure:
    """One line per head (layer L, head H) of a score (k checkpoints, L, H) against the checkpoint steps."""
    steps, scores = np.asarray(steps, float), np.asarray(scores, float)
    if scores.ndim != 3 or scores.shape[0] != steps.shape[0]:
        raise ValueError(
            f"scores must be (checkpoints, layers, heads) with {steps.shape[0]} checkpoints, got {scores.shape}"
        )
    fig = go.Figure()
    for layer in range(scores.shape[1]):
        for head in range(scores.shape[2]):
            fig.add_trace(go.Scatter(x=steps, y=scores[:, layer, head], mode="lines+markers", name=f"L{layer} H{head}"))
    fig.update_layout(title=title_layout(title), height=400, xaxis={"title": "step"},
                      yaxis={"title": score_name, "range": [0, 1]}, legend=LEGEND_BELOW, **_LAYOUT)  # fmt: skip
    return fit_title(fig)


def scaling_plot(x, loss, labels: list[str], fit_x=None, fit_loss=None, fit_name: str = "", live=None,
                 x_title: str = "non-embedding parameters", title: str = "") -> go.Figure:  # fmt: skip
    """Each run's held-out loss against a scale (log-log), the fitted power law as a line, and ``live``
    = (x, loss) of the user's own run as a star."""
    a = _same_length(x=x, loss=loss)
    if len(labels) != a["x"].size:
        raise ValueError(f"{len(labels)} labels for {a['x'].size} runs")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=a["x"], y=a["loss"], mode="markers", name="study runs", text=[plot_text(t) for t in labels],
                             marker={"color": HELD_OUT_COLOR, "size": 9},
                             hovertemplate="%{text}<br>%{x:.3g}: %{y:.3f}<extra></extra>"))  # fmt: skip
    if fit_x is not None:
        f = _same_length(fit_x=fit_x, fit_loss=fit_loss)
        fig.add_trace(go.Scatter(x=f["fit_x"], y=f["fit_loss"], mode="lines", name=plot_text(fit_name or "fit"),
                                 line={"color": FIT_COLOR, "dash": "dash"}))  # fmt: skip
    if live is not None:
        fig.add_trace(go.Scatter(x=[float(live[0])], y=[float(live[1])], mode="markers", name="your run",
                                 marker={"color": LIVE_COLOR, "size": 16, "symbol": "star"}))  # fmt: skip
    fig.update_layout(title=title_layout(title), height=420, xaxis={"title": x_title, "type": "log"},
                      yaxis={"title": "held-out loss (nats per token)", "type": "log"}, legend=LEGEND_BELOW,
                      **_LAYOUT)  # fmt: skip
    return fit_title(fig)


def preference_curves(steps, chosen_logp, rejected_logp, reward_margin, title: str = "") -> go.Figure:
    """Chosen and rejected answers' log-probabilities (left axis) and the implicit reward margin (right axis)."""
    a = _same_length(steps=steps, chosen_logp=chosen_logp, rejected_logp=rejected_logp, reward_margin=reward_margin)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=a["steps"], y=a["chosen_logp"], mode="lines", name="chosen log π",
                             line={"color": HELD_OUT_COLOR}))  # fmt: skip
    fig.add_trace(go.Scatter(x=a["steps"], y=a["rejected_logp"], mode="lines", name="rejected log π",
                             line={"color": FIT_COLOR}))  # fmt: skip
    fig.add_trace(go.Scatter(x=a["steps"], y=a["reward_margin"], mode="lines", name="reward margin β·(h_w − h_l)",
                             yaxis="y2", line={"color": LIVE_COLOR, "dash": "dot"}))  # fmt: skip
    fig.update_layout(title=title_layout(title), height=420, xaxis={"title": "step"},
                      yaxis={"title": "log-probability of the answer (nats)"},
                      yaxis2={"title": "implicit reward margin", "overlaying": "y", "side": "right"},
                      legend=LEGEND_BELOW, **_LAYOUT)  # fmt: skip
    return fit_title(fig)
