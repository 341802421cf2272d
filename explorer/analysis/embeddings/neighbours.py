"""Nearest tokens in a model's embedding table: a word's neighbours and the arithmetic a − b + c,
by cosine similarity of the (unit-length) rows, with the labels a table shows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explorer.analysis.embeddings import space as emb


@dataclass(frozen=True)
class Nearest:
    """The tokens asked about (``query_ids``, ``query_labels``) and the tokens nearest to them, best first:
    ``ids``, ``labels`` and cosine ``similarities``."""

    query_ids: tuple[int, ...]
    query_labels: tuple[str, ...]
    ids: np.ndarray
    labels: list[str]
    similarities: np.ndarray

    def rows(self) -> list[list]:
        """``[rank, token, id, cosine]`` per token, rank from 1, cosine to 4 decimals."""
        found = zip(self.labels, self.ids, self.similarities)
        return [[r + 1, label, int(i), round(float(s), 4)] for r, (label, i, s) in enumerate(found)]


def _nearest(table: emb.EmbeddingTable, query: tuple[int, ...], ids, sims) -> Nearest:
    labels = tuple(table.labels[q] for q in query)
    return Nearest(query, labels, ids, [table.labels[i] for i in ids], sims)


def nearest_tokens(lm, word: str, k) -> Nearest:
    """The ``k`` tokens nearest to the token a user means by ``word``, after the token itself (first, cosine 1)."""
    table = emb.embedding_table(lm)
    token = emb.token_id_of(lm.tokenizer, word)
    ids, sims = emb.neighbours(table.unit, token, int(k) + 1)
    return _nearest(table, (token,), ids, sims)


def token_analogy(lm, a: str, b: str, c: str, k) -> Nearest:
    """The ``k`` tokens nearest to a − b + c (king − man + woman ≈ queen), a, b and c left out."""
    table = emb.embedding_table(lm)
    query = tuple(emb.token_id_of(lm.tokenizer, w) for w in (a, b, c))
    ids, sims = emb.analogy(table.unit, *query, int(k))
    return _nearest(table, query, ids, np.asarray(sims))
