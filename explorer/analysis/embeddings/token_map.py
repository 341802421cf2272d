"""The token map: which rows of the embedding table to project, their projection, and where a text's
tokens (and one searched token) land on it.

A projection covers a subset of the vocabulary (the most frequent tokens, a word list, or all of it). The whole
vocabulary's UMAP or t-SNE takes minutes on a real-size model: given a ``StagedProjections``, the map of
``all`` tokens is a first map (PCA) at once, the full one computed in the background (``TokenMap.pending``).
Tokens outside the subset are still placed: PCA projects them with its fitted axes; UMAP and t-SNE,
which have no such axes, put each at the mean position of its 5 most cosine-similar projected tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explorer.analysis.embeddings import space as emb
from explorer.analysis.embeddings.projections import Progress, Projection, ProjectionCache
from explorer.analysis.embeddings.staged import FIRST_METHOD, StagedProjections
from explorer.analysis.tokens.texts import sample_texts
from explorer.core.cache import PerObject

MIN_FREQUENT = 10


def _rank_by_frequency(lm) -> np.ndarray:
    table = emb.embedding_table(lm)
    return emb.frequent_ids(lm.tokenizer, list(sample_texts().values()), len(table), len(table), table.special)


# Every non-special token id of a loaded model's table, most frequent in the bundled sample texts first (then the
# lowest ids); counted once per model and kept as long as the model is.
frequency_ranking: PerObject[np.ndarray] = PerObject(_rank_by_frequency)


@dataclass(frozen=True)
class TokenSubset:
    """The rows to project (``ids``) and what they are, in words (``what``: "the 2,000 most frequent tokens")."""

    ids: np.ndarray
    what: str


def token_subset(lm, subset: str, n, words: str) -> TokenSubset:
    """``subset``: ``all`` (the whole table), ``list`` (the tokens of ``words``, a comma-separated list) or
    ``frequent`` (the ``n`` most frequent tokens, ``n`` clamped to [10, vocabulary size])."""
    table = emb.embedding_table(lm)
    if subset == "all":
        return TokenSubset(np.arange(len(table)), f"all {len(table):,} tokens")
    if subset == "list":
        ids = np.array(emb.listed_ids(lm.tokenizer, words), np.int64)
        return TokenSubset(ids, f"{len(ids)} listed tokens")
    n = int(min(max(MIN_FREQUENT, n or MIN_FREQUENT), len(table)))
    return TokenSubset(frequency_ranking(lm)[:n], f"the {n:,} most frequent tokens")


def place_tokens(table: emb.EmbeddingTable, projection: Projection, ids: list[int]) -> np.ndarray:
    """Coordinates (len(ids), dims) for any tokens: their own point if projected, else PCA's axes (PCA) or the
    mean of their 5 nearest projected tokens (UMAP, t-SNE)."""
    where = {int(t): i for i, t in enumerate(projection.ids)}
    out = np.zeros((len(ids), projection.coords.shape[1]), np.float32)
    missing = [j for j, t in enumerate(ids) if t not in where]
    for j, t in enumerate(ids):
        if t in where:
            out[j] = projection.coords[where[t]]
    if missing:
        rows = table.matrix[[ids[j] for j in missing]]
        if projection.method == "pca":
            out[missing] = projection.transform(rows)
        else:
            out[missing] = emb.place_by_neighbours(table.unit[projection.ids], projection.coords, rows)
    return out


@dataclass(frozen=True)
class TokenMap:
    """A projection of part of the embedding table, with a text's tokens and a searched token placed on it.

    ``projection`` is None when it was not computed (``compute=False`` and nothing cached).
    ``labels``: one per projected row. ``marked``: (coords (m, dims), labels) of the text's tokens.
    ``focus``: (coords (dims,), label) of the searched token, or None. ``outside``: how many of the text's
    tokens are not in the subset. ``width``: the embedding width d.
    A staged whole-vocabulary map: ``projection.method`` differs from ``method`` (the first map is shown);
    ``pending`` while the full one is computed in the background (``fraction`` done, doing ``message``);
    ``error``: why the last background computation failed.
    """

    subset: TokenSubset
    projection: Projection | None
    labels: list[str]
    marked: tuple[np.ndarray, list[str]] | None
    focus: tuple[np.ndarray, str] | None
    outside: int
    width: int
    method: str = ""
    pending: bool = False
    fraction: float = 1.0
    message: str = ""
    error: str = ""

    @property
    def first(self) -> bool:
        """Whether this is the first map of a whole-vocabulary projection still to come (or not started)."""
        return self.projection is not None and self.projection.method != self.method


def token_map(
    lm,
    text_tokens,
    cache: ProjectionCache,
    method: str,
    dims: int,
    subset: str,
    n,
    words: str,
    search: str = "",
    compute: bool = True,
    progress: Progress | None = None,
    staged: StagedProjections | None = None,
) -> TokenMap:
    """Project the chosen tokens of ``lm``'s table (from ``cache`` when it has them) and place ``text_tokens``
    (a trace's ``Token`` list; special ones and those past the first 64 are left out) and ``search`` on the map.

    PCA is always computed (it is fast); with ``compute=False`` UMAP and t-SNE are only read from the cache.
    With ``staged``, the UMAP or t-SNE of ``all`` tokens is staged: the cached full map, else the first map
    (PCA) with the full one started in the background (``compute``) or just reported when running.
    """
    table = emb.embedding_table(lm)
    chosen = token_subset(lm, subset, n, words)
    shipped = [Path(lm.spec.source) / "projections"] if lm.spec.bundled else []
    status = {}
    if staged is not None and subset == "all" and method != FIRST_METHOD:
        view = staged.get(table.matrix, chosen.ids, method, int(dims), table.matrix_id, shipped, start=compute)
        projection = view.shown
        status = {"pending": view.pending, "fraction": view.fraction, "message": view.message, "error": view.error}
    else:
        projection = cache.get(
            table.matrix, chosen.ids, method, int(dims), table.matrix_id, shipped, progress,
            compute=compute or method == "pca",
        )  # fmt: skip
    width = table.matrix.shape[1]
    if projection is None:
        return TokenMap(chosen, None, [], None, None, 0, width, method)
    tokens = [t for t in text_tokens if not t.special][: emb.MAX_CONTEXT_TOKENS]
    marked = (place_tokens(table, projection, [t.id for t in tokens]), [t.display for t in tokens])
    focus = None
    if search and search.strip():
        found = emb.token_id_of(lm.tokenizer, search)
        focus = (place_tokens(table, projection, [found])[0], table.labels[found])
    projected = set(projection.ids.tolist())
    outside = sum(t.id not in projected for t in tokens)
    labels = [table.labels[i] for i in projection.ids]
    return TokenMap(chosen, projection, labels, marked, focus, outside, width, method, **status)
