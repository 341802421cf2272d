"""Export a figure shown in the app: interactive HTML, and its numbers as CSV or JSON.

PNG needs no code: the camera button of plotly's modebar above every figure saves one. Files go
to a temporary folder of this process (gradio copies them to its own cache to serve them), never
into the repository.
"""

from __future__ import annotations

import atexit
import base64
import json
import shutil
import tempfile
import time
import uuid
from functools import cache, partial
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from explorer.core.errors import InputError
from explorer.ui.context import guarded

FORMATS = {"html": "Figure as HTML", "csv": "Numbers as CSV", "json": "Numbers as JSON"}
# Per trace, the arrays worth exporting (heatmaps: z with its x/y labels; bars and lines: x, y, text).
ARRAY_FIELDS = ("x", "y", "z", "text", "customdata")


SCRATCH_TTL_S = 600  # gradio copies a returned file into its own cache at once; ours can go soon after


@cache
def _scratch_root() -> Path:
    """This process's folder for files handed out; removed with everything in it when the process exits."""
    root = Path(tempfile.mkdtemp(prefix="explorer-files-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def scratch_folder() -> Path:
    """A fresh folder for one file handed to a user (an export, an adapter); older ones are removed."""
    root = _scratch_root()
    now = time.time()
    for old in root.iterdir():
        if now - old.stat().st_mtime > SCRATCH_TTL_S:
            shutil.rmtree(old, ignore_errors=True)
    folder = root / uuid.uuid4().hex  # one folder per file: sessions never share one
    folder.mkdir()
    return folder


def figure_of(payload) -> go.Figure:
    """The plotly figure of a ``gr.Plot`` value (gradio hands it over as its JSON string)."""
    plot = getattr(payload, "plot", None) if payload is not None else None
    if plot is None and isinstance(payload, dict):
        plot = payload.get("plot")
    if not plot:
        raise InputError("There is no figure to export yet: draw one first.")
    return pio.from_json(plot) if isinstance(plot, str) else go.Figure(plot)


def _plain(value):
    """Numpy arrays, tuples and plotly's typed arrays ({dtype, bdata, shape}) as plain lists (NaN as None)."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        value = flat.reshape(shape)
    array = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    if array.dtype.kind == "f":
        array = np.where(np.isnan(array), None, array.astype(object))
    return array.tolist()


def _tick_labels(fig: go.Figure, axis_ref: str | None, letter: str) -> dict:
    """Tick value -> label of the axis a trace is drawn on (heatmaps put token labels there)."""
    name = f"{letter}axis{(axis_ref or letter)[1:]}"
    axis = fig.layout[name] if name in fig.layout else None
    if axis is None or axis.tickvals is None or axis.ticktext is None:
        return {}
    return dict(zip(_plain(axis.tickvals), _plain(axis.ticktext)))


def trace_numbers(fig: go.Figure) -> list[dict]:
    """Each trace's name, type and data arrays, as plain lists; numeric positions get their axis labels."""
    traces = []
    for i, trace in enumerate(fig.data):
        entry = {"trace": i, "type": trace.type, "name": getattr(trace, "name", None)}
        for name in ARRAY_FIELDS:
            value = trace[name] if name in trace else None
            if value is not None and not isinstance(value, str):
                entry[name] = _plain(value)
        for letter in ("x", "y"):
            labels = _tick_labels(fig, trace[f"{letter}axis"] if f"{letter}axis" in trace else None, letter)
            if labels and isinstance(entry.get(letter), list):
                entry[letter] = [labels.get(v, v) if not isinstance(v, list) else v for v in entry[letter]]
        traces.append(entry)
    return traces


def numbers_table(fig: go.Figure) -> pd.DataFrame:
    """One row per number shown: a heatmap cell (row label, column label, value) or a point (x, y)."""
    rows = []
    for entry in trace_numbers(fig):
        base = {"trace": entry["trace"], "name": entry["name"]}
        if entry.get("z") is not None:
            z = np.asarray(entry["z"], dtype=object)
            z = z.reshape(1, -1) if z.ndim < 2 else z.reshape(z.shape[0], -1)
            xs, ys = entry.get("x") or list(range(z.shape[1])), entry.get("y") or list(range(z.shape[0]))
            for r in range(z.shape[0]):
                for c in range(z.shape[1]):
                    rows.append({**base, "row": ys[r] if r < len(ys) else r, "column": xs[c] if c < len(xs) else c,
                                 "value": z[r, c]})  # fmt: skip
            continue
        xs, ys, texts = entry.get("x") or [], entry.get("y") or [], entry.get("text")
        for k in range(max(len(xs), len(ys))):
            row = {**base, "x": xs[k] if k < len(xs) else None, "y": ys[k] if k < len(ys) else None}
            if isinstance(texts, list) and k < len(texts):
                row["text"] = texts[k]
            rows.append(row)
    return pd.DataFrame(rows)


def _title(fig: go.Figure) -> str:
    title = fig.layout.title.text if fig.layout.title else None
    return title or "figure"


def write_export(payload, fmt: str, stem: str = "figure") -> str:
    """Write the figure in ``payload`` as ``fmt`` (html, csv, json); returns the file's path."""
    if fmt not in FORMATS:
        raise InputError(f"Unknown export format '{fmt}'; use one of {', '.join(FORMATS)}.")
    fig = figure_of(payload)
    folder = scratch_folder()
    path = folder / f"{stem}.{fmt}"
    if fmt == "html":  # self-contained: plotly.js inside, so it opens offline too
        fig.write_html(path, include_plotlyjs=True, full_html=True)
    elif fmt == "csv":
        numbers_table(fig).to_csv(path, index=False)
    else:
        data = {"title": _title(fig), "traces": trace_numbers(fig)}
        path.write_text(json.dumps(data, ensure_ascii=False, default=str, indent=1), encoding="utf-8")
    return str(path)


def _warn(message: str) -> None:
    gr.Warning(message)  # a toast; the file box stays empty


def _stem(label: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in label.lower()).strip("-") or "figure"


def export_panel(plots: list[gr.Plot], tab_name: str) -> None:
    """An "Export" accordion for a tab's figures: pick one, download it as HTML, CSV or JSON. Its controls are
    made when it is opened (``gr.render``): every tab has one, and the page loads faster without them."""
    if not plots:
        return
    with gr.Accordion("Export a figure (HTML) or its numbers (CSV, JSON)", open=False) as panel:
        gr.render(triggers=[panel.expand])(partial(export_controls, plots, tab_name))


def export_controls(plots: list[gr.Plot], tab_name: str) -> None:
    labels = [p.label or f"figure {i + 1}" for i, p in enumerate(plots)]
    gr.Markdown("PNG: the camera button above each figure. Interactive HTML and the numbers behind it:")
    with gr.Row():
        which = gr.Dropdown(
            [(label, i) for i, label in enumerate(labels)], value=0, label="Figure", visible=len(plots) > 1,
            elem_classes="explorer-export-choice",
        )  # fmt: skip
        buttons = {fmt: gr.Button(text, size="sm") for fmt, text in FORMATS.items()}
    file = gr.File(label="Download", interactive=False, elem_classes="explorer-export-file")

    # Send only the chosen figure to the server, not every figure of the tab.
    only_chosen = "(choice, ...plots) => [choice, ...plots.map((p, i) => (i === choice ? p : null))]"
    for fmt, button in buttons.items():

        @guarded(_warn)
        def export(choice, *values, fmt=fmt):
            index = int(choice or 0)
            stem = _stem(f"{tab_name}-{labels[index]}")
            return write_export(values[index], fmt, stem)

        button.click(export, [which, *plots], file, js=only_chosen, api_name=False)
