"""Contextual embeddings of a trace: a text's token states through the layers, and one word followed
through two texts (the same word in two contexts drifts apart with depth).

Shapes: L + 1 states per token (the embedding, then one per layer), T tokens (at most 64), d model width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explorer.analysis.embeddings import space as emb
from explorer.core.trace import Token, Trace


@dataclass(frozen=True)
class StreamStates:
    """The first stream's states of a trace (the input, or T5's encoder): ``hidden`` (L + 1, T, d) of its
    first ``T`` ≤ 64 ``tokens``, with their display ``labels``."""

    stream: str
    hidden: np.ndarray
    tokens: list[Token]
    labels: list[str]

    @property
    def n_states(self) -> int:
        return self.hidden.shape[0]


def stream_states(trace: Trace) -> StreamStates:
    stream = next(iter(trace.hidden))
    tokens = list(trace.tokens[stream][: emb.MAX_CONTEXT_TOKENS])
    return StreamStates(stream, trace.hidden[stream][:, : len(tokens)], tokens, [t.display for t in tokens])


@dataclass(frozen=True)
class ThroughLayers:
    """Every token's path on shared PCA axes, ``path`` (L + 1, T, dims) with the variance each axis keeps,
    and the token × token cosine ``similarity`` (T, T) at one ``layer`` (clamped to 0 .. L)."""

    states: StreamStates
    path: np.ndarray
    explained: np.ndarray
    layer: int
    similarity: np.ndarray


def through_layers(trace: Trace, layer, dims: int) -> ThroughLayers:
    states = stream_states(trace)
    layer = int(min(max(0, layer or 0), states.n_states - 1))
    (path,), explained = emb.shared_trajectories([states.hidden], int(dims))
    similarity = emb.layer_similarities(states.hidden[layer : layer + 1])[0]
    return ThroughLayers(states, path, explained, layer, similarity)


@dataclass(frozen=True)
class WordInTwoTexts:
    """One word followed through text A and text B.

    ``same`` (L + 1,): cosine of the word's state in A and in B at each layer; ``baseline`` (L + 1,): the
    mean cosine of all token pairs across the texts. ``paths``: both texts on shared PCA axes,
    [(L + 1, T_A, dims), (L + 1, T_B, dims)]; ``labels`` and ``positions`` (the word's tokens) per text.
    """

    same: np.ndarray
    baseline: np.ndarray
    paths: list[np.ndarray]
    labels: list[list[str]]
    positions: list[list[int]]


def word_in_two_texts(trace_a: Trace, trace_b: Trace, word: str, dims: int) -> WordInTwoTexts:
    """Raises ``InputError`` when ``word`` does not occur as a whole word in either text."""
    states, positions = [], []
    for trace in (trace_a, trace_b):
        s = stream_states(trace)
        states.append(s)
        positions.append(emb.word_positions(s.tokens, trace.texts[s.stream], word))
    a, b = states
    same, baseline = emb.word_drift(a.hidden, positions[0], b.hidden, positions[1])
    paths, _ = emb.shared_trajectories([a.hidden, b.hidden], int(dims))
    return WordInTwoTexts(same, baseline, paths, [a.labels, b.labels], positions)
