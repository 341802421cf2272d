"""The text the live trainer learns from: the public-domain texts committed in ``assets/texts``.

They are cut into documents of about ``DOC_CHARS`` characters at line (or sentence) boundaries, and
a fixed share of them, chosen by each document's hash, is held out: never trained on, not even by
the tokenizer, only measured. The split depends on the text alone, so every run holds out the same.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TEXTS_DIR = Path(__file__).resolve().parents[3] / "assets" / "texts"
TEXT_FILES = ("shakespeare_sample.txt", "kjv_genesis_1-10.txt")
DOC_CHARS = 1000
HELD_OUT_PERCENT = 10


@dataclass(frozen=True)
class TextSplit:
    """Documents to train on and documents held out (never in ``train``)."""

    train: tuple[str, ...]
    held_out: tuple[str, ...]

    @property
    def train_chars(self) -> int:
        return sum(len(d) for d in self.train)


def _pieces(text: str) -> list[str]:
    """Lines, with a line longer than a document cut after its sentences."""
    pieces = []
    for line in text.splitlines():
        line = line.strip()
        if len(line) <= DOC_CHARS:
            pieces.append(line)
        else:
            pieces.extend(s for s in re.split(r"(?<=[.;:?!])\s+", line) if s)
    return [p for p in pieces if p]


def documents(text: str) -> list[str]:
    """``text`` cut into documents of about ``DOC_CHARS`` characters (whole lines joined by newlines)."""
    docs, current = [], []
    for piece in _pieces(text):
        current.append(piece)
        if sum(len(p) + 1 for p in current) >= DOC_CHARS:
            docs.append("\n".join(current))
            current = []
    if current:
        docs.append("\n".join(current))
    return docs


def is_held_out(doc: str) -> bool:
    """Whether a document is held out, decided by its SHA-256 alone (about ``HELD_OUT_PERCENT`` %)."""
    return hashlib.sha256(doc.encode("utf-8")).digest()[0] * 100 // 256 < HELD_OUT_PERCENT


@cache
def bundled_split() -> TextSplit:
    """The bundled texts' documents, split into training and held-out documents."""
    docs = [d for name in TEXT_FILES for d in documents((TEXTS_DIR / name).read_text(encoding="utf-8"))]
    return TextSplit(tuple(d for d in docs if not is_held_out(d)), tuple(d for d in docs if is_held_out(d)))
