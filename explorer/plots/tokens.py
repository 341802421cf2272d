"""The live tokenization view: a text's tokens as coloured, escaped HTML spans with their details on hover;
and several tokenizers' spans of one text, one under another."""

from __future__ import annotations

from html import escape

from explorer.core.tokens import looks_byte_level, piece_bytes
from explorer.core.trace import Token, visible
from explorer.plots.text import readable_token

PASTELS = ("#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d7f0db")
# One style block per view instead of a style attribute per token: a 10 kB text has ~2,800 spans.
# The spans sit side by side with nothing between them, so a line could not break there: each is an inline
# box, between which a line may break (a phone screen holds ~35 characters), and one token longer than a line
# breaks inside. Inline boxes, not a flex row: the strip's text still reads as the text (copying, find in page).
SPAN_STYLE = (
    "<style>.token-spans{line-height:1.9;font-family:monospace}"
    ".token-spans .tok,.token-spans .tok-gap{display:inline-block;white-space:pre-wrap;overflow-wrap:anywhere;"
    "max-width:100%}"
    ".token-spans .tok{padding:1px 2px;margin:1px;border-radius:3px}"
    ".token-spans .tok-special{border:2px solid #444;font-weight:bold;background:#f4f4f4}"
    ".token-spans .tok-gap{color:#999}"
    + "".join(f".token-spans .c{i}{{background:{c}}}" for i, c in enumerate(PASTELS))
    + "</style>"
)


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


def _stands_for_the_space_before(token: Token, text: str) -> bool:
    """Whether a token's leading ``␣`` is the space just before its offsets: SentencePiece (T5) pieces such as
    ``▁ti`` start with the space they replace, and their offsets leave it out (``"The tiger"``: ``▁ti`` 4–6)."""
    return not token.special and token.display.startswith("␣") and not text[token.start : token.end].startswith(" ")


def token_spans_html(tokens: tuple[Token, ...] | list[Token], text: str, byte_level: bool | None = None) -> str:
    """The live tokenization view: every token a coloured ``<span>``, whitespace visible, details on hover.

    Backgrounds cycle through pastels so neighbouring tokens stand apart; special tokens get a bold
    border. Text a tokenizer drops (BERT drops spaces) is shown, greyed, between the tokens, except a space a
    piece already shows as its own ``␣`` (T5's ``▁ti`` after "The "): each space is shown once. Every piece of
    text is HTML-escaped. ``byte_level`` (GPT-2 style pieces) is guessed from the pieces when not given.
    No tokens give ``""``.
    """
    if not tokens:
        return ""
    if byte_level is None:
        byte_level = looks_byte_level(tokens)
    parts, cursor, colour = [], 0, 0
    for i, t in enumerate(tokens):
        if t.end > t.start and t.start > cursor:  # text between tokens that no token covers
            gap = text[cursor : t.start]
            if gap.endswith(" ") and _stands_for_the_space_before(t, text):
                gap = gap[:-1]  # shown once: as the token's own ␣
            if gap:
                parts.append(
                    f'<span class="tok-gap" title="not part of any token">{escape(readable_token(visible(gap)))}</span>'
                )
        if t.special:
            classes = "tok tok-special"
        else:
            classes = f"tok c{colour % len(PASTELS)}"  # neighbours never share a colour
            colour += 1
        title = escape(token_title(i, t, text, byte_level), quote=True)
        label = escape(readable_token(t.display or visible(t.piece)))  # as the figures write it
        parts.append(f'<span class="{classes}" title="{title}">{label}</span>')
        cursor = max(cursor, t.end)
    return f'<div class="token-spans">{SPAN_STYLE}' + "".join(parts) + "</div>"


def comparison_html(
    sections: list[tuple[str, int, tuple[Token, ...]]], text: str, problems: list[str] | tuple = ()
) -> str:
    """Each tokenizer's spans of ``text`` under a heading ``name — N tokens`` (``sections``: name and its
    tokens; N counts the text's own tokens, without the special tokens a tokenizer adds around it), then a
    warning line per tokenizer that could not be used. Every name and message is HTML-escaped."""
    html = "".join(
        f"<h4>{escape(name)} — {n_tokens} tokens</h4>" + token_spans_html(tokens, text)
        for name, n_tokens, tokens in sections
    )
    if problems:
        html += "<p>⚠️ " + "<br>⚠️ ".join(escape(p) for p in problems) + "</p>"
    return html
