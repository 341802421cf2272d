"""Rows for the token table: what each token is, where it came from."""

from __future__ import annotations

from collections.abc import Sequence

from explorer.core.trace import Token, Trace

TOKEN_COLUMNS = ["#", "token", "piece", "id", "chars", "text"]


def token_rows_table(tokens: Sequence[Token], text: str) -> list[list]:
    """One row per token: position, visible form, raw piece, id, character span, the text it covers."""
    rows = []
    for i, t in enumerate(tokens):
        span = f"{t.start}–{t.end}" if t.end > t.start else "special" if t.special else "—"
        rows.append([i, t.display, t.piece, t.id, span, text[t.start : t.end] if t.end > t.start else ""])
    return rows


def token_table(trace: Trace, stream: str) -> list[list]:
    return token_rows_table(trace.tokens[stream], trace.texts[stream])
