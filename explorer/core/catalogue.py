"""The catalogue of known models (data in ``models/catalogue.json``) and where bundled ones live."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from explorer.core.settings import settings
from explorer.core.spec import Family


def models_dir() -> Path:
    """Where bundled models and ``catalogue.json`` live (``EXPLORER_MODELS_DIR``, default the repository's ``models/``)."""
    return settings().models_dir


@dataclass(frozen=True)
class CatalogueEntry:
    key: str
    source: str  # bundled folder name, or hub id
    family: Family
    layers: int
    heads: int
    description: str
    bundled: bool = False
    remote: str = ""  # "ndif": too large for any machine of ours, run on NDIF through nnsight (its own key)

    @property
    def location(self) -> str:
        """What ``from_pretrained`` is given: a folder for bundled models, else the hub id."""
        return str(models_dir() / self.source) if self.bundled else self.source


@dataclass(frozen=True)
class TokenizerEntry:
    key: str
    source: str
    kind: str
    description: str
    bundled: bool = False

    @property
    def location(self) -> str:
        return str(models_dir() / self.source) if self.bundled else self.source


@cache
def _data() -> dict:
    return json.loads((models_dir() / "catalogue.json").read_text(encoding="utf-8"))


@cache
def catalogue() -> dict[str, CatalogueEntry]:
    return {m["key"]: CatalogueEntry(**m) for m in _data()["models"]}


@cache
def tokenizer_catalogue() -> dict[str, TokenizerEntry]:
    return {t["key"]: TokenizerEntry(**t) for t in _data()["tokenizers"]}


def is_downloaded(hub_id: str) -> bool:
    """Whether a hub model's config is in the local Hugging Face cache (so it may load without a network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception:  # a malformed id: not downloaded
        return False


def remote_entry(name: str) -> CatalogueEntry | None:
    """The catalogue entry of a model that runs elsewhere (``"remote": "ndif"``), by key or hub id; else None."""
    for entry in catalogue().values():
        if entry.remote and name in (entry.key, entry.source):
            return entry
    return None


def bundled_keys() -> list[str]:
    return [k for k, e in catalogue().items() if e.bundled]


def default_model_key() -> str:
    return _data()["default_model"]


def hosted_mode() -> bool:
    """In hosted mode (``EXPLORER_HOSTED=1``, e.g. a public Space) only catalogue keys load."""
    return settings().hosted
