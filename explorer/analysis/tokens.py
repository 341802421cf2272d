"""Rows for the token table: what each token is, where it came from."""

from __future__ import annotations

from explorer.core.trace import Trace

TOKEN_COLUMNS = ["#", "token", "piece", "id", "chars", "text"]


def token_table(trace: Trace, stream: str) -> list[list]:
    """One row per token: position, visible form, raw piece, id, character span, source text."""
    text = trace.texts[stream]
    rows = []
    for i, t in enumerate(trace.tokens[stream]):
        span = f"{t.start}–{t.end}" if t.end > t.start else "special" if t.special else "—"
        rows.append([i, t.display, t.piece, t.id, span, text[t.start : t.end] if t.end > t.start else ""])
    return rows
