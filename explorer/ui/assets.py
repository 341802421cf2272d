"""Example texts and presets shipped in ``assets/`` (data, not code)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from explorer.analysis.tokens.texts import sample_texts  # noqa: F401  (the tabs' import; the corpus lives in analysis)

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"


@cache
def presets(view: str) -> dict[str, str]:
    return json.loads((ASSETS_DIR / "presets.json").read_text(encoding="utf-8"))[view]
