"""What the tokens tab's handlers call, below the UI: the replay check, the replay and merge rows, tokenizers
side by side and their HTML, with known answers on the bundled GPT-2 and BERT tokenizers."""

import pytest

from explorer.analysis.tokens.bpe import MergeStep, WordReplay, replay_check, replay_text
from explorer.analysis.tokens.counts import compare_tokenizers, tokenizers_side_by_side
from explorer.analysis.tokens.table import merge_rows, replay_rows
from explorer.core.loading import load_tokenizer
from explorer.core.tokens import tokenize
from explorer.plots.tokens import comparison_html, token_spans_html
from tests.test_bpe import parse


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2-bpe")


@pytest.fixture(scope="module")
def bert():
    return load_tokenizer("tiny-bert")


def test_replay_check_agrees_with_the_tokenizer(gpt2):
    check = replay_check(gpt2, "Hello world")
    assert check.total_words == 2 and [w.piece for w in check.words] == ["Hello", "Ġworld"]
    assert check.matches is True


def test_replay_check_keeps_the_first_words_and_still_compares_when_it_can(gpt2):
    text = " ".join(["word"] * 30)
    check = replay_check(gpt2, text, max_words=10)
    assert check.total_words == 30 and len(check.words) == 10
    assert check.matches is None  # cut short, and 10 replayed tokens against 30 of the tokenizer's: no verdict
    whole = replay_check(gpt2, text, max_words=30)  # exactly at the limit: the token counts agree, so it compares
    assert len(whole.words) == 30 and whole.matches is True


def test_replay_check_says_when_the_replay_differs(gpt2):
    class Renamed:  # the same BPE, but its own tokens read differently: the replay must notice
        backend_tokenizer = gpt2.backend_tokenizer

        def __call__(self, text, add_special_tokens=False):
            return gpt2(text, add_special_tokens=add_special_tokens)

        def convert_ids_to_tokens(self, ids):
            return [t.upper() for t in gpt2.convert_ids_to_tokens(ids)]

    assert replay_check(Renamed(), "Hello world").matches is False


def test_replay_rows_start_with_the_bytes_then_one_row_per_merge():
    word = WordReplay(
        "Ġab", (0, 3), ("Ġ", "a", "b"), (MergeStep(("a", "b"), 7, ("Ġ", "ab")), MergeStep(("Ġ", "ab"), 9, ("Ġab",))),
        ("Ġab",),
    )  # fmt: skip
    assert replay_rows([word]) == [
        ["Ġab", 0, "(bytes)", "", "Ġ a b"],
        ["Ġab", 1, "a + b", 7, "Ġ ab"],
        ["Ġab", 2, "Ġ + ab", 9, "Ġab"],
    ]
    assert replay_rows([]) == []


def test_replay_rows_of_a_real_word_end_in_its_token(gpt2):
    rows = replay_rows(replay_text(gpt2, " world"))
    assert rows[0] == ["Ġworld", 0, "(bytes)", "", "Ġ w o r l d"] and rows[-1][-1] == "Ġworld"
    assert [r[1] for r in rows] == list(range(len(rows)))


def test_merge_rows_show_whitespace_as_the_app_does():
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("x", "y")]
    assert merge_rows(merges, limit=3) == [[0, "␣ + t", "␣t"], [1, "h + e", "he"], [2, "␣t + he", "␣the"]]


def test_tokenizers_side_by_side_keeps_each_ones_tokens(gpt2, bert):
    text = "Hello world"
    compared = tokenizers_side_by_side(text, {"gpt2": gpt2, "bert": bert})
    assert compared.rows == compare_tokenizers(text, {"gpt2": gpt2, "bert": bert})
    assert compared.tokens["gpt2"] == tokenize(gpt2, text)
    assert [t.piece for t in compared.tokens["bert"]][0] == "[CLS]"  # the spans show the special tokens too
    assert [r["tokens"] for r in compared.rows] == [2, len(compared.tokens["bert"]) - 2]


def test_comparison_html_heads_each_tokenizer_and_escapes_names_and_problems(gpt2):
    tokens = tokenize(gpt2, "a <b>")
    html = comparison_html([("<i>gpt2</i>", 3, tokens)], "a <b>", ["x: <script> missing"])
    assert html.startswith("<h4>&lt;i&gt;gpt2&lt;/i&gt; — 3 tokens</h4><div")
    assert html.endswith("<p>⚠️ x: &lt;script&gt; missing</p>") and "<b>" not in html
    assert comparison_html([], "text") == ""


SPACED = "The tiger jumped  out of a\ntree."  # two spaces before "out": one of them no token holds (T5, BERT)


@pytest.mark.parametrize(
    "name, shown",
    [
        # SentencePiece: "▁ti" starts with the space its offsets (4–6) leave out; the space is shown once, as
        # the piece's ␣ (the first ␣ is the piece's own: T5 adds a space before the text); T5 reads the newline
        # as a space: the newline stays greyed (no token holds it) beside the piece's ␣
        ("tiny-t5", "␣The␣tiger␣jumped␣␣out␣of␣a↵␣tree.</s>"),
        ("tiny-gpt2", "The␣tiger␣jumped␣␣out␣of␣a↵tree."),  # byte-level pieces hold their spaces: as before
        ("tiny-bert", "[CLS]the␣t##ig##er␣jump##ed␣␣out␣of␣a↵tree.[SEP]"),  # spaces dropped: greyed gaps, as before
    ],
    ids=["t5", "gpt2", "bert"],
)
def test_token_spans_show_each_space_of_the_text_once(name, shown):
    tokens = tokenize(load_tokenizer(name), SPACED)
    spans = parse(token_spans_html(tokens, SPACED))
    assert "".join(text for _, _, text in spans) == shown
    # the spaces no token holds are in greyed gaps, never a gap beside a piece that shows the same space
    gaps = [text for kind, _, text in spans if kind == "tok-gap"]
    assert gaps == {"tiny-t5": ["␣", "↵"], "tiny-gpt2": [], "tiny-bert": ["␣", "␣", "␣␣", "␣", "␣", "↵"]}[name]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert", "tiny-t5"])
def test_token_spans_write_undrawable_characters_as_the_figures_do(name):
    """A control character and a carriage return read "<1c>" and "<0d>" in the strip as in every figure
    (``readable_token``); the strip showed ``\\x1c`` and an empty box. BERT drops the control character and T5
    reads it as ``<unk>``; every one shows the carriage return, in a token or a greyed gap."""
    text = "a\x1cb\rc"
    shown = "".join(part for _, _, part in parse(token_spans_html(tokenize(load_tokenizer(name), text), text)))
    assert "<0d>" in shown and "\\x" not in shown and "␍" not in shown, shown
    assert "<1c>" in shown or name != "tiny-gpt2"
