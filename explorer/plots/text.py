"""Text that enters a figure: plotly reads ``<`` and ``&`` in labels, titles and hovers as its own HTML.

A token such as ``</s>`` or ``<pad>`` would be taken for a tag (and T5's ``</s>`` blew the margins
of every heatmap it labelled), so every string drawn from model or user text goes through
``plot_text`` (or ``plot_texts``) before it reaches a figure. Titles are wrapped onto short lines,
because plotly never wraps them and a phone is about 36 characters wide.
"""

from __future__ import annotations

import re
from html import escape

import numpy as np
import plotly.graph_objects as go

TITLE_LINE = 36  # characters per title line: what a 390 px phone screen shows at the title's size
TITLE_FONT = 15
TITLE_LINE_PX = 20  # one title line at TITLE_FONT
TITLE_PAD = 8
TITLE_RISE_LINE, TITLE_RISE_LINES = 20, 30  # px plotly lifts a title of one line, of several


def plot_text(text) -> str:
    """``"</s>"`` -> ``"&lt;/s&gt;"``: shown by plotly as typed, never read as markup."""
    return escape(str(text), quote=False)


def plot_texts(texts) -> list[str]:
    """``plot_text`` of every label (a list, or an array of any shape, returned as nested lists)."""
    if isinstance(texts, np.ndarray):
        return np.vectorize(plot_text, otypes=[object])(texts).tolist() if texts.size else texts.tolist()
    return [plot_texts(t) if isinstance(t, (list, tuple, np.ndarray)) else plot_text(t) for t in texts]


TICK_CHARS = 10  # a tick label longer than this is cut (hover still shows it whole): a phone has no room
TICK_FONT = 11  # px: token tick labels, whatever the number of tokens (fewer labels rather than smaller ones)
MAX_TICK_LABELS = 40  # past this many tokens an axis labels every n-th token: at 11 px they would overprint
# A character a figure cannot draw: the control characters ``visible`` writes as ``\x1c`` (or ``\u200d``), and
# the carriage-return symbol, which the common fonts lack (it showed as an empty box).
_UNDRAWABLE = re.compile(r"\\x([0-9a-f]{2})|\\u([0-9a-f]{4})|(␍)")


def readable_token(label: str) -> str:
    """A token's display text as a figure shows it: a character that cannot be drawn is written as its code in
    angle brackets, the way a byte that is not a whole character already is (``<d8>``).

    ``readable_token("\\x1c")`` -> ``"<1c>"``; ``"a␍"`` -> ``"a<0d>"``; ``"␣the"`` stays ``"␣the"``.
    """
    return _UNDRAWABLE.sub(lambda m: f"<{m[1]}>" if m[1] else f"<U+{m[2].upper()}>" if m[2] else "<0d>", str(label))


def token_texts(labels) -> list[str]:
    """Token labels for hovers and cells: readable (``readable_token``) and escaped (``plot_text``)."""
    return [plot_text(readable_token(label)) for label in labels]


def tick_texts(labels) -> list[str]:
    """Labels for axis ticks: readable, escaped, and cut to ``TICK_CHARS`` characters with an ellipsis."""
    return [plot_text(shorten(readable_token(label), TICK_CHARS)) for label in labels]


def tick_stride(n: int, most: int = MAX_TICK_LABELS) -> int:
    """Label every n-th of ``n`` ticks so that at most ``most`` are labelled: ``tick_stride(512)`` -> 13."""
    return max(1, -(-n // most))


def token_axis(labels, positions=None, most: int = MAX_TICK_LABELS) -> dict:
    """An axis whose ticks name tokens: every token up to ``most`` of them, past that every n-th (the first
    included), at ``TICK_FONT`` px. ``positions``: the axis value of each label (by default 0, 1, 2, ...).

    ``token_axis(list("abcde"), most=2)["ticktext"]`` -> ``["a", "d"]``; the hover still names every token.
    """
    labels = list(labels)
    positions = list(range(len(labels))) if positions is None else list(positions)
    step = tick_stride(len(labels), most)
    return {"tickmode": "array", "tickvals": positions[::step], "ticktext": tick_texts(labels[::step]),
            "tickfont": {"size": TICK_FONT}}  # fmt: skip


def colorbar_above(title: str) -> dict:
    """A thin horizontal colour bar above the plot, so a narrow screen keeps its width for the cells
    (pair with ``fit_title(fig, COLORBAR_ROOM)``). Plotly draws a horizontal bar's title inside its length,
    so the length grows with the title: the bar itself keeps about 140 px for its ticks."""
    return {"orientation": "h", "x": 0, "xanchor": "left", "y": 1, "yanchor": "bottom", "yref": "paper",
            "lenmode": "pixels", "len": 140 + 8 * len(str(title)), "thickness": 10, "ypad": 4, "nticks": 4, "tickangle": 0,
            "title": {"text": plot_text(title), "side": "right"}}  # fmt: skip


COLORBAR_ROOM = 46  # px between the title and the plot that a ``colorbar_above`` takes


def shorten(text: str, limit: int = 40) -> str:
    """A text for a title: one line, at most ``limit`` characters, an ellipsis where it was cut."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def wrap_title(title: str, width: int = TITLE_LINE) -> str:
    """The title escaped and broken onto lines of at most ``width`` characters, between its " · " parts
    (between words only inside a part too long for a line).

    ``wrap_title("tiny-t5 · layer 0 · head 1", 18)`` -> ``"tiny-t5 · layer 0<br>head 1"``.
    """
    lines: list[str] = []
    for part in str(title).split(" · "):
        pieces = [part] if len(part) <= width else part.split()
        # a word longer than a line (a module path, a URL) is cut into line-long pieces
        pieces = [w[i : i + width] for w in pieces for i in range(0, len(w), width)]
        for i, piece in enumerate(pieces):
            joint = " · " if i == 0 else " "
            if lines and len(lines[-1]) + len(joint) + len(piece) <= width:
                lines[-1] += joint + piece
            else:
                lines.append(piece)
    return "<br>".join(plot_text(line) for line in lines if line)


def title_layout(title: str) -> dict:
    """A figure's ``layout.title``: escaped, wrapped and left-aligned at the top of the figure (``fit_title``
    then makes room for its lines above the plot)."""
    return {"text": wrap_title(title), "x": 0.01, "xref": "container", "xanchor": "left", "y": 1, "yref": "container",
            "yanchor": "top", "font": {"size": TITLE_FONT}}  # fmt: skip


def _title_lines(fig: go.Figure) -> int:
    text = fig.layout.title.text or ""
    return text.count("<br>") + 1 if text else 0


def fit_title(fig: go.Figure, below: int = 16) -> go.Figure:
    """Room for the title above the plot: the top margin becomes the title's lines plus ``below`` px (the
    gap above the plot, where subplot titles sit), and the figure grows by as much as the margin did, so
    the plot keeps the height it was drawn for."""
    lines = _title_lines(fig)
    old = fig.layout.margin.t if fig.layout.margin.t is not None else 100
    top = 2 * TITLE_PAD + lines * TITLE_LINE_PX + below
    # plotly draws a top-anchored title higher than its pad says (a line's height for several lines, and
    # about 16 px more inside gradio's plot): pad it down by as much, measured in the browser
    pad = TITLE_PAD + (TITLE_RISE_LINES if lines > 1 else TITLE_RISE_LINE)
    fig.update_layout(margin={"t": top}, title={"pad": {"t": pad}})
    if fig.layout.height is not None:
        fig.update_layout(height=fig.layout.height + max(0, top - old))
    return fig


def message_figure(text: str) -> go.Figure:
    """A figure that only says something (analyse first, nothing to draw, an error), escaped and wrapped."""
    fig = go.Figure()
    fig.add_annotation(text=wrap_title(text, 60), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 15})  # fmt: skip
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=300, plot_bgcolor="white")
    return fig
