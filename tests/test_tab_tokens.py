"""The tokens tab's handlers, called directly (no server) with a real app context on the bundled models."""

import pytest

from explorer.core.limits import MAX_CHARS
from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import tokens as tab


def NO_PROGRESS(*args, **kwargs):  # gradio passes a gr.Progress; called directly, a no-op
    return None


@pytest.fixture(scope="module")
def app():
    return AppContext()


def test_live_tokens_escape_html_and_count_every_token(app):
    counts, html, radio, rows = tab.show_live(app, "tiny-gpt2", "Hi <script>x</script>\n", None, "input")
    assert "<script>" not in html and "&lt;" in html and "↵" in html
    assert counts.startswith(f"**{len(rows)}** tokens · 22 characters · 22 bytes")
    assert radio == {"__type__": "update", "visible": False}  # no analysis of this text: one stream, no choice
    assert [row[0] for row in rows] == list(range(len(rows))) and "".join(
        row[5] for row in rows
    ) == "Hi <script>x</script>\n"


def test_live_tokens_follow_the_analysis_and_its_streams(app):
    t5 = Selection("tiny-t5", "The tiger jumped.")
    trace = app.trace(t5)
    counts, _, radio, rows = tab.show_live(app, "tiny-t5", t5.text, t5, "target")
    assert radio == {"__type__": "update", "value": "target", "visible": True}
    assert [row[3] for row in rows] == [t.id for t in trace.tokens["target"]]
    _, _, radio, rows = tab.show_live(app, "tiny-t5", t5.text, t5, "no such stream")
    assert radio["value"] == "source" and [row[3] for row in rows] == [t.id for t in trace.tokens["source"]]
    bert = Selection("tiny-bert", "The tiger jumped.")
    _, _, radio, rows = tab.show_live(app, "tiny-bert", bert.text, bert, "input")
    assert radio["visible"] is False and rows[0][1] == "[CLS]"


def test_live_tokens_refuse_with_a_sentence(app):
    assert tab.show_live(app, "tiny-gpt2", "", None, "input") == (
        "Type a text to see its tokens.", "", {"__type__": "update"}, []
    )  # fmt: skip
    note, html, _, rows = tab.show_live(app, "no such model!", "abc", None, "input")
    assert note.startswith("⚠️ Unknown model") and "\\!" in note and html == "" and rows == []
    note, *_ = tab.show_live(app, "tiny-gpt2", "x" * (MAX_CHARS + 1), None, "input")
    assert note.startswith("⚠️") and f"{MAX_CHARS:,}" in note


def test_tokenizers_compared_side_by_side_and_a_missing_one_explained(app):
    chosen = ["current model", "gpt2-bpe", "tiny-bert"]
    rows, html = tab.show_comparison(app, "tiny-gpt2", "Hello world", chosen, "someone/not-cached")
    by_name = {r[0]: r for r in rows}
    assert list(by_name) == ["tiny-gpt2", "gpt2-bpe", "tiny-bert"]
    assert by_name["gpt2-bpe"][1:] == [2, 5.5, 5.5]  # Hello, Ġworld
    assert html.count("<h4>") == 3 and "<h4>gpt2-bpe — 2 tokens</h4>" in html
    assert "⚠️ someone/not-cached" in html and "no network" in html


def test_the_current_model_counts_once_and_the_typed_one_is_added(app):
    rows, html = tab.show_comparison(app, "tiny-bert", "Hello", ["current model", "tiny-bert"], " tiny-t5 ")
    assert [r[0] for r in rows] == ["tiny-bert", "tiny-t5"] and "⚠️" not in html
    rows, _ = tab.show_comparison(app, "tiny-bert", "", ["current model"], "")
    assert rows[0][0] == "⚠️" and "empty" in rows[0][1]


def test_bpe_replay_of_a_byte_level_model_checks_itself(app):
    note, rows = tab.show_replay(app, "tiny-gpt2", "ignored when a word is given", "unbelievably")
    assert note.startswith("Replaying **tiny\\-gpt2**'s byte-level BPE.") and note.endswith("✓.")
    assert rows[0][1:3] == [0, "(bytes)"] and rows[-1][-1].replace(" ", "") == "unbelievably"


def test_bpe_replay_falls_back_to_gpt2_for_other_tokenizers(app):
    note, rows = tab.show_replay(app, "tiny-bert", "Hello world", "")
    assert "**tiny\\-bert** does not use byte-level BPE" in note and "gpt2-bpe" in note and "✓" in note
    assert rows[-1][-1] == "Ġworld" and [r[0] for r in rows if r[1] == 0] == ["Hello", "Ġworld"]


def test_bpe_replay_of_a_long_text_shows_the_first_words(app):
    note, rows = tab.show_replay(app, "tiny-gpt2", " ".join(["word"] * 250), "")
    assert f"Showing the first {tab.MAX_REPLAY_WORDS} of 250 words." in note
    assert sum(1 for r in rows if r[1] == 0) == tab.MAX_REPLAY_WORDS


def test_bpe_replay_refuses_with_a_sentence(app):
    note, rows = tab.show_replay(app, 3, "text", "")
    assert note == "⚠️ The model must be a name, not int\\." and rows == []
    note, rows = tab.show_replay(app, "tiny-gpt2", "", "  ")
    assert note.startswith("⚠️") and rows == []


def test_train_a_bpe_then_see_the_text_under_it(app):
    note, merges, trained = tab.train(app, "pasted text", "the cat sat on the mat " * 50, 300, NO_PROGRESS)
    assert note.startswith(f"Learned **{len(trained.merges)} merges** from 1,150 characters")
    assert merges[0] == [0, "a + t", "at"]  # "at" is the most frequent pair: cat, sat, mat
    assert [m[0] for m in merges] == list(range(len(trained.merges))) and any("␣" in m[1] for m in merges)
    html = tab.show_trained(app, trained, "the cat <b>")
    counts, spans = html.split("</p>", 1)
    assert counts.startswith("<p><b>") and "<b>" not in spans and "&lt;" in spans


def test_training_refuses_with_a_sentence_and_no_tokenizer(app):
    assert tab.train(app, "pasted text", "  ", 400, NO_PROGRESS) == (
        "⚠️ Paste a text to train on, or pick a bundled one\\.", [], ""
    )  # fmt: skip
    note, merges, trained = tab.train(app, "pasted text", "abc abc", 10, NO_PROGRESS)
    assert note.startswith("⚠️ The vocabulary size must be") and merges == [] and trained == ""
    assert tab.show_trained(app, "", "text") == "" and tab.show_trained(app, None, "text") == ""
