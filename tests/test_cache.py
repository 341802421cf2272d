"""The one cache: keyed, byte-bounded, single-flight; no lock outlives its computation; failures are not kept."""

import threading
import time

import numpy as np
import pytest

from explorer.analysis.embeddings.projections import ProjectionCache
from explorer.core.cache import BoundedCache
from explorer.core.pool import ModelPool
from explorer.core.run import RunCache


def slow(value, seconds=0.3, calls=None):
    def compute():
        if calls is not None:
            calls.append(threading.get_ident())
        time.sleep(seconds)
        return value

    return compute


def in_threads(n, fn):
    """Run ``fn(i)`` in ``n`` threads started together; (results, errors) by thread index."""
    results, errors = [None] * n, [None] * n
    start = threading.Barrier(n)

    def work(i):
        start.wait()
        try:
            results[i] = fn(i)
        except Exception as err:
            errors[i] = err

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return results, errors


def test_threads_asking_for_one_key_compute_it_once():
    cache = BoundedCache(max_bytes=100, size=lambda v: 1)
    calls = []
    results, errors = in_threads(8, lambda i: cache.get("k", slow(object(), calls=calls)))
    assert errors == [None] * 8
    assert len(calls) == 1  # one computation
    assert all(r is results[0] for r in results)  # and every thread got its value
    assert (cache.misses, cache.hits) == (1, 7)
    assert cache.computing == []  # the key's lock was dropped once the value was stored


def test_different_keys_compute_at_the_same_time():
    cache = BoundedCache(max_bytes=100, size=lambda v: 1)
    began = time.perf_counter()
    results, _ = in_threads(4, lambda i: cache.get(i, slow(i, seconds=0.5)))
    assert results == [0, 1, 2, 3]
    assert time.perf_counter() - began < 1.5  # not one after another (4 x 0.5 s)


def test_the_byte_bound_holds_and_the_least_recently_used_go_first():
    cache = BoundedCache(max_bytes=30, size=len)
    for key in "abc":
        cache.get(key, lambda k=key: k * 10)  # 10 bytes each: exactly full
    assert cache.nbytes == 30
    cache.get("a", lambda: pytest.fail("a is held"))  # a is now the most recently used
    cache.get("d", lambda: "d" * 10)
    assert cache.keys() == ["c", "a", "d"] and cache.nbytes == 30  # b, least recently used, went
    cache.get("e", lambda: "e" * 25)
    assert cache.keys() == ["e"] and cache.nbytes <= 30
    cache.get("huge", lambda: "x" * 100)  # one value over the bound is still kept (the one just asked for)
    assert cache.keys() == ["huge"]


def test_an_item_bound_can_replace_the_byte_bound():
    cache = BoundedCache(None, max_items=2)
    for key in range(5):
        cache.get(key, lambda k=key: k)
    assert cache.keys() == [3, 4]


def test_an_exception_is_raised_to_every_waiter_and_not_cached():
    cache = BoundedCache(max_bytes=100, size=lambda v: 1)
    calls = []

    def failing():
        calls.append(1)
        time.sleep(0.3)
        raise ValueError("no such model")

    _, errors = in_threads(5, lambda i: cache.get("k", failing))
    assert len(calls) == 1  # the waiters did not each try again
    assert all(isinstance(e, ValueError) and str(e) == "no such model" for e in errors)
    assert "k" not in cache and cache.computing == []  # nothing kept, no lock left behind
    assert cache.get("k", lambda: 42) == 42  # the next request tries again
    assert len(calls) == 1


def test_a_value_that_cannot_be_sized_is_an_error_and_leaves_no_lock_behind():
    """Sizing ran under the cache's lock after the computation, outside its clean-up: a failure there left the
    key's lock held, and every later request for that key waited for ever."""
    sizes = iter([TypeError("cannot size this value")])

    def size(value):
        error = next(sizes, None)
        if error:
            raise error
        return 1

    cache = BoundedCache(max_bytes=10, size=size)
    with pytest.raises(TypeError, match="cannot size"):
        cache.get("k", lambda: 1)
    assert cache.computing == [] and "k" not in cache
    results, errors = in_threads(1, lambda i: cache.get("k", lambda: 2))  # joins with a timeout: a hang fails
    assert results == [2] and errors == [None]


def test_locks_do_not_leak_over_many_keys():
    cache = BoundedCache(max_bytes=10, size=lambda v: 1)
    for key in range(200):
        cache.get(key, lambda k=key: k)
        with pytest.raises(KeyError):
            cache.get(("bad", key), lambda: {}["missing"])
    assert cache.computing == [] and len(cache) == 10


def test_the_model_pool_loads_a_model_once_for_many_users(tiny_dir):
    pool = ModelPool(max_bytes=2**30)
    loaded, _ = in_threads(4, lambda i: pool.get(str(tiny_dir["bert"])))
    assert all(lm is loaded[0] for lm in loaded)
    assert pool._models.misses == 1 and pool._models.computing == []


def test_the_run_cache_runs_once_for_many_users(tiny):
    cache = RunCache()
    traces, _ = in_threads(4, lambda i: cache.get(tiny["gpt2"], "one two three four"))
    assert all(t is traces[0] for t in traces)
    assert (cache.misses, cache.hits) == (1, 3)


def test_the_projection_memory_tier_is_byte_bounded(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    first = ProjectionCache(tmp_path).get(x, np.arange(100), "pca", 2)
    cache = ProjectionCache(tmp_path / "other", max_bytes=int(first.nbytes * 2.5))
    for start in range(4):
        cache.get(x, np.arange(start, start + 100), "pca", 2)
    assert len(cache._memory) == 2 and cache._memory.nbytes <= cache._memory.max_bytes
    assert cache.computed == 4


def test_a_value_per_object_is_made_once_and_freed_with_its_object():
    """A loaded model's tables and caches (``PerObject``) live exactly as long as the model: kept while the pool
    holds it, gone when it is dropped, so a dropped model's memory is never held by them."""
    import gc
    import weakref

    from explorer.core.cache import PerObject
    from tests.tiny_models import build

    made = []
    per_model = PerObject(lambda model: made.append(1) or np.zeros(1000))
    model, _ = build("gpt2")
    first = per_model(model)
    assert per_model(model) is first and len(made) == 1  # made once
    other, _ = build("gpt2")
    assert per_model(other) is not first and len(made) == 2  # per object
    value = weakref.ref(first)
    del model, first
    gc.collect()
    assert value() is None  # freed with its model
    assert per_model([1]).shape == (1000,) and len(made) == 3  # a list cannot be kept weakly: made each time
