"""Robustness: arbitrary text and out-of-range settings sent to every named endpoint through gradio_client.

Each call returns a result or one clear sentence (ours, or gradio's own check of a slider's range or a
radio's choices), never a traceback or an unexplained error; the server stays up and the next ordinary
request still works. Then sessions switching models at once: each sees only its own model and text.
"""

from __future__ import annotations

import json
import random
import threading
from functools import cache

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ORDINARY = "To be, or not to be, that is the question."
UNCLEAR = ("upstream Gradio app has raised an exception", "Traceback", "Something went wrong")
IN_RANGE_SHARE = 0.05  # valid slider values come from the low end: the top of a range is slow, not fragile
FUZZ = settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)


@cache
def api() -> dict:
    """The app's named endpoints and their parameters (from the app itself, no server needed)."""
    from explorer.ui.app import build_app

    return build_app().get_api_info()["named_endpoints"]


texts = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80),  # JSON cannot carry lone surrogates
    st.sampled_from(["", "   ", "\x00\x01", "[MASK]", "<extra_id_0>", "a" * 25_000, "😀" * 300, "-1", "1e9"]),
)


def numbers(param: dict) -> st.SearchStrategy:
    """Slider values: low in the range, at its edges, and outside it; numbers: anything finite."""
    low, high = _range(param)
    if low is None:
        return st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False))
    top = low + (high - low) * IN_RANGE_SHARE
    outside = st.sampled_from([low - 1, high + 1, -1e12, 1e12])
    return st.one_of(st.floats(low, top), st.just(low), st.integers(int(low), int(top)), outside)


def _range(param: dict) -> tuple[float | None, float | None]:
    words = param["type"].get("description", "").split()
    if param["component"] != "Slider" or "between" not in words:
        return None, None
    i = words.index("between")
    return float(words[i + 1]), float(words[i + 3])


def value_for(param: dict, models: list[str]) -> st.SearchStrategy:
    component = param["component"]
    choices = param["type"].get("enum") or []
    if param["label"] == "Model":
        return st.one_of(st.sampled_from(models), texts)
    if component == "Textbox":
        return texts
    if component in ("Slider", "Number"):
        return numbers(param)
    if component == "Checkbox":
        return st.booleans()
    if component in ("Radio", "Dropdown"):
        return (
            st.one_of(st.sampled_from(choices), texts, st.integers(-5, 100))
            if choices
            else st.one_of(texts, st.integers(-5, 100), st.none())
        )
    if component == "Checkboxgroup":
        items = param["type"].get("items", {}).get("enum") or []
        return st.lists(st.one_of(st.sampled_from(items), st.integers(-5, 100)) if items else st.integers(-5, 100))
    return st.none()  # a file upload: nothing uploaded


def flatten(result) -> str:
    return json.dumps(result, ensure_ascii=False, default=str)


def call(client: Client, endpoint: str, args: list):
    """The result, or gradio's message for a value it refused; an unexplained error fails the test."""
    try:
        result = client.predict(*args, api_name=endpoint)
    except AppError as err:
        message = str(err)
        assert message and not any(u in message for u in UNCLEAR), f"{endpoint}{args!r:.300}: {message}"
        return None
    shown = flatten(result)
    assert not any(u in shown for u in UNCLEAR), f"{endpoint}{args!r:.300}: {shown[:500]}"
    return result


def ordinary_request_works(client: Client, model: str) -> None:
    status = client.predict(model, ORDINARY, "", api_name="/analyze")
    assert "⚠️" not in status and "layers" in status, status


@pytest.mark.parametrize("endpoint", sorted(api()))
def test_every_endpoint_answers_arbitrary_input_and_the_server_stays_up(client, tiny_dir, endpoint):
    models = [str(tiny_dir[name]) for name in ("gpt2", "bert", "t5")] + ["tiny-gpt2", "no such model"]
    params = api()[endpoint]["parameters"]

    @FUZZ
    @given(st.tuples(*[value_for(p, models) for p in params]) if params else st.just(()))
    def check(args):
        call(client, endpoint, list(args))
        ordinary_request_works(client, models[0])

    ordinary_request_works(client, models[0])
    check()


def test_sessions_switching_models_at_once_see_only_their_own(client, tiny_dir, tiny):
    """Six users, each analysing its own text (its own length) with a model picked at random, all at once."""
    names = ["gpt2", "bert", "t5"]
    failures: list[str] = []

    def user(k: int) -> None:
        session = Client(client.src, verbose=False)  # a user of its own: its own gradio session
        rng = random.Random(k)
        for round_ in range(5):
            name = rng.choice(names)
            text = "The" + " tiger" * (k + round_ + 1) + " ran."
            expected = len(tiny[name].tokenizer(text)["input_ids"])
            status = session.predict(str(tiny_dir[name]), text, "", api_name="/analyze")
            figure = session.predict("self", 0, 0, "weights", api_name="/attention")
            title = json.loads(figure["plot"])["layout"]["title"]["text"]
            stream = "source" if name == "t5" else "input"  # an encoder-decoder's text is its source
            if (
                "⚠️" in status
                or str(tiny_dir[name]) not in title.replace("<br>", "")
                or f" {expected} {stream} tokens" not in status
            ):
                failures.append(f"user {k} round {round_} ({name}, {expected} tokens): {status} | {title}")

    threads = [threading.Thread(target=user, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a user never got an answer"
    assert not failures, "\n".join(failures)
