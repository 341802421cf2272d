"""Who holds which fine-tune: one ``LoraSession`` per browser session, within a memory budget for them all.

Each user's fine-tune owns a private copy of a model, so the copies together are bounded
(``EXPLORER_LORA_TOTAL_MB``), a user's new fine-tune replaces their previous one, and ``end``
frees a fine-tune as soon as its browser session closes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from explorer.analysis.lora import compare
from explorer.analysis.lora.data import TrainingData, training_data
from explorer.analysis.lora.files import load_adapter
from explorer.analysis.lora.finetune import LoraSession, LoraSettings, session_bytes
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.settings import Settings, settings

UPLOAD_COPIES = 2  # an uploaded adapter is reserved as two copies of the model until it has loaded
FULL_FINETUNE_COPIES = 4  # full fine-tuning: weights, gradients and AdamW's two moments
DEFAULT_POSITIONS = 1024  # training windows for a model that names no position limit


def per_client_max() -> int:
    """Fine-tunes one client address may hold at once (``EXPLORER_LORA_PER_CLIENT``, default 16).

    API clients make a new session per connection and no browser tab closes to free it; a classroom
    behind one address (a school's network) may need this raised.
    """
    return settings().lora_per_client


def total_max_bytes() -> int:
    """What all sessions' copies may hold together (``EXPLORER_LORA_TOTAL_MB``, default 4096 MB)."""
    return settings().lora_total_bytes


class SessionBudget:
    """Bounds the memory that all sessions' private copies hold together: one per app, shared by the LoRA
    fine-tunes and the quantized copies (``AppContext.copies_budget``), each counted under its own key."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes if max_bytes is not None else total_max_bytes()
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, owner: str, nbytes: int) -> None:
        """Count ``nbytes`` for ``owner`` (replacing what it held) or refuse with a sentence."""
        with self._lock:
            others = sum(b for o, b in self._held.items() if o != owner)
            if others + nbytes > self.max_bytes:
                raise InputError(
                    f"The server already holds {others / 2**20:,.0f} MB of other sessions' private model copies (fine-tunes and "
                    f"quantized models; limit {self.max_bytes / 2**20:,.0f} MB); try again in a few minutes or pick "
                    "a smaller model."
                )
            self._held[owner] = nbytes

    def move(self, source: str, owner: str) -> None:
        """What ``source`` holds becomes ``owner``'s (replacing what ``owner`` held)."""
        with self._lock:
            if source in self._held:
                self._held[owner] = self._held.pop(source)

    @contextmanager
    def reserved(self, owner: str, nbytes: int) -> Iterator[None]:
        """``nbytes`` counted for ``owner`` while the block runs (refused with a sentence if they do not fit)."""
        self.reserve(owner, nbytes)
        try:
            yield
        finally:
            self.release(owner)

    def release(self, owner: str) -> None:
        with self._lock:
            self._held.pop(owner, None)

    @property
    def held(self) -> int:
        with self._lock:
            return sum(self._held.values())


class SessionRegistry:
    """The live fine-tunes by owner (a browser session id), their memory counted in one ``SessionBudget``."""

    def __init__(self, budget: SessionBudget | None = None, per_client: int | None = None):
        self.budget = budget or SessionBudget()
        self.per_client = per_client  # None: the process's EXPLORER_LORA_PER_CLIENT, read at each start
        self._live: dict[str, LoraSession] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, server: Settings, budget: SessionBudget | None = None) -> SessionRegistry:
        """A registry bounded by a server's settings (``lora_per_client``), counted in ``budget`` (the app's, shared
        with its other private copies; a new one of ``lora_total_mb`` when none is given)."""
        return cls(budget or SessionBudget(server.lora_total_bytes), per_client=server.lora_per_client)

    def start(self, owner: str, nbytes: int, make: Callable[[], LoraSession], client: str | None = None) -> LoraSession:
        """Build ``owner``'s new fine-tune with ``make()`` and only then end the previous one.

        ``nbytes`` is reserved while it is built, then what the session counts it holds (``session.nbytes``).
        A refused start (a file that is not an adapter, bad settings, no memory left, too many fine-tunes
        from one ``client`` address) leaves the previous fine-tune as it was.
        """
        self._check_client(owner, client)
        pending = f"{owner}#new"
        self.budget.reserve(pending, nbytes)
        session = None
        try:
            session = make()
            self.budget.reserve(pending, max(nbytes, getattr(session, "nbytes", nbytes)))
        except BaseException:
            self.budget.release(pending)
            if session is not None:
                session.close()
            raise
        session.owner, session.client = owner, client
        with self._lock:
            previous = self._live.get(owner)
            self._live[owner] = session
        if previous is not None:
            previous.close()
        self.budget.move(pending, owner)
        return session

    def _check_client(self, owner: str, client: str | None) -> None:
        if client is None:
            return
        with self._lock:
            held = sum(1 for o, s in self._live.items() if o != owner and getattr(s, "client", None) == client)
        limit = self.per_client if self.per_client is not None else per_client_max()
        if held >= limit:
            raise InputError(
                f"Your address already holds {held} fine-tunes on this server (at most {limit} at once); "
                "close another tab's fine-tune or wait for it to expire."
            )

    def end(self, owner: str | None) -> None:
        """Free ``owner``'s fine-tune (its copy and optimizer state) and its share of the budget."""
        if owner is None:
            return
        with self._lock:
            session = self._live.pop(owner, None)
        if session is not None:
            session.close()
        self.budget.release(owner)

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)


# ---------------------------------------------------------------- a fine-tune for an owner, within the budget


def upload_bytes(lm: LoadedModel) -> int:
    """Reserved for an uploaded adapter before its file is read (its settings are unknown until then); once
    loaded, the registry keeps the larger of this and what the session counts it holds (``LoraSession.nbytes``)."""
    return UPLOAD_COPIES * lm.nbytes


def full_finetune_bytes(lm: LoadedModel) -> int:
    """What full fine-tuning of ``lm`` holds while it runs: weights, gradients and two optimizer states."""
    return FULL_FINETUNE_COPIES * lm.nbytes


def model_training_data(lm: LoadedModel, text: str) -> TrainingData:
    """The training text as windows this model can take."""
    return training_data(lm.tokenizer, text, max_positions=lm.max_positions or DEFAULT_POSITIONS)


def start_training(
    registry: SessionRegistry, owner: str, lm: LoadedModel, lora: LoraSettings, text: str, client: str | None = None
) -> LoraSession:
    """``owner``'s new, untrained fine-tune of ``lm`` on ``text`` (replacing their previous one), its memory
    counted from its parts before the copy is made; train it with ``finetune.train_live``."""
    data = model_training_data(lm, text)
    return registry.start(owner, session_bytes(lm, lora, data), lambda: LoraSession(lm, lora, data), client)


def start_from_file(
    registry: SessionRegistry, owner: str, lm: LoadedModel, path: str | Path, text: str, client: str | None = None
) -> LoraSession:
    """``owner``'s new fine-tune holding the adapter in ``path``, its held-out loss measured on ``text``."""
    data = model_training_data(lm, text)
    session = registry.start(owner, upload_bytes(lm), lambda: load_adapter(lm, path, data), client)
    session.finish()
    return session


def compare_with_full_finetuning(
    registry: SessionRegistry, owner: str, session: LoraSession, probes: list[str], progress=None, should_stop=None
) -> list[compare.FineTuneReport]:
    """The LoRA run and full fine-tuning on the same data (LoRA first); the full run's memory is reserved
    under ``owner/full`` in the budget while it trains. ``progress(fraction)`` after every full step."""
    with registry.budget.reserved(f"{owner}/full", full_finetune_bytes(session.base)):
        full = compare.full_finetune(session, probes, progress=progress, should_stop=should_stop)
    return [compare.lora_report(session, probes), full]
