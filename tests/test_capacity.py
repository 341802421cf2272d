"""Capacity settings: each model run's torch threads, and how much long model work runs at once.

``EXPLORER_TORCH_THREADS`` and ``EXPLORER_MODEL_RUNS`` are what ``bench/load.py --real --compare`` switches
(docs/scaling.md, "Capacity per replica"): a server runs a class's requests at once, each model run with its own
team of intra-op threads, and the long ones (decoding comparisons, attribution...) share one queue.
"""

import dataclasses
import threading

import pytest
import torch

from explorer.core.loading import load
from explorer.core.run import run, use_torch_threads
from explorer.core.settings import Settings, SettingsError, settings
from explorer.ui.context import AppContext


def test_the_settings_default_to_torchs_threads_and_two_long_runs():
    defaults = Settings.from_env({})
    assert defaults.torch_threads == 0 and defaults.model_runs == 2
    got = Settings.from_env({"EXPLORER_TORCH_THREADS": "1", "EXPLORER_MODEL_RUNS": "3"})
    assert got.torch_threads == 1 and got.model_runs == 3


@pytest.mark.parametrize(
    "name, raw", [("EXPLORER_MODEL_RUNS", "0"), ("EXPLORER_TORCH_THREADS", "-1"), ("EXPLORER_TORCH_THREADS", "2.5")]
)
def test_a_bad_count_is_refused(name, raw):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: raw})


@pytest.fixture
def restored_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_in_a_new_thread(lm) -> dict:
    """What a handler in a fresh worker thread sees: its trace, and the torch threads it ran with."""
    seen = {}

    def handler():
        seen["trace"] = run(lm, "The tiger jumped.")
        seen["threads"] = torch.get_num_threads()

    worker = threading.Thread(target=handler)
    worker.start()
    worker.join()
    return seen


def test_a_model_run_in_a_new_worker_thread_uses_the_threads_set_at_start_up(restored_threads):
    """Gradio runs each handler in a worker thread started after launch: it must take the number set before."""
    lm = load("tiny-gpt2")
    for threads in (1, 2):
        assert use_torch_threads(threads) == threads
        seen = run_in_a_new_thread(lm)
        assert seen["threads"] == threads and seen["trace"].logits is not None


def test_zero_leaves_torchs_own_number(restored_threads):
    torch.set_num_threads(2)
    assert use_torch_threads(0) == 2


def test_every_long_model_event_shares_one_queue_limited_by_the_setting():
    from explorer.ui.app import build_app

    ctx = AppContext(settings=dataclasses.replace(settings(), model_runs=3))
    demo = build_app(ctx)
    shared = [f for f in demo.fns.values() if f.concurrency_id == "model_run"]
    names = {f.api_name for f in shared}
    assert {"strategies", "write", "attribution", "interventions_ablate", "retrieval_search"} <= names
    assert {f.concurrency_limit for f in shared} == {3}
    replot = next(f for f in demo.fns.values() if f.api_name == "attention")
    assert replot.concurrency_id != "model_run"  # a re-plot never waits behind long model work
