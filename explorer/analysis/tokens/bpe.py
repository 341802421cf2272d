"""Byte-pair encoding, step by step: replay a BPE tokenizer's merges on a text, and train a small one.

A BPE tokenizer cuts a text into words (its pre-tokenizer), starts each word as single symbols
and then, again and again, merges the adjacent pair that was learned earliest (lowest rank),
until no learned pair is left. ``replay_text`` records every one of those merges, so the view
can show how ``"Ġworld"`` grows from ``Ġ w o r l d`` into one token. For GPT-2 the symbols are
bytes written in its printable byte alphabet (a space is ``Ġ``, a newline ``Ċ``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from explorer.core.cache import PerObject
from explorer.core.errors import InputError
from explorer.core.limits import MAX_BPE_TRAINING_CHARS

Pair = tuple[str, str]
MIN_VOCAB = 257  # the 256 byte symbols and <|endoftext|>: no merges at all
MAX_VOCAB = 20_000


@dataclass(frozen=True)
class MergeStep:
    """One merge: the pair joined, its rank (0 = learned first) and the word's symbols afterwards."""

    pair: Pair
    rank: int
    symbols: tuple[str, ...]


@dataclass(frozen=True)
class WordReplay:
    """One pre-tokenized word: where it is in the text, its first symbols, every merge, its final tokens.

    An added token (``<|endoftext|>``) found in the text is a word of its own with no steps.
    """

    piece: str
    offsets: tuple[int, int]
    start_symbols: tuple[str, ...]
    steps: tuple[MergeStep, ...]
    tokens: tuple[str, ...]


def _backend(tokenizer):
    """The ``tokenizers.Tokenizer`` behind a transformers tokenizer (or the argument itself)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "to_str"):
        raise ValueError(f"{type(tokenizer).__name__} has no 'tokenizers' backend, so its merges cannot be read.")
    return backend


def _bpe_model(tokenizer) -> dict:
    model = json.loads(_backend(tokenizer).to_str())["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"This tokenizer is {model.get('type', 'of an unknown kind')}, not BPE: it has no merges.")
    return model


def _merge_list(model: dict) -> list[Pair]:
    # tokenizer.json holds merges as ["a", "b"] (new format) or "a b" (old format)
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]


@dataclass(frozen=True)
class _Tables:
    """What replay needs from a BPE model, read once per tokenizer (serializing GPT-2's takes ~0.2 s)."""

    ranks: dict[Pair, int]
    vocab: dict[str, int]
    model: dict  # the other settings: ignore_merges, continuing_subword_prefix, ...


def _read_tables(tokenizer) -> _Tables:
    model = _bpe_model(tokenizer)
    ranks = {pair: rank for rank, pair in enumerate(_merge_list(model))}  # a pair listed twice keeps its last rank
    return _Tables(ranks, model.pop("vocab"), {k: v for k, v in model.items() if k != "merges"})


_bpe_tables: PerObject[_Tables] = PerObject(_read_tables)  # per tokenizer, freed with it


def merge_ranks(tokenizer) -> dict[Pair, int]:
    """Each learned pair -> its rank, the position in the merge list: ``{("Ġ", "t"): 0, ("Ġ", "a"): 1, ...}``.

    Raises ValueError for a tokenizer that is not BPE (WordPiece, Unigram).
    A pair listed twice keeps its last rank, as both GPT-2's ``bpe()`` and ``tokenizers`` do.
    """
    return dict(_bpe_tables(tokenizer).ranks)


def adjacent_pairs(symbols: tuple[str, ...] | list[str]) -> set[Pair]:
    """The pairs of neighbouring symbols: ``("a", "b", "a", "b")`` -> ``{("a", "b"), ("b", "a")}``."""
    return set(zip(symbols, symbols[1:]))


def merge(symbols: tuple[str, ...], pair: Pair) -> tuple[str, ...]:
    """Join every occurrence of ``pair``, left to right, without overlaps.

    ``merge(("a", "a", "a", "b"), ("a", "a"))`` -> ``("aa", "a", "b")``
    """
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def replay_bpe(word: str, ranks: dict[Pair, int]) -> list[MergeStep]:
    """Every merge BPE makes on one pre-tokenized word, in order, as GPT-2's ``bpe()`` makes them.

    Start from the word's characters; each step joins all occurrences of the adjacent pair with
    the lowest rank; stop when no adjacent pair has a rank. With GPT-2's merges, ``"Ġworld"``:

        Ġ w o r l d
        Ġw o r l d        merge ("Ġ", "w")     rank 10
        Ġw or l d         merge ("o", "r")     rank 17
        Ġw or ld          merge ("l", "d")     rank 79
        Ġwor ld           merge ("Ġw", "or")   rank 220
        Ġworld            merge ("Ġwor", "ld") rank 739

    The final tokens are the last step's symbols (the characters themselves when there is no step).
    """
    symbols, steps = tuple(word), []
    while len(symbols) > 1:
        ranked = [(ranks[p], p) for p in adjacent_pairs(symbols) if p in ranks]
        if not ranked:
            break
        rank, pair = min(ranked)
        symbols = merge(symbols, pair)
        steps.append(MergeStep(pair, rank, symbols))
    return steps


def _added_token_pattern(backend) -> re.Pattern | None:
    """Matches the tokenizer's added tokens (``<|endoftext|>``), longest first, as ``tokenizers`` splits them."""
    contents = sorted({t.content for t in backend.get_added_tokens_decoder().values() if t.content}, key=len)
    if not contents:
        return None
    return re.compile("|".join(re.escape(c) for c in reversed(contents)))


def _segments(text: str, pattern: re.Pattern | None) -> list[tuple[str, int, bool]]:
    """The text cut around added tokens: (segment, start, is_added_token), e.g. ``a<|endoftext|>b`` -> 3 segments."""
    out, cursor = [], 0
    for m in pattern.finditer(text) if pattern else ():
        if m.start() > cursor:
            out.append((text[cursor : m.start()], cursor, False))
        out.append((m.group(), m.start(), True))
        cursor = m.end()
    if cursor < len(text):
        out.append((text[cursor:], cursor, False))
    return out


def replay_text(tokenizer, text: str) -> list[WordReplay]:
    """Replay a BPE tokenizer on a whole text: one ``WordReplay`` per pre-tokenized word, in order.

    As the tokenizer does: added tokens are split out first, the rest goes through its own
    normalizer and pre-tokenizer, and each word is merged by ``replay_bpe``. The words' tokens,
    concatenated, equal ``tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])``.
    Offsets are character offsets into ``text`` (into the normalized text for a normalizing tokenizer).
    An empty text gives ``[]``; whitespace alone is a word too (``"  "`` -> ``ĠĠ``, two tokens for GPT-2).

    Raises ValueError for a tokenizer that is not BPE, or whose words do not start as single characters
    of the vocabulary (subword prefixes or suffixes, byte fallback): replay covers byte-level BPE.
    """
    tables = _bpe_tables(tokenizer)
    ranks, vocab, model = tables.ranks, tables.vocab, tables.model
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise ValueError("This BPE marks word continuations or endings, so its words do not start as characters.")
    backend = _backend(tokenizer)
    words = []
    for segment, start, added in _segments(text, _added_token_pattern(backend)):
        if added:
            words.append(WordReplay(segment, (start, start + len(segment)), (segment,), (), (segment,)))
            continue
        if backend.normalizer is not None:
            segment = backend.normalizer.normalize_str(segment)
        pieces = (
            backend.pre_tokenizer.pre_tokenize_str(segment) if backend.pre_tokenizer else [(segment, (0, len(segment)))]
        )
        for piece, (a, b) in pieces:
            if not piece:
                continue
            unknown = [c for c in piece if c not in vocab]
            if unknown:
                raise ValueError(
                    f"The character {unknown[0]!r} is not in this BPE's vocabulary; replay covers byte-level BPE, "
                    "where every byte is a symbol."
                )
            if model.get("ignore_merges") and piece in vocab:  # e.g. Llama 3: a whole word in the vocabulary wins
                steps, tokens = [], (piece,)
            else:
                steps = replay_bpe(piece, ranks)
                tokens = steps[-1].symbols if steps else tuple(piece)
            words.append(WordReplay(piece, (start + a, start + b), tuple(piece), tuple(steps), tokens))
    return words


def replay_tokens(words: list[WordReplay]) -> list[str]:
    """All final tokens of a replay, in order: what the tokenizer itself produces."""
    return [token for word in words for token in word.tokens]


MAX_REPLAY_WORDS = 200  # words one replay shows (and checks) at most


@dataclass(frozen=True)
class ReplayCheck:
    """A text replayed word by word (at most ``MAX_REPLAY_WORDS`` of its ``total_words``), and whether the
    replay ends in exactly the tokenizer's own tokens: ``matches`` is None when the replay was cut short
    and the two token counts differ, so they cannot be compared."""

    words: list[WordReplay]
    total_words: int
    matches: bool | None


def replay_check(tokenizer, text: str, max_words: int = MAX_REPLAY_WORDS) -> ReplayCheck:
    """``replay_text`` for at most ``max_words`` words, checked against ``tokenizer``'s own tokens of ``text``."""
    words = replay_text(tokenizer, text)
    total = len(words)
    words = words[:max_words]
    replayed = replay_tokens(words)
    own = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    matches = None
    if len(words) < max_words or len(replayed) == len(own):
        matches = replayed == own[: len(replayed)]
    return ReplayCheck(words, total, matches)


@dataclass(frozen=True)
class TrainedBPE:
    """A byte-level BPE trained on a user's text: its merges in the order learned, and a ready tokenizer."""

    merges: tuple[Pair, ...]  # rank order: merges[0] was learned first
    vocab_size: int  # reached; below the requested size when the text has no more pairs to merge
    requested_vocab_size: int
    tokenizer: object  # transformers GPT2Tokenizer


def _check_training_input(text, vocab_size) -> None:
    if not isinstance(text, str):
        raise InputError(f"The training text must be a string, not {type(text).__name__}.")
    if not text.strip():
        raise InputError("The training text is empty: paste a few paragraphs to learn merges from.")
    if len(text) > MAX_BPE_TRAINING_CHARS:
        raise InputError(
            f"The training text has {len(text):,} characters; at most {MAX_BPE_TRAINING_CHARS:,} can be used."
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"The training text holds an invalid character (a lone surrogate at position {err.start})."
        ) from err
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise InputError(
            f"The vocabulary size must be a whole number from {MIN_VOCAB} (the 256 bytes and <|endoftext|>, "
            f"no merges) to {MAX_VOCAB:,}; got {vocab_size!r}."
        )


def train_bpe(text: str, vocab_size: int, progress: Callable[[float, str], object] | None = None) -> TrainedBPE:
    """Train a GPT-2-style byte-level BPE on ``text`` (the project's recipe) and keep its merges in order.

    ``progress(fraction, message)``, if given, hears of the start, the end of training and the end.
    Raises ``InputError`` for an empty or over-long text and a vocabulary size outside 257..20,000.
    """
    _check_training_input(text, vocab_size)
    from explorer.core.tokenizer_training import train_byte_level_bpe  # transformers: only when training

    if progress:
        progress(0.0, f"Learning merges from {len(text):,} characters…")
    tokenizer = train_byte_level_bpe([text], vocab_size)
    if progress:
        progress(0.8, "Reading the learned merges…")
    merges = tuple(_merge_list(_bpe_model(tokenizer)))
    trained = TrainedBPE(merges, len(tokenizer.get_vocab()), vocab_size, tokenizer)
    if progress:
        progress(1.0, f"Learned {len(merges):,} merges; vocabulary of {trained.vocab_size:,} tokens.")
    return trained
