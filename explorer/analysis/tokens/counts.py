"""How a text becomes tokens, measured: counts and tokenizer comparisons (the coloured spans are drawn in
``explorer.plots.tokens``)."""

from __future__ import annotations

from dataclasses import dataclass

from explorer.core.tokens import display_piece, is_byte_level, tokenize
from explorer.core.trace import Token


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


@dataclass(frozen=True)
class TokenizerComparison:
    """``compare_tokenizers``' rows, and each tokenizer's tokens of the text (special tokens included, as
    the live view shows them) by tokenizer name, for drawing the spans side by side."""

    rows: list[dict]
    tokens: dict[str, tuple[Token, ...]]


def tokenizers_side_by_side(text: str, tokenizers: dict[str, object]) -> TokenizerComparison:
    """How each tokenizer cuts ``text``: its counts (``compare_tokenizers``) and its tokens."""
    rows = compare_tokenizers(text, tokenizers)
    return TokenizerComparison(rows, {r["tokenizer"]: tokenize(tokenizers[r["tokenizer"]], text) for r in rows})
