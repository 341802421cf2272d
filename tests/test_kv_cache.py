"""The KV cache experiment: same tokens with and without the cache, bytes equal the formula, timings well formed."""

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from gradio_client.exceptions import AppError

from explorer.analysis.inference.kv_cache import (
    CacheShape,
    KVCacheExperiment,
    formula_bytes,
    run_experiment,
    time_attention,
)
from explorer.core.errors import InputError
from explorer.core.limits import MAX_TIMED_TOKENS

PROMPT = "To be, or not to be: that is the question"


def prompt_ids(lm):
    return lm.tokenizer(PROMPT)["input_ids"]


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5"])
def test_same_greedy_tokens_with_and_without_the_cache_as_generate_writes(tiny, name):
    lm = tiny[name]
    result = run_experiment(lm, prompt_ids(lm), new_tokens=12, repeats=2)  # checks on/off agree itself
    with torch.no_grad():
        plain = lm.model.generate(torch.tensor([prompt_ids(lm)]), max_new_tokens=12, min_new_tokens=12,
                                  do_sample=False, use_cache=False, pad_token_id=0)  # fmt: skip
    start = 1 if name == "t5" else len(prompt_ids(lm))
    assert result.tokens == tuple(plain[0, start:].tolist())
    assert result.decoder_ids == tuple(plain[0].tolist())  # the prompt side (T5: the start token) + new tokens


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5"])
def test_cache_bytes_equal_the_formula(tiny, name):
    lm = tiny[name]
    config = lm.model.config
    result = run_experiment(lm, prompt_ids(lm), new_tokens=6, repeats=1)
    # the configs of tests/tiny_models.py, read by hand: layers, kv heads, head dim
    expected_shape = {"gpt2": (2, 4, 8), "llama": (2, 2, 8), "t5": (2, 4, 8)}[name]
    shape = CacheShape.of(config)
    assert (shape.layers, shape.kv_heads, shape.head_dim) == expected_shape
    if name == "llama":
        assert shape.heads == 4 > shape.kv_heads  # grouped-query attention caches fewer heads
    held = result.prompt_length + np.arange(6)  # positions in the cache after each step
    layers, kv_heads, head_dim = expected_shape
    np.testing.assert_array_equal(result.cache_bytes, 2 * layers * kv_heads * head_dim * held * 4)
    np.testing.assert_array_equal(result.formula, result.cache_bytes)
    assert result.keys.shape == (layers, kv_heads, held[-1], head_dim) == result.values.shape
    assert (result.cross_bytes > 0) == (name == "t5")


def test_formula_for_real_model_sizes():
    # GPT-2 small, 1024 positions, float32: 2 x 12 x 12 x 64 x 1024 x 4 bytes = 72 MiB
    assert formula_bytes(12, 12, 64, 1024, 4) == 75_497_472
    # a Llama-style model with 8 of 32 heads kept for keys and values caches 4x less than with all 32
    assert formula_bytes(32, 32, 128, 4096, 2) == 4 * formula_bytes(32, 8, 128, 4096, 2)


def test_timings_have_the_right_shape_and_are_positive(tiny):
    lm = tiny["gpt2"]
    result = run_experiment(lm, prompt_ids(lm), new_tokens=5, repeats=3)
    for latencies in (result.with_cache, result.without_cache):
        assert latencies.shape == (3, 5) and (latencies > 0).all()
    assert result.totals(True).shape == result.speedups.shape == (3,)
    assert (result.tokens_per_second(False) > 0).all()
    assert np.isfinite([result.slope(True), result.slope(False)]).all()
    np.testing.assert_array_equal(result.positions, len(prompt_ids(lm)) + np.arange(5))


def test_progress_counts_every_token_and_a_stopped_experiment_says_so(tiny):
    lm = tiny["gpt2"]
    experiment = KVCacheExperiment(lm, prompt_ids(lm), new_tokens=4, repeats=2)
    progress = list(itertools.islice(experiment.steps(), 10))  # warm-up (4), first run, half of the second
    assert [done for done, _, _ in progress] == list(range(1, 11)) and {total for _, total, _ in progress} == {20}
    assert progress[4][2] == "run 1 of 2, cache on: token 1 of 4" and progress[9][2].endswith("token 2 of 4")
    with pytest.raises(InputError, match="stopped"):
        experiment.result()
    experiment = KVCacheExperiment(lm, prompt_ids(lm), new_tokens=4, repeats=2)
    assert [done for done, _, _ in experiment.steps()] == list(range(1, 21))
    assert experiment.result().with_cache.shape == (2, 4)


def test_bounds_and_families(tiny):
    lm = tiny["gpt2"]
    with pytest.raises(InputError, match="number of new tokens"):
        KVCacheExperiment(lm, prompt_ids(lm), new_tokens=MAX_TIMED_TOKENS + 1)
    with pytest.raises(InputError, match="number of repeats"):
        KVCacheExperiment(lm, prompt_ids(lm), repeats=0)
    with pytest.raises(InputError, match="fills in masked tokens"):
        KVCacheExperiment(tiny["bert"], [1, 2, 3])


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_fused_attention_is_timed_on_a_copy(tiny, name):
    lm = tiny[name]
    ids = prompt_ids(lm)
    before = lm.model.config._attn_implementation
    timing = time_attention(lm, ids, repeats=2)
    assert timing.tokens == len(ids) and (timing.eager_seconds > 0).all() and (timing.fused_seconds > 0).all()
    assert lm.model.config._attn_implementation == before == "eager"  # the shared model still shows weights


# ------------------------------------------------------------------ the tab, through the app's API

from tests.plotly_json import plot_data  # noqa: E402


def test_the_tab_runs_the_experiment_and_times_fused_attention(client, ctx, tiny_dir):
    client.predict(str(tiny_dir["gpt2"]), PROMPT, "", api_name="/analyze")
    job = client.submit(6, 2, 5, 7, api_name="/kv_cache")  # new tokens, runs, and the contents' layer and head
    note, latency, memory, layer, head, step = job.result()
    fitted = [(u["maximum"], u["value"]) for u in (layer, head, step)]
    assert fitted == [(1, 1), (3, 3), (5, 5)]  # the sliders fitted to the 2 × 4 cache of 6 steps the run made
    assert "Speed-up" in note and "Same tokens with and without the cache: checked" in note
    names = {trace.get("name", "") for trace in plot_data(latency)}
    assert {"cache on", "cache off"} <= names
    assert {"formula", "measured"} <= {trace.get("name") for trace in plot_data(memory)}
    assert any(update[0].startswith("⏳") for update in job.outputs()[:-1])  # progress came first
    heatmap = plot_data(client.predict("values", 1, 3, 2, api_name="/kv_cache_contents"))[0]
    prompt_length = len(prompt_ids(ctx.pool.get(str(tiny_dir["gpt2"]))))
    assert heatmap["type"] == "heatmap" and len(heatmap["y"]) == prompt_length + 2  # after step 3: prompt + 2 fed
    with pytest.raises(AppError, match="greater than maximum value 1"):  # the layer slider now ends at 1
        client.predict("keys", 9, 0, 0, api_name="/kv_cache_contents")
    timing = client.predict(64, api_name="/attention_timing")
    assert "eager" in timing and "fused" in timing and "⚠️" not in timing
    client.predict(str(tiny_dir["bert"]), PROMPT, "", api_name="/analyze")
    note, *_ = client.predict(6, 2, 0, 0, api_name="/kv_cache")
    assert note.startswith("⚠️") and "masked" in note


def test_the_experiment_leaves_no_grad_mode_behind_on_the_thread_that_ran_it(tiny):
    """A UI resumes generator handlers on other threads: a mode entered around a yield stays set on the first."""
    lm = tiny["gpt2"]
    steps = KVCacheExperiment(lm, prompt_ids(lm), new_tokens=3, repeats=1).steps()

    def first_step_then_modes():
        next(steps)
        return torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(first_step_then_modes).result() == (True, False)


def test_further_runs_stop_at_the_time_budget_and_the_finished_ones_are_reported(tiny):
    lm = tiny["gpt2"]
    experiment = KVCacheExperiment(lm, prompt_ids(lm), new_tokens=8, repeats=5, budget_s=0.0)
    list(experiment.steps())
    assert experiment.runs_done == 1  # the first pair always runs; the next would have overrun the budget
    result = experiment.result()
    assert result.with_cache.shape == result.without_cache.shape == (1, 8)
    unbounded = KVCacheExperiment(lm, prompt_ids(lm), new_tokens=8, repeats=3, budget_s=600.0)
    list(unbounded.steps())
    assert unbounded.runs_done == 3


def test_a_fused_attention_timing_never_waits_behind_a_running_experiment(app_url, tiny_dir):
    from gradio_client import Client

    teacher, student = Client(app_url, verbose=False), Client(app_url, verbose=False)
    for client in (teacher, student):
        client.predict(str(tiny_dir["gpt2"]), PROMPT, "", api_name="/analyze")
    job = teacher.submit(100, 5, api_name="/kv_cache")  # long: five pairs of runs of 100 tokens
    while not any(update[0].startswith("⏳") for update in job.outputs()):
        assert not job.done(), job.outputs()
        time.sleep(0.05)
    timing = student.predict(16, api_name="/attention_timing")
    assert "fused" in timing
    assert not job.done(), "the timing waited for the whole experiment"
    job.cancel()
