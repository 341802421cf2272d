"""Stop buttons for long work: one flag per session, set by its Stop button and read by its running job.

A session that leaves (its browser tab closed, its connection lost) stops all its work the same way:
``stop_session`` sets its flag in every ``StopRequests``; the app calls it on gradio's ``unload``.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

import gradio as gr

from explorer.core.errors import Stopped


class StopRequests:
    """Per-session stop flags: the Stop button sets its session's flag; the running work reads it."""

    def __init__(self):
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        _ALL.add(self)

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
        """Set the requesting session's flag. A Stop button wires this method itself: gradio hands it the request,
        which it finds by the ``gr.Request`` type hint (tests/test_stops.py checks it through the app)."""
        session = getattr(request, "session_hash", None)
        with self._lock:
            flag = self._flags.get(session) if session else None
        if flag is not None:
            flag.set()


def stopping(progress, should_stop):
    """``progress(fraction, message)`` for analysis code that reports but takes no stop check: every report
    is a point where the work ends with ``Stopped`` once ``should_stop()`` (gradio's tracker behind it)."""

    def report(fraction, message):
        if should_stop():
            raise Stopped("Stopped before it finished.")
        progress(fraction, desc=message)

    return report


_ALL: weakref.WeakSet[StopRequests] = weakref.WeakSet()


def stop_session(request: gr.Request | None) -> None:
    """The session left: every long job it runs stops at its next check, as if its Stop button was pressed."""
    for stops in list(_ALL):
        stops.stop(request)
