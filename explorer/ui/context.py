"""What every tab builds from: the shared model pool and run cache, and the per-session selection."""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import dataclass, field
from functools import wraps

from explorer.core.catalogue import bundled_keys, catalogue, default_model_key, hosted_mode, is_downloaded
from explorer.core.errors import ExplorerError, InputError
from explorer.core.loading import LoadedModel, hub_reachable, load_tokenizer
from explorer.core.pool import ModelPool, default_pool
from explorer.core.run import RunCache
from explorer.core.scores import attention_scores
from explorer.core.trace import Trace
from explorer.plots.text import shorten

log = logging.getLogger("explorer")


@dataclass(frozen=True)
class Selection:
    """A session's current analysis: small, kept in ``gr.State``; the trace itself stays in the cache."""

    model: str
    text: str
    target: str | None = None
    max_new_tokens: int = 20
    generate: int = 0  # decoders: extend the text by this many greedy tokens first

    def __post_init__(self):
        check_model_name(self.model)


def check_model_name(name) -> str:
    """A model is named by text (a key, a hub id, a folder); anything else gets a sentence."""
    if not isinstance(name, str):
        raise InputError("Pick a model from the list, or type its name, hub id or folder.")
    return name


def about(selection: Selection) -> str:
    """What a figure was computed from, for its title: ``tiny-t5 · “Let there be light.”`` (the text shortened)."""
    return f"{selection.model} · “{shorten(selection.text, 32)}”"


class Recent:
    """A few recent results by key, oldest dropped beyond ``size``; safe to share between sessions."""

    def __init__(self, size: int):
        self.size = size
        self._items: dict = {}
        self._lock = threading.Lock()

    def get(self, key, compute):
        """The value for ``key``, computed (outside the lock) when it is not held."""
        with self._lock:
            if key in self._items:
                return self._items[key]
        value = compute()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))
        return value


@dataclass
class AppContext:
    """Shared, read-only services. One per process; sessions differ only by their ``Selection``."""

    pool: ModelPool = field(default_factory=default_pool)
    cache: RunCache = field(default_factory=RunCache)
    default_model: str = field(default_factory=default_model_key)
    default_text: str = "The tiger jumped out of a tree to get a drink because it was thirsty."
    _scores: Recent = field(default_factory=lambda: Recent(8), repr=False)
    _tokenizers: Recent = field(default_factory=lambda: Recent(16), repr=False)

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, key) of every catalogue model: bundled first; hub models marked when they need a network
        this machine does not have."""
        keys = bundled_keys()
        hub = [k for k in catalogue() if k not in keys]
        online = not hub or hub_reachable()
        return [(k, k) for k in keys] + [
            (k if online or is_downloaded(catalogue()[k].source) else f"{k} (needs a network)", k) for k in hub
        ]

    @property
    def hosted(self) -> bool:
        return hosted_mode()

    def model(self, selection: Selection) -> LoadedModel:
        return self.pool.get(selection.model)

    def trace(self, selection: Selection) -> Trace:
        """The trace for a selection: from the cache, or one model run if it was evicted."""
        lm = self.model(selection)
        return self.cache.get(lm, selection.text, selection.target, selection.max_new_tokens, selection.generate)

    def tokenizer(self, name: str):
        """A tokenizer by model or tokenizer-catalogue name: a loaded model's own, else loaded alone (kept)."""
        check_model_name(name)
        if name in self.pool.loaded():
            return self.pool.get(name).tokenizer
        return self._tokenizers.get(name, lambda: load_tokenizer(name))

    def scores(self, selection: Selection) -> dict:
        """Pre-softmax scores for a selection (one extra forward pass, remembered for recent selections)."""
        return self._scores.get(selection, lambda: attention_scores(self.model(selection), self.trace(selection)))


def user_message(err: Exception) -> str:
    """The one sentence a user sees for an error; unexpected ones are logged with their traceback."""
    if isinstance(err, ExplorerError):
        return str(err)
    log.exception("unexpected error")
    return f"Something went wrong ({type(err).__name__}); the error was logged. Try another text or model."


def guarded(fallback):
    """Wrap an event handler so that any error becomes ``fallback(message)`` instead of a traceback.

    For a generator handler (streamed output) the error ends the stream with ``fallback(message)``
    as its last update.
    """

    def decorate(fn):
        if inspect.isgeneratorfunction(fn):

            @wraps(fn)
            def streaming(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as err:  # every error reaches the user as a sentence
                    yield fallback(user_message(err))

            return streaming

        @wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # every error reaches the user as a sentence
                return fallback(user_message(err))

        return wrapper

    return decorate
