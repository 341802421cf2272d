"""The bundled public-domain texts (``assets/texts``): a small corpus for training a toy tokenizer and for
ranking a vocabulary's tokens by how often they occur."""

from __future__ import annotations

from functools import cache
from pathlib import Path

TEXTS_DIR = Path(__file__).resolve().parents[3] / "assets" / "texts"
SAMPLE_TEXTS = {
    "shakespeare_sample.txt": "Shakespeare (Hamlet, 80 kB)",
    "kjv_genesis_1-10.txt": "Genesis 1–10 (KJV, 32 kB)",
}


@cache
def sample_texts() -> dict[str, str]:
    """Bundled public-domain texts by a readable name, in a fixed order."""
    return {label: (TEXTS_DIR / f).read_text(encoding="utf-8") for f, label in SAMPLE_TEXTS.items()}
