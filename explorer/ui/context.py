"""What every tab builds from: the shared model pool and run cache, and the per-session selection."""

from __future__ import annotations

import html
import inspect
import logging
import re
from dataclasses import dataclass, field
from functools import wraps

import gradio as gr

from explorer.analysis.lora.sessions import SessionBudget
from explorer.analysis.pretraining.opened import TrainedModels, is_trained_name, shown_name
from explorer.core.cache import BoundedCache
from explorer.core.catalogue import bundled_keys, catalogue, default_model_key, is_downloaded
from explorer.core.errors import ExplorerError, InputError
from explorer.core.loading import LoadedModel, hub_reachable, load_tokenizer
from explorer.core.pool import ModelPool, default_pool
from explorer.core.run import RunCache
from explorer.core.scores import attention_scores
from explorer.core.settings import Settings
from explorer.core.settings import settings as current_settings
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


def owner_of(request) -> str:
    """Who holds a session's private work: its browser session id (``"local"`` when a test calls a handler)."""
    return getattr(request, "session_hash", None) or "local"


SCORES_BYTES = 256 * 2**20  # pre-softmax scores of recent selections (12 layers x 12 heads x 512^2 is 150 MB)


def about(selection: Selection) -> str:
    """What a figure was computed from, for its title: ``tiny-t5 · “Let there be light.”`` (the text shortened;
    a model trained in this session by its label, ``your trained decoder (300 steps)``)."""
    return f"{shown_name(selection.model)} · “{shorten(selection.text, 32)}”"


def _scores_bytes(scores: dict) -> int:
    return sum(a.nbytes for a in scores.values())


@dataclass
class AppContext:
    """Shared, read-only services. One per process; sessions differ only by their ``Selection``.

    ``settings`` are the server's (``EXPLORER_*``, read once at start-up); the pool is sized by them.
    ``trained`` holds the models sessions trained in the Training tab and opened: each reachable only from
    the session that opened it, bounded like LoRA copies (``lora_total_mb``), never in the shared pool.
    ``copies_budget`` bounds what the sessions' LoRA fine-tunes and quantized copies hold together
    (``lora_total_mb``): the LoRA and inference tabs count their private copies in it.
    """

    settings: Settings = field(default_factory=current_settings)
    pool: ModelPool = field(default_factory=default_pool)
    cache: RunCache = field(default_factory=RunCache)
    default_model: str = field(default_factory=default_model_key)
    default_text: str = "The tiger jumped out of a tree to get a drink because it was thirsty."
    _scores: BoundedCache = field(
        default_factory=lambda: BoundedCache(SCORES_BYTES, _scores_bytes, max_items=8), repr=False
    )
    _tokenizers: BoundedCache = field(default_factory=lambda: BoundedCache(None, max_items=16), repr=False)
    trained: TrainedModels | None = None
    copies_budget: SessionBudget | None = None

    def __post_init__(self):
        if self.copies_budget is None:
            self.copies_budget = SessionBudget(self.settings.lora_total_bytes)
        if self.trained is None:
            self.trained = TrainedModels(SessionBudget(self.settings.lora_total_bytes))

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, key) of every catalogue model: bundled first; hub models marked when they need a network
        this machine does not have; models that run on NDIF marked so, or as needing a key this server lacks."""
        keys = bundled_keys()
        entries = catalogue()
        hub = [k for k in entries if k not in keys and not entries[k].remote]
        online = not hub or hub_reachable()
        return (
            [(k, k) for k in keys]
            + [(k if online or is_downloaded(entries[k].source) else f"{k} (needs a network)", k) for k in hub]
            + [
                (f"{k} ({'runs on NDIF' if self.settings.ndif_api_key else 'needs an NDIF key'})", k)
                for k in entries
                if entries[k].remote
            ]  # fmt: skip
        )

    @property
    def hosted(self) -> bool:
        return self.settings.hosted

    def model(self, selection: Selection) -> LoadedModel:
        """The selection's model: from the shared pool, or the session's own trained model (a selection only
        names one after ``reachable`` let its session in)."""
        if is_trained_name(selection.model):
            return self.trained.get(selection.model)
        return self.pool.get(selection.model)

    def reachable(self, name: str, request=None) -> None:
        """Refuse with a sentence a typed trained model's name that the requesting session did not open."""
        if is_trained_name(name):
            self.trained.get(name, owner_of(request))

    def trace(self, selection: Selection) -> Trace:
        """The trace for a selection: from the cache, or one model run if it was evicted."""
        lm = self.model(selection)
        return self.cache.get(lm, selection.text, selection.target, selection.max_new_tokens, selection.generate)

    def tokenizer(self, name: str):
        """A tokenizer by model or tokenizer-catalogue name: a loaded model's own, else loaded alone (kept)."""
        check_model_name(name)
        if is_trained_name(name):
            return self.trained.get(name).tokenizer
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


def bind(handler, ctx, *more):
    """``handler(ctx, *more, *inputs)`` as gradio's event function of the inputs alone.

    Tabs keep their handlers at module level, taking the app context first (and, where they need them, what
    ``build()`` made, such as a registry of private copies), so tests call them without a server; ``build()``
    wires ``bind(handler, ctx)`` or ``bind(handler, ctx, registry)``. Not ``functools.partial``: gradio finds
    ``gr.Request`` and ``gr.Progress`` parameters by their position in the signature and by type hints, which
    a partial hides.
    """
    signature, leading = inspect.signature(handler), (ctx, *more)
    if inspect.isgeneratorfunction(handler):

        @wraps(handler)
        def bound(*args, **kwargs):
            yield from handler(*leading, *args, **kwargs)

    else:

        @wraps(handler)
        def bound(*args, **kwargs):
            return handler(*leading, *args, **kwargs)

    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[len(leading) :])
    return bound


def layer_slider(highest: int, value: int | None = None) -> dict:
    """A layer slider's update for the analysed model: layers up to ``highest``, at ``value`` (default: the
    top). The slider keeps at least two stops (gradio cannot draw 0 … 0), and the value stays on it."""
    top = max(1, highest)
    return gr.update(maximum=top, value=highest if value is None else min(value, top))
