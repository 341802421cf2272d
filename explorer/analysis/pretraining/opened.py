"""Models trained in a browser session, opened in every other view: private to that session, bounded, freed.

A trained model is named ``trained:<32 hex digits> <label>``, e.g. ``trained:9f…c1 your trained decoder
(300 steps)``: the digits are a fresh random token, so the name is unguessable, and the label is what
titles show (``shown_name``). ``TrainedModels`` holds one model per owner (a browser session id); a new
one replaces the previous. Only the owner gets its model from a typed name (``get(name, owner)``); any
other session gets a sentence. What all sessions hold is bounded by a ``SessionBudget``, and ``end``
frees an owner's model when its session closes. The shared model pool and the catalogue never see
these models.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass, replace

from explorer.analysis.lora.sessions import SessionBudget
from explorer.analysis.pretraining.trainer import PretrainRun
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel

PREFIX = "trained:"
_NAME = re.compile(r"^trained:([0-9a-f]{32}) (.+)$", re.DOTALL)
FAMILY_WORDS = {"next_token": "decoder", "masked": "encoder", "span": "encoder-decoder"}
NOT_YOURS = (
    "That trained model is not open in this browser session (models trained here stay with the session that "
    "trained them and are freed when it closes); train one in the Training tab, or pick another model."
)


def is_trained_name(name) -> bool:
    """Whether ``name`` is (or pretends to be) a session's trained model, never a catalogue, hub or folder name."""
    return isinstance(name, str) and name.startswith(PREFIX)


def shown_name(name: str) -> str:
    """What a title calls a model: a trained model's label (never its token), any other name as it is."""
    match = _NAME.match(name) if is_trained_name(name) else None
    return match.group(2) if match else ("a trained model" if is_trained_name(name) else name)


def run_label(run: PretrainRun) -> str:
    """``your trained decoder (300 steps)``: the family and the steps done."""
    return f"your trained {FAMILY_WORDS[run.settings.objective]} ({run.step} steps)"


@dataclass(frozen=True)
class Opened:
    owner: str
    model: LoadedModel


class TrainedModels:
    """The trained models opened by each owner (one each), their memory counted in one ``SessionBudget``."""

    def __init__(self, budget: SessionBudget | None = None):
        self.budget = budget or SessionBudget()
        self._by_name: dict[str, Opened] = {}
        self._lock = threading.Lock()

    def open(self, owner: str, lm: LoadedModel, label: str) -> str:
        """Hold ``lm`` for ``owner`` under a new unguessable name (replacing what ``owner`` held) and return
        the name; refused with a sentence, the previous model kept, when the budget has no room."""
        self.budget.reserve(owner, lm.nbytes)  # replaces what ``owner`` held: one model each
        name = f"{PREFIX}{secrets.token_hex(16)} {label}"
        lm = LoadedModel(replace(lm.spec, key=label), lm.model, lm.tokenizer, lm.device)  # summaries show the label
        with self._lock:
            stale = [n for n, o in self._by_name.items() if o.owner == owner]
            for n in stale:
                del self._by_name[n]
            self._by_name[name] = Opened(owner, lm)
        return name

    def get(self, name: str, owner: str | None = None) -> LoadedModel:
        """The model named ``name``; with ``owner``, only if that owner opened it. Otherwise a sentence."""
        with self._lock:
            opened = self._by_name.get(name)
        if opened is None or (owner is not None and opened.owner != owner):
            raise InputError(NOT_YOURS)
        return opened.model

    def end(self, owner: str | None) -> None:
        """Free ``owner``'s trained model and its share of the budget (its browser session closed)."""
        if owner is None:
            return
        with self._lock:
            for name in [n for n, o in self._by_name.items() if o.owner == owner]:
                del self._by_name[name]
        self.budget.release(owner)

    def names(self, owner: str) -> list[str]:
        with self._lock:
            return [n for n, o in self._by_name.items() if o.owner == owner]

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_name)


def open_run(models: TrainedModels, owner: str, run: PretrainRun) -> str:
    """A frozen copy of ``run``'s model as it is now, opened for ``owner``; returns its name."""
    lm = run.loaded_model()
    return models.open(owner, lm, run_label(run))
