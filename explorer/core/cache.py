"""``BoundedCache``: the one keyed, byte-bounded, single-flight cache every shared store is built on.

The model pool, the run cache, the projection cache's memory tier and the pre-softmax scores
all hold values that are costly to make and large to keep. Each is a ``BoundedCache``:

- keyed: ``get(key, compute)`` returns the value held for ``key``, or ``compute()``'s;
- byte-bounded: values are measured by ``size(value)``; past ``max_bytes`` (and ``max_items``,
  when given) the least recently used are dropped, never the one just asked for;
- single-flight: however many threads ask for one key at once, ``compute`` runs once; the others
  wait on that key's lock, which is dropped as soon as the value is stored or the computation
  failed (the lock table holds only keys being computed right now);
- a failure is not cached: it is raised to the caller that computed and to every caller that was
  waiting, and the next request tries again.

    >>> squares = BoundedCache(max_bytes=16, size=lambda v: 8)
    >>> squares.get(3, lambda: 9), squares.get(3, lambda: 0)  # the second call finds 9
    (9, 9)
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from explorer.core.errors import Stopped

V = TypeVar("V")


class _Flight:
    """One key being computed: its waiters block on ``lock``; ``error`` is what the computation raised."""

    def __init__(self):
        self.lock = threading.Lock()
        self.error: BaseException | None = None


class BoundedCache(Generic[V]):
    """Values by key within ``max_bytes`` (by ``size``) and ``max_items``, least recently used out first.

    ``None`` for either bound leaves it open (a cache of tokenizers is bounded by count alone).
    """

    def __init__(self, max_bytes: int | None, size: Callable[[V], int] = lambda value: 0, max_items: int | None = None):
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._size = size
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()  # key -> (value, bytes)
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()  # guards _items, _flights and the counters; never held while computing
        self.hits = self.misses = 0  # misses: computations run; hits: answers that needed none

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        return self.lookup(key, compute)[0]

    def lookup(self, key: Hashable, compute: Callable[[], V]) -> tuple[V, bool]:
        """(the value for ``key``, whether this call computed it)."""
        while True:
            with self._lock:
                if key in self._items:
                    self.hits += 1
                    self._items.move_to_end(key)
                    return self._items[key][0], False
                flight = self._flights.get(key)
                if flight is None:  # nobody is computing it: this call will
                    flight = self._flights[key] = _Flight()
                    flight.lock.acquire()
                    break
            with flight.lock:  # wait for the caller computing it
                pass
            if isinstance(flight.error, Stopped):  # its caller stopped (or left): this one computes it
                continue
            if flight.error is not None:
                raise flight.error
            # stored (or already evicted again): look again
        try:
            value = compute()
            nbytes = int(self._size(value))  # outside the lock, and a failure here is the computation's
        except BaseException as err:
            flight.error = err
            raise
        else:
            with self._lock:
                self.misses += 1
                self._items[key] = (value, nbytes)
                self._evict(keep=key)
        finally:  # whatever happened, the key's waiters are let go: no lock outlives its computation
            with self._lock:
                del self._flights[key]
            flight.lock.release()
        return value, True

    def peek(self, key: Hashable) -> V | None:
        """The value held for ``key`` (now the most recently used), or None; never computes."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key: Hashable, value: V) -> None:
        """Hold ``value`` for ``key`` (replacing any), then keep within the bounds."""
        with self._lock:
            self._items[key] = (value, int(self._size(value)))
            self._items.move_to_end(key)
            self._evict(keep=key)

    def _evict(self, keep: Hashable) -> None:
        total = sum(n for _, n in self._items.values())
        while len(self._items) > 1 and (
            (self.max_bytes is not None and total > self.max_bytes)
            or (self.max_items is not None and len(self._items) > self.max_items)
        ):
            oldest = next(k for k in self._items if k != keep)
            total -= self._items.pop(oldest)[1]

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(n for _, n in self._items.values())

    def keys(self) -> list:
        """Keys held, least recently used first."""
        with self._lock:
            return list(self._items)

    @property
    def computing(self) -> list:
        """Keys being computed right now (empty when the cache is idle: no lock outlives its computation)."""
        with self._lock:
            return list(self._flights)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items


class PerObject(Generic[V]):
    """A value per live object (a loaded model, a tokenizer), made once by ``make(obj)`` and freed with the
    object: a loaded model's tables, rankings and caches live exactly as long as the pool keeps the model.

    ``make`` runs outside the lock (it may take a while); two threads asking at once for a new object may
    both make it, and both get the first value stored. An object that cannot be weakly referenced gets a
    fresh value each time (nothing is kept).

        >>> import types
        >>> lengths = PerObject(lambda obj: len(obj.name))
        >>> model = types.SimpleNamespace(name="tiny")
        >>> lengths(model)
        4
    """

    def __init__(self, make: Callable[[object], V]):
        self._make = make
        self._values: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, obj) -> V:
        with self._lock:
            try:
                return self._values[obj]
            except (KeyError, TypeError):  # TypeError: not weakly referenceable
                pass
        value = self._make(obj)
        with self._lock:
            try:
                return self._values.setdefault(obj, value)
            except TypeError:
                return value
