"""How a re-plot event is wired: the event arguments of views drawn again from a trace the server already keeps.

A re-plot (another head, layer or attention kind, another view of the same analysis) costs its handler ~13 ms
of CPU at real size; through gradio's queue it also costs a request to join the queue, a place in it and an
answer streamed back, each step waiting for the CPU and the GIL with every other session's events. With
``EXPLORER_UNQUEUED_REPLOTS`` on (the default) a re-plot is one HTTP request (``queue=False``): no queue, no
progress or ETA (the figure is back before one would show), no concurrency limit (anyio's 40 worker threads
bound it), errors still answered as the guarded handlers and the input check answer them.
docs/scaling.md, "Re-plots outside gradio's queue", has the before and after.

Only handlers that draw from a kept trace belong here: one that may run the model for long (generation,
decoding, attribution) stays queued, where the concurrency limits hold it.
"""

from __future__ import annotations

from explorer.core.settings import Settings


def replot(settings: Settings) -> dict:
    """Keyword arguments for a re-plot event's listener: ``queue=False`` when the setting is on, else none."""
    return {"queue": False} if settings.unqueued_replots else {}
