"""App tier: launch the Gradio app on loopback and call its endpoints with gradio_client."""

import base64
import json

import numpy as np
import pytest
from gradio_client import Client

from explorer.ui.app import build_app
from explorer.ui.context import AppContext


@pytest.fixture(scope="module")
def client(tiny_dir):
    demo = build_app(AppContext(default_model=str(tiny_dir["gpt2"])))
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def plot_data(result) -> list[dict]:
    return json.loads(result["plot"])["data"]


def array(value) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array {"dtype", "bdata", "shape"}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value["shape"]).split(",")])
    return np.asarray(value, dtype=float)


def test_the_app_exposes_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/analyze", "/tokens", "/attention"} <= set(endpoints)


@pytest.mark.parametrize("name", ["gpt2", "bert", "t5"])
def test_analyze_then_tokens_and_attention_for_each_family(client, tiny_dir, name):
    status = client.predict(str(tiny_dir[name]), "The tiger jumped out of a tree.", "", api_name="/analyze")
    assert "⚠️" not in status and "layers" in status
    _, table = client.predict(api_name="/tokens")
    shown = [row[1] for row in table["data"]]
    assert any("tiger" in piece or "ti" in piece for piece in shown)
    kind = "cross" if name == "t5" else "self"
    weights = array(plot_data(client.predict(kind, api_name="/attention"))[0]["z"])
    assert weights.ndim == 2 and min(weights.shape) > 1
    rows = np.nan_to_num(weights).sum(axis=1)  # masked cells are NaN
    np.testing.assert_allclose(rows, 1.0, atol=1e-3)


@pytest.mark.parametrize(
    "model, text, expected",
    [
        ("no such model!", "hello", "Unknown model"),
        ("someone/not-cached", "hello", "no network"),
        (None, "", "empty"),
        (None, "   \n ", "empty"),
    ],
)
def test_bad_input_gets_one_clear_sentence(client, tiny_dir, model, text, expected):
    status = client.predict(model or str(tiny_dir["gpt2"]), text, "", api_name="/analyze")
    assert status.startswith("⚠️") and expected in status
    assert "Traceback" not in status


def test_odd_unicode_and_binary_looking_text_are_analysed(client, tiny_dir):
    for text in ["😀👩‍👩‍👧 e\u0301 \x00\x01\x7f \u200b", "".join(chr(i) for i in range(1, 300))]:
        status = client.predict(str(tiny_dir["gpt2"]), text, "", api_name="/analyze")
        assert "⚠️" not in status, status
