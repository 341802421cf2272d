"""Lesson notes for a class, read from ``assets/lessons/`` (data, not code): an overview and one note per tab."""

from __future__ import annotations

import json
from functools import cache

from explorer.ui.assets import ASSETS_DIR

LESSONS_DIR = ASSETS_DIR / "lessons"


def lesson_path() -> str:
    """The overview: the order to walk a class through the tabs."""
    return (LESSONS_DIR / "path.md").read_text(encoding="utf-8")


def lesson_note(tab_id: str | None) -> str | None:
    """A tab's lesson note, or None where it has none."""
    path = LESSONS_DIR / f"{tab_id}.md"
    return path.read_text(encoding="utf-8") if tab_id and path.is_file() else None


@cache
def _presets() -> dict:
    return json.loads((LESSONS_DIR / "presets.json").read_text(encoding="utf-8"))


def lesson_presets(tab_id: str | None) -> dict[str, str]:
    """Label -> text of the teaching examples for a tab."""
    return dict(_presets().get(tab_id or "", {}))
