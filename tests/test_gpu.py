"""GPU readiness on a CPU machine: ZeroGPU's decorator is a no-op here and keeps what gradio inspects when it
applies; analysis hands tensors to numpy through ``to_host``; a half-precision model (as a GPU loads it) runs."""

import copy
import dataclasses
import functools
import inspect
import sys
import types

import gradio as gr
import numpy as np
import pytest
import torch
from gradio.helpers import special_args

from explorer.core.memory import to_host
from explorer.core.run import run
from explorer.core.scores import attention_scores
from explorer.ui.context import bind
from explorer.ui.gpu import gpu_decorator, on_gpu, zero_gpu_space
from explorer.ui.tabs.attribution import attribute_view
from explorer.ui.tabs.kv_cache import experiment
from explorer.ui.tabs.lora import train


def test_outside_zero_gpu_the_handler_is_returned_itself(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zero_gpu_space() and gpu_decorator() is None
    assert on_gpu(attribute_view) is attribute_view
    assert zero_gpu_space({"SPACES_ZERO_GPU": "true"}) and not zero_gpu_space({"SPACES_ZERO_GPU": "0"})


def test_zero_gpu_without_the_spaces_package_changes_nothing(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setitem(sys.modules, "spaces", None)  # ``import spaces`` raises ImportError
    assert gpu_decorator() is None and on_gpu(experiment) is experiment


@pytest.fixture
def zero_gpu(monkeypatch):
    """A ZeroGPU Space as this process sees it: the platform's variable, and a ``spaces`` module whose ``GPU``
    wraps the way the real one does (``functools.wraps`` around the task, calls recorded)."""
    calls = []

    def GPU(task, duration=None):  # noqa: N802 (the package's own name)
        @functools.wraps(task)
        def gradio_handler(*args, **kwargs):
            calls.append((task.__name__, duration))
            return task(*args, **kwargs)

        return gradio_handler

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    return calls


@pytest.mark.parametrize("handler", [attribute_view, experiment, train], ids=lambda h: h.__name__)
def test_on_zero_gpu_gradio_still_sees_the_request_and_the_progress(zero_gpu, handler):
    wrapped = on_gpu(bind(handler, "ctx"), duration=90)
    assert wrapped is not handler
    params = list(inspect.signature(handler).parameters)[1:]
    assert list(inspect.signature(wrapped).parameters) == params  # the context hidden, nothing else lost
    inputs = ["input"] * sum(1 for p in params if p not in ("request", "progress"))
    request = gr.Request()
    filled, progress_at, _, _ = special_args(wrapped, list(inputs), request=request)
    assert progress_at == params.index("progress") and isinstance(filled[progress_at], gr.Progress)
    if "request" in params:
        assert filled[params.index("request")] is request


def test_the_decorated_handler_runs_through_the_gpu_wrapper(zero_gpu):
    def handler(ctx, text):
        return f"{ctx}:{text}"

    assert on_gpu(bind(handler, "ctx"), duration=30)("a") == "ctx:a"
    assert zero_gpu == [("handler", 30)]


def test_to_host_copies_to_numpy_and_widens_half_precision():
    half = torch.tensor([0.5, 1.25], dtype=torch.bfloat16)
    assert to_host(half).dtype == np.float32 and to_host(half).tolist() == [0.5, 1.25]
    assert to_host(torch.arange(3)).dtype == np.int64
    assert to_host(torch.ones(2, requires_grad=True)).dtype == np.float32


def test_a_half_precision_model_gives_float32_traces_close_to_the_full_one(tiny):
    """A GPU loads models in bfloat16 (``load_dtype``); on CPU the same weights in bfloat16 show that no step of
    the run or of the scores assumes float32 weights, and that ``LoadedModel.device`` is where inputs go."""
    lm = tiny["gpt2"]
    half = dataclasses.replace(lm, model=copy.deepcopy(lm.model).to(torch.bfloat16))
    text = "The tiger jumped out of a tree."
    full, halved = run(lm, text), run(half, text)
    scores = attention_scores(half, halved)
    assert half.device == next(half.model.parameters()).device and lm.model.dtype == torch.float32
    assert halved.attentions["self"].dtype == np.float32 and halved.logits.dtype == np.float32
    assert scores["self"].dtype == np.float32 and scores["self"].shape == halved.attentions["self"].shape
    assert np.abs(halved.attentions["self"] - full.attentions["self"]).max() < 0.05
    assert np.abs(halved.logits - full.logits).max() < 0.1 * np.abs(full.logits).max()
