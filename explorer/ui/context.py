"""What every tab builds from: the shared model pool and run cache, and the per-session selection."""

from __future__ import annotations

import html
import inspect
import logging
import re
import threading
from dataclasses import dataclass, field
from functools import wraps

from explorer.core.catalogue import bundled_keys, catalogue, default_model_key, hosted_mode
from explorer.core.errors import ExplorerError
from explorer.core.loading import LoadedModel, load_tokenizer
from explorer.core.pool import ModelPool, default_pool
from explorer.core.run import RunCache
from explorer.core.scores import attention_scores
from explorer.core.trace import Trace

log = logging.getLogger("explorer")


@dataclass(frozen=True)
class Selection:
    """A session's current analysis: small, kept in ``gr.State``; the trace itself stays in the cache."""

    model: str
    text: str
    target: str | None = None
    max_new_tokens: int = 20
    generate: int = 0  # decoders: extend the text by this many greedy tokens first


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

    def model_choices(self) -> list[str]:
        keys = bundled_keys()
        return keys + [k for k in catalogue() if k not in keys]

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
        if name in self.pool.loaded():
            return self.pool.get(name).tokenizer
        return self._tokenizers.get(name, lambda: load_tokenizer(name))

    def scores(self, selection: Selection) -> dict:
        """Pre-softmax scores for a selection (one extra forward pass, remembered for recent selections)."""
        return self._scores.get(selection, lambda: attention_scores(self.model(selection), self.trace(selection)))


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$:=^])")


def md_escape(text) -> str:
    """User or model text made inert inside ``gr.Markdown``: shown exactly as typed, never as markup.

    Every character Markdown gives a meaning is backslash-escaped, so ``[x](javascript:...)`` is no
    link, ``**`` no bold and ``$$`` no formula; then ``&``, ``<`` and ``>`` become entities, so
    ``<svg>`` stays text.
    Every piece of user or model text (model names, texts, tokens, errors that quote them) goes
    through here before it enters Markdown or HTML.
    """
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text)), quote=False)


def warning(message: str) -> str:
    """A refused input's sentence for a Markdown note: the warning sign and the message, escaped."""
    return f"⚠️ {md_escape(message)}"


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
