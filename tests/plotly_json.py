"""Reading the figures the app returns through gradio_client (plotly JSON)."""

import base64
import json

import numpy as np


def figure(result) -> dict:
    """A gr.Plot output as plotly's JSON: {"data": [...], "layout": {...}}."""
    return json.loads(result["plot"])


def plot_data(result) -> list[dict]:
    """The traces of a gr.Plot output."""
    return figure(result)["data"]


def array(value) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array {"dtype", "bdata"[, "shape"]}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value["shape"]).split(",")]) if "shape" in value else flat
    return np.asarray(value)


def figure_dict(fig) -> dict:
    """A plotly Figure returned by a handler called directly, as the same JSON the browser gets."""
    return json.loads(fig.to_json())


def title(fig) -> str:
    """The figure's title on one line (it is wrapped between its " · " parts)."""
    return fig.layout.title.text.replace("<br>", " · ")


def message(fig) -> str:
    """The sentence of a ``message_figure`` (no traces, one annotation)."""
    assert not fig.data and len(fig.layout.annotations) == 1
    return fig.layout.annotations[0].text.replace("<br>", " ")
