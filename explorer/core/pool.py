"""The process-wide model pool: lazy, shared read-only, bounded by an LRU on memory."""

from __future__ import annotations

from explorer.core.cache import BoundedCache
from explorer.core.loading import LoadedModel, load, resolve
from explorer.core.settings import settings


class ModelPool:
    """Loads a model the first time it is asked for and keeps it while memory allows.

    Models handed out are shared by every user: callers must not change their weights (LoRA
    works on a session-owned copy). When the total exceeds ``max_bytes`` (the settings'
    ``EXPLORER_POOL_MB`` by default) the least recently used models are dropped (never the one
    just requested). However many users ask for a model at once, it is loaded once. A model whose
    checkpoint alone needs more than ``max_bytes`` is refused before any weight is read.
    """

    def __init__(self, max_bytes: int | None = None):
        max_bytes = max_bytes if max_bytes is not None else settings().pool_bytes
        self._models: BoundedCache[LoadedModel] = BoundedCache(max_bytes, size=lambda lm: lm.nbytes)

    @property
    def max_bytes(self) -> int:
        return self._models.max_bytes

    def get(self, name: str) -> LoadedModel:
        key = resolve(name).key  # raises ModelLoadError with a clear sentence
        return self._models.get(key, lambda: load(name, max_bytes=self.max_bytes))

    @property
    def nbytes(self) -> int:
        return self._models.nbytes

    def loaded(self) -> list[str]:
        return self._models.keys()


_default_pool: ModelPool | None = None


def default_pool() -> ModelPool:
    global _default_pool
    if _default_pool is None:
        _default_pool = ModelPool()
    return _default_pool
