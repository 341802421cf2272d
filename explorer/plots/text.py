"""Figures made of text alone: a message where a plot will be (analyse first, nothing to draw, an error).

Every tab shows one in place of a figure it cannot draw yet, so it lives here, below the tabs.
"""

from __future__ import annotations

import plotly.graph_objects as go


def message_figure(text: str) -> go.Figure:
    """A blank figure (axes hidden, 300 px high) that says ``text`` in its middle."""
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 15})
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=300, plot_bgcolor="white")
    return fig
