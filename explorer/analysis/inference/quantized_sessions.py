"""Each browser session's latest quantized copies, kept so that looking again does not quantize again.

A quantized copy is a private copy of the model (``quantization.quantize``), so, like a LoRA fine-tune, it
is held per session (the owner: a browser session id), counted in a ``SessionBudget`` with every other private
copy (the app's one budget, shared with the LoRA fine-tunes), and freed when the session ends (``end``). A
session keeps its ``per_session`` most recent copies (of one model: asking for another model drops the
first's); making one more drops its oldest, and a copy that does not fit beside the other copies is refused
with a sentence before anything is copied.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from explorer.analysis.inference.quantization import QuantizedModel, budget_key, copy_bytes, precision, quantize
from explorer.analysis.lora.sessions import SessionBudget
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel

PER_SESSION = 3  # copies one session keeps: the precision shown and a couple to switch back to


class QuantizedCopies:
    """The live quantized copies by owner, within one ``SessionBudget`` (shared with other private copies or not).

    ``get(owner, lm, name)`` returns ``owner``'s copy of ``lm`` at precision ``name``, made only the first time.
    """

    def __init__(self, budget: SessionBudget | None = None, per_session: int = PER_SESSION):
        self.budget = budget or SessionBudget()
        self.per_session = max(1, int(per_session))
        self._live: dict[str, OrderedDict[tuple[str, str], QuantizedModel]] = {}
        self._lock = threading.Lock()
        self.made = 0  # copies made since this registry started (a cached one is not made again)

    @staticmethod
    def _key(owner: str, model: str, name: str) -> str:
        return f"{budget_key(owner)}/{model}/{name}"

    def _drop(self, owner: str, which: tuple[str, str]) -> None:
        """Forget one of ``owner``'s copies and release its bytes (the caller holds the lock)."""
        self._live.get(owner, OrderedDict()).pop(which, None)
        self.budget.release(self._key(owner, *which))

    def get(self, owner: str, lm: LoadedModel, name: str) -> QuantizedModel:
        precision(name)  # an unknown name is refused before anything is dropped
        which = (lm.spec.key, name)
        with self._lock:
            held = self._live.setdefault(owner, OrderedDict())
            if which in held:
                held.move_to_end(which)
                return held[which]
            for old in [w for w in held if w[0] != lm.spec.key]:  # another model's copies
                self._drop(owner, old)
            while len(held) >= self.per_session:
                self._drop(owner, next(iter(held)))
        key = self._key(owner, *which)
        self._reserve(owner, key, copy_bytes(lm))
        try:
            quantized = quantize(lm, name)
        except BaseException:
            self.budget.release(key)
            raise
        self.budget.reserve(key, quantized.nbytes)  # what it holds: never more than was reserved to make it
        with self._lock:
            held = self._live.setdefault(owner, OrderedDict())
            held[which] = quantized
            self.made += 1
            while len(held) > self.per_session:  # another request of this owner's finished meanwhile
                self._drop(owner, next(iter(held)))
        return quantized

    def _reserve(self, owner: str, key: str, nbytes: int) -> None:
        try:
            self.budget.reserve(key, nbytes)
            return
        except InputError:
            pass
        with self._lock:  # the session's own older copies go first
            for old in list(self._live.get(owner, ())):
                self._drop(owner, old)
        try:
            self.budget.reserve(key, nbytes)
        except InputError:
            others = self.budget.held
            raise InputError(
                f"The server already holds {others / 2**20:,.0f} MB of private model copies (fine-tunes and "
                f"quantized models; limit {self.budget.max_bytes / 2**20:,.0f} MB), and a quantized copy of this "
                f"model needs {nbytes / 2**20:,.0f} MB; try again in a few minutes or pick a smaller model."
            ) from None

    def held(self, owner: str) -> list[tuple[str, str]]:
        """(model, precision) of each copy ``owner`` holds, oldest first."""
        with self._lock:
            return list(self._live.get(owner, ()))

    def end(self, owner: str | None) -> None:
        """Free every copy ``owner`` holds and its share of the budget (the browser session closed)."""
        if owner is None:
            return
        with self._lock:
            for which in list(self._live.get(owner, ())):
                self._drop(owner, which)
            self._live.pop(owner, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(h) for h in self._live.values())
