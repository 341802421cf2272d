"""Long work stops when its session leaves, as on its Stop button: every tab's flags, a UMAP at its next epoch,
and a shared computation another session waits for is taken over, not lost."""

import threading
import time
from types import SimpleNamespace

import pytest

from explorer.core.cache import BoundedCache
from explorer.core.errors import Stopped
from explorer.core.settings import overridden
from explorer.ui.context import AppContext, Selection
from explorer.ui.stops import StopRequests, stop_session, stopping
from explorer.ui.tabs import attribution, embeddings, inference, interventions, lora, retrieval, training


def session(name: str):
    return SimpleNamespace(session_hash=name)


def test_a_session_that_leaves_stops_its_work_in_every_tab_and_no_one_elses():
    every = [attribution.STOPS, embeddings.STOPS, inference.STOPS, interventions.STOPS, lora.FULL_STOPS,
             retrieval.STOPS, training.STOPS]  # fmt: skip
    mine, theirs = [], []
    with StopRequests().running(session("b")) as other_kind:  # one made later counts too
        for stops in every:
            with stops.running(session("a")) as a, stops.running(session("b")) as b:
                mine.append(a)
                theirs.append(b)
                stop_session(session("a"))
                assert a() and not b()
        stop_session(None)  # a request without a session stops nothing
        assert not other_kind()
    assert all(flag() for flag in mine) and not any(flag() for flag in theirs)


def test_the_app_stops_a_leaving_sessions_work_on_unload(tiny_dir):
    from explorer.ui.app import build_app

    demo = build_app(AppContext(default_model=str(tiny_dir["gpt2"])))
    unloads = [fn for fn in demo.fns.values() if any(event == "unload" for _, event in fn.targets)]
    assert stop_session in [fn.fn for fn in unloads]


@pytest.mark.parametrize("tab", [attribution, inference, interventions, retrieval, training])
def test_a_stop_button_sets_the_flag_of_the_session_that_pressed_it(client, tab):
    """The button calls ``STOPS.stop`` itself: gradio must hand it the request (found by its type hint)."""
    name = f"/{tab.__name__.rsplit('.', 1)[-1]}_stop"
    with tab.STOPS.running(session(client.session_hash)) as mine, tab.STOPS.running(session("other")) as theirs:
        client.predict(api_name=name)
        assert mine() and not theirs()


def test_a_progress_report_is_where_stopped_work_ends():
    heard, stop = [], threading.Event()
    report = stopping(lambda f, desc: heard.append((f, desc)), stop.is_set)
    report(0.1, "one")
    stop.set()
    with pytest.raises(Stopped):
        report(0.2, "two")
    assert heard == [(0.1, "one")]


def test_a_shared_computation_whose_caller_stopped_is_computed_by_the_one_waiting():
    cache, started, calls = BoundedCache(None), threading.Event(), []

    def stopped_half_way():
        calls.append("first")
        started.set()
        time.sleep(0.2)
        raise Stopped("the first session left")

    def finished():
        calls.append("second")
        return 42

    first = threading.Thread(target=lambda: pytest.raises(Stopped, cache.lookup, "umap", stopped_half_way))
    first.start()
    started.wait(5)
    assert cache.lookup("umap", finished) == (42, True)  # waited, then computed it itself
    first.join(5)
    assert calls == ["first", "second"]


def test_the_token_map_stops_when_its_session_leaves(tmp_path):
    app = AppContext()
    selection = Selection("tiny-gpt2", "The king and the queen.")
    request, reports = session("leaving"), []

    def tracker(fraction, desc=None):  # gradio's progress tracker; the tab closes as the first report arrives
        reports.append(desc)
        stop_session(request)

    with overridden(cache_dir=tmp_path / "cache", warmup=False):
        embeddings.projection_cache.cache_clear()
        try:
            note, figure = embeddings.draw_map(
                app, selection, "umap", 2, "frequent", 300, "", "", True, request, tracker
            )
        finally:
            embeddings.projection_cache.cache_clear()
    assert note.startswith("⚠️ Stopped before it finished") and len(reports) == 1
    assert "leaving" not in embeddings.STOPS._flags  # the flag went with the run
