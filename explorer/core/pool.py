"""The process-wide model pool: lazy, shared read-only, bounded by an LRU on memory."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from explorer.core.loading import LoadedModel, load, resolve


class ModelPool:
    """Loads a model the first time it is asked for and keeps it while memory allows.

    Models handed out are shared by every user: callers must not change their weights (LoRA
    works on a session-owned copy). When the total exceeds ``max_bytes`` the least recently
    used models are dropped (never the one just requested).
    """

    def __init__(self, max_bytes: int | None = None):
        default_mb = int(os.environ.get("EXPLORER_POOL_MB", "4096"))
        self.max_bytes = max_bytes if max_bytes is not None else default_mb * 2**20
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    def get(self, name: str) -> LoadedModel:
        key = resolve(name).key  # raises ModelLoadError with a clear sentence
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:  # one load per model, however many users ask at once
            with self._lock:
                if key in self._models:
                    return self._models[key]
            lm = load(name)
            with self._lock:
                self._models[key] = lm
                self._evict(keep=key)
        return lm

    def _evict(self, keep: str) -> None:
        while self.nbytes > self.max_bytes and len(self._models) > 1:
            oldest = next(k for k in self._models if k != keep)
            del self._models[oldest]

    @property
    def nbytes(self) -> int:
        return sum(lm.nbytes for lm in self._models.values())

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)


_default_pool: ModelPool | None = None


def default_pool() -> ModelPool:
    global _default_pool
    if _default_pool is None:
        _default_pool = ModelPool()
    return _default_pool
