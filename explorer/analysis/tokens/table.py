"""Rows for the tokens view's tables: what each token is and where it came from, a BPE replay step by step,
and the merges a trained BPE learned."""

from __future__ import annotations

from collections.abc import Sequence

from explorer.analysis.tokens.bpe import Pair, WordReplay
from explorer.core.tokens import display_piece
from explorer.core.trace import Token, Trace

TOKEN_COLUMNS = ["#", "token", "piece", "id", "chars", "text"]
STEP_COLUMNS = ["word", "step", "merged pair", "rank", "symbols after"]
MERGE_COLUMNS = ["rank", "pair", "new token"]


def token_rows_table(tokens: Sequence[Token], text: str) -> list[list]:
    """One row per token: position, visible form, raw piece, id, character span, the text it covers."""
    rows = []
    for i, t in enumerate(tokens):
        span = f"{t.start}–{t.end}" if t.end > t.start else "special" if t.special else "—"
        rows.append([i, t.display, t.piece, t.id, span, text[t.start : t.end] if t.end > t.start else ""])
    return rows


def token_table(trace: Trace, stream: str) -> list[list]:
    return token_rows_table(trace.tokens[stream], trace.texts[stream])


def replay_rows(words: Sequence[WordReplay]) -> list[list]:
    """One row per word's starting bytes and one per merge after: word, step, pair merged, its rank, symbols."""
    rows = []
    for w in words:
        rows.append([w.piece, 0, "(bytes)", "", " ".join(w.start_symbols)])
        for i, step in enumerate(w.steps, 1):
            rows.append([w.piece, i, " + ".join(step.pair), step.rank, " ".join(step.symbols)])
    return rows


def merge_rows(merges: Sequence[Pair], limit: int = 100) -> list[list]:
    """The merges table: rank, pair and new token, with whitespace shown as everywhere else (``Ġ`` -> ``␣``)."""

    def shown(symbol: str) -> str:
        return display_piece(symbol, True, False)

    return [[rank, f"{shown(a)} + {shown(b)}", shown(a + b)] for rank, (a, b) in enumerate(merges[:limit])]
