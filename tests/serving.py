"""Stopping an app the tests served."""


def close_app(demo) -> None:
    """``demo.close()``, finished by hand where gradio's close races its own server: it sets the server loop's
    asyncio.Event from this thread while that loop walks the event's waiters, and raised "deque mutated during
    iteration" once in a test module's teardown, before it had closed the server (the port stayed taken)."""
    try:
        demo.close()
    except RuntimeError:
        if demo.server:
            demo.server.close()
