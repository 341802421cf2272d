"""The search index of one (model, document set, chunking, layer), built once and cached.

An index holds, for every chunk, its embedding (``embedding.embed_texts``: mean-pooled hidden
states) as unit rows, and a BM25 index of its words (``bm25s``: lower-cased words of two or more
letters, scikit-learn's English stop-words left out, no stemming; Lucene's BM25 with k1 = 1.5, b = 0.75).
Search over it is exact (``search``): no approximate index is needed at these sizes
(``bench/retrieval.py`` measures where one would be).

``IndexCache`` keeps built indexes by (model, its source, a hash of the documents, the chunking,
the layer) in a ``BoundedCache``: the second request for the same index only looks it up, and two
requests at once build it once. An index whose build was stopped is returned but never cached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from explorer.analysis.retrieval.documents import (
    DEFAULT_CHUNKING,
    Chunk,
    Chunking,
    Document,
    chunk_documents,
    fingerprint,
)
from explorer.analysis.retrieval.embedding import POOLING, check_layer, embed_texts
from explorer.core.cache import BoundedCache
from explorer.core.loading import LoadedModel

BM25_SETTINGS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
STOPWORDS = sorted(ENGLISH_STOP_WORDS)  # scikit-learn's 318 English stop-words (bm25s's own list has 33)
CACHE_BYTES = 256 * 2**20


def bm25_terms(texts: str | Sequence[str]) -> list[list[str]]:
    """The words BM25 counts in each text (see the module docstring)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    return bm25s.tokenize(texts, stopwords=STOPWORDS, return_ids=False, show_progress=False)


def bm25_index(terms: list[list[str]]) -> bm25s.BM25:
    retriever = bm25s.BM25(**BM25_SETTINGS)
    retriever.index(terms, show_progress=False)
    return retriever


@dataclass(frozen=True)
class RetrievalIndex:
    """Chunks with their unit embeddings (n, d) and their BM25 index; ``complete`` False when the build
    was stopped (then only the first ``len(chunks)`` chunks are in it)."""

    model_key: str
    layer: int
    chunking: Chunking
    chunks: tuple[Chunk, ...]
    embeddings: np.ndarray  # (n, d) mean-pooled hidden states
    unit: np.ndarray  # (n, d) the same rows scaled to length 1 (zero rows stay zero)
    bm25: bm25s.BM25
    terms: tuple[tuple[str, ...], ...]  # BM25's words of each chunk
    embed_seconds: float
    bm25_seconds: float
    complete: bool = True
    pooling: str = POOLING

    @property
    def build_seconds(self) -> float:
        return self.embed_seconds + self.bm25_seconds

    @property
    def nbytes(self) -> int:
        text = sum(len(c.text) for c in self.chunks) * 2
        return self.embeddings.nbytes + self.unit.nbytes + text + 40 * sum(len(t) for t in self.terms)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero), float32."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def build_index(
    lm: LoadedModel,
    documents: Sequence[Document],
    chunking: Chunking = DEFAULT_CHUNKING,
    layer: int | None = None,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RetrievalIndex:
    """Chunk ``documents``, embed every chunk at ``layer`` (default: the last) and index their words."""
    layer = check_layer(lm, lm.spec.n_layers if layer is None else layer)
    chunks = chunk_documents(documents, chunking, lm.tokenizer)
    start = time.perf_counter()
    embeddings = embed_texts(lm, [c.text for c in chunks], layer, progress, should_stop)
    embed_seconds = time.perf_counter() - start
    complete = len(embeddings) == len(chunks)
    chunks = chunks[: len(embeddings)]
    start = time.perf_counter()
    terms = bm25_terms([c.text for c in chunks])
    retriever = bm25_index(terms)
    return RetrievalIndex(
        lm.spec.key, layer, chunking, chunks, embeddings, unit_rows(embeddings), retriever,
        tuple(tuple(t) for t in terms), embed_seconds, time.perf_counter() - start, complete,
    )  # fmt: skip


class _Stopped(Exception):
    """Carries a stopped build's partial index past the cache, which must not keep it."""

    def __init__(self, index: RetrievalIndex):
        self.index = index


@dataclass(frozen=True)
class CachedIndex:
    """An index and whether this request found it built (``cached``) or built it now."""

    index: RetrievalIndex
    cached: bool


class IndexCache:
    """Built indexes by (model, source, documents' hash, chunking, layer), within ``max_bytes``."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self._indexes: BoundedCache[RetrievalIndex] = BoundedCache(max_bytes, size=lambda i: i.nbytes)

    @staticmethod
    def key(lm: LoadedModel, documents: Sequence[Document], chunking: Chunking, layer: int) -> tuple:
        return (lm.spec.key, lm.spec.source, fingerprint(documents), chunking, layer)

    def get(
        self,
        lm: LoadedModel,
        documents: Sequence[Document],
        chunking: Chunking = DEFAULT_CHUNKING,
        layer: int | None = None,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> CachedIndex:
        layer = check_layer(lm, lm.spec.n_layers if layer is None else layer)
        chunking = chunking.validate()

        def compute() -> RetrievalIndex:
            index = build_index(lm, documents, chunking, layer, progress, should_stop)
            if not index.complete:
                raise _Stopped(index)
            return index

        try:
            index, computed = self._indexes.lookup(self.key(lm, documents, chunking, layer), compute)
        except _Stopped as stopped:
            return CachedIndex(stopped.index, False)
        return CachedIndex(index, not computed)

    @property
    def hits(self) -> int:
        return self._indexes.hits

    @property
    def misses(self) -> int:
        return self._indexes.misses

    def __len__(self) -> int:
        return len(self._indexes)
