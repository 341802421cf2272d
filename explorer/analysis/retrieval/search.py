"""Exact search over an index: cosine ranking, BM25 ranking, their reciprocal-rank fusion, where they
disagree, and a 2-D map of the question among the passages.

- **dense**: the question is embedded like the chunks (same layer, same pooling) and every chunk is
  scored by cosine similarity, one matrix-vector product in numpy (``cosine_scores``);
- **lexical**: BM25 scores of the question's words (``bm25s``); a chunk sharing no word with the
  question scores 0 and is left out of the lexical ranking;
- **fused**: reciprocal-rank fusion (Cormack, Clarke & Büttcher, 2009): a chunk's score is
  ``Σ 1 / (RRF_K + rank)`` over the rankings it appears in, ranks from 1.

Ranks break ties by chunk order, so every result is deterministic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from explorer.analysis.embeddings.projections import pca
from explorer.analysis.retrieval.documents import Chunk
from explorer.analysis.retrieval.embedding import embed_texts
from explorer.analysis.retrieval.index import RetrievalIndex, bm25_terms, unit_rows
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel

RRF_K = 60
MAX_K = 20
MAP_POINTS = 2_000  # passages drawn on the map at most (the retrieved ones always among them)
MAX_QUESTION_CHARS = 1_000


@dataclass(frozen=True)
class Hit:
    """One ranked chunk: its 1-based ``rank`` and ``score`` in one ranking."""

    rank: int
    score: float
    chunk: Chunk


@dataclass(frozen=True)
class Retrieval:
    """One question's search. Score and rank arrays have one entry per chunk of the index (n,); a lexical
    rank of 0 means the chunk shares no word with the question."""

    question: str
    k: int
    dense: tuple[Hit, ...]
    lexical: tuple[Hit, ...]
    fused: tuple[Hit, ...]
    dense_scores: np.ndarray  # (n,) cosine similarity
    lexical_scores: np.ndarray  # (n,) BM25
    fused_scores: np.ndarray  # (n,) reciprocal-rank fusion
    dense_ranks: np.ndarray  # (n,) 1-based
    lexical_ranks: np.ndarray  # (n,) 1-based, 0 where the BM25 score is 0
    question_embedding: np.ndarray  # (d,)
    question_terms: tuple[str, ...]  # the words BM25 searched for
    seconds: float  # embedding the question and scoring every chunk
    note: str = ""

    @property
    def overlap(self) -> float:
        """The share of the dense top k that is also in the lexical top k."""
        dense = {h.chunk.index for h in self.dense}
        return len(dense & {h.chunk.index for h in self.lexical}) / max(1, len(self.dense))


@dataclass(frozen=True)
class Disagreement:
    """A chunk in one ranker's top k but not the other's, with both ranks (lexical 0: no shared word)."""

    chunk: Chunk
    dense_rank: int
    lexical_rank: int
    found_by: str  # "dense" or "lexical"


def cosine_scores(unit: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of each unit row (n, d) with ``query`` (d,): one matrix-vector product."""
    return unit @ unit_rows(query[None])[0]


def ranks_of(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores``, highest first, ties broken by position."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ranks = np.empty(len(order), np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def reciprocal_rank_fusion(*rankings: np.ndarray, k: int = RRF_K) -> np.ndarray:
    """Σ 1 / (k + rank) over the rankings (1-based ranks; 0 means: not in that ranking)."""
    fused = np.zeros(len(rankings[0]), np.float64)
    for ranks in rankings:
        ranks = np.asarray(ranks)
        fused += np.where(ranks > 0, 1.0 / (k + np.maximum(ranks, 1)), 0.0)
    return fused


def check_question(question) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InputError("The question is empty: type a question to search for.")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"The question has {len(question):,} characters; at most {MAX_QUESTION_CHARS:,} are searched.")
    return question


def _top(scores: np.ndarray, ranks: np.ndarray, chunks, k: int) -> tuple[Hit, ...]:
    chosen = [i for i in np.argsort(ranks) if ranks[i] > 0][:k]
    return tuple(Hit(int(ranks[i]), float(scores[i]), chunks[i]) for i in chosen)


def search(lm: LoadedModel, index: RetrievalIndex, question: str, k: int = 5) -> Retrieval:
    """Rank every chunk of ``index`` for ``question`` three ways; the top ``k`` of each."""
    question = check_question(question)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise InputError(f"Show from 1 to {MAX_K} passages, not {k!r}.")
    terms = bm25_terms(question)[0]
    if not terms:
        raise InputError(
            "The question holds only common words (stop-words such as “the”, “of”, “is”) that match every "
            "passage: add a word that says what you are looking for."
        )
    start = time.perf_counter()
    query = embed_texts(lm, [question], index.layer)[0]
    dense = cosine_scores(index.unit, query)
    lexical = np.asarray(index.bm25.get_scores(list(terms)), np.float64)
    seconds = time.perf_counter() - start
    dense_ranks = ranks_of(dense)
    lexical_ranks = np.where(lexical > 0, ranks_of(lexical), 0)
    fused = reciprocal_rank_fusion(dense_ranks, lexical_ranks)
    fused_ranks = ranks_of(fused)
    note = "" if (lexical > 0).any() else "No passage shares a word with the question, so BM25 finds nothing."
    chunks = index.chunks
    return Retrieval(
        question, int(k), _top(dense, dense_ranks, chunks, k), _top(lexical, lexical_ranks, chunks, k),
        _top(fused, fused_ranks, chunks, k), dense, lexical, fused, dense_ranks, lexical_ranks, query,
        tuple(terms), seconds, note,
    )  # fmt: skip


def disagreements(result: Retrieval) -> list[Disagreement]:
    """Chunks in one top k and not the other, the largest rank gap first."""
    dense = {h.chunk.index: h.chunk for h in result.dense}
    lexical = {h.chunk.index: h.chunk for h in result.lexical}
    rows = [
        Disagreement(chunk, int(result.dense_ranks[i]), int(result.lexical_ranks[i]), found_by)
        for found_by, mine, other in (("dense", dense, lexical), ("lexical", lexical, dense))
        for i, chunk in mine.items()
        if i not in other
    ]
    n = len(result.dense_ranks)
    return sorted(rows, key=lambda d: -abs(d.dense_rank - (d.lexical_rank or n + 1)))


@dataclass(frozen=True)
class RetrievalMap:
    """PCA of the passages' embeddings and the question's: ``coords`` (m + 1, 2), the question last."""

    coords: np.ndarray
    chunk_indices: np.ndarray  # (m,) which chunks are drawn
    retrieved: np.ndarray  # (m,) bool: in the dense top k
    labels: tuple[str, ...]  # (m,) the passages' document names and first words
    explained: np.ndarray  # (2,) variance share of each axis


def retrieval_map(index: RetrievalIndex, result: Retrieval) -> RetrievalMap:
    """The question among the passages in 2-D, with the same PCA as the embeddings view (fitted on the
    passages and the question together). At most ``MAP_POINTS`` passages: the retrieved ones and the
    first others."""
    if len(index.chunks) < 3:
        raise InputError("The map needs at least 3 passages; add text or use smaller chunks.")
    top = [h.chunk.index for h in result.dense]
    rest = [i for i in range(len(index.chunks)) if i not in set(top)][: MAP_POINTS - len(top)]
    shown = np.array(sorted([*top, *rest]), np.int64)
    rows = np.vstack([index.embeddings[shown], result.question_embedding[None]])
    coords, explained, _, _ = pca(rows, 2)
    labels = tuple(f"{index.chunks[i].document}: {' '.join(index.chunks[i].text.split()[:8])}…" for i in shown)
    return RetrievalMap(coords.astype(np.float32), shown, np.isin(shown, top), labels, explained)
