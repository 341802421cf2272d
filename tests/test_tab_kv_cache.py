"""The KV cache tab's handlers, called without a server on the bundled models, and the analysis they call."""

import numpy as np
import pytest

from explorer.analysis.inference.kv_cache import (
    CacheShape,
    KVCacheResult,
    cache_contents,
    cache_memory,
    time_attention_at_length,
)
from explorer.core.errors import InputError
from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import kv_cache as tab

TEXT = "The tiger jumped out of a tree"


@pytest.fixture(scope="module")
def ctx():
    return AppContext()


@pytest.fixture(scope="module")
def gpt2():
    return Selection(model="tiny-gpt2", text=TEXT)


@pytest.fixture(scope="module")
def updates(ctx, gpt2):
    """Every update of one small experiment: 4 new tokens, one run each way, contents view at layer 9, head 2."""
    return list(tab.experiment(ctx, gpt2, 4, 1, 9, 2))


def trace_names(fig) -> set[str]:
    return {t.name for t in fig.data}


# ---------------------------------------------------------------- the experiment


def test_the_experiment_ends_with_the_numbers_both_figures_and_fitted_sliders(ctx, gpt2, updates):
    held, note, latency, memory, layer, head, step = updates[-1]
    result, key, where = held
    assert key == "tiny-gpt2" and "tiny-gpt2" in where
    assert "Speed-up" in note and "Same tokens with and without the cache: checked" in note
    assert "**4 tokens, 1 runs each way.**" in note
    assert "Run on **tiny\\-gpt2 · “The tiger" in note  # the model and text it ran on, escaped
    assert "full context of 512 positions" in note  # the bundled GPT-2's n_positions
    assert {"cache on", "cache off"} <= trace_names(latency)
    assert {"formula", "measured"} <= trace_names(memory)
    assert "tiny-gpt2" in latency.layout.title.text
    # the bundled GPT-2 caches 4 layers x 4 heads: layer 9 is pulled back to 3, head 2 stays; the step goes last
    assert (layer["maximum"], layer["value"]) == (3, 3)
    assert (head["maximum"], head["value"]) == (3, 2)
    assert (step["maximum"], step["value"]) == (3, 3)
    assert result.keys.shape[:2] == (4, 4)


def test_the_experiment_notes_are_escaped_markdown(ctx):
    sneaky = Selection(model="tiny-gpt2", text="*bold* [link](http://x) <b>hi</b> and more words")
    *_, (held, note, *_) = list(tab.experiment(ctx, sneaky, 2, 1, 0, 0))
    assert held is not None
    assert "\\*bold\\*" in note and "\\[link\\]" in note and "<b>" not in note


def test_the_experiment_refuses_with_a_sentence(ctx):
    (update,) = list(tab.experiment(ctx, None, 4, 1, 0, 0))
    assert update[1] == "⚠️ Analyze a text first\\." and len(update) == 7
    (update,) = list(tab.experiment(ctx, Selection(model="tiny-bert", text=TEXT), 4, 1, 0, 0))
    assert update[1].startswith("⚠️") and "masked" in update[1]
    (update,) = list(tab.experiment(ctx, Selection(model="tiny-gpt2", text=TEXT), 4, 9, 0, 0))
    assert update[1].startswith("⚠️") and "repeats" in update[1]


# ---------------------------------------------------------------- what the cache holds


def test_the_contents_view_shows_the_positions_held_after_a_step(ctx, gpt2, updates):
    held = updates[-1][0]
    prompt_length = len(ctx.pool.get("tiny-gpt2").tokenizer(TEXT)["input_ids"])
    fig = tab.show_cache(ctx, held, "values", 1, 3, 2)  # after step 3: the prompt and two new tokens
    heatmap = fig.data[0]
    assert heatmap.type == "heatmap" and len(heatmap.y) == prompt_length + 2
    title = fig.layout.title.text.replace("<br>", " · ")  # the title is wrapped to the figure's width
    assert f"Cached values · layer 1 · kv-head 3 · after step 3: {prompt_length + 2} positions · tiny-gpt2" in title
    late = tab.show_cache(ctx, held, "keys", 0, 0, 60)  # a step past the run's end shows its last
    assert len(late.data[0].y) == prompt_length + 3


def test_the_contents_view_says_what_to_do_instead_of_failing(ctx, updates):
    waiting = tab.show_cache(ctx, None, "keys", 0, 0, 0)
    assert waiting.layout.annotations[0].text == "Run the experiment to see what the cache holds."
    refused = tab.show_cache(ctx, updates[-1][0], "keys", 9, 0, 0)
    assert not refused.data and "caches 4 layers × 4 kv-heads" in refused.layout.annotations[0].text


def test_cache_contents_is_the_cache_cut_at_the_step(ctx):
    """A made-up result: 2 layers, 1 head, a prompt of 3 and 3 steps; rows are the positions held."""
    tokenizer = ctx.pool.get("tiny-gpt2").tokenizer
    keys = np.arange(2 * 1 * 6 * 2, dtype=np.float16).reshape(2, 1, 6, 2)
    result = KVCacheResult(
        tokens=(7, 8, 9), decoder_ids=(1, 2, 3, 7, 8, 9), prompt_length=3,
        with_cache=np.ones((1, 3)), without_cache=np.ones((1, 3)), cache_bytes=np.zeros(3), cross_bytes=0,
        shape=CacheShape(2, 1, 2, 1), bytes_per_element=4, keys=keys, values=-keys,
    )  # fmt: skip
    shown = cache_contents(result, tokenizer, "values", 1, 0, 1)
    assert shown.rows == 4 and shown.matrix.dtype == np.float32  # after step 2: positions 0..3
    np.testing.assert_array_equal(shown.matrix, -keys[1, 0, :4])
    assert len(shown.labels) == 4 and shown.labels[0] == tokenizer.convert_ids_to_tokens(1).replace("Ġ", "␣")
    with pytest.raises(InputError, match="m caches 2 layers × 1 kv-heads: pick layer < 2, head < 1"):
        cache_contents(result, tokenizer, "keys", 0, 1, 0, model="m")
    assert result.bytes_at(10) == 2 * 2 * 1 * 2 * 10 * 4


# ---------------------------------------------------------------- eager vs fused, the calculator


def test_fused_timing_names_both_and_caps_at_the_model_positions(ctx, gpt2):
    note = tab.time_fused(ctx, gpt2, 16)
    assert note.startswith("16 tokens: eager **") and "fused **" in note and "⚠️" not in note
    capped = tab.time_fused(ctx, gpt2, 600)  # the bundled GPT-2 has 512 positions
    assert capped.startswith("512 tokens (this model sees at most 512 positions)")
    assert tab.time_fused(ctx, None, 16) == "⚠️ Analyze a text first\\."


def test_time_attention_at_length_repeats_the_text(ctx):
    lm = ctx.pool.get("tiny-gpt2")
    timing = time_attention_at_length(lm, [5, 6, 7], 8, repeats=1)
    assert timing.tokens == 8 and timing.eager_ms > 0 and timing.fused_ms > 0
    with pytest.raises(InputError):
        time_attention_at_length(lm, [], 8)


def test_the_calculator_writes_the_sum_and_refuses_bad_numbers(ctx):
    note = tab.calculate(ctx, 12, 12, 64, 1024, "float16", 2)  # GPT-2 small: 36 MiB a sequence
    assert note.startswith("2 × 12 × 12 × 64 × 1,024 × 2 bytes = **36.00 MiB per sequence** (36.0 KiB per token)")
    assert note.endswith("for a batch of 2: **72.00 MiB**.")
    assert tab.calculate(ctx, 0, 12, 64, 1024, "float16", 1) == "⚠️ The layers must be a whole number, 1 or more\\."
    assert tab.calculate(ctx, 12, 12, 64, 1024, "float8", 1).startswith("⚠️ Pick a number format\\: float32")
    assert tab.calculate(ctx, 12, None, 64, 1024, "float16", 1).startswith("⚠️ The kv\\-heads must")


def test_cache_memory_known_answers():
    llama3 = cache_memory(32, 8, 128, 8192, "float16", 4)
    assert llama3.per_sequence == 2**30 and llama3.per_token == 128 * 1024 and llama3.total == 4 * 2**30
    assert cache_memory(1, 1, 1, 1, "int4", 1).per_sequence == 1  # 2 numbers of half a byte
    with pytest.raises(InputError, match="context must be a whole number"):
        cache_memory(1, 1, 1, 0, "int4", 1)


def test_presets_and_the_analysed_model_fill_the_calculator(ctx, gpt2):
    assert tab.fill_calculator(ctx, "GPT-2 small") == (12, 12, 64, 1024)
    assert len(tab.fill_calculator(ctx, None)) == 4
    layers, heads, dim, layer, head = tab.from_model(ctx, gpt2, 7, 1)
    assert (layers, heads, dim) == (4, 4, 64)
    assert (layer["maximum"], layer["value"], head["maximum"], head["value"]) == (3, 3, 3, 1)
    t5 = tab.from_model(ctx, Selection(model="tiny-t5", text=TEXT), 0, 0)
    assert t5[:3] == (3, 4, 64)  # T5: its decoder's layers
    assert len(tab.from_model(ctx, None, 0, 0)) == 5


# ---------------------------------------------------------------- attention variants


def test_attention_variants_view_marks_the_loaded_model_and_checks_the_formula(ctx, gpt2):
    note, fig = tab.variants_view(ctx, gpt2, 2048, "float16")
    assert "built with multi-head attention" in note and "exactly the formula" in note
    assert [t.name for t in fig.data] == ["multi-head", "grouped-query", "multi-query"]
    assert fig.data[0].y[0].startswith("tiny-gpt2") and "(loaded)" in fig.data[0].y[0]
    assert fig.data[0].x[0] == pytest.approx(2 * 4 * 4 * 64 * 2048 * 2 / 2**20)  # tiny-gpt2: 4 layers, 4 heads of 64
    bad, _ = tab.variants_view(ctx, gpt2, 0, "float16")
    assert bad.startswith("⚠️") and "positions" in bad
