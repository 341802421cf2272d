"""Projections of embedding rows to 2 or 3 dimensions (PCA, UMAP, t-SNE) and their cache.

PCA uses a covariance-eigh solver (a d x d eigenproblem: sub-second for 50k x 768). UMAP and
t-SNE first reduce to ``PRE_PCA_DIMS`` with the same PCA; UMAP is given an exact cosine k-nearest-
neighbour graph (one matrix product) up to ``EXACT_KNN_MAX`` rows, so that the only numba code it
compiles is the layout, which ``warm_up`` compiles once per process in the background.

``ProjectionCache`` keeps results in memory and on disk under ``cache_dir()`` (the settings' ``cache_dir``:
``EXPLORER_CACHE_DIR``, else ``$XDG_CACHE_HOME/llm-explorer``, else ``~/.cache/llm-explorer``), keyed by a fingerprint of the
matrix, so the second request for the same projection only reads a small ``.npz``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explorer.core.cache import BoundedCache
from explorer.core.errors import InputError
from explorer.core.memory import to_host
from explorer.core.settings import settings

log = logging.getLogger("explorer")

METHODS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}
MAX_POINTS = {"pca": 300_000, "umap": 60_000, "tsne": 5_000}
PRE_PCA_DIMS = 50
EXACT_KNN_MAX = 12_000  # above this, UMAP's own approximate neighbour search (NN-descent) is faster
N_NEIGHBORS = 15
UMAP_EPOCHS = 200
FORMAT_VERSION = 1
MEMORY_BYTES = 128 * 2**20  # projections held in memory (a 60k-point UMAP is about 1 MB)

Progress = Callable[[float, str], None]


def cache_dir() -> Path:
    """Where computed projections (and numba's compiled code) are kept between runs."""
    return settings().cache_dir


# numba reads this once, when umap first imports it: its compiled code then persists across runs.
os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))
# Taken by every process that runs UMAP with this compiled-code folder (see ``umap_layout``).
NUMBA_LOCK_FILE = Path(os.environ["NUMBA_CACHE_DIR"]) / "umap.lock"


def _quiet(progress: Progress | None) -> Progress:
    return progress or (lambda fraction, message: None)


@dataclass(frozen=True)
class Projection:
    """``coords`` (n, dims) for the rows ``ids`` of a matrix; PCA also keeps ``mean`` and ``components``."""

    method: str
    coords: np.ndarray
    ids: np.ndarray
    seconds: float
    explained: np.ndarray | None = None  # PCA: fraction of variance per component
    mean: np.ndarray | None = None
    components: np.ndarray | None = None  # (dims, d)
    source: str = "computed"  # computed, memory, disk or shipped

    @property
    def nbytes(self) -> int:
        arrays = (self.coords, self.ids, self.explained, self.mean, self.components)
        return sum(a.nbytes for a in arrays if a is not None)

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """PCA only: project new rows with the fitted axes."""
        return (rows - self.mean) @ self.components.T


def pca(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(coords (n, dims), explained-variance fractions, mean (d,), components (dims, d)).

    Eigenvectors of the d x d covariance, largest first; each axis's sign is fixed so that its
    largest-magnitude loading is positive (deterministic output).
    """
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=0)
    centred = x - mean
    cov = (centred.T @ centred).astype(np.float64) / max(1, len(x) - 1)
    values, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(values)[::-1][:dims]
    components = vectors[:, order].T  # (dims, d)
    signs = np.sign(components[np.arange(len(order)), np.abs(components).argmax(axis=1)])
    components = (components * signs[:, None]).astype(np.float32)
    total = values.clip(min=0).sum()
    explained = values[order].clip(min=0) / total if total > 0 else np.zeros(len(order))
    return centred @ components.T, explained.astype(np.float32), mean, components


def _reduced(x: np.ndarray) -> np.ndarray:
    return pca(x, PRE_PCA_DIMS)[0] if x.shape[1] > PRE_PCA_DIMS else np.asarray(x, np.float32)


def cosine_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine distance, each row's own index first: (indices, distances)."""
    import torch

    unit = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(x, np.float32)), dim=1)
    indices, distances = [], []
    for start in range(0, len(unit), 1024):
        sims, idx = torch.topk(unit[start : start + 1024] @ unit.T, k, dim=1)
        indices.append(to_host(idx))
        distances.append(to_host((1 - sims).clamp(min=0)))
    return np.concatenate(indices).astype(np.int64), np.concatenate(distances).astype(np.float32)


class _EpochBar:
    """Stands in for ``tqdm`` around UMAP's epoch loop (``for n in tqdm(range(n_epochs), **tqdm_kwds)``), so the
    layout reports its epochs and a report that raises (a Stop) ends the loop there.

    Not tqdm itself: tqdm writes its bar holding a lock shared by every bar in the process and does not release it
    if the write raises. A UMAP stopped from a request thread so left that lock held by a thread that went on to
    other work, and the next UMAP (and tqdm's monitor thread) waited for it forever (a test worker hung so).
    Here a report is made between epochs, holding nothing.
    """

    def __init__(self, epochs, *, report: Callable[[int, int], None], mininterval: float = 0.25, **_tqdm_kwds):
        self.epochs, self.report, self.mininterval = epochs, report, mininterval

    def __iter__(self):
        """Reports epoch 0 as the loop begins (as tqdm did), then at most every ``mininterval``, then the last."""
        total, last = len(self.epochs), time.perf_counter()
        for done, epoch in enumerate(self.epochs):
            if not done or time.perf_counter() - last >= self.mininterval:
                self.report(done, total)
                last = time.perf_counter()
            yield epoch
        self.report(total, total)


@contextlib.contextmanager
def _epoch_bar():
    """``umap.layouts`` uses ``_EpochBar`` for its progress bar meanwhile (callers hold ``_UMAP_LOCK``)."""
    from umap import layouts

    bar, layouts.tqdm = layouts.tqdm, _EpochBar
    try:
        yield
    finally:
        layouts.tqdm = bar


# One UMAP at a time in a process: numba compiles UMAP's code (some of it as umap and pynndescent are first
# imported) under its own lock, and two threads importing and compiling at once (a background map, a request,
# the warm-up) deadlocked, holding each other's import and compiler locks. Two layouts at once would only
# share the same cores anyway.
_UMAP_LOCK = threading.Lock()


def _wait_turn(acquire: Callable[[float], bool], progress: Progress, waiting: str) -> None:
    """``acquire(timeout)`` until it succeeds, saying ``waiting`` every half second (a Stop it raises ends it)."""
    timeout = 0.0
    while not acquire(timeout):
        progress(0.02, waiting)
        timeout = 0.5


@contextlib.contextmanager
def _umap_turn(progress: Progress):
    """Wait for this process's other UMAP, then for other processes' ones.

    numba's compiled-code folder is not safe for two processes compiling into it at once: one can load an entry
    the other is still writing and crash (numba issues 4807 and 10128). Processes sharing ``NUMBA_CACHE_DIR`` (the
    two test workers, the app and a benchmark) take turns on ``NUMBA_LOCK_FILE``, which the system releases if
    its holder dies.
    """
    from filelock import FileLock, Timeout

    file_lock = FileLock(NUMBA_LOCK_FILE, thread_local=False)

    def across_processes(timeout: float) -> bool:
        try:
            NUMBA_LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
            file_lock.acquire(timeout=timeout)
        except Timeout:
            return False
        except OSError as e:  # a folder it cannot write: numba cannot cache there either, so nothing to share
            log.warning("UMAP runs without the lock on %s: %s", NUMBA_LOCK_FILE, e)
        return True

    _wait_turn(lambda timeout: _UMAP_LOCK.acquire(timeout=timeout), progress,
               "waiting for another UMAP on this server to finish")  # fmt: skip
    try:
        _wait_turn(across_processes, progress,
                   "waiting for another UMAP on this machine to finish (they share compiled code)")  # fmt: skip
        try:
            yield
        finally:
            file_lock.release()  # nothing to release when it was never taken
    finally:
        _UMAP_LOCK.release()


def umap_layout(x: np.ndarray, dims: int, seed: int = 0, progress: Progress | None = None) -> np.ndarray:
    progress = _quiet(progress)
    with _umap_turn(progress):
        return _umap_layout(x, dims, seed, progress)


def _umap_layout(x: np.ndarray, dims: int, seed: int, progress: Progress) -> np.ndarray:
    progress(0.05, "importing UMAP (numba)")
    import umap

    n_neighbors = min(N_NEIGHBORS, len(x) - 1)
    knn = (None, None, None)
    if len(x) <= EXACT_KNN_MAX:
        progress(0.15, f"exact cosine nearest neighbours of {len(x):,} points")
        knn = (*cosine_knn(x, n_neighbors), None)
    progress(0.3, f"UMAP layout of {len(x):,} points ({UMAP_EPOCHS} epochs)")
    reducer = umap.UMAP(
        n_components=dims, n_neighbors=n_neighbors, metric="cosine", n_epochs=UMAP_EPOCHS, random_state=seed,
        precomputed_knn=knn, force_approximation_algorithm=True, init="spectral" if len(x) > dims + 1 else "random",
        tqdm_kwds={"report": lambda done, total: progress(0.3 + 0.68 * done / total,
                                                          f"UMAP layout: epoch {done} of {total}")},
    )  # fmt: skip
    with _epoch_bar(), warnings.catch_warnings():  # about seeds disabling parallelism and transform() needing an index
        warnings.simplefilter("ignore", UserWarning)
        return reducer.fit_transform(x).astype(np.float32)


def _reporting_tsne(**params):
    """sklearn's ``TSNE`` whose gradient descent calls ``tsne.after_iteration(done, total)`` after each iteration.

    ``TSNE._tsne`` is sklearn's two-phase schedule (250 iterations of early exaggeration at momentum 0.5, then
    the rest at 0.8) calling its objective once per iteration; this copy of it (sklearn 1.9) only wraps that
    objective, so the optimisation is sklearn's own, bit for bit, and a report that raises ends it there.
    """
    from sklearn.manifold import TSNE, _t_sne

    class ReportingTSNE(TSNE):
        after_iteration = None

        def _tsne(self, P, degrees_of_freedom, n_samples, X_embedded, neighbors=None, skip_num_points=0):  # noqa: N803 (sklearn's names)
            exact = self.method != "barnes_hut"
            objective, done = (_t_sne._kl_divergence if exact else _t_sne._kl_divergence_bh), [0]

            def reporting(*args, **kwargs):
                result = objective(*args, **kwargs)
                done[0] += 1
                self.after_iteration(done[0], self.max_iter)
                return result

            kwargs = {"skip_num_points": skip_num_points}
            if not exact:
                kwargs |= {"angle": self.angle, "verbose": self.verbose,
                           "num_threads": _t_sne._openmp_effective_n_threads()}  # fmt: skip
            opt = {"it": 0, "n_iter_check": self._N_ITER_CHECK, "min_grad_norm": self.min_grad_norm,
                   "learning_rate": self.learning_rate_, "verbose": self.verbose, "kwargs": kwargs,
                   "args": [P, degrees_of_freedom, n_samples, self.n_components],
                   "n_iter_without_progress": self._EXPLORATION_MAX_ITER, "max_iter": self._EXPLORATION_MAX_ITER,
                   "momentum": 0.5}  # fmt: skip
            P *= self.early_exaggeration  # part 1: early exaggeration
            params, kl, it = _t_sne._gradient_descent(reporting, X_embedded.ravel(), **opt)
            P /= self.early_exaggeration  # part 2: the rest, at a higher momentum
            if it < self._EXPLORATION_MAX_ITER or self.max_iter > self._EXPLORATION_MAX_ITER:
                opt |= {"max_iter": self.max_iter, "it": it + 1, "momentum": 0.8,
                        "n_iter_without_progress": self.n_iter_without_progress}  # fmt: skip
                params, kl, it = _t_sne._gradient_descent(reporting, params, **opt)
            self.n_iter_, self.kl_divergence_ = it, kl
            return params.reshape(n_samples, self.n_components)

    return ReportingTSNE(**params)


# iterations between reports, each a stop point (2,000 points on two shared cores: 0.2-1.6 s apart)
TSNE_REPORT_EVERY = 25


def tsne_layout(x: np.ndarray, dims: int, seed: int = 0, progress: Progress | None = None) -> np.ndarray:
    """sklearn's t-SNE (cosine, PCA start), reporting every ``TSNE_REPORT_EVERY`` iterations: a report that raises
    (a Stop) ends it there."""
    progress = _quiet(progress)
    progress(0.3, f"t-SNE of {len(x):,} points: nearest neighbours and their probabilities")
    perplexity = float(min(30, max(2, (len(x) - 1) / 3)))
    tsne = _reporting_tsne(n_components=dims, perplexity=perplexity, init="pca", random_state=seed, metric="cosine")

    def after_iteration(done: int, total: int) -> None:
        if done % TSNE_REPORT_EVERY == 0:
            progress(0.35 + 0.63 * done / total, f"t-SNE: iteration {done} of {total}")

    tsne.after_iteration = after_iteration
    return tsne.fit_transform(x).astype(np.float32)


def check_size(method: str, n: int, dims: int) -> None:
    if method not in METHODS:
        raise InputError(f"Unknown projection method {method!r}; pick one of {', '.join(METHODS)}.")
    if dims not in (2, 3):
        raise InputError("Project to 2 or 3 dimensions.")
    if n < dims + 2:
        raise InputError(f"Pick at least {dims + 2} tokens to project.")
    if n > MAX_POINTS[method]:
        raise InputError(
            f"{METHODS[method]} of {n:,} tokens would take too long here; use at most {MAX_POINTS[method]:,} "
            "(PCA handles the whole vocabulary)."
        )


def project(x: np.ndarray, ids: np.ndarray, method: str, dims: int, progress: Progress | None = None) -> Projection:
    """Project the rows ``x`` (n, d), which are rows ``ids`` of some matrix, with ``method``."""
    check_size(method, len(x), dims)
    progress = _quiet(progress)
    start = time.perf_counter()
    if method == "pca":
        progress(0.2, f"PCA of {len(x):,} × {x.shape[1]} (covariance eigenvectors)")
        coords, explained, mean, components = pca(x, dims)
        return Projection(method, coords, ids, time.perf_counter() - start, explained, mean, components)
    progress(0.02, f"reducing {x.shape[1]} dimensions to {PRE_PCA_DIMS} with PCA")
    reduced = _reduced(x)
    layout = umap_layout if method == "umap" else tsne_layout
    coords = layout(reduced, dims, progress=progress)
    return Projection(method, coords, ids, time.perf_counter() - start)


def fingerprint(matrix: np.ndarray) -> str:
    """A short hash of a matrix: shape, dtype, up to 1024 sampled rows and the total (fast for 50k x 768)."""
    step = max(1, len(matrix) // 1024)
    h = hashlib.blake2b(digest_size=10)
    h.update(repr((matrix.shape, str(matrix.dtype), float(np.sum(matrix, dtype=np.float64)))).encode())
    h.update(np.ascontiguousarray(matrix[::step]).tobytes())
    return h.hexdigest()


def ids_key(ids: np.ndarray) -> str:
    return hashlib.blake2b(np.asarray(ids, np.int64).tobytes(), digest_size=8).hexdigest()


def _save(path: Path, p: Projection) -> None:
    arrays = {"coords": p.coords, "ids": np.asarray(p.ids, np.int64)}
    for name in ("explained", "mean", "components"):
        if getattr(p, name) is not None:
            arrays[name] = getattr(p, name)
    meta = json.dumps({"method": p.method, "seconds": p.seconds, "version": FORMAT_VERSION})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
    np.savez(tmp, meta=np.array(meta), **arrays)
    os.replace(tmp, path)  # readers never see a half-written file


def _load(path: Path, source: str) -> Projection | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if meta.get("version") != FORMAT_VERSION:
                return None
            optional = {k: f[k] for k in ("explained", "mean", "components") if k in f.files}
            return Projection(meta["method"], f["coords"], f["ids"], meta["seconds"], source=source, **optional)
    except (OSError, ValueError, KeyError) as err:
        log.warning("ignoring unreadable projection cache %s: %s", path, err)
        return None


class ProjectionCache:
    """Projections by (matrix fingerprint, method, dims, rows): memory (LRU), then disk, then shipped files.

    ``shipped`` folders hold precomputed ``.npz`` files (e.g. ``models/<key>/projections``); they are
    used only when their fingerprint matches the matrix, so retrained weights are never mislabelled.
    The memory tier is a ``BoundedCache`` of ``max_bytes``: two requests for the same projection
    compute (or read) it once. ``computed`` counts real work, ``hits`` answers that needed none.
    """

    def __init__(self, directory: Path | None = None, max_bytes: int = MEMORY_BYTES):
        self.directory = Path(directory) if directory is not None else cache_dir() / "projections"
        self._memory: BoundedCache[Projection] = BoundedCache(max_bytes, size=lambda p: p.nbytes)
        self.hits = self.computed = 0

    @staticmethod
    def filename(matrix_id: str, method: str, dims: int, ids: np.ndarray) -> str:
        return f"{matrix_id}-{method}{dims}d-{ids_key(ids)}.npz"

    def _from_files(self, name: str, shipped: list[Path]) -> Projection | None:
        for folder, source in [(self.directory, "disk"), *((Path(s), "shipped") for s in shipped)]:
            if (folder / name).is_file():
                found = _load(folder / name, source)
                if found is not None:
                    return found
        return None

    def _read_or_compute(self, name, matrix, ids, method, dims, shipped, progress) -> Projection:
        found = self._from_files(name, shipped)
        if found is not None:
            return found
        p = project(np.asarray(matrix[ids], np.float32), ids, method, dims, progress)
        try:
            _save(self.directory / name, p)
            _prune(self.directory, disk_budget())
        except OSError as err:  # a read-only home still gets the memory cache
            log.warning("could not write projection cache %s: %s", self.directory, err)
        return p

    def get(
        self,
        matrix: np.ndarray,
        ids: np.ndarray,
        method: str,
        dims: int,
        matrix_id: str | None = None,
        shipped: list[Path] = (),
        progress: Progress | None = None,
        compute: bool = True,
    ) -> Projection | None:
        """The projection of ``matrix[ids]``; ``matrix_id`` (a fingerprint) may be passed when already known.

        With ``compute=False``, only a cached projection is returned (else None).
        """
        ids = np.asarray(ids, np.int64)
        check_size(method, len(ids), dims)
        name = self.filename(matrix_id or fingerprint(matrix), method, dims, ids)
        held = self._memory.peek(name)
        if held is not None:
            self.hits += 1
            return dataclasses.replace(held, source="memory")
        if not compute:
            found = self._from_files(name, list(shipped))
            if found is not None:
                self.hits += 1
                self._memory.put(name, found)
            return found
        p, here = self._memory.lookup(
            name, lambda: self._read_or_compute(name, matrix, ids, method, dims, list(shipped), progress)
        )
        if here and p.source == "computed":
            self.computed += 1
            return p
        self.hits += 1
        return p if here else dataclasses.replace(p, source="memory")


def disk_budget() -> int:
    """Bytes the disk cache may hold (``EXPLORER_CACHE_MB``, default 500): the oldest files go first."""
    return settings().cache_bytes


def _prune(folder: Path, max_bytes: int) -> None:
    files = sorted(folder.glob("*.npz"), key=lambda f: f.stat().st_mtime)
    total = sum(f.stat().st_size for f in files)
    for f in files:
        if total <= max_bytes:
            break
        total -= f.stat().st_size
        f.unlink(missing_ok=True)


_warm = threading.Event()
_warm_started = threading.Lock()


def warm_up(n: int = 300, dims: tuple[int, ...] = (2, 3)) -> float:
    """Compile UMAP's numba code on a small random matrix (same code path and dtypes as real calls)."""
    start = time.perf_counter()
    x = np.random.default_rng(0).normal(size=(n, PRE_PCA_DIMS)).astype(np.float32)
    for d in dims:
        umap_layout(x, d)
    _warm.set()
    return time.perf_counter() - start


def warm_up_in_background(delay: float = 2.0) -> threading.Thread | None:
    """Start ``warm_up`` once per process in a daemon thread (``EXPLORER_WARMUP=0`` turns it off)."""
    if not settings().warmup or not _warm_started.acquire(blocking=False):
        return None

    def run():
        time.sleep(delay)
        try:
            log.info("UMAP warm-up took %.1f s", warm_up())
        except Exception:  # a failed warm-up only means a slower first projection
            log.exception("UMAP warm-up failed")

    thread = threading.Thread(target=run, name="umap-warm-up", daemon=True)
    thread.start()
    return thread


def is_warm() -> bool:
    return _warm.is_set()
