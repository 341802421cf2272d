"""From tokenizer output to ``Token`` rows: pieces, visible display text and character offsets."""

from __future__ import annotations

import re
from functools import cache, lru_cache

from explorer.core.trace import Token, visible

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted: the printable stand-in character -> the byte it encodes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = [getattr(backend, "pre_tokenizer", None), getattr(backend, "decoder", None)]
    return any("ByteLevel" in repr(p) for p in parts if p is not None)


@lru_cache(maxsize=65536)
def piece_bytes(piece: str) -> bytes | None:
    """The raw bytes behind a byte-level BPE piece (``"Ġworld"`` -> ``b" world"``), or None."""
    table = byte_decoder()
    try:
        return bytes(table[c] for c in piece)
    except KeyError:
        return None


@lru_cache(maxsize=65536)  # pieces repeat: a vocabulary is small next to a long text
def display_piece(piece: str, byte_level: bool, special: bool) -> str:
    """What a token stands for, with whitespace visible: ``Ġworld`` -> ``␣world``, ``▁the`` -> ``␣the``.

    A byte-level piece holding part of a UTF-8 character shows its bytes: ``<e2 80>``.
    """
    if special:
        return piece
    if byte_level:
        raw = piece_bytes(piece)
        if raw is not None:
            try:
                return visible(raw.decode("utf-8"))
            except UnicodeDecodeError:
                return "<" + " ".join(f"{b:02x}" for b in raw) + ">"
    fallback = _BYTE_FALLBACK.match(piece)
    if fallback:
        byte = int(fallback.group(1), 16)
        return visible(chr(byte)) if byte < 0x80 else f"<{byte:02x}>"
    return visible(piece.replace("▁", " "))


def token_label(tokenizer, token_id: int) -> str:
    """One vocabulary entry as a view labels it: its piece with whitespace and bytes visible (``␣world``)."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    return display_piece(str(piece), is_byte_level(tokenizer), int(token_id) in tokenizer.all_special_ids)


def encode(tokenizer, text: str, add_special_tokens: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` and each one's character span in it."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def tokenize(tokenizer, text: str) -> tuple[Token, ...]:
    """``text`` as token rows (id, piece, display form, span), special tokens included."""
    return token_rows(tokenizer, *encode(tokenizer, text))


def token_rows(tokenizer, ids: list[int], offsets: list[tuple[int, int]] | None) -> tuple[Token, ...]:
    pieces = tokenizer.convert_ids_to_tokens(ids)
    special_ids = set(tokenizer.all_special_ids)
    byte_level = is_byte_level(tokenizer)
    rows = []
    for i, (tid, piece) in enumerate(zip(ids, pieces)):
        special = tid in special_ids
        start, end = offsets[i] if offsets else (0, 0)
        rows.append(Token(int(tid), str(piece), display_piece(str(piece), byte_level, special), start, end, special))
    return tuple(rows)


def decoded_offsets(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """Offsets of each token in the decoded text of ``ids`` (for generated text, which has no source string)."""
    offsets, prev = [], 0
    for i in range(len(ids)):
        length = len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True))
        offsets.append((prev, max(prev, length)))
        prev = max(prev, length)
    return offsets


def looks_byte_level(tokens) -> bool:
    """Whether the pieces are written in GPT-2's byte alphabet: some piece uses a stand-in such as ``Ġ``."""
    stand_ins = {c for c, b in byte_decoder().items() if ord(c) != b}
    pieces = [t.piece for t in tokens if not t.special]
    return any(stand_ins.intersection(p) for p in pieces) and all(piece_bytes(p) is not None for p in pieces)


def output_words(tokenizer, ids: list[int], text: str) -> str:
    """A model's own greedy output ``text`` (decoded from ``ids``, special tokens dropped) as a view quotes it.

    T5's sentinels stay in the quote (they say which span each part fills: ``<extra_id_0> light <extra_id_1>``);
    padding and the end token do not. An output with no words at all (span infill answering a text without
    sentinels) is said so, with the tokens it did write and what the model answers instead.
    """
    if not text.strip():
        wrote = " ".join(token_label(tokenizer, i) for i in ids) or "nothing"
        sentinel = "<extra_id_0>"
        hint = f" (it fills the spans a text marks with sentinels: try one such as {sentinel})"
        return f"no words, only {wrote}{hint if sentinel in tokenizer.get_vocab() else ''}"
    plain = {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id} - {None}
    kept = [i for i in ids if i not in plain]
    if set(kept) & set(tokenizer.all_special_ids):
        shown = tokenizer.decode(kept, skip_special_tokens=False)
        specials = "|".join(re.escape(str(t)) for t in tokenizer.all_special_tokens)
        spaced = re.sub(f"({specials})", r" \1 ", shown)  # a space each side of a sentinel
        return f"“{' '.join(spaced.split())}”"
    return f"“{text}”"
