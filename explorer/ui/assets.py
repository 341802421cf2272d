"""Example texts and presets shipped in ``assets/`` (data, not code)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"


@cache
def presets(view: str) -> dict[str, str]:
    return json.loads((ASSETS_DIR / "presets.json").read_text(encoding="utf-8"))[view]


@cache
def sample_texts() -> dict[str, str]:
    """Bundled public-domain texts by a readable name (for training a toy tokenizer)."""
    names = {
        "shakespeare_sample.txt": "Shakespeare (Hamlet, 80 kB)",
        "kjv_genesis_1-10.txt": "Genesis 1–10 (KJV, 32 kB)",
    }
    return {label: (ASSETS_DIR / "texts" / f).read_text(encoding="utf-8") for f, label in names.items()}
