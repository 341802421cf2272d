"""Hugging Face ZeroGPU: the heavy handlers borrow a GPU for each call; everywhere else nothing changes.

On a ZeroGPU Space (the platform sets ``SPACES_ZERO_GPU``) the ``spaces`` package is installed and
``spaces.GPU`` attaches a GPU to the process for the length of one decorated call: the call runs in a
worker forked from the server, its arguments and its result are pickled across, and CUDA exists only
inside it. ``on_gpu(fn)`` applies ``spaces.GPU`` there and returns ``fn`` itself on every other
machine (a laptop, a CPU Space, a Space with a dedicated GPU), so the app is unchanged outside ZeroGPU.

Wrap the *bound* event function (``on_gpu(bind(handler, ctx))``), never the module-level handler: the
context (pool, caches, locks) is then part of the function the worker inherits, not an argument that
would have to be pickled. Gradio still finds ``gr.Request`` and ``gr.Progress`` parameters, because
``spaces.GPU`` keeps the signature with ``functools.wraps``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TypeVar

F = TypeVar("F", bound=Callable)
TRUE = ("1", "t", "true")  # as the spaces package reads its own variable


def zero_gpu_space(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs on a ZeroGPU Space (``SPACES_ZERO_GPU`` set by the platform)."""
    environ = os.environ if environ is None else environ
    return environ.get("SPACES_ZERO_GPU", "").strip().lower() in TRUE


def gpu_decorator(environ: Mapping[str, str] | None = None):
    """``spaces.GPU`` on a ZeroGPU Space where the ``spaces`` package imports, else None."""
    if not zero_gpu_space(environ):
        return None
    try:
        import spaces
    except ImportError:
        return None
    return spaces.GPU


def on_gpu(fn: F, duration: int = 60) -> F:
    """``fn`` run with a ZeroGPU GPU attached for at most ``duration`` seconds; ``fn`` itself elsewhere."""
    decorator = gpu_decorator()
    return fn if decorator is None else decorator(fn, duration=duration)
