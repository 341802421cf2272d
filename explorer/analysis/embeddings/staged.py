"""A projection too slow to wait for, such as the UMAP of a whole 50,257-token vocabulary (minutes on two
cores): a first map at once (PCA of the same rows: under a second), the full one computed in a background
thread into the ``ProjectionCache``, so that every later request, from any session, gets it from the cache.

    staged = StagedProjections(ProjectionCache())
    view = staged.get(matrix, ids, "umap", 2)   # view.shown: PCA now; view.pending: UMAP on its way
    ...                                         # later (a timer, or the user's next click)
    view = staged.get(matrix, ids, "umap", 2)   # view.shown: the UMAP, from the cache
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from explorer.analysis.embeddings.projections import Projection, ProjectionCache, check_size, fingerprint, ids_key
from explorer.core.errors import Stopped

log = logging.getLogger("explorer")
FIRST_METHOD = "pca"


@dataclass(frozen=True)
class StagedMap:
    """The best map there is now: ``shown`` is the full projection once cached, else the first (PCA) one;
    ``pending`` while the full one is being computed (``fraction`` done, doing ``message``); ``error`` is the
    sentence of a background computation that failed (the next request tries again)."""

    shown: Projection
    pending: bool
    fraction: float = 1.0
    message: str = ""
    error: str = ""


class _Job:
    def __init__(self):
        self.fraction, self.message, self.error = 0.0, "queued", ""
        self.thread: threading.Thread | None = None

    def progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(fraction), message


class StagedProjections:
    """Full projections computed in the background, at most ``max_running`` at once (the rest queue); one job
    per (matrix, method, dims, rows) however many sessions ask. Shared by the process, like the cache."""

    def __init__(self, cache: ProjectionCache, max_running: int = 1):
        self.cache = cache
        self._jobs: dict[tuple, _Job] = {}
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_running)
        self._stopping = threading.Event()

    def get(
        self,
        matrix: np.ndarray,
        ids: np.ndarray,
        method: str,
        dims: int,
        matrix_id: str | None = None,
        shipped=(),
        start: bool = True,
    ) -> StagedMap:
        """The full ``method`` projection of ``matrix[ids]`` if cached, else the first map and (with ``start``)
        the full one started in the background."""
        ids = np.asarray(ids, np.int64)
        check_size(method, len(ids), dims)
        matrix_id = matrix_id or fingerprint(matrix)
        full = self.cache.get(matrix, ids, method, dims, matrix_id, shipped, compute=method == FIRST_METHOD)
        if full is not None:
            return StagedMap(full, pending=False)
        first = self.cache.get(matrix, ids, FIRST_METHOD, dims, matrix_id, shipped)
        key = (matrix_id, method, dims, ids_key(ids))
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.thread is not None and not job.thread.is_alive():
                error = job.error
                del self._jobs[key]  # finished: cached (read above, or evicted since) or failed
                if error:
                    return StagedMap(first, pending=False, error=error)
                job = None
            if job is None and start:
                job = self._jobs[key] = _Job()
                args = (job, matrix, ids, method, dims, matrix_id, tuple(shipped))
                job.thread = threading.Thread(target=self._compute, args=args, daemon=True, name=f"projection-{key}")
                job.thread.start()
        if job is None:
            return StagedMap(first, pending=False)
        return StagedMap(first, pending=True, fraction=job.fraction, message=job.message)

    def _compute(self, job: _Job, matrix, ids, method, dims, matrix_id, shipped) -> None:
        def progress(fraction: float, message: str) -> None:
            if self._stopping.is_set():
                raise Stopped("The background map was stopped.")
            job.progress(fraction, message)

        with self._slots:
            try:
                self.cache.get(matrix, ids, method, dims, matrix_id, list(shipped), progress=progress)
                job.progress(1.0, "done")
            except Exception as err:  # reported to the next request; the job is then dropped
                log.exception("background projection failed")
                job.error = str(err) or type(err).__name__

    def wait(self, timeout: float | None = None) -> None:
        """Block until every background projection started so far has finished (benchmarks, tests)."""
        with self._lock:
            threads = [job.thread for job in self._jobs.values() if job.thread is not None]
        for thread in threads:
            thread.join(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop every background projection at its next progress report and wait for it (tests: a map one test
        started must not run on beside the next); the next request starts it again."""
        self._stopping.set()
        try:
            self.wait(timeout)
        finally:
            self._stopping.clear()

    @property
    def running(self) -> int:
        with self._lock:
            return sum(1 for job in self._jobs.values() if job.thread is not None and job.thread.is_alive())
