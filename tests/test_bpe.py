"""Tokenization analysis: BPE replay against real tokenizers, training, comparisons and the span view."""

import json
import random
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers

from explorer.analysis.tokens.bpe import (
    MergeStep,
    adjacent_pairs,
    merge,
    merge_ranks,
    replay_bpe,
    replay_text,
    replay_tokens,
    train_bpe,
)
from explorer.analysis.tokens.counts import compare_tokenizers, token_counts
from explorer.core.errors import InputError
from explorer.core.limits import MAX_BPE_TRAINING_CHARS
from explorer.core.loading import load_tokenizer
from explorer.core.run import check_text
from explorer.core.tokenizer_training import train_wordpiece
from explorer.core.tokens import token_rows
from explorer.core.trace import Token
from explorer.plots.tokens import token_spans_html

GPT2_JSON = Path(__file__).resolve().parents[1] / "models" / "gpt2-bpe" / "tokenizer.json"

PARAGRAPHS = (
    "The cat sat on the mat. Then the cat saw the other cat, and here the two cats sat together.\n"
    "In the morning the sun rose over the hills; the birds sang and the farmer went to the field.\n"
    "Numbers like 42, 1999 and 3.14 appear too, with café, naïve and 東京 for good measure!\n\n"
) * 20


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2-bpe")


@pytest.fixture(scope="module")
def wordpiece():
    return train_wordpiece([PARAGRAPHS], vocab_size=200)


def own_tokens(tok, text: str) -> list[str]:
    return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])


# --- pure helpers -----------------------------------------------------------------------------------


def test_merge_joins_every_occurrence_left_to_right_without_overlap():
    assert merge(("a", "a", "a", "b"), ("a", "a")) == ("aa", "a", "b")
    assert merge(("a", "b", "a", "b"), ("a", "b")) == ("ab", "ab")
    assert merge(("a",), ("a", "a")) == ("a",)
    assert adjacent_pairs(("a", "b", "a", "b")) == {("a", "b"), ("b", "a")}


def test_replay_bpe_on_made_up_merges_takes_lowest_rank_first():
    ranks = {("b", "c"): 0, ("a", "b"): 1, ("a", "bc"): 2, ("abc", "d"): 3}
    steps = replay_bpe("abcd", ranks)
    # ("b", "c") wins over the earlier-placed ("a", "b") because its rank is lower
    assert steps == [
        MergeStep(("b", "c"), 0, ("a", "bc", "d")),
        MergeStep(("a", "bc"), 2, ("abc", "d")),
        MergeStep(("abc", "d"), 3, ("abcd",)),
    ]
    assert replay_bpe("x", ranks) == [] and replay_bpe("", ranks) == []
    # one step joins every occurrence of the pair, as GPT-2's bpe() does
    assert replay_bpe("ababa", {("a", "b"): 0}) == [MergeStep(("a", "b"), 0, ("ab", "ab", "a"))]
    assert replay_bpe("aaa", {("a", "a"): 0, ("aa", "a"): 1}) == [
        MergeStep(("a", "a"), 0, ("aa", "a")),
        MergeStep(("aa", "a"), 1, ("aaa",)),
    ]


# --- GPT-2 known answers ----------------------------------------------------------------------------


def test_gpt2_hello_world_known_answer(gpt2):
    assert gpt2("Hello world")["input_ids"] == [15496, 995]
    words = replay_text(gpt2, "Hello world")
    assert replay_tokens(words) == ["Hello", "Ġworld"]
    assert [w.piece for w in words] == ["Hello", "Ġworld"] and [w.offsets for w in words] == [(0, 5), (5, 11)]
    assert words[1].start_symbols == ("Ġ", "w", "o", "r", "l", "d")
    assert [s.pair for s in words[1].steps] == [("Ġ", "w"), ("o", "r"), ("l", "d"), ("Ġw", "or"), ("Ġwor", "ld")]
    # every rank is the pair's line in the merges file itself, read here without the code under test
    file_rank = {tuple(m): i for i, m in enumerate(json.loads(GPT2_JSON.read_text())["model"]["merges"])}
    for word in words:
        assert word.steps, word.piece
        for step in word.steps:
            assert step.rank == file_rank[step.pair]
        assert [s.rank for s in word.steps] == sorted(s.rank for s in word.steps)  # no merge re-enables an older one


def test_merge_ranks_reads_gpt2_and_refuses_wordpiece(gpt2, wordpiece):
    ranks = merge_ranks(gpt2)
    assert len(ranks) == 50_000 and ranks[("Ġ", "t")] == 0
    with pytest.raises(ValueError, match="not BPE"):
        merge_ranks(wordpiece)
    with pytest.raises(ValueError, match="not BPE"):
        replay_text(wordpiece, "hello")


def test_replay_splits_out_added_tokens_as_the_tokenizer_does(gpt2):
    text = "Hello <|endoftext|>world<|endoftext|><|endoftext|> end"
    words = replay_text(gpt2, text)
    assert replay_tokens(words) == own_tokens(gpt2, text) == [
        "Hello", "Ġ", "<|endoftext|>", "world", "<|endoftext|>", "<|endoftext|>", "Ġend",
    ]  # fmt: skip
    eot = [w for w in words if w.piece == "<|endoftext|>"]
    assert len(eot) == 3 and all(w.steps == () for w in eot)
    assert [text[a:b] for a, b in (w.offsets for w in eot)] == ["<|endoftext|>"] * 3


@pytest.mark.parametrize(
    ("ignore_merges", "expected"),
    [(False, ["a", "bc", "<|endoftext|>", "Ġ", "c", "ab"]), (True, ["abc", "<|endoftext|>", "Ġ", "c", "ab"])],
)
def test_replay_of_a_hand_made_bpe_follows_ignore_merges(ignore_merges, expected):
    # "abc" is in the vocabulary but no merge reaches it: only a tokenizer that ignores merges (Llama 3) emits it.
    # A bare tokenizers.Tokenizer, not a transformers one, is replayed too.
    vocab = {c: i for i, c in enumerate(["a", "b", "c", "Ġ", "ab", "bc", "abc"])}
    tok = Tokenizer(models.BPE(vocab, [("b", "c"), ("a", "b")], ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens(["<|endoftext|>"])
    text = "abc<|endoftext|> cab"
    assert tok.encode(text).tokens == expected
    assert replay_tokens(replay_text(tok, text)) == expected


@pytest.mark.parametrize("text", ["", " ", "   \n\t ", "\n"])
def test_replay_of_empty_or_blank_text(gpt2, text):
    words = replay_text(gpt2, text)
    assert replay_tokens(words) == own_tokens(gpt2, text)
    assert (words == []) == (text == "")


# --- property tests: encode/decode and replay agree with the real tokenizer ---------------------------

ODD = list(" \t\n\r\x00\x01\x1b\x7f\x85\xa0'’ sll ve re😀👍🏽👨‍👩‍👧é\u0301\u0327\u200b\u200d\ufeff\u2028\U0010fffd東京")
unicode_text = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(ODD)),
    max_size=80,
)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(text=unicode_text)
def test_gpt2_decode_encode_round_trips_any_unicode(gpt2, text):
    ids = gpt2(text, add_special_tokens=False)["input_ids"]
    assert gpt2.decode(ids) == text


@PROPERTY
@given(text=unicode_text)
def test_replay_equals_tokenizer_on_any_unicode(gpt2, text):
    assert replay_tokens(replay_text(gpt2, text)) == own_tokens(gpt2, text)


WORDS = "the cat sat on mat hello world don't we'll I'm naïve café 東京 Ñandú straße œuvre aaaa zzzz".split()
PUNCT = list(".,;:!?-—–()[]{}<>\"'`~@#$%^&*_+=/\\|")
ALPHABETS = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
             (0x900, 0x97F), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F6FF), (0, 0x1F)]  # fmt: skip


def generated_strings(n: int, seed: int = 1234) -> list[str]:
    """Texts mixing words, punctuation, digits, whitespace runs and characters of many scripts."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            kind = rng.random()
            if kind < 0.4:
                parts.append(rng.choice(WORDS) if rng.random() < 0.7 else rng.choice(WORDS).upper())
            elif kind < 0.55:
                parts.append("".join(rng.choices(PUNCT, k=rng.randint(1, 3))))
            elif kind < 0.65:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 8))))
            elif kind < 0.8:
                parts.append("".join(rng.choices(" \t\n\r", weights=[6, 1, 2, 1], k=rng.randint(1, 4))))
            elif kind < 0.97:
                lo, hi = rng.choice(ALPHABETS)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 5))))
            else:
                parts.append("<|endoftext|>")
            parts.append(" " if rng.random() < 0.6 else "")
        out.append("".join(parts))
    return out


def test_replay_equals_tokenizer_on_2000_generated_strings(gpt2):
    start = time.perf_counter()
    texts = generated_strings(2000)
    assert sum(map(len, texts)) > 50_000  # the generator really makes text
    for text in texts:
        assert replay_tokens(replay_text(gpt2, text)) == own_tokens(gpt2, text), text
        assert gpt2.decode(gpt2(text, add_special_tokens=False)["input_ids"]) == text
    print(f"2000 replays in {time.perf_counter() - start:.1f} s")


def test_lone_surrogates_are_refused_before_tokenizing():
    # A lone surrogate cannot be encoded as UTF-8: the UI refuses the text with a sentence, never a stack trace.
    with pytest.raises(InputError, match="lone surrogate at position 1"):
        check_text("a\ud800b")
    with pytest.raises(InputError, match="lone surrogate"):
        train_bpe("abc \udfff", 300)


# --- training ---------------------------------------------------------------------------------------


def pair_counts(text: str) -> Counter:
    """Adjacent symbol pairs over the byte-level words of ``text``, counted independently of the trainer."""
    words = Counter(w for w, _ in pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(text))
    counts = Counter()
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += n
    return counts


def test_train_bpe_learns_the_most_frequent_pair_first_and_round_trips():
    calls = []
    trained = train_bpe(PARAGRAPHS, 300, progress=lambda f, m: calls.append((f, m)))
    counts = pair_counts(PARAGRAPHS)
    (top, n), (_, runner_up) = counts.most_common(2)
    assert n > runner_up  # the test text has one clear winner
    assert trained.merges[0] == top
    assert trained.vocab_size == 300 == len(trained.merges) + 256 + 1 and trained.requested_vocab_size == 300
    tok = trained.tokenizer
    for text in [PARAGRAPHS[:400], "unseen words: zebra quixotic 😀", ""]:
        assert tok.decode(tok(text)["input_ids"]) == text
        assert replay_tokens(replay_text(tok, text)) == own_tokens(tok, text)
    assert merge_ranks(tok) == {pair: rank for rank, pair in enumerate(trained.merges)}
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions) and len(calls) >= 3
    assert all(isinstance(m, str) and m for _, m in calls)


def test_train_bpe_stops_early_on_a_tiny_text():
    trained = train_bpe("ab ab ab", 1000)
    assert trained.vocab_size < 1000 and trained.vocab_size == 257 + len(trained.merges)


@pytest.mark.parametrize(
    ("text", "vocab_size", "message"),
    [
        ("", 300, "empty"),
        ("  \n ", 300, "empty"),
        ("x" * (MAX_BPE_TRAINING_CHARS + 1), 300, "at most 2,000,000"),
        ("hello", 256, "vocabulary size"),
        ("hello", 20_001, "vocabulary size"),
        ("hello", "300", "vocabulary size"),
        ("hello", True, "vocabulary size"),
        (b"hello", 300, "must be a string"),
    ],
)
def test_train_bpe_refuses_bad_input(text, vocab_size, message):
    with pytest.raises(InputError, match=message):
        train_bpe(text, vocab_size)


# --- comparisons, counts and the span view ----------------------------------------------------------


def test_compare_tokenizers_counts_are_consistent(gpt2, wordpiece):
    text = "Hello world, the cat sat on the mat. 東京 😀"
    rows = compare_tokenizers(text, {"gpt2": gpt2, "wordpiece": wordpiece})
    assert [r["tokenizer"] for r in rows] == ["gpt2", "wordpiece"]
    for row in rows:
        assert row["tokens"] == len(row["pieces"]) > 0
        assert row["characters"] == len(text) and row["bytes"] == len(text.encode("utf-8"))
        assert row["chars_per_token"] == pytest.approx(len(text) / row["tokens"])
        assert row["bytes_per_token"] == pytest.approx(row["bytes"] / row["tokens"])
    assert rows[0]["tokens"] == len(gpt2(text)["input_ids"])
    assert rows[0]["pieces"][:2] == ["Hello", "␣world"]
    # The trained WordPiece's split of a word depends on how its trainer broke ties in that process
    # ("##el" or "##e ##ll"), so check what holds for any split: its own tokens, no template tokens,
    # and continuation pieces that glue back into the lower-cased words (unknown characters as [UNK]).
    assert rows[1]["pieces"] == own_tokens(wordpiece, text) and rows[1]["tokens"] == len(rows[1]["pieces"])
    words = []
    for piece in rows[1]["pieces"]:
        if piece.startswith("##") and words:
            words[-1] += piece[2:]
        else:
            words.append(piece)
    assert words == ["hello", "world", ",", "the", "cat", "sat", "on", "the", "mat", ".", "東", "京", "[UNK]"]
    assert compare_tokenizers("", {"gpt2": gpt2})[0] | {"pieces": None} == {
        "tokenizer": "gpt2", "tokens": 0, "characters": 0, "bytes": 0,
        "chars_per_token": None, "bytes_per_token": None, "pieces": None,
    }  # fmt: skip


def rows_of(tok, text: str, special: bool = True):
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=special)
    return token_rows(tok, enc["input_ids"], enc["offset_mapping"])


def test_token_counts_leave_out_template_tokens(gpt2, wordpiece):
    text = "the cat sat"
    bert_rows = rows_of(wordpiece, text)
    assert bert_rows[0].piece == "[CLS]" and bert_rows[-1].piece == "[SEP]"
    counts = token_counts(text, bert_rows)
    assert counts["tokens"] == len(bert_rows) and counts["text_tokens"] == len(bert_rows) - 2
    assert counts["text_tokens"] == compare_tokenizers(text, {"w": wordpiece})[0]["tokens"]
    assert token_counts("Hello world", rows_of(gpt2, "Hello world")) == {
        "characters": 11, "bytes": 11, "tokens": 2, "text_tokens": 2, "chars_per_token": 5.5, "bytes_per_token": 5.5,
    }  # fmt: skip
    typed = token_counts("a<|endoftext|>", rows_of(gpt2, "a<|endoftext|>"))
    assert typed["text_tokens"] == 2  # a typed special token is part of the text
    assert token_counts("", ())["chars_per_token"] is None


class Spans(HTMLParser):
    """Collects the token spans of the view: (class, title, text)."""

    def __init__(self):
        super().__init__()
        self.spans, self._open = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "span":
            a = dict(attrs)
            self._open = [a.get("class", ""), a.get("title", ""), ""]

    def handle_data(self, data):
        if self._open is not None:
            self._open[2] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.spans.append(tuple(self._open))
            self._open = None


def parse(html: str) -> list[tuple[str, str, str]]:
    parser = Spans()
    parser.feed(html)
    return parser.spans


def test_token_spans_escape_html_and_show_spaces(gpt2):
    text = 'Hi <script>alert(1)</script> "x" & y<|endoftext|>'
    rows = rows_of(gpt2, text)
    html = token_spans_html(rows, text)
    assert "<script" not in html and "&lt;" in html and "&quot;" in html and "&amp;" in html
    spans = parse(html)
    assert [s[2] for s in spans] == [t.display for t in rows]
    assert spans[2][2] == "script" and "␣<" in [s[2] for s in spans]
    assert spans[0][1].startswith("#0 id 17250 · piece 'Hi' · chars 0–2 · bytes 48 69")
    assert [s[0] for s in spans].count("tok tok-special") == 1 and "special" in spans[-1][1]
    # one token whose own text is markup: escaped in the body and in the title
    evil = Token(1, "<script>alert(1)</script>", "<script>alert(1)</script>", 0, 25)
    html = token_spans_html((evil,), "<script>alert(1)</script>")
    assert "<script" not in html and parse(html)[0][2] == "<script>alert(1)</script>"
    assert "piece '<script>alert(1)</script>'" in parse(html)[0][1]


def test_token_spans_bytes_of_split_characters_and_dropped_spaces(gpt2, wordpiece):
    text = "a 😀"
    spans = parse(token_spans_html(rows_of(gpt2, text), text))
    assert [s[2] for s in spans] == ["a", "<20 f0 9f 98>", "<80>"]
    assert spans[1][1].endswith("bytes 20 f0 9f 98") and spans[2][1].endswith("bytes 80")
    text = "the  cat"  # WordPiece drops the spaces: they show greyed, between the tokens
    spans = parse(token_spans_html(rows_of(wordpiece, text), text))
    assert [s for s in spans if s[0] == "tok-gap"] == [("tok-gap", "not part of any token", "␣␣")]
    assert [s[2] for s in spans if s[0] == "tok tok-special"] == ["[CLS]", "[SEP]"]
    assert spans[1][1].endswith("bytes 74 68 65")  # "the", from the text
    assert spans[0][1] == "#0 id 2 · piece '[CLS]' · no characters · bytes — · special"


def test_token_spans_of_nothing_and_of_a_long_text(gpt2):
    assert token_spans_html((), "") == ""
    assert token_spans_html(rows_of(gpt2, "", special=False), "") == ""
    text = (PARAGRAPHS * 30)[:100_000]
    rows = rows_of(gpt2, text)
    html = token_spans_html(rows, text)
    assert len(parse(html)) == len(rows) > 10_000
