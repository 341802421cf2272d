"""Bounded traces: a large model's trace keeps the top-k logits and some layers, within EXPLORER_TRACE_MB."""

import gc
import pickle

import numpy as np
import pytest
import torch

from explorer.analysis.attention.views import all_heads, head_statistics_of, one_head
from explorer.analysis.decoding.distribution import next_token_stages
from explorer.analysis.decoding.sampling import DecodingSettings
from explorer.core.errors import InputError
from explorer.core.loading import load
from explorer.core.run import TOP_K, RunCache, run
from explorer.core.settings import Settings
from explorer.core.trace import KeptLayers, LayerNotKept, TopLogits
from explorer.plots.attention import attention_grid

TEXT = "The tiger jumped out of a tree to get a drink because it was thirsty."


def bounded_pair(lm, fraction=3, **kwargs):
    """(full trace, bounded trace under a third of the full trace's bytes, the limit)."""
    full = run(lm, TEXT, **kwargs)
    limit = full.nbytes // fraction
    return full, run(lm, TEXT, keep_bytes=limit, **kwargs), limit


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "t5"])
def test_a_bounded_trace_keeps_exact_top_k_probabilities_within_its_limit(tiny, name):
    full, small, limit = bounded_pair(tiny[name])
    assert not full.bounded and small.bounded
    assert small.nbytes <= limit < full.nbytes
    assert isinstance(small.logits, TopLogits) and small.logits.shape == full.logits.shape
    probs = torch.softmax(torch.from_numpy(np.array(full.logits)), -1).numpy()
    k = small.logits.k
    assert k == min(TOP_K, full.logits.shape[1]) or small.meta["bounded"]["top_k"] == k
    top = np.argsort(-probs, axis=1)[:, :k]
    assert np.array_equal(np.sort(small.logits.ids, axis=1), np.sort(top, axis=1))
    assert np.allclose(small.logits.probs(), np.take_along_axis(probs, small.logits.ids, 1), atol=1e-6)
    dense = torch.softmax(torch.from_numpy(small.logits[-1]), -1).numpy()  # read like a row of logits
    assert np.allclose(dense[small.logits.ids[-1]], probs[-1, small.logits.ids[-1]], atol=1e-6)
    assert int(dense.argmax()) == int(probs[-1].argmax())
    assert np.isclose(dense.sum(), 1.0, atol=1e-5)
    # same tokens, same shapes; some layers not kept
    assert small.tokens == full.tokens and small.texts == full.texts
    for kind in full.attentions:
        assert small.attentions[kind].shape == full.attentions[kind].shape
    assert any(len(kept) < small.attentions[k].shape[0] for k, kept in small.meta["bounded"]["layers"].items())


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_a_layer_not_kept_is_computed_again_and_equals_the_full_traces(tiny, name):
    full, small, _ = bounded_pair(tiny[name])
    for kind, layers in small.attentions.items():
        assert isinstance(layers, KeptLayers)
        dropped = [i for i in range(layers.shape[0]) if i not in layers.kept]
        assert dropped, kind
        for i in range(layers.shape[0]):
            assert np.allclose(layers[i], full.attentions[kind][i], atol=1e-6), (kind, i)
        assert np.allclose(small.attn(dropped[0], 1, kind), full.attn(dropped[0], 1, kind), atol=1e-6)
        assert not layers[dropped[0]].flags.writeable  # read-only like every array of a trace
    for stream, layers in small.hidden.items():
        assert np.allclose(layers[0], full.hidden[stream][0], atol=1e-5)
    view = one_head(small, small.kinds[0], 0, 0, "weights")
    assert np.allclose(view.matrix, one_head(full, full.kinds[0], 0, 0, "weights").matrix, atol=1e-6)


def test_a_view_of_every_layer_at_once_gets_a_sentence(tiny):
    _, small, _ = bounded_pair(tiny["gpt2"])
    with pytest.raises(LayerNotKept, match="keeps only layers") as err:
        attention_grid(all_heads(small, "self").weights)  # the all-heads grid draws every layer
    assert isinstance(err.value, InputError) and str(err.value).count(".") == 1
    with pytest.raises(LayerNotKept):
        head_statistics_of(small, "self")
    with pytest.raises(LayerNotKept):
        small.attentions["self"].mean(axis=1)
    with pytest.raises(LayerNotKept):
        np.asarray(small.hidden["input"])


def test_once_the_model_is_unloaded_a_missing_layer_gets_a_sentence(tiny_dir):
    lm = load(str(tiny_dir["gpt2"]))
    full = run(lm, TEXT)
    small = run(lm, TEXT, keep_bytes=full.nbytes // 3)
    dropped = next(i for i in range(small.n_layers) if i not in small.attentions["self"].kept)
    copied = pickle.loads(pickle.dumps(small))  # a ZeroGPU worker's result: the model stays behind
    assert np.array_equal(copied.logits.ids, small.logits.ids)
    del lm, full
    gc.collect()
    for trace in (small, copied):
        with pytest.raises(LayerNotKept, match="analyse the text again"):
            trace.attn(dropped, 0)


def test_the_next_token_view_reads_a_bounded_trace_exactly(tiny):
    lm = tiny["gpt2"]
    full, small, _ = bounded_pair(lm)
    settings = DecodingSettings()
    a, b = next_token_stages(lm, full, settings, 10), next_token_stages(lm, small, settings, 10)
    assert a.ids == b.ids if isinstance(a.ids, list) else np.array_equal(a.ids, b.ids)
    assert np.allclose(a.probs[0], b.probs[0], atol=1e-6) and np.isclose(a.rest, b.rest, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert", "tiny-t5"])
def test_small_models_keep_todays_full_trace_under_the_default_limit(name):
    lm = load(name)
    cache = RunCache(trace_bytes=Settings().trace_bytes)
    kept, plain = cache.get(lm, TEXT), run(lm, TEXT)
    assert not kept.bounded and kept.meta == plain.meta
    for mine, theirs in ((kept.attentions, plain.attentions), (kept.hidden, plain.hidden)):
        for key in theirs:
            assert type(mine[key]) is np.ndarray and np.array_equal(mine[key], theirs[key])
    assert type(kept.logits) is np.ndarray and np.array_equal(kept.logits, plain.logits)


def test_the_default_limit_keeps_a_gpt2_small_trace_at_512_tokens_whole():
    layers, heads, tokens, width, vocab = 12, 12, 512, 768, 50_257
    projected = 4 * (layers * heads * tokens**2 + (layers + 1) * tokens * width + tokens * vocab)
    assert projected <= Settings().trace_bytes
    assert 4 * (24 * 16 * tokens**2) > Settings().trace_bytes  # GPT-2-medium's attention alone is bounded


def test_the_run_cache_bounds_by_its_limit(tiny):
    lm = tiny["llama"]
    full = run(lm, TEXT)
    cache = RunCache(trace_bytes=full.nbytes // 3)
    trace = cache.get(lm, TEXT)
    assert trace.bounded and trace.nbytes <= full.nbytes // 3
