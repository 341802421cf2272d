"""The data behind each attention view, cut from one trace: one head (weights, pre-softmax scores or
rollout), all heads, token links, head statistics, and one step of generation.

A view asks for a kind, layer and head a model may not have (the controls keep their last values when
the model changes); ``pick`` clamps them to the trace, and every result says what it shows.
Shapes: L layers, H heads, Q query positions, K key positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explorer.analysis.attention.heads import attention_rollout, average_heads, head_statistics, head_statistics_table
from explorer.core.trace import Trace

ROLLOUT_NEEDS_ONE_STREAM = "Rollout follows attention through one stream's layers; pick a self-attention kind."


def pick(trace: Trace, kind, layer, head) -> tuple[str, int, int]:
    """(kind, layer, head) that the trace has: an unknown kind becomes its first, numbers are clamped."""
    kind = kind if kind in trace.kinds else trace.kinds[0]
    layer = int(min(max(0, layer or 0), trace.n_layers - 1))
    head = int(min(max(0, head or 0), trace.n_heads - 1))
    return kind, layer, head


def head_name(layer: int, head: int) -> str:
    """``L1 H2``: how the grid's picker names a head."""
    return f"L{layer} H{head}"


def parse_head_name(name: str) -> tuple[int, int]:
    """(layer, head) of a name made by ``head_name``: ``L1 H2`` -> (1, 2)."""
    layer, head = name.split()
    return int(layer[1:]), int(head[1:])


@dataclass(frozen=True)
class HeadView:
    """One head's (Q, K) ``matrix`` of ``values`` (``weights``, ``scores`` or ``rollout``, the rollout of
    all heads of layers 0..layer), or, where it cannot be shown, ``refusal``: the sentence why."""

    kind: str
    layer: int
    head: int
    values: str
    matrix: np.ndarray | None
    query_labels: list[str]
    key_labels: list[str]
    causal: bool
    refusal: str | None = None


def one_head(trace: Trace, kind, layer, head, values: str, scores: dict | None = None) -> HeadView:
    """The one-head view; ``scores`` (pre-softmax, by kind: (L, H, Q, K)) is needed only for ``values="scores"``."""
    kind, layer, head = pick(trace, kind, layer, head)
    q_stream, k_stream = trace.streams_of(kind)
    view = dict(kind=kind, layer=layer, head=head, values=values, query_labels=trace.labels(q_stream),
                key_labels=trace.labels(k_stream), causal=trace.adapter.is_causal(kind))  # fmt: skip
    if values == "scores":
        if scores is None:
            raise ValueError("the pre-softmax scores of the selection are needed to show scores")
        return HeadView(matrix=scores[kind][layer, head], **view)
    if values == "rollout":
        if q_stream != k_stream:
            return HeadView(matrix=None, refusal=ROLLOUT_NEEDS_ONE_STREAM, **view)
        return HeadView(matrix=attention_rollout(trace.attentions[kind])[layer], **view)
    return HeadView(matrix=trace.attn(layer, head, kind), **view)


@dataclass(frozen=True)
class HeadGrid:
    """Every head of one kind, ``weights`` (L, H, Q, K), and each head's ``names`` (``L0 H0``, ``L0 H1``, ...)."""

    kind: str
    weights: np.ndarray
    names: list[str]


def all_heads(trace: Trace, kind) -> HeadGrid:
    kind, _, _ = pick(trace, kind, 0, 0)
    names = [head_name(layer, head) for layer in range(trace.n_layers) for head in range(trace.n_heads)]
    return HeadGrid(kind, trace.attentions[kind], names)


@dataclass(frozen=True)
class Links:
    """One layer's ``weights`` (Q, K) averaged over ``heads``, from the ``selected`` query token (None: all).

    ``n_heads``: how many heads the layer has, for the head picker.
    """

    kind: str
    layer: int
    heads: list[int]
    weights: np.ndarray
    query_labels: list[str]
    key_labels: list[str]
    selected: int | None
    n_heads: int


def token_links_of(trace: Trace, kind, layer, head, query, heads) -> Links:
    """``heads``: the heads to average (those the layer lacks dropped; none left: ``head`` alone);
    ``query``: a query position (as a number or its text); anything else or out of range means all tokens."""
    kind, layer, head = pick(trace, kind, layer, head)
    q_stream, k_stream = trace.streams_of(kind)
    query_labels = trace.labels(q_stream)
    chosen = [int(h) for h in heads or [] if int(h) < trace.n_heads] or [head]
    weights = average_heads(trace.attentions[kind][layer], chosen)
    query = int(query) if str(query).lstrip("-").isdigit() else -1
    selected = query if 0 <= query < len(query_labels) else None
    return Links(kind, layer, chosen, weights, query_labels, trace.labels(k_stream), selected, trace.n_heads)


@dataclass(frozen=True)
class HeadStatistics:
    """Per-head statistics of one kind: ``values`` by name, (L, H) each, and the table's ``rows``."""

    kind: str
    values: dict[str, np.ndarray]
    rows: list[list]


def head_statistics_of(trace: Trace, kind) -> HeadStatistics:
    """Statistics of every head of ``kind`` (positional ones are NaN for cross-attention)."""
    kind, _, _ = pick(trace, kind, 0, 0)
    q_stream, k_stream = trace.streams_of(kind)
    values = head_statistics(trace.attentions[kind], trace.adapter.is_causal(kind), same_stream=q_stream == k_stream)
    return HeadStatistics(kind, values, head_statistics_table(values))


@dataclass(frozen=True)
class GenerationStep:
    """Step ``step`` (1 .. ``made``) of a decoder's generation: the token at ``position`` = prompt + step − 1,
    and what it attended to when it was written, ``weights`` (position + 1, position + 1) of one head
    (causal: row ``position`` is the new token's). ``labels``: the prompt and every generated token."""

    prompt: int
    made: int
    step: int
    layer: int
    head: int
    position: int
    labels: list[str]
    weights: np.ndarray


def generation_step(trace: Trace, layer, head, step) -> GenerationStep | None:
    """One step of a generating trace (its ``meta["prompt_tokens"]`` says where the prompt ends); None
    when nothing was generated (the text already fills the context). ``step`` is clamped to 1 .. made."""
    prompt = trace.meta.get("prompt_tokens", len(trace.tokens["input"]))
    made = len(trace.tokens["input"]) - prompt
    if made <= 0:
        return None
    step = int(min(max(1, step or 1), made))
    _, layer, head = pick(trace, "self", layer, head)
    position = prompt + step - 1
    weights = trace.attn(layer, head, "self")[: position + 1, : position + 1]
    return GenerationStep(prompt, made, step, layer, head, position, trace.labels("input")[: prompt + made], weights)
