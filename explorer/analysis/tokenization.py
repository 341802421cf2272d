"""How a text becomes tokens, measured and drawn: counts, tokenizer comparisons, coloured token spans."""

from __future__ import annotations

from html import escape

from explorer.core.tokens import byte_decoder, display_piece, is_byte_level, piece_bytes
from explorer.core.trace import Token, visible

PASTELS = ("#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d7f0db")
# One style block per view instead of a style attribute per token: a 10 kB text has ~2,800 spans.
SPAN_STYLE = (
    "<style>.token-spans{line-height:1.9;font-family:monospace}"
    ".token-spans .tok{padding:1px 2px;margin:1px;border-radius:3px;white-space:pre}"
    ".token-spans .tok-special{border:2px solid #444;font-weight:bold;background:#f4f4f4}"
    ".token-spans .tok-gap{color:#999}"
    + "".join(f".token-spans .c{i}{{background:{c}}}" for i, c in enumerate(PASTELS))
    + "</style>"
)


def _ratio(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator``, or None when there is nothing to divide by (no tokens)."""
    return numerator / denominator if denominator else None


def token_counts(text: str, tokens: tuple[Token, ...] | list[Token]) -> dict:
    """Size of a text and of its tokenization.

    ``text_tokens`` leaves out the special tokens the tokenizer adds around the text (``[CLS]``, ``[SEP]``:
    special, covering no characters) and the per-token ratios use it, so they agree with ``compare_tokenizers``;
    an ``<|endoftext|>`` typed in the text counts. A lone surrogate counts 3 bytes (``surrogatepass``); the
    UI refuses such texts before this point (``explorer.core.run.check_text``).

    ``token_counts("Hello world", <Hello, ␣world>)`` -> ``{"characters": 11, "bytes": 11, "tokens": 2,
    "text_tokens": 2, "chars_per_token": 5.5, "bytes_per_token": 5.5}``
    """
    n_text = sum(1 for t in tokens if not (t.special and t.end == t.start))
    n_bytes = len(text.encode("utf-8", "surrogatepass"))
    return {
        "characters": len(text),
        "bytes": n_bytes,
        "tokens": len(tokens),
        "text_tokens": n_text,
        "chars_per_token": _ratio(len(text), n_text),
        "bytes_per_token": _ratio(n_bytes, n_text),
    }


def compare_tokenizers(text: str, tokenizers: dict[str, object]) -> list[dict]:
    """One row per tokenizer: how many tokens ``text`` costs, and which pieces it becomes.

    Tokenized without special tokens (no ``[CLS]``/``[SEP]``): only the text is measured. Each row holds
    ``tokenizer``, ``tokens``, ``characters``, ``bytes``, ``chars_per_token``, ``bytes_per_token`` and
    ``pieces`` (display form, whitespace visible: ``["Hello", "␣world"]``). The ratios are None for no tokens.
    """
    rows = []
    n_chars, n_bytes = len(text), len(text.encode("utf-8", "surrogatepass"))
    for name, tokenizer in tokenizers.items():
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        special_ids = set(tokenizer.all_special_ids)
        byte_level = is_byte_level(tokenizer)
        pieces = [
            display_piece(str(p), byte_level, i in special_ids)
            for i, p in zip(ids, tokenizer.convert_ids_to_tokens(ids))
        ]
        rows.append(
            {
                "tokenizer": name,
                "tokens": len(ids),
                "characters": n_chars,
                "bytes": n_bytes,
                "chars_per_token": _ratio(n_chars, len(ids)),
                "bytes_per_token": _ratio(n_bytes, len(ids)),
                "pieces": pieces,
            }
        )
    return rows


def _looks_byte_level(tokens) -> bool:
    """Whether the pieces are written in GPT-2's byte alphabet: some piece uses a stand-in such as ``Ġ``."""
    stand_ins = {c for c, b in byte_decoder().items() if ord(c) != b}
    pieces = [t.piece for t in tokens if not t.special]
    return any(stand_ins.intersection(p) for p in pieces) and all(piece_bytes(p) is not None for p in pieces)


def _token_bytes(token: Token, text: str, byte_level: bool) -> bytes:
    """The bytes a token stands for: its own bytes in byte-level BPE (which may split a character), else its text's."""
    if byte_level and not token.special:
        raw = piece_bytes(token.piece)
        if raw is not None:
            return raw
    if token.end > token.start:
        return text[token.start : token.end].encode("utf-8", "surrogatepass")
    return b""  # a special token the tokenizer added ([CLS]) stands for no text


def token_title(index: int, token: Token, text: str, byte_level: bool) -> str:
    """The hover text of one token: ``#1 id 995 · piece 'Ġworld' · chars 5–11 · bytes 20 77 6f 72 6c 64``."""
    raw = _token_bytes(token, text, byte_level)
    where = f"chars {token.start}–{token.end}" if token.end > token.start else "no characters"
    kind = " · special" if token.special else ""
    return f"#{index} id {token.id} · piece {token.piece!r} · {where} · bytes {raw.hex(' ') or '—'}{kind}"


def token_spans_html(tokens: tuple[Token, ...] | list[Token], text: str, byte_level: bool | None = None) -> str:
    """The live tokenization view: every token a coloured ``<span>``, whitespace visible, details on hover.

    Backgrounds cycle through pastels so neighbouring tokens stand apart; special tokens get a bold
    border. Text a tokenizer drops (BERT drops spaces) is shown, greyed, between the tokens. Every piece of
    text is HTML-escaped. ``byte_level`` (GPT-2 style pieces) is guessed from the pieces when not given.
    No tokens give ``""``.
    """
    if not tokens:
        return ""
    if byte_level is None:
        byte_level = _looks_byte_level(tokens)
    parts, cursor, colour = [], 0, 0
    for i, t in enumerate(tokens):
        if t.end > t.start and t.start > cursor:  # text between tokens that no token covers
            gap = escape(visible(text[cursor : t.start]))
            parts.append(f'<span class="tok-gap" title="not part of any token">{gap}</span>')
        if t.special:
            classes = "tok tok-special"
        else:
            classes = f"tok c{colour % len(PASTELS)}"  # neighbours never share a colour
            colour += 1
        title = escape(token_title(i, t, text, byte_level), quote=True)
        label = escape(t.display or visible(t.piece))
        parts.append(f'<span class="{classes}" title="{title}">{label}</span>')
        cursor = max(cursor, t.end)
    return f'<div class="token-spans">{SPAN_STYLE}' + "".join(parts) + "</div>"
