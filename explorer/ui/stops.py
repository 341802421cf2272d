"""Stop buttons for long work: one flag per session, set by its Stop button and read by its running job."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import gradio as gr


class StopRequests:
    """Per-session stop flags: the Stop button sets its session's flag; the running work reads it."""

    def __init__(self):
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @contextmanager
    def running(self, request: gr.Request | None):
        """Yield a ``should_stop()`` check for one run of this session; the flag goes when the run ends."""
        flag, session = threading.Event(), getattr(request, "session_hash", None)
        if session:
            with self._lock:
                self._flags[session] = flag
        try:
            yield flag.is_set
        finally:
            if session:
                with self._lock:
                    if self._flags.get(session) is flag:
                        del self._flags[session]

    def stop(self, request: gr.Request | None) -> None:
        session = getattr(request, "session_hash", None)
        with self._lock:
            flag = self._flags.get(session) if session else None
        if flag is not None:
            flag.set()
