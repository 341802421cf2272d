"""Robustness: arbitrary text and out-of-range settings sent to every named endpoint through gradio_client.

Each call returns a result or one clear sentence (ours, or gradio's own check of a slider's range or a
radio's choices), never a traceback or an unexplained error; the server stays up and the next ordinary
request still works. Then sessions switching models at once: each sees only its own model and text.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from functools import cache

import httpx
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


HOSTILE = [float("nan"), float("inf"), float("-inf"), None, "abc", [1, 2], True, "ok \ud800"]


class RawSession:
    """One browser session spoken to as a browser does (queue/join, then the event stream), in raw JSON:
    gradio_client refuses to send NaN, infinities and lone surrogates, a hostile client does not."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.session = uuid.uuid4().hex[:11]
        config = httpx.get(f"{self.url}/config", timeout=30).json()
        kinds = {c["id"]: c.get("type") for c in config["components"]}
        self.events = {
            d["api_name"]: (d["id"], [kinds.get(i) == "state" for i in d["inputs"]])
            for d in config["dependencies"]
            if d.get("api_name")
        }

    def call(self, endpoint: str, args: list) -> tuple[bool, object]:
        """(success, output data or error message) of one event."""
        fn, stateful = self.events[endpoint.lstrip("/")]
        values = iter(args)
        data = [None if state else next(values) for state in stateful]  # the server holds a state's value
        body = {"data": data, "fn_index": fn, "session_hash": self.session, "event_data": None, "trigger_id": None}
        raw = json.dumps(body, allow_nan=True)  # ensure_ascii: a lone surrogate travels as \ud800
        joined = httpx.post(f"{self.url}/gradio_api/queue/join", content=raw, timeout=60,
                            headers={"content-type": "application/json"})  # fmt: skip
        if joined.status_code != 200:
            return False, f"HTTP {joined.status_code}: {joined.text[:200]}"
        event = joined.json()["event_id"]
        with httpx.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": self.session},
                          timeout=600) as stream:  # fmt: skip
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") == event and message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    return bool(message.get("success")), output.get("data") if message.get("success") else output.get(
                        "error"
                    )
        return False, "the stream ended without an answer"


def cheapest(param: dict):
    """A value that keeps the endpoint fast: sliders at their minimum, everything else at its default."""
    low, _ = _range(param)
    return low if low is not None else param.get("parameter_default")


def answer_problem(session: RawSession, endpoint: str, args: list) -> str | None:
    """What is wrong with the endpoint's answer to ``args`` (None: a result, or one clear sentence)."""
    ok, answer = session.call(endpoint, args)
    shown = flatten(answer)
    if not ok and (not answer or not isinstance(answer, str)):
        return f"refused without a sentence: {shown:.200}"
    if any(u in shown for u in UNCLEAR):
        return f"unclear answer: {shown[:300]}"
    return None


def test_every_parameter_of_every_endpoint_answers_hostile_values_with_a_sentence(app_url, tiny_dir):
    """NaN, ±inf, None and wrong types in each parameter in turn (the others cheap and valid)."""
    session = RawSession(app_url)
    analyze = [str(tiny_dir["gpt2"]), ORDINARY, ""]
    failures = []
    session.call("/analyze", analyze)  # the session's selection, so handlers reach their own checks
    for endpoint, info in sorted(api().items()):
        params = info["parameters"]
        base = [cheapest(p) for p in params]
        for i, param in enumerate(params):
            for value in HOSTILE:
                if endpoint == "/analyze":  # the only endpoint that changes the selection: restore it
                    session.call("/analyze", analyze)
                found = answer_problem(session, endpoint, [*base[:i], value, *base[i + 1 :]])
                if found:
                    failures.append(f"{endpoint} {param['label']!r:.40} = {value!r}: {found}")
    ok, status = session.call("/analyze", analyze)
    assert ok and "layers" in status[1], status
    assert not failures, f"{len(failures)} unclear answers:\n" + "\n".join(failures)


def test_a_refused_input_writes_one_log_line_and_no_traceback(client, tiny_dir, caplog, capfd):
    """Gradio's own refusal of a value outside a dropdown's choices, and ours of NaN: one line each."""
    client.predict(str(tiny_dir["gpt2"]), ORDINARY, "", api_name="/analyze")
    capfd.readouterr()
    session = RawSession(client.src)
    with caplog.at_level("WARNING", logger="explorer.inputs"):
        ok, answer = session.call("/head_statistics", ["self", "no such statistic"])
        assert not ok and answer == "That value is not one of the choices offered; pick one from the list."
        ok, answer = session.call("/neighbours", ["king", float("nan")])
        assert not ok and answer.startswith("“How many” takes a number from 1 to 50")
    refusals = [r.getMessage() for r in caplog.records if r.name == "explorer.inputs"]
    assert len(refusals) == 2 and "head_statistics" in refusals[0] and "neighbours" in refusals[1], refusals
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, (out + err)[-2000:]
