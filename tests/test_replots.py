"""Re-plots outside gradio's queue (``EXPLORER_UNQUEUED_REPLOTS``, docs/scaling.md "Capacity per replica").

A re-plot draws from the trace the server keeps: with the setting on (the default) its events are ``queue=False``
in the app's config, so the browser sends one HTTP POST for each instead of joining the queue and waiting for a
stream; with it off, every event is queued as before. Events that may run the model for long stay queued.
"""

from __future__ import annotations

import dataclasses
import json

import httpx
import numpy as np
import pytest

from explorer.core.settings import Settings, SettingsError, settings
from explorer.ui.context import AppContext
from tests.plotly_json import array

REPLOTS = {"attention", "attention_grid", "token_links", "head_statistics"}  # the Attention tab's named re-plots
TEXT = "The tiger jumped out of a tree."


def test_the_setting_is_on_unless_the_environment_turns_it_off():
    assert Settings.from_env({}).unqueued_replots is True
    assert Settings.from_env({"EXPLORER_UNQUEUED_REPLOTS": "0"}).unqueued_replots is False
    assert Settings.from_env({"EXPLORER_UNQUEUED_REPLOTS": "on"}).unqueued_replots is True
    with pytest.raises(SettingsError, match="EXPLORER_UNQUEUED_REPLOTS"):
        Settings.from_env({"EXPLORER_UNQUEUED_REPLOTS": "sometimes"})


def app_config(unqueued: bool) -> tuple[dict, dict]:
    """The built app's config (what the browser reads) and its components by id."""
    from explorer.ui.app import build_app

    demo = build_app(AppContext(settings=dataclasses.replace(settings(), unqueued_replots=unqueued)))
    config = demo.get_config_file()
    return config, {c["id"]: c for c in config["components"]}


def head_plot_events(config: dict, components: dict) -> list[dict]:
    """Events that draw the one-head figure when one of its controls changes (kind, layer, head, values)."""
    (head_plot,) = [i for i, c in components.items() if c["type"] == "plot" and c["props"].get("label") == "One head"]
    return [
        d for d in config["dependencies"] if d["outputs"] == [head_plot] and [e for _, e in d["targets"]] == ["change"]
    ]


@pytest.mark.parametrize("unqueued", [True, False])
def test_attention_replots_are_unqueued_only_with_the_setting(unqueued):
    config, components = app_config(unqueued)
    named = {d["api_name"]: d for d in config["dependencies"] if d["api_name"]}
    assert {name: named[name]["queue"] for name in REPLOTS} == {name: not unqueued for name in REPLOTS}
    controls = head_plot_events(config, components)
    assert len(controls) == 4 and all(d["queue"] is (not unqueued) for d in controls)
    assert all(d["trigger_mode"] == "always_last" for d in controls)  # a dragged slider: only the last value
    # work that may run the model for long stays in the queue, under its concurrency limits
    for name in ("analyze", "generation_attention", "strategies", "next_token"):
        assert named[name]["queue"] is True, name


@pytest.fixture(scope="module")
def ctx(tiny_dir):
    """The app on the tiny GPT-2 with re-plots unqueued, whatever this shell's environment says."""
    return AppContext(
        default_model=str(tiny_dir["gpt2"]), settings=dataclasses.replace(settings(), unqueued_replots=True)
    )


def post(client, api_name: str, *args, session_hash: str | None = None) -> httpx.Response:
    """What the browser sends for an unqueued event: one POST with the event's inputs (the state as None)."""
    fn_index = client._infer_fn_index(f"/{api_name}", None)
    data = client.endpoints[fn_index].insert_empty_state(*args)
    body = {"data": list(data), "fn_index": fn_index, "session_hash": session_hash or client.session_hash}
    return httpx.post(f"{client.src_prefixed}run/{api_name}", json=body, timeout=60)


def figure_of(answer: httpx.Response) -> dict:
    assert answer.status_code == 200, answer.text
    return json.loads(answer.json()["data"][0]["plot"])


def test_an_unqueued_replot_is_one_request_in_the_session_that_analyzed(client, tiny_dir):
    status = client.predict(str(tiny_dir["gpt2"]), TEXT, "", api_name="/analyze")
    assert "⚠️" not in status
    fig = figure_of(post(client, "attention", "self", 1, 0, "weights"))
    weights = array(fig["data"][0]["z"])
    np.testing.assert_allclose(np.nan_to_num(weights).sum(axis=1), 1.0, atol=1e-3)  # each query's weights
    assert "layer 1 · head 0" in fig["layout"]["title"]["text"].replace("<br>", " · ")
    # gradio_client joins the queue with the same event: API users get the same figure
    through_client = json.loads(client.predict("self", 1, 0, "weights", api_name="/attention")["plot"])
    assert np.array_equal(np.nan_to_num(array(through_client["data"][0]["z"])), np.nan_to_num(weights))


def test_an_unqueued_replot_still_answers_bad_input_and_no_analysis_with_a_sentence(client, tiny_dir):
    client.predict(str(tiny_dir["gpt2"]), TEXT, "", api_name="/analyze")
    refused = post(client, "attention", "self", 999, 0, "weights")
    assert refused.status_code == 500 and "Layer" in refused.json()["error"]  # the input check's sentence
    fresh = figure_of(post(client, "attention", "self", 0, 0, "weights", session_hash="a-session-with-no-analysis"))
    annotations = [a["text"] for a in fresh["layout"].get("annotations", [])]
    assert not fresh["data"] and any("Analyze a text" in a for a in annotations)
