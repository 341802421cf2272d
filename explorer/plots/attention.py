"""Attention figures: one head as a heatmap or as token links, every head as a grid, a statistic per head."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.plots.text import COLORBAR_ROOM, colorbar_above, fit_title, title_layout, token_axis, token_texts

MASKED_COLOR = "rgba(200, 200, 200, 0.35)"


def attention_heatmap(
    weights: np.ndarray,
    query_labels: list[str],
    key_labels: list[str],
    title: str = "",
    causal: bool = False,
    value_name: str = "weight",
) -> go.Figure:
    """Heatmap of one head: rows are query tokens, columns key tokens, colour the value.

    ``weights`` has shape (queries, keys): attention weights in [0, 1], or with another
    ``value_name`` (e.g. pre-softmax scores) any real values on a diverging scale centred on 0.
    Masked cells — above the diagonal with ``causal``, or any non-finite value such as the
    ``-inf`` of a masked score — are drawn grey and hover says "masked", so a decoder's triangle
    reads as "cannot look ahead". Axes are positions with token ticks, so repeated tokens keep
    their own rows. Beyond ``HEATMAP_MAX_TOKENS`` a side, cells are pooled into square blocks of
    tokens (each the block's largest weight, or mean score) so the figure stays under 1 MB; the title
    says so, and ticks and hover name each block's first token. Past ``MAX_TICK_LABELS`` rows (or
    columns) the axis labels every n-th one, so the labels never overprint.
    """
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape != (len(query_labels), len(key_labels)):
        raise ValueError(
            f"weights of shape {weights.shape} do not match {len(query_labels)} query and {len(key_labels)} key labels"
        )
    n_q, n_k = weights.shape
    q_ticks, k_ticks = list(query_labels), list(key_labels)
    query_labels, key_labels = token_texts(query_labels), token_texts(key_labels)  # "</s>" is a token, not a tag
    masked = ~np.isfinite(weights)
    if causal:
        masked |= np.triu(np.ones((n_q, n_k), bool), k=1)
    step = int(np.ceil(max(n_q, n_k) / HEATMAP_MAX_TOKENS))
    if step > 1:
        weights, masked = pool_blocks(weights, masked, step, "max" if value_name == "weight" else "mean")
        q_ticks, k_ticks, query_labels, key_labels = (t[::step] for t in (q_ticks, k_ticks, query_labels, key_labels))
        title = f"{title} ({step}×{step}-token blocks: {'largest weight' if value_name == 'weight' else 'mean'})"
        n_q, n_k = weights.shape
    shown = np.where(masked, np.nan, weights).astype(np.float32)  # typed array: half the bytes of float64
    finite = shown[np.isfinite(shown)]
    if value_name == "weight":
        scale = {"zmin": 0, "zmax": max(1e-9, float(finite.max()) if finite.size else 1.0), "colorscale": "Blues"}
    else:
        bound = max(1e-9, float(np.abs(finite).max()) if finite.size else 1.0)
        scale = {"zmin": -bound, "zmax": bound, "colorscale": "RdBu_r"}
    if max(n_q, n_k) <= HOVER_TEXT_MAX_TOKENS:
        hover = {"text": _hover_text(weights, masked, query_labels, key_labels, value_name), "hoverinfo": "text"}
    elif step > 1:
        hover = {"hovertemplate": f"{step} queries from %{{y}}<br>{step} keys from %{{x}}<br>"
                                  f"{'largest' if value_name == 'weight' else 'mean'} {value_name} %{{z:.3f}}<extra></extra>"}  # fmt: skip
    else:  # per-cell strings would be megabytes: hover reads the row's and the column's names
        hover = {"hovertemplate": f"query %{{y}}<br>key %{{x}}<br>{value_name} %{{z:.3f}}<extra></extra>"}
    # Each row and column is a category named by its (first) token's position and text, "12 ␣fox": unique where
    # tokens repeat, and what the hover says of a cell even where the axis labels only every n-th token.
    xs = [f"{j * step} {label}" for j, label in enumerate(key_labels)]
    ys = [f"{i * step} {label}" for i, label in enumerate(query_labels)]
    fig = go.Figure(
        go.Heatmap(
            z=shown, x=xs, y=ys, colorbar=colorbar_above(value_name),
            hoverongaps=False,
            **scale, **hover,
        )
    )  # fmt: skip
    if masked.any():
        _shade(fig, masked, xs, ys)
    fig.update_layout(
        title=title_layout(title),
        xaxis={"title": "key (attended to)", "type": "category", **token_axis(k_ticks, xs), "tickangle": -60,
               "automargin": True},
        yaxis={"title": "query (attending)", "type": "category", **token_axis(q_ticks, ys), "autorange": "reversed",
               "automargin": True},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        height=max(360, min(900, 120 + 18 * n_q)),
        plot_bgcolor="white",
    )  # fmt: skip
    return fit_title(fig, COLORBAR_ROOM)


def _hover_text(weights, masked, query_labels, key_labels, value_name) -> np.ndarray:
    return np.array(
        [
            [
                f"query {i}: {query_labels[i]}<br>key {j}: {key_labels[j]}<br>"
                + ("masked (future token)" if masked[i, j] else f"{value_name} {weights[i, j]:.3f}")
                for j in range(weights.shape[1])
            ]
            for i in range(weights.shape[0])
        ]
    )


def pool_blocks(values: np.ndarray, masked: np.ndarray, step: int, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(Q, K) values in ``step`` x ``step`` blocks: each block's max (or mean) over its unmasked cells, and
    whether all its cells are masked. Edge blocks may be smaller.

        >>> pool_blocks(np.arange(16.0).reshape(4, 4), np.zeros((4, 4), bool), 2, "max")[0].tolist()
        [[5.0, 7.0], [13.0, 15.0]]
    """
    n_q, n_k = values.shape
    rows, cols = -(-n_q // step), -(-n_k // step)
    padded = np.full((rows * step, cols * step), np.nan)
    padded[:n_q, :n_k] = np.where(masked, np.nan, values)
    blocks = padded.reshape(rows, step, cols, step).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    empty = np.isnan(blocks).all(axis=-1)
    filled = np.where(empty[..., None], 0.0, blocks)  # no warnings for all-masked blocks
    pooled = np.nanmax(filled, axis=-1) if how == "max" else np.nanmean(filled, axis=-1)
    return np.where(empty, np.nan, pooled), empty


def _shade(fig: go.Figure, masked: np.ndarray, xs: list[str], ys: list[str]) -> None:
    """Grey out masked cells: one triangle for a causal mask, else a light overlay heatmap. The axes are
    categories ``xs`` and ``ys``; a shape places cell ``i`` at ``i`` (a category's serial number)."""
    n_q, n_k = masked.shape
    if n_q == n_k and np.array_equal(masked, np.triu(np.ones((n_q, n_k), bool), k=1)):
        # the staircase just above the diagonal, cell by cell, closed along the top-right edges
        steps = " ".join(f"L {i + 0.5:g},{i - 0.5:g} L {i + 0.5:g},{i + 0.5:g}" for i in range(n_q - 1))
        path = f"M 0.5,-0.5 {steps} L {n_k - 0.5:g},{n_q - 1.5:g} L {n_k - 0.5:g},-0.5 Z"
        fig.add_shape(type="path", path=path, fillcolor=MASKED_COLOR, line={"width": 0}, layer="above")
        return
    fig.add_trace(
        go.Heatmap(
            z=np.where(masked, 1.0, np.nan).astype(np.float32), x=xs, y=ys,
            colorscale=[[0, MASKED_COLOR], [1, MASKED_COLOR]], showscale=False, hoverinfo="skip",
        )
    )  # fmt: skip


GRID_MAX_TOKENS = 64
GRID_MAX_CELLS = 150_000  # at most ~850 kB of base64 float32 sent to the browser
HEATMAP_MAX_TOKENS = 320  # one head at most 320 x 320 cells: ~550 kB of base64 float32 (512 tokens: 1.7 MB)
HOVER_TEXT_MAX_TOKENS = 64  # beyond this, hover shows positions instead of per-cell token text
LINK_MIN_WEIGHT = 0.01
LINK_BINS = 20  # lines are drawn in this many weight bands, one trace each, to keep the figure light
LINK_COLOR = "31, 119, 180"
LINKS_MAX_TOKENS = 40  # token links show at most this many tokens a side (22 px each): a window of a longer text


def link_opacity(weight: float) -> float:
    """A line's opacity for an attention weight: even a weight of 0.05 reads on a projector (0.38), 1 is opaque."""
    return 0.2 + 0.8 * float(np.sqrt(weight))


def grid_token_limit(n_layers: int, n_heads: int) -> int:
    """Tokens per side each small heatmap may show so the grid stays within ``GRID_MAX_CELLS`` cells."""
    per_head = GRID_MAX_CELLS / max(1, n_layers * n_heads)
    return int(np.clip(np.sqrt(per_head), 8, GRID_MAX_TOKENS))


def attention_grid(weights: np.ndarray, title: str = "") -> go.Figure:
    """Every head at once: (L, H, Q, K) tiled into one heatmap, a block per (layer, head).

    Rows of blocks are layers, columns heads, separated by a blank line; ticks name them. Made for
    spotting a head worth a closer look. One trace instead of L × H subplots keeps the figure fast
    to build and small to send. All cells share one 0..1 colour scale. Beyond
    ``grid_token_limit`` only the first queries and keys are drawn, and the title says so.
    """
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 4 or 0 in weights.shape:
        raise ValueError(f"weights must have shape (layers, heads, queries, keys), got {weights.shape}")
    n_layers, n_heads, n_q, n_k = weights.shape
    limit = grid_token_limit(n_layers, n_heads)
    if n_q > limit or n_k > limit:
        shown_q, shown_k = min(n_q, limit), min(n_k, limit)
        title = f"{title} (first {shown_q} of {n_q} queries × first {shown_k} of {n_k} keys)".strip()
        weights = weights[:, :, :limit, :limit]
        n_q, n_k = shown_q, shown_k
    tiled = np.full((n_layers * (n_q + 1) - 1, n_heads * (n_k + 1) - 1), np.nan, dtype=np.float32)
    for layer in range(n_layers):
        for head in range(n_heads):
            r, c = layer * (n_q + 1), head * (n_k + 1)
            tiled[r : r + n_q, c : c + n_k] = weights[layer, head]
    fig = go.Figure(
        go.Heatmap(
            z=tiled, zmin=0, zmax=1, colorscale="Blues", hoverongaps=False,
            colorbar=colorbar_above("weight"),
            hovertemplate="weight %{z:.3f}<extra>see the axes for layer and head</extra>",
        )
    )  # fmt: skip
    cell = int(np.clip(900 / max(n_layers, n_heads), 50, 160))
    fig.update_layout(
        title=title_layout(title),
        xaxis={"tickvals": [h * (n_k + 1) + (n_k - 1) / 2 for h in range(n_heads)],
               "ticktext": [f"H{h}" for h in range(n_heads)], "showgrid": False, "zeroline": False},
        yaxis={"tickvals": [layer * (n_q + 1) + (n_q - 1) / 2 for layer in range(n_layers)],
               "ticktext": [f"L{layer}" for layer in range(n_layers)], "autorange": "reversed",
               "showgrid": False, "zeroline": False},
        height=100 + n_layers * cell, width=None,
        margin={"l": 50, "r": 20, "t": 20, "b": 20}, plot_bgcolor="white",
    )  # fmt: skip
    return fit_title(fig, COLORBAR_ROOM)


def grid_block(fig: go.Figure, layer: int, head: int, n_q: int, n_k: int) -> np.ndarray:
    """The (Q, K) block of one head inside an ``attention_grid`` figure (its inverse, for tests and exports)."""
    z = np.asarray(fig.data[0].z)
    return z[layer * (n_q + 1) : layer * (n_q + 1) + n_q, head * (n_k + 1) : head * (n_k + 1) + n_k]


def link_window(n: int, around: int | None, size: int = LINKS_MAX_TOKENS) -> range:
    """The positions of ``n`` tokens that token links show: all up to ``size``, else ``size`` of them centred
    on ``around`` (kept inside the text), or the first ``size`` when ``around`` is None.

    ``link_window(512, 300, 40)`` -> ``range(280, 320)``; ``link_window(512, None, 40)`` -> ``range(0, 40)``.
    """
    if n <= size:
        return range(n)
    start = 0 if around is None else min(max(0, around - size // 2), n - size)
    return range(start, start + size)


def token_links(
    weights: np.ndarray,
    query_labels: list[str],
    key_labels: list[str],
    selected: int | None = None,
    title: str = "",
) -> go.Figure:
    """bertviz-style view of one head: queries on the left, keys on the right, a line per weight.

    ``weights`` has shape (queries, keys). Line opacity and width grow with the weight; weights
    below ``LINK_MIN_WEIGHT`` are not drawn. With ``selected`` (a query index) only that query's
    lines are drawn and its label is highlighted. A side longer than ``LINKS_MAX_TOKENS`` shows that many
    tokens, and the title says which: queries, a window (``link_window``) around ``selected``, else the first
    ones; keys, the same window, or with ``selected`` the keys it weighs most. The hover gives positions.
    """
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape != (len(query_labels), len(key_labels)):
        raise ValueError(
            f"weights of shape {weights.shape} do not match {len(query_labels)} query and {len(key_labels)} key labels"
        )
    n_q, n_k = weights.shape
    if selected is not None and not 0 <= selected < n_q:
        raise ValueError(f"selected query {selected} out of range: there are {n_q} queries")
    q_window = link_window(n_q, selected)
    same_text = list(query_labels) == list(key_labels)
    if n_k <= LINKS_MAX_TOKENS or (selected is None and same_text):
        keys, which = np.array(link_window(n_k, selected), dtype=int), ""
    elif selected is None:  # another text's keys: the first ones
        keys, which = np.arange(LINKS_MAX_TOKENS), f"keys 0–{LINKS_MAX_TOKENS - 1} of {n_k}"
    else:  # the keys the chosen query weighs most, in text order: its lines are the ones worth seeing
        keys = np.sort(np.argsort(-weights[selected], kind="stable")[:LINKS_MAX_TOKENS])
        which = f"the {LINKS_MAX_TOKENS} of {n_k} keys it weighs most"
    queries = f"{q_window.start}–{q_window.stop - 1} of {n_q}"
    if which:  # the keys are not the queries' window
        title = f"{title} ({'queries ' + queries + '; ' if len(q_window) < n_q else ''}{which})"
    elif len(q_window) < n_q:
        title = f"{title} (tokens {queries})"
    shown = weights[q_window.start : q_window.stop][:, keys]  # the rows and columns on screen
    query_labels = token_texts(query_labels[q_window.start : q_window.stop])
    key_labels = token_texts([key_labels[j] for j in keys])
    row = None if selected is None else selected - q_window.start

    # Bin the lines by weight so a 64-token head is ~20 traces, not thousands.
    queries = range(len(q_window)) if row is None else [row]
    edges = np.linspace(LINK_MIN_WEIGHT, 1.0, LINK_BINS + 1)
    bands: list[tuple[list, list]] = [([], []) for _ in range(LINK_BINS)]
    for i in queries:
        for j in np.flatnonzero(shown[i] >= LINK_MIN_WEIGHT):
            xs, ys = bands[min(int(np.searchsorted(edges, shown[i, j], side="right")) - 1, LINK_BINS - 1)]
            xs.extend([0, 1, None])
            ys.extend([i, j, None])
    fig = go.Figure()
    for band, (xs, ys) in enumerate(bands):
        if xs:
            level = float(edges[band + 1])  # the band's upper edge, so the top band is fully opaque
            fig.add_trace(
                go.Scatter(
                    x=xs, y=ys, mode="lines", line={"color": f"rgba({LINK_COLOR}, {link_opacity(level):.2f})",
                                                    "width": 1 + 5 * level},
                    hoverinfo="skip", showlegend=False, name=f"weight {edges[band]:.2f}–{level:.2f}",
                )
            )  # fmt: skip

    def tokens(labels: list[str], positions, x: int, role: str, position: str) -> go.Scatter:
        emphasis = [role == "query" and i == row for i in range(len(labels))]
        dimmed = row is not None and role == "query"
        return go.Scatter(
            x=[x] * len(labels), y=list(range(len(labels))), mode="markers+text", text=labels, textposition=position,
            marker={"size": [12 if e else 7 for e in emphasis],
                    "color": ["crimson" if e else "lightgray" if dimmed else f"rgb({LINK_COLOR})" for e in emphasis]},
            textfont={"color": ["crimson" if e else "gray" if dimmed else "black" for e in emphasis]},
            customdata=list(zip(positions, labels)), hovertemplate=f"{role} %{{customdata[0]}}: %{{customdata[1]}}<extra></extra>",
            name=f"{role} tokens", showlegend=False,
        )  # fmt: skip

    fig.add_trace(tokens(query_labels, q_window, 0, "query", "middle left"))
    fig.add_trace(tokens(key_labels, keys.tolist(), 1, "key", "middle right"))
    rows = max(len(q_window), len(keys))
    fig.update_layout(
        title=title_layout(title),
        xaxis={"visible": False, "range": [-0.8, 1.8], "fixedrange": True},
        # the range exactly the rows (reversed: the first token on top); autorange pads 5 % of the height
        yaxis={"visible": False, "range": [rows - 0.5, -0.5]},
        annotations=[{"x": 0, "y": 1, "xref": "x", "yref": "paper", "text": "query", "showarrow": False, "yanchor": "bottom"},
                     {"x": 1, "y": 1, "xref": "x", "yref": "paper", "text": "key", "showarrow": False, "yanchor": "bottom"}],
        height=max(300, 80 + 22 * rows),
        margin={"l": 20, "r": 20, "t": 30, "b": 20},
        plot_bgcolor="white",
    )  # fmt: skip
    return fit_title(fig, 26)


def statistic_heatmap(values: np.ndarray, name: str, description: str = "", title: str = "") -> go.Figure:
    """One head statistic (L, H) as a layer × head grid: layer 0 on top, heads across, the value in each cell.

    The title reads ``title · name: description``, wrapped above the head ticks."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"values of {name!r} must have shape (layers, heads), got {values.shape}")
    n_layers, n_heads = values.shape
    text = [[f"{v:.2f}" if np.isfinite(v) else "" for v in row] for row in values]
    fig = go.Figure(
        go.Heatmap(
            z=values, x=list(range(n_heads)), y=list(range(n_layers)), text=text, texttemplate="%{text}",
            colorscale="Viridis", colorbar=colorbar_above("value"), hoverongaps=False,
            hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title=title_layout(" · ".join(filter(None, [title, f"{name}: {description}" if description else name]))),
        xaxis={"title": "head", "tickvals": list(range(n_heads)), "ticktext": [f"H{h}" for h in range(n_heads)]},
        yaxis={"title": "layer", "tickvals": list(range(n_layers)), "ticktext": [f"L{layer}" for layer in range(n_layers)], "autorange": "reversed"},
        height=180 + max(180, 40 * n_layers),
        margin={"l": 60, "r": 20, "t": 20, "b": 20},
        plot_bgcolor="white",
    )  # fmt: skip
    return fit_title(fig, COLORBAR_ROOM)
