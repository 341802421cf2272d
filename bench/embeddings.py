"""Projection speed: PCA and UMAP, cold and warm, computed against cached, on a GPT-2-sized matrix and the bundled models.

1. A random 50,257 x 768 matrix (GPT-2 small's embedding shape, low rank plus noise): PCA of all
   rows, first call and warm; then through ``ProjectionCache``: computed, memory hit, disk hit.
2. UMAP of a 5,000-row subset: in a fresh process with no warm-up (import + numba compilation +
   work), then here after ``warm_up()`` (what the app's background thread does at start-up) on
   rows never projected before, then warm. Target: <= 10 s after warm-up.
3. The bundled models' whole vocabularies: PCA and UMAP computed, then from memory and from disk.
   Target: any cached projection <= 100 ms.
``--full`` adds UMAP of all 50,257 rows. Ratios are against the baseline measured in this run.
``--ship`` instead writes the precomputed projections shipped with the bundled models
(``models/<key>/projections``: UMAP 2D/3D and t-SNE 2D of the default 2,000 most frequent tokens,
UMAP 2D of the whole vocabulary); rerun it after retraining a bundled model (stale files are ignored).

    python bench/embeddings.py [--full | --ship]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["EXPLORER_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-embeddings-")  # projections: a fresh cache
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "llm-explorer" / "numba"))  # numba: the user's

import numpy as np  # noqa: E402
import torch  # noqa: E402
from timing import median_seconds  # noqa: E402

from explorer.analysis.embeddings import projections  # noqa: E402
from explorer.analysis.embeddings.projections import ProjectionCache, fingerprint, pca, warm_up  # noqa: E402
from explorer.analysis.embeddings.space import embedding_table, frequent_ids  # noqa: E402
from explorer.analysis.tokens.texts import sample_texts  # noqa: E402
from explorer.core.loading import load  # noqa: E402

COLD_UMAP = """
import sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
import numpy as np
from explorer.analysis.embeddings.projections import project
x = np.load({path!r})
t1 = time.perf_counter()
project(x, np.arange(len(x)), "umap", 2)
print(f"{{t1 - t0:.1f}} {{time.perf_counter() - t1:.1f}}")
"""


def gpt2_sized(rows: int = 50_257, d: int = 768, rank: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, d)) + rng.normal(size=(rows, d))).astype(np.float32)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def line(label: str, seconds: float, note: str = "") -> None:
    shown = f"{seconds * 1000:9.1f} ms" if seconds < 1 else f"{seconds:9.2f} s "
    print(f"  {label:<52}{shown}  {note}")


def cache_rows(label: str, matrix: np.ndarray, ids: np.ndarray, method: str, folder: Path) -> None:
    """Computed, then memory and disk hits; the matrix fingerprint is computed once, as the app does per model."""
    matrix_id = fingerprint(matrix)
    cache = ProjectionCache(folder)
    computed, _ = timed(lambda: cache.get(matrix, ids, method, 2, matrix_id))
    memory = median_seconds(lambda: cache.get(matrix, ids, method, 2, matrix_id), 5)
    disk = median_seconds(lambda: ProjectionCache(folder).get(matrix, ids, method, 2, matrix_id), 5)
    line(f"{label}: computed", computed)
    ok = "✓" if max(memory, disk) <= 0.1 else "✗"
    line(f"{label}: memory hit", memory, f"{computed / memory:,.0f}x faster")
    line(f"{label}: disk hit (new process's cache)", disk, f"{computed / disk:,.0f}x faster  {ok} target <= 100 ms")


def ship(n_frequent: int = 2000, keys=("tiny-gpt2", "tiny-bert", "tiny-t5")) -> None:
    """Write the projections a first visitor is most likely to ask for, next to each bundled model."""
    for key in keys:
        lm = load(key)
        table = embedding_table(lm)
        texts = list(sample_texts().values())
        frequent = frequent_ids(lm.tokenizer, texts, len(table), len(table), table.special)[:n_frequent]
        folder = Path(lm.spec.source) / "projections"
        for f in folder.glob("*.npz"):
            f.unlink()  # files of earlier weights
        cache = ProjectionCache(folder)
        jobs = [(frequent, "umap", 2), (frequent, "umap", 3), (frequent, "tsne", 2), (np.arange(len(table)), "umap", 2)]
        for ids, method, dims in jobs:
            start = time.perf_counter()
            cache.get(table.matrix, ids, method, dims, table.matrix_id)
            line(f"{key} {method} {dims}D of {len(ids):,} tokens", time.perf_counter() - start)
        print(f"  {folder}: {sum(f.stat().st_size for f in folder.glob('*.npz')) / 1e3:.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also UMAP of all 50,257 rows (about a minute)")
    parser.add_argument("--ship", action="store_true", help="write the bundled models' precomputed projections")
    parser.add_argument("--only", help="with --ship: one bundled model (its weights changed), e.g. tiny-t5")
    args = parser.parse_args()
    if args.ship:
        return ship(keys=(args.only,) if args.only else ("tiny-gpt2", "tiny-bert", "tiny-t5"))
    print(f"{torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPU(s); load average {os.getloadavg()[0]:.1f}")
    big = gpt2_sized()
    work = Path(os.environ["EXPLORER_CACHE_DIR"])

    print(f"\n1. PCA of all {len(big):,} x {big.shape[1]} rows (covariance eigh)")
    cold, _ = timed(lambda: pca(big, 2))
    warm = median_seconds(lambda: pca(big, 2), 3)
    line("first call", cold)
    line("warm (median of 3)", warm, f"cold/warm {cold / warm:.2f}")
    line("matrix fingerprint (the cache key; once per model load)", median_seconds(lambda: fingerprint(big), 3))
    cache_rows("PCA 50k", big, np.arange(len(big)), "pca", work / "pca")

    subset = np.random.default_rng(1).choice(len(big), 5000, replace=False)
    print("\n2. UMAP of 5,000 rows of it (PCA to 50 dims, exact cosine kNN, 200 epochs)")
    np.save(work / "subset.npy", big[subset])
    script = COLD_UMAP.format(root=str(ROOT), path=str(work / "subset.npy"))
    total, out = timed(lambda: subprocess.run([sys.executable, "-c", script], capture_output=True, text=True))
    imports, first = (float(v) for v in out.stdout.split()[-2:]) if out.returncode == 0 else (float("nan"),) * 2
    line("fresh process: start-up (numpy, explorer)", imports)
    line("fresh process, no warm-up: first UMAP (imports, compiles)", first, f"(process total {total:.1f} s)")
    warm_time, _ = timed(warm_up)
    line("warm_up() (the app's background thread)", warm_time)
    after, _ = timed(lambda: projections.project(big[subset], subset, "umap", 2))
    ok = "✓" if after <= 10 else "✗"
    line(
        "after warm-up: 5,000 rows never projected",
        after,
        f"{first / after:.1f}x faster than cold  {ok} target <= 10 s",
    )
    other = np.random.default_rng(2).choice(len(big), 5000, replace=False)
    again, _ = timed(lambda: projections.project(big[other], other, "umap", 2))
    line("warm: another 5,000 rows", again)
    cache_rows("UMAP 5k", big, subset, "umap", work / "umap")

    print("\n3. Bundled models, whole vocabulary")
    for key in ("tiny-gpt2", "tiny-bert", "tiny-t5"):
        table = embedding_table(load(key))
        ids = np.arange(len(table))
        for method in ("pca", "umap"):
            cache_rows(
                f"{key} {method.upper()} {len(ids):,} x {table.matrix.shape[1]}", table.matrix, ids, method, work / key
            )

    if args.full:
        print(f"\n4. UMAP of all {len(big):,} rows (NN-descent neighbours)")
        seconds, _ = timed(lambda: projections.project(big, np.arange(len(big)), "umap", 2))
        line("computed", seconds)
    print("\n(CPU shared with other jobs: absolute times vary run to run; compare within a run.)")


if __name__ == "__main__":
    main()
