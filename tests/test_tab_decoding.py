"""The next-token tab's handlers, called directly (no server) with a real app context on the bundled models."""

import numpy as np
import pytest

from explorer.analysis.decoding.generate import greedy, sample
from explorer.analysis.decoding.sampling import DecodingSettings
from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import decoding as tab
from tests.plotly_json import message

TEXT = "To be, or not to be"
OFF = (1.0, 0, 1.0, 0.0, 1.0, False)  # temperature, top-k, top-p, min-p, repetition penalty, greedy: all off
GREEDY = (1.0, 0, 1.0, 0.0, 1.0, True)


@pytest.fixture(scope="module")
def app():
    return AppContext()


@pytest.fixture
def gpt2():
    return Selection(model="tiny-gpt2", text=TEXT)


def test_the_distribution_has_a_series_per_active_stage_and_names_the_model(app, gpt2):
    note, fig = tab.show_distribution(app, gpt2, 10, "probabilities", 0.8, 20, 0.9, 0.0, 1.0, False)
    assert [t.name for t in fig.data] == ["model", "temperature", "top-k", "top-p"]
    assert len(fig.data[0].x) == 10
    assert "tiny-gpt2" in fig.layout.title.text and "Next token after “␣be”" in fig.layout.title.text
    assert "entropy" in note and f"hold {sum(fig.data[0].y):.1%} of the probability" in note


def test_every_filter_off_keeps_the_whole_vocabulary_and_top_k_removes_the_rest(app, gpt2):
    vocab = app.trace(gpt2).logits.shape[-1]
    note, fig = tab.show_distribution(app, gpt2, 10, "probabilities", *OFF)
    assert [t.name for t in fig.data] == ["model"] and f"**{vocab:,}** of {vocab:,} tokens survive" in note
    note, fig = tab.show_distribution(app, gpt2, 10, "probabilities", 1.0, 4, 1.0, 0.0, 1.0, False)
    top_k = fig.data[1]
    assert top_k.name == "top-k" and list(top_k.text).count("removed") == 6 and "**4** of" in note
    assert list(top_k.y[4:]) == [0.0] * 6 and all(y > 0 for y in top_k.y[:4])


def test_the_logits_view_shows_the_model_logits_of_the_top_tokens(app, gpt2):
    _, fig = tab.show_distribution(app, gpt2, 8, "logits", *OFF)
    assert [t.name for t in fig.data] == ["logit"]
    expected = np.sort(app.trace(gpt2).logits[-1])[::-1][:8]
    np.testing.assert_allclose(fig.data[0].y, expected, rtol=1e-6)
    assert fig.layout.yaxis.rangemode == "normal" and "logit" in fig.layout.yaxis.title.text


def test_the_distribution_refuses_with_a_sentence(app, gpt2):
    note, fig = tab.show_distribution(app, None, 10, "probabilities", *OFF)
    assert note == "" and message(fig) == "Analyze a text first."
    note, fig = tab.show_distribution(app, Selection("tiny-bert", TEXT), 10, "probabilities", *OFF)
    assert note.startswith("⚠️") and "does not generate" in note and "encoder" in message(fig)
    note, _ = tab.show_distribution(app, gpt2, 10, "probabilities", 0.0, 0, 1.0, 0.0, 1.0, False)
    assert note.startswith("⚠️ Temperature must be above 0")


def test_step_by_step_start_next_take_and_undo(app, gpt2):
    h, summary, rows, update = tab.step_start(app, gpt2, None, None, 0, *GREEDY)
    assert rows == [] and h.steps == () and update["choices"] == []
    h, summary, rows, update = tab.step_next(app, gpt2, h, None, 0, *GREEDY)
    assert len(rows) == 1 and rows[0][2] == "greedy" and rows[0][4] == 1
    assert summary.startswith(f"**{rows[0][1].lstrip('␣')}** · log-probability")
    third = update["choices"][2][1]  # the greedy token replaced by the third most probable one
    h, summary, rows, _ = tab.step_take(app, gpt2, h, third, 0, *GREEDY)
    assert len(rows) == 1 and rows[0][2] == "clicked" and rows[0][4] == 3 and h.new_ids == (third,)
    h, _, rows, _ = tab.step_undo(app, gpt2, h, None, 0, *GREEDY)
    assert rows == [] and h.steps == ()


def test_a_sampled_tokens_probability_is_shown_to_two_figures_not_as_zero(app, gpt2):
    """At a high temperature the sampled tokens are rare ones: their probabilities (about 1e-4) read "0"."""
    hot = (3.0, 0, 1.0, 0.0, 1.0, False)
    h, _, rows, _ = tab.step_start(app, gpt2, None, None, 0, *hot)
    for _ in range(4):
        h, _, rows, _ = tab.step_next(app, gpt2, h, None, 0, *hot)
    for row, step in zip(rows, h.steps):
        assert float(row[3]) == pytest.approx(step.chosen.prob, rel=0.05), row
    assert min(step.chosen.prob for step in h.steps) < 0.001  # the case that read as zero


def test_step_by_step_refusals_keep_the_history(app, gpt2):
    skipped, note, *rest = tab.step_take(app, gpt2, None, None, 0, *GREEDY)
    assert note == "⚠️ Take a first step, then pick one of its alternatives\\."
    assert skipped == {"__type__": "update"} and rest == [{"__type__": "update"}] * 2  # gr.skip(): nothing changes
    _, note, _, _ = tab.step_next(app, None, None, None, 0, *GREEDY)
    assert note == "⚠️ Analyze a text first\\."


def test_write_streams_what_sampling_with_the_seed_writes(app, gpt2):
    knobs = (0.9, 20, 0.95, 0.0, 1.0, False)
    updates = list(tab.write(app, gpt2, 30, 4, *knobs))
    lm = app.model(gpt2)
    expected = sample(lm, lm.tokenizer(TEXT)["input_ids"], DecodingSettings(0.9, 20, 0.95, 0.0, 1.0), 1, 30, 4)[0]
    parts, stats = updates[-1]
    assert parts == [(TEXT, None), (expected.text or " …", "written")]
    assert stats.startswith(f"{len(expected.new_ids)} of 30 tokens") and "tokens/s" in stats
    assert len(updates) >= 2  # at least one report while writing, and the last one


def test_write_refuses_too_many_tokens_with_a_sentence(app, gpt2):
    (update,) = list(tab.write(app, gpt2, 600, 4, *OFF))
    assert update[1].startswith("⚠️ The number of tokens to write must be a whole number from 1 to 512")


def test_strategies_compare_greedy_samples_and_beams(app, gpt2):
    rows, tree = tab.compare(app, gpt2, 5, 2, 3, 1.0, 0, *OFF)
    names = [r[0] for r in rows]
    assert names[:3] == ["greedy", "sample 1", "sample 2"] and names[3].startswith("beam 1 (score ")
    lm = app.model(gpt2)
    g = greedy(lm, lm.tokenizer(TEXT)["input_ids"], 5)
    assert rows[0] == ["greedy", g.text, round(g.logprob, 3), g.finished]
    assert {"root", "kept", "pruned"} <= {t.name for t in tree.data}
    assert "width 3" in tree.layout.title.text and "tiny-gpt2" in tree.layout.title.text


def test_the_logit_lens_grid_has_a_row_per_layer_and_explains_the_encoder(app, gpt2):
    fig = tab.show_lens(app, gpt2)
    trace = app.trace(gpt2)
    assert np.shape(fig.data[0].z) == (trace.n_layers + 1, len(trace.tokens["input"]))
    assert "tiny-gpt2" in fig.layout.title.text
    assert "does not generate" in message(tab.show_lens(app, Selection("tiny-bert", TEXT)))
    assert message(tab.show_lens(app, None)) == "Analyze a text first."


def test_fill_in_for_a_picked_token_and_a_typed_mask(app):
    bert = Selection("tiny-bert", "the tiger jumped out of a tree.")
    note, fig = tab.fill_in(app, bert, 2, 12)  # mask the third token
    assert "**[\\[MASK\\]]**" in note and len(fig.data[0].x) == 10 and fig.data[0].name == "p(token | both sides)"
    assert "tiny-bert" in fig.layout.title.text and "[MASK]" in fig.layout.title.text
    note, fig = tab.fill_in(app, Selection("tiny-bert", "the tiger [MASK] out of a tree."), None, 12)
    assert note.count("**[") == 1 and len(fig.data[0].y) == 10
    assert list(fig.data[0].y) == sorted(fig.data[0].y, reverse=True)


def test_fill_in_escapes_the_text_it_shows(app):
    note, _ = tab.fill_in(app, Selection("tiny-bert", "the <b>tiger</b> [MASK]."), None, 12)
    assert "<b>" not in note and "&lt;" in note


def test_fill_in_by_an_encoder_decoder_fills_sentinel_spans(app):
    note, fig = tab.fill_in(app, Selection("tiny-t5", "The tiger <extra_id_0> out of a tree."), None, 6)
    assert note.startswith("The tiger \\[") and "The model wrote" in note and "&lt;extra\\_id\\_0&gt;" in note
    assert message(fig).startswith("The tiger [") and "out of a tree." in message(fig)  # the text, filled
    assert note.count("→") == 1  # the one sentinel the text has, not the model's further ones


@pytest.mark.parametrize(
    "model, text, position, expected",
    [
        ("tiny-gpt2", TEXT, None, "tiny\\-gpt2 only writes left to right"),
        ("tiny-t5", "No sentinel here.", None, "Mark the span to fill with a sentinel"),
        ("tiny-bert", "the tiger jumped.", None, "Pick a token to mask, or type \\[MASK\\]"),
        ("tiny-bert", "the tiger jumped.", 0, "Pick one of the text's own tokens"),  # [CLS]
        ("tiny-bert", "the tiger jumped.", 99, "Pick one of the text's own tokens"),
    ],
)
def test_fill_in_refuses_with_a_sentence(app, model, text, position, expected):
    note, fig = tab.fill_in(app, Selection(model, text), position, 6)
    assert note.startswith("⚠️ " + expected) and fig.data == ()


def test_the_tokens_to_mask_are_the_texts_own(app):
    update = tab.mask_choices(app, Selection("tiny-bert", "the tiger jumped."))
    labels = [label for label, _ in update["choices"]]
    assert labels[0] == "1: the" and not any("[CLS]" in x or "[SEP]" in x for x in labels)
    assert tab.mask_choices(app, None) == {"__type__": "update", "choices": [], "value": None}
