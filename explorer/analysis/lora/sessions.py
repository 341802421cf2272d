"""Who holds which fine-tune: one ``LoraSession`` per browser session, within a memory budget for them all.

Each user's fine-tune owns a private copy of a model, so the copies together are bounded
(``EXPLORER_LORA_TOTAL_MB``), a user's new fine-tune replaces their previous one, and ``end``
frees a fine-tune as soon as its browser session closes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from explorer.analysis.lora.finetune import LoraSession
from explorer.core.errors import InputError
from explorer.core.settings import settings


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
    """Bounds the memory that all sessions' private copies hold together."""

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
                    f"The server already holds {others / 2**20:,.0f} MB of other sessions' fine-tunes "
                    f"(limit {self.max_bytes / 2**20:,.0f} MB); try again in a few minutes or pick a smaller model."
                )
            self._held[owner] = nbytes

    def move(self, source: str, owner: str) -> None:
        """What ``source`` holds becomes ``owner``'s (replacing what ``owner`` held)."""
        with self._lock:
            if source in self._held:
                self._held[owner] = self._held.pop(source)

    def release(self, owner: str) -> None:
        with self._lock:
            self._held.pop(owner, None)

    @property
    def held(self) -> int:
        with self._lock:
            return sum(self._held.values())


class SessionRegistry:
    """The live fine-tunes by owner (a browser session id), their memory counted in one ``SessionBudget``."""

    def __init__(self, budget: SessionBudget | None = None):
        self.budget = budget or SessionBudget()
        self._live: dict[str, LoraSession] = {}
        self._lock = threading.Lock()

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
        limit = per_client_max()
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
