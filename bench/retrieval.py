"""Retrieval at scale: index build and query latency of exact search at 1k, 10k and 100k chunks.

Embeddings are random (d = 768, a BERT-base width, float32; the search cost does not depend on
what the numbers are), texts are the bundled passages repeated. For each size:

- ours: the index's unit rows (``unit_rows``) and BM25 index (``bm25s``), then one question scored
  the way ``search`` does it: cosine of every chunk (``cosine_scores``), a full ranking (``ranks_of``,
  needed for the rank comparison), BM25 scores of every chunk and their reciprocal-rank fusion;
- baselines in the same run: scikit-learn's brute-force ``NearestNeighbors(metric="cosine")`` (fit,
  then ``kneighbors``) and plain numpy (one matrix-vector product and ``argpartition`` for the top k).

Everything runs on one thread (``OMP_NUM_THREADS=1`` unless set): on two shared, busy cores a threaded
BLAS took 20 ms for a 1k x 768 matrix-vector product that takes 0.05 ms on one thread.

Then a real model: the bundled tiny-bert embedding the bundled chunks, to say what building an index
costs when the model has to read every chunk. Prints median milliseconds and a line on when a vector
index library would be the right next step.

    python bench/retrieval.py [--repeats 5] [--sizes 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")  # one core: shared cores make threaded BLAS timings noise (see below)

import numpy as np  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402

from explorer.analysis.retrieval.documents import Chunking, chunk_documents, document_set  # noqa: E402
from explorer.analysis.retrieval.index import bm25_index, bm25_terms, build_index, unit_rows  # noqa: E402
from explorer.analysis.retrieval.search import cosine_scores, ranks_of, reciprocal_rank_fusion  # noqa: E402

DIM = 768
K = 5
BUDGET_MS = 50.0  # one query of an interactive view: past this, exact search is felt


def timed(fn, repeats: int) -> tuple[float, object]:
    """(median milliseconds, the last result)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), out


def one_size(n: int, texts: list[str], repeats: int, rng: np.random.Generator) -> dict:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    q = rng.standard_normal(DIM, dtype=np.float32)
    corpus = [texts[i % len(texts)] for i in range(n)]
    question = bm25_terms("keeper of the lighthouse and the parrot")[0]

    build_ms, unit = timed(lambda: unit_rows(x), 1)
    bm25_ms, bm25 = timed(lambda: bm25_index(bm25_terms(corpus)), 1)

    def ours():
        dense = ranks_of(cosine_scores(unit, q))
        lexical = np.asarray(bm25.get_scores(list(question)))
        lexical_ranks = np.where(lexical > 0, ranks_of(lexical), 0)
        return np.argsort(-reciprocal_rank_fusion(dense, lexical_ranks), kind="stable")[:K]

    dense_only_ms, dense_top = timed(lambda: np.argsort(ranks_of(cosine_scores(unit, q)))[:K], repeats)
    query_ms, _ = timed(ours, repeats)
    sk_build_ms, nn = timed(lambda: NearestNeighbors(n_neighbors=K, metric="cosine", algorithm="brute").fit(x), 1)
    sk_query_ms, (_, sk_top) = timed(lambda: nn.kneighbors(q[None]), repeats)

    def plain():
        scores = unit @ (q / np.linalg.norm(q))
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    np_query_ms, np_top = timed(plain, repeats)
    assert list(sk_top[0]) == list(np_top) == list(dense_top), "the three exact searches disagree"
    return {
        "n": n, "build_ms": build_ms, "bm25_ms": bm25_ms, "dense_ms": dense_only_ms, "query_ms": query_ms,
        "sk_build_ms": sk_build_ms, "sk_query_ms": sk_query_ms, "np_query_ms": np_query_ms, "mb": unit.nbytes / 2**20,
    }  # fmt: skip


def model_build() -> tuple[int, float]:
    """(chunks, seconds) for tiny-bert embedding the bundled set at its last layer."""
    from explorer.core.loading import load

    lm = load("tiny-bert")
    docs = document_set("both")
    index = build_index(lm, docs, Chunking(60, 10))
    return len(index.chunks), index.embed_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    texts = [c.text for c in chunk_documents(document_set("both"), Chunking(60, 10))]
    print(
        f"exact search, d = {DIM} float32, top {K}, {os.environ['OMP_NUM_THREADS']} thread(s); "
        f"median of {args.repeats} queries (ms)"
    )
    print(f"{'chunks':>8} {'matrix MB':>9} | {'ours: build':>11} {'BM25 build':>10} {'cosine':>7} {'cos+BM25+RRF':>12} "
          f"| {'sklearn fit':>11} {'kneighbors':>10} | {'numpy top-k':>11}")  # fmt: skip
    rows = []
    for n in args.sizes:
        r = one_size(n, texts, args.repeats, rng)
        rows.append(r)
        print(f"{n:>8,} {r['mb']:>9.0f} | {r['build_ms']:>11.1f} {r['bm25_ms']:>10.0f} {r['dense_ms']:>7.2f} "
              f"{r['query_ms']:>12.2f} | {r['sk_build_ms']:>11.1f} {r['sk_query_ms']:>10.2f} | {r['np_query_ms']:>11.2f}")  # fmt: skip
    last = rows[-1]
    per_chunk = last["query_ms"] / last["n"]
    crossover = BUDGET_MS / per_chunk
    print(
        f"A vector index library (FAISS or similar, approximate search) is the right next step at about "
        f"{crossover:,.0f} chunks of d = {DIM}: there one exact query (cosine + BM25 + fusion) would take "
        f"{BUDGET_MS:.0f} ms (measured: {last['query_ms']:.1f} ms at {last['n']:,}, {last['mb']:.0f} MB of "
        f"float32 rows; plain numpy top-k {last['np_query_ms']:.1f} ms, scikit-learn {last['sk_query_ms']:.1f} ms)."
    )
    n_chunks, seconds = model_build()
    print(
        f"Building a real index costs the model's reading, not the search: tiny-bert embeds the bundled "
        f"{n_chunks} chunks in {seconds:.2f} s ({n_chunks / seconds:,.0f} chunks/s, so about "
        f"{100_000 / (n_chunks / seconds) / 60:.0f} min for 100k chunks on this machine)."
    )


if __name__ == "__main__":
    main()
