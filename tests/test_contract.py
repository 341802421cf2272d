"""Contract suite: every family, on tiny random-weight models, keeps the Trace's promises."""

import numpy as np
import pytest
import torch

from explorer.core.run import RunCache, run
from tests.tiny_models import TINY

TEXT = "The tiger jumped out of a tree to get a drink because it was thirsty."
NAMES = list(TINY)


@pytest.fixture(scope="module")
def traces(tiny):
    return {name: run(lm, TEXT) for name, lm in tiny.items()}


@pytest.mark.parametrize("name", NAMES)
def test_attention_and_hidden_shapes_match_the_token_streams(tiny, traces, name):
    lm, trace = tiny[name], traces[name]
    cfg = lm.model.config
    for kind, weights in trace.attentions.items():
        q_stream, k_stream = trace.streams_of(kind)
        assert weights.shape == (
            trace.n_layers,
            trace.n_heads,
            len(trace.tokens[q_stream]),
            len(trace.tokens[k_stream]),
        )
    for stream, hidden in trace.hidden.items():
        assert hidden.shape[0] == trace.n_layers + 1
        assert hidden.shape[1] == len(trace.tokens[stream])
        assert hidden.shape[2] == getattr(cfg, "hidden_size", None) or cfg.d_model
    assert trace.n_layers == lm.spec.n_layers and trace.n_heads == lm.spec.n_heads


@pytest.mark.parametrize("name", NAMES)
def test_attention_rows_sum_to_one(traces, name):
    for kind, weights in traces[name].attentions.items():
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5, err_msg=kind)


@pytest.mark.parametrize("name", NAMES)
def test_causal_attention_is_zero_above_the_diagonal(traces, name):
    trace = traces[name]
    causal = {"decoder": ["self"], "encoder": [], "encoder_decoder": ["decoder_self"]}[trace.family]
    for kind in causal:
        weights = trace.attentions[kind]
        upper = np.triu(np.ones(weights.shape[-2:], bool), k=1)
        assert np.all(weights[..., upper] == 0), kind
    if trace.family == "encoder":  # bidirectional: some weight lies above the diagonal
        upper = np.triu(np.ones(trace.attentions["self"].shape[-2:], bool), k=1)
        assert trace.attentions["self"][..., upper].sum() > 0.1


@pytest.mark.parametrize("name", NAMES)
def test_trace_logits_equal_a_plain_forward(tiny, traces, name):
    lm, trace = tiny[name], traces[name]
    ids = torch.tensor([[t.id for t in trace.tokens["source" if trace.family == "encoder_decoder" else "input"]]])
    with torch.no_grad():
        if trace.family == "encoder_decoder":
            dec = torch.tensor([[t.id for t in trace.tokens["target"]]])
            plain = lm.model(input_ids=ids, decoder_input_ids=dec).logits[0]
        else:
            plain = lm.model(input_ids=ids).logits[0]
    np.testing.assert_allclose(trace.logits, plain.numpy(), atol=1e-5, rtol=1e-5)


def test_encoder_decoder_has_three_kinds_with_cross_attention_target_by_source(traces):
    trace = traces["t5"]
    assert set(trace.attentions) == {"encoder_self", "decoder_self", "cross"}
    n_src, n_tgt = len(trace.tokens["source"]), len(trace.tokens["target"])
    assert trace.attentions["cross"].shape[2:] == (n_tgt, n_src)
    assert trace.meta["target_source"] == "generated"


def test_encoder_decoder_with_a_given_target(tiny):
    lm = tiny["t5"]
    trace = run(lm, TEXT, target="a drink")
    expected = [
        lm.model.config.decoder_start_token_id,
        *lm.tokenizer(text_target="a drink", add_special_tokens=False)["input_ids"],
    ]
    assert [t.id for t in trace.tokens["target"]] == expected
    assert trace.logits.shape == (len(expected), lm.model.config.vocab_size)


@pytest.mark.parametrize("name", NAMES)
def test_tokens_carry_ids_and_offsets_into_the_text(tiny, traces, name):
    lm, trace = tiny[name], traces[name]
    stream = "source" if trace.family == "encoder_decoder" else "input"
    tokens = trace.tokens[stream]
    assert [t.id for t in tokens] == lm.tokenizer(TEXT)["input_ids"]
    for t in tokens:
        if not t.special:
            assert 0 <= t.start < t.end <= len(TEXT)
            assert t.display
    starts = [t.start for t in tokens if not t.special]
    assert starts == sorted(starts)
    covered = set().union(*(range(t.start, t.end) for t in tokens))
    assert {i for i, ch in enumerate(TEXT) if not ch.isspace()} <= covered


def test_trace_arrays_are_read_only(traces):
    trace = traces["gpt2"]
    with pytest.raises(ValueError):
        trace.attentions["self"][0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        trace.logits[0, 0] = 1.0


def test_run_cache_runs_each_input_once(tiny):
    cache = RunCache()
    lm = tiny["gpt2"]
    first = cache.get(lm, "one two three")
    again = cache.get(lm, "one two three")
    other = cache.get(lm, "one two four")
    assert first is again and other is not first
    assert (cache.hits, cache.misses) == (1, 2)


def test_run_cache_stays_within_its_byte_budget(tiny):
    lm = tiny["gpt2"]
    one = run(lm, "alpha beta gamma")
    cache = RunCache(max_bytes=int(one.nbytes * 2.5))
    for text in ["alpha", "alpha beta", "alpha beta gamma", "alpha beta gamma delta"]:
        cache.get(lm, text)
    assert len(cache) < 4
    assert cache.nbytes <= cache.max_bytes


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_generation_trace_rows_are_what_each_new_token_attended_to(tiny, name):
    lm = tiny[name]
    trace = run(lm, "To be, or not", generate=5)
    prompt = trace.meta["prompt_tokens"]
    ids = [t.id for t in trace.tokens["input"]]
    assert len(ids) == prompt + 5
    expected = lm.model.generate(torch.tensor([ids[:prompt]]), max_new_tokens=5, do_sample=False)
    assert ids == expected[0].tolist()
    with torch.no_grad():  # attention of the last token when it was the newest one
        for p in (prompt, prompt + 4):
            step = lm.model(torch.tensor([ids[: p + 1]]), output_attentions=True).attentions
            for layer in range(trace.n_layers):
                np.testing.assert_allclose(
                    trace.attentions["self"][layer, :, p, : p + 1], step[layer][0, :, -1].numpy(), atol=1e-5
                )


@pytest.mark.parametrize("name", NAMES)
def test_pre_softmax_scores_give_back_the_attention_weights(tiny, traces, name):
    from explorer.core.scores import attention_scores

    lm, trace = tiny[name], traces[name]
    scores = attention_scores(lm, trace)
    assert set(scores) == set(trace.attentions)
    for kind, s in scores.items():
        np.testing.assert_allclose(torch.from_numpy(s).softmax(-1).numpy(), trace.attentions[kind], atol=1e-5)
        if kind in ("decoder_self",) or (kind == "self" and trace.family == "decoder"):
            upper = np.triu(np.ones(s.shape[-2:], bool), k=1)
            assert np.all(np.isneginf(s[..., upper])) and np.all(np.isfinite(s[..., ~upper]))


def test_scores_are_query_key_products_scaled_by_root_d(tiny, traces):
    from explorer.core.scores import attention_scores

    lm, trace = tiny["gpt2"], traces["gpt2"]
    scores = attention_scores(lm, trace)["self"]
    ids = torch.tensor([[t.id for t in trace.tokens["input"]]])
    with torch.no_grad():
        hidden = lm.model.transformer.wte(ids) + lm.model.transformer.wpe(torch.arange(ids.shape[1]))[None]
        block = lm.model.transformer.h[0]
        q, k, _ = block.attn.c_attn(block.ln_1(hidden)).split(lm.model.config.n_embd, dim=2)
        head_dim = lm.model.config.n_embd // lm.model.config.n_head
        q = q.view(1, -1, lm.model.config.n_head, head_dim).transpose(1, 2)
        k = k.view(1, -1, lm.model.config.n_head, head_dim).transpose(1, 2)
        expected = (q @ k.transpose(-1, -2))[0] / head_dim**0.5
    lower = np.tril(np.ones(scores.shape[-2:], bool))
    np.testing.assert_allclose(scores[0][:, lower], expected.numpy()[:, lower], atol=1e-5)
