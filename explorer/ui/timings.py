"""The app as ``app.py`` serves it, with each event's timings written down: what ``bench/load.py`` starts.

    python -m explorer.ui.timings OUT.jsonl

One JSON line per finished event, queued or not (``queue=False``: a plain HTTP request): its endpoint and concurrency group, its wait in gradio's queue
(``queue``), the whole event (``event``: reading the inputs, the handler, writing the outputs), the handler's
wall time and the CPU time of the thread that ran it (``handler``, ``cpu``; functions that are not generators),
the torch threads it ran with, the run cache's hits and misses so far, the session, and the wall-clock times it
joined the queue and finished (``joined``, ``done``), so a client can tell its own round trip apart.
An unqueued event has no wait in the queue (``queue`` 0, group ``unqueued``); its ``joined`` is the time gradio's
route began it. Only for measuring: it patches gradio's queue and its call of an event in this process.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import sys
import threading
import time
from pathlib import Path

import explorer  # noqa: F401  (OpenMP's passive waiting before torch loads)
from explorer.core.settings import settings


def serve(out_path: Path) -> None:
    settings()  # as app.py: a bad EXPLORER_* value stops here
    import gradio.queueing
    import gradio.route_utils

    from explorer.core.run import use_torch_threads
    from explorer.ui.app import build_app, launch
    from explorer.ui.context import AppContext

    out, lock = open(out_path, "a", buffering=1), threading.Lock()
    current = contextvars.ContextVar("event_row")  # the event's row; gradio's worker threads copy the context
    ctx = AppContext()
    demo = build_app(ctx)

    def timed(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                row = current.get(None)
                if row is not None:
                    threads = use_torch_threads(0)  # 0 changes nothing: the number this thread runs with
                    row.update(handler=time.perf_counter() - wall, cpu=time.thread_time() - cpu, torch_threads=threads)

        return wrapper

    for block_fn in demo.fns.values():
        fn = block_fn.fn
        if fn is not None and not inspect.isgeneratorfunction(fn) and not inspect.iscoroutinefunction(fn):
            block_fn.fn = timed(fn)

    process_events = gradio.queueing.Queue.process_events

    async def process_events_timed(self, events, batch, begin_time, fn):
        waited = time.monotonic() - events[0].enqueue_time
        row = {"endpoint": f"/{fn.api_name}", "queue": waited, "group": str(fn.concurrency_id),
               "session": events[0].session_hash, "joined": time.time() - waited}  # fmt: skip
        current.set(row)
        t0 = time.perf_counter()
        try:
            await process_events(self, events, batch, begin_time, fn)
        finally:
            row.update(event=time.perf_counter() - t0, misses=ctx.cache.misses, hits=ctx.cache.hits, done=time.time())
            with lock:
                out.write(json.dumps(row) + "\n")

    gradio.queueing.Queue.process_events = process_events_timed
    call_process_api = gradio.route_utils.call_process_api

    async def call_process_api_timed(*args, **kwargs):
        """An unqueued event (``queue=False``: gradio's POST route calls this with no event id; the queue, with one)."""
        body, fn = kwargs["body"], kwargs["fn"]
        if body.event_id is not None:  # the queue's call, timed above
            return await call_process_api(*args, **kwargs)
        row = {"endpoint": f"/{fn.api_name}", "queue": 0.0, "group": "unqueued", "session": body.session_hash,
               "joined": time.time()}  # fmt: skip
        current.set(row)
        t0 = time.perf_counter()
        try:
            return await call_process_api(*args, **kwargs)
        finally:
            row.update(event=time.perf_counter() - t0, misses=ctx.cache.misses, hits=ctx.cache.hits, done=time.time())
            with lock:
                out.write(json.dumps(row) + "\n")

    gradio.route_utils.call_process_api = call_process_api_timed
    launch(demo)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
