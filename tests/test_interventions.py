"""Interventions are exact where they must be: on tiny random models of every family (RoPE + GQA included)."""

import copy
import dataclasses
import math
import threading

import numpy as np
import pytest
import torch

from explorer.analysis.interventions import ablation, patching, steering
from explorer.analysis.interventions.prompt import forward_options, logits_at, prompt_of
from explorer.analysis.interventions.sites import Capture, Edit, find_sites, intervene
from explorer.core.errors import InputError
from tests.tiny_models import TINY

CLEAN = {"gpt2": "The tiger jumped out of a tree", "llama": "The tiger jumped out of a tree",
         "bert": "The tiger [MASK] out of a tree", "t5": "The tiger jumped out of a tree"}  # fmt: skip
# Two words swapped: the same pieces in another order, so both texts have the same length in any tokenizer.
CORRUPT = {"gpt2": "The tree jumped out of a tiger", "llama": "The tree jumped out of a tiger",
           "bert": "The tree [MASK] out of a tiger", "t5": "The tree jumped out of a tiger"}  # fmt: skip


def hooks(model):
    """Hooks of ours left on the model (transformers keeps recorders of its own once it ran with attentions)."""
    return sum(
        getattr(h, "__module__", "") == "explorer.analysis.interventions.sites"
        for m in model.modules() for h in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
    )  # fmt: skip


def sharpened(lm):
    """A private copy with larger random weights: tiny random models at the usual 0.02 init give nearly the same
    output for any input, so an effect measured between two texts would be lost in rounding."""
    model = copy.deepcopy(lm.model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return dataclasses.replace(lm, model=model)


def plain_logits(lm, prompt, rows=1):
    """The model's own forward, no hooks, called as ``logits_at`` calls it (a decoder's logits only at the end)."""
    options = forward_options(lm, prompt)
    with torch.no_grad():
        logits = lm.model(**prompt.batch(rows), **options).logits
    return logits[:, -1 if "logits_to_keep" in options else prompt.point].float()


def same_length_pair(lm, name):
    clean, corrupt = prompt_of(lm, CLEAN[name]), prompt_of(lm, CORRUPT[name])
    assert all(clean.length(s) == corrupt.length(s) for s in clean.tokens)
    return clean, corrupt


@pytest.mark.parametrize("name", TINY)
def test_no_edit_and_clean_into_clean_are_bit_identical(tiny, name):
    lm = tiny[name]
    sites = find_sites(lm)
    prompt = prompt_of(lm, CLEAN[name])
    plain = plain_logits(lm, prompt, rows=3)

    assert torch.equal(logits_at(lm, sites, prompt, [], rows=3), plain)
    keys = {(s, i, site, k) for s, layers in sites.layers.items() for i, layer in enumerate(layers)
            for site, k in [("resid", None), ("mlp", None), *[(x, k) for k in layer.attn_out for x in ("attn", "head")]]}  # fmt: skip
    capture = Capture(wanted=keys)
    with torch.no_grad(), intervene(lm, sites, capture=capture):
        lm.model(**prompt.batch(3))
    assert len(capture.seen) == len(keys) and hooks(lm.model) == 0
    edits = [Edit(s, i, site, k, value=capture.seen[(s, i, site, k)][0]) for (s, i, site, k) in keys]
    assert torch.equal(logits_at(lm, sites, prompt, edits, rows=3), plain)
    assert hooks(lm.model) == 0


@pytest.mark.parametrize("name", TINY)
def test_patching_a_whole_residual_layer_gives_the_clean_logits(tiny, name):
    lm = tiny[name]
    sites = find_sites(lm)
    clean, corrupt = same_length_pair(lm, name)
    stream = lm.spec.adapter.primary_stream  # T5: the encoder side (the decoder still reads the encoder)
    layer = len(sites.layers[stream]) // 2
    capture = Capture(wanted={(stream, layer, "resid", None)})
    with torch.no_grad(), intervene(lm, sites, capture=capture):
        lm.model(**clean.batch(1))
    patched = logits_at(
        lm, sites, corrupt, [Edit(stream, layer, "resid", value=capture.seen[(stream, layer, "resid", None)][0])]
    )
    assert not torch.allclose(plain_logits(lm, corrupt), plain_logits(lm, clean))
    assert torch.equal(patched, plain_logits(lm, clean))


def _head_columns_zeroed(lm, sites, stream, kind, layer, head, mean=None):
    """A copy of the model whose output projection ignores one head (plus, for mean-ablation, its mean)."""
    model = copy.deepcopy(lm.model)
    names = {id(m): n for n, m in lm.model.named_modules()}
    proj = model.get_submodule(names[id(sites.layers[stream][layer].attn_out[kind])])
    cols = slice(head * sites.head_dim, (head + 1) * sites.head_dim)
    with torch.no_grad():
        if isinstance(proj, torch.nn.Linear):
            w = proj.weight[:, cols].clone()
            proj.weight[:, cols] = 0
            if mean is not None:
                if proj.bias is None:
                    proj.bias = torch.nn.Parameter(torch.zeros(proj.out_features))
                proj.bias += w @ mean
        else:  # GPT-2's Conv1D: weight (in, out)
            w = proj.weight[cols, :].clone()
            proj.weight[cols, :] = 0
            if mean is not None:
                proj.bias += mean @ w
    return model


@pytest.mark.parametrize("name", TINY)
def test_zero_and_mean_ablation_of_a_head_equal_a_hand_edited_model(tiny, name):
    lm = tiny[name]
    sites = find_sites(lm)
    prompt = prompt_of(lm, CLEAN[name])
    kind = lm.spec.adapter.attention_kinds[-1]  # T5: cross-attention
    stream = sites.stream_of(kind)
    a = ablation.Ablation(stream, 1, "head", kind, 2)
    zeroed = logits_at(lm, sites, prompt, ablation.edits_of([a], "zero", None, sites))
    with torch.no_grad():
        by_hand = _head_columns_zeroed(lm, sites, stream, kind, 1, 2)(**prompt.batch(1)).logits[:, prompt.point]
    assert torch.allclose(zeroed, by_hand, atol=1e-5) and not torch.allclose(
        zeroed, plain_logits(lm, prompt), atol=1e-4
    )

    reference = "To be, or not to be: that is the question."
    means = ablation.reference_means(lm, sites, reference, prompt.target)
    seen = []  # the reference's head outputs, recorded by a plain hook of the test's own
    proj = sites.layers[stream][1].attn_out[kind]
    handle = proj.register_forward_pre_hook(lambda m, args: seen.append(args[0][0].detach().clone()))
    try:
        with torch.no_grad():
            lm.model(**ablation._reference_prompt(lm, reference, prompt.target).batch(1))
    finally:
        handle.remove()
    mean = seen[0].mean(0)[2 * sites.head_dim : 3 * sites.head_dim]
    assert torch.allclose(means[(stream, 1, "head", kind)][2 * sites.head_dim : 3 * sites.head_dim], mean)
    mean_ablated = logits_at(lm, sites, prompt, ablation.edits_of([a], "mean", means, sites))
    with torch.no_grad():
        by_hand = _head_columns_zeroed(lm, sites, stream, kind, 1, 2, mean)(**prompt.batch(1)).logits[:, prompt.point]
    assert torch.allclose(mean_ablated, by_hand, atol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_the_batched_head_sweep_equals_one_ablation_per_pass(tiny, name):
    lm = tiny[name]
    sites = find_sites(lm)
    result = ablation.head_importance(lm, CLEAN[name], rows=3)
    n_layers = len(sites.layers[result.stream])
    assert result.change.shape == (n_layers, sites.n_heads)
    assert result.passes == n_layers * math.ceil(sites.n_heads / 3)  # passes start at a layer's first head
    assert ablation.head_importance(lm, CLEAN[name]).passes == 1  # 2 layers x 4 heads: one pass of 8 rows
    prompt = prompt_of(lm, CLEAN[name])
    clean = torch.log_softmax(plain_logits(lm, prompt)[0], -1)
    for layer in range(n_layers):
        for head in range(sites.n_heads):
            a = ablation.Ablation(result.stream, layer, "head", result.kind, head)
            logp = torch.log_softmax(logits_at(lm, sites, prompt, ablation.edits_of([a], "zero", None, sites))[0], -1)
            assert result.change[layer, head] == pytest.approx(
                float(logp[result.answer] - clean[result.answer]), abs=1e-4
            )
            assert result.kl[layer, head] == pytest.approx(float(ablation.kl_divergence(clean, logp)), abs=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_the_shared_model_is_unchanged_after_any_intervention(tiny, name):
    lm = tiny[name]
    sites = find_sites(lm)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}

    prompt = prompt_of(lm, CLEAN[name])
    plain = plain_logits(lm, prompt)
    with pytest.raises(RuntimeError), intervene(lm, sites, [Edit(lm.spec.adapter.primary_stream, 0, "mlp")]):
        assert hooks(lm.model) > 0
        raise RuntimeError("a failure in the middle of an intervention")
    ablation.ablate(lm, CLEAN[name], [ablation.Ablation(sites.stream_of(lm.spec.adapter.attention_kinds[0]), 0, "attn",
                                                        lm.spec.adapter.attention_kinds[0])])  # fmt: skip
    assert hooks(lm.model) == 0
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    assert torch.equal(plain_logits(lm, prompt), plain)


def test_an_intervention_acts_only_on_the_thread_that_made_it(tiny):
    """Another user's forward pass through the same model, while one user's ablation is active, is untouched."""
    lm = tiny["gpt2"]
    sites = find_sites(lm)
    prompt = prompt_of(lm, CLEAN["gpt2"])
    plain = plain_logits(lm, prompt)
    inside, done, seen = threading.Event(), threading.Event(), {}

    def other_user():
        inside.wait(10)
        seen["logits"] = plain_logits(lm, prompt)
        done.set()

    thread = threading.Thread(target=other_user)
    thread.start()
    everything = [Edit("input", i, "resid") for i in range(len(sites.layers["input"]))]
    with intervene(lm, sites, everything):
        inside.set()
        done.wait(10)
        ablated = plain_logits(lm, prompt)
    thread.join()
    assert torch.equal(seen["logits"], plain) and not torch.allclose(ablated, plain)


@pytest.mark.parametrize("name", TINY)
def test_patching_sweeps_have_known_answers(tiny, name):
    lm = sharpened(tiny[name])
    same_length_pair(lm, name)
    result = patching.patch_sweep(lm, CLEAN[name], CORRUPT[name], "resid", rows=5)
    n_layers, n_pos = result.restored.shape
    assert n_pos == len(result.tokens) and not np.isnan(result.restored).any()
    if lm.spec.adapter.family == "decoder":
        # the answer is read at the last position, from the last layer's residual there: fully restored;
        # the first token is the same in both texts and sees nothing else (causal): nothing restored
        assert result.restored[-1, -1] == pytest.approx(1.0, abs=1e-4)
        assert np.allclose(result.restored[:, 0], 0.0, atol=1e-4)
    heads = patching.patch_sweep(lm, CLEAN[name], CORRUPT[name], head_layer=0, rows=7)
    assert heads.restored.shape == (find_sites(lm).n_heads, len(heads.tokens)) and heads.passes >= 2


def test_patching_refuses_texts_of_different_lengths(tiny):
    with pytest.raises(InputError, match="same number of tokens"):
        patching.patch_sweep(tiny["gpt2"], "The tiger jumped", "The tiger jumped out of the tree")


@pytest.mark.parametrize("name", TINY)
def test_steering_moves_the_output_and_zero_strength_does_not(tiny, name):
    lm = tiny[name]
    d = steering.direction(lm, 1, "tiger, tree", "earth, heaven")
    assert d.vector.shape == (lm.model.config.to_dict().get("d_model") or lm.model.config.hidden_size,)
    off = steering.steer(lm, CLEAN[name], d, 0.0, new_tokens=4)
    assert off.plain == off.steered and off.plain_top == off.steered_top
    on = steering.steer(lm, CLEAN[name], d, 40.0, new_tokens=4)
    assert on.plain_top != on.steered_top
    with pytest.raises(InputError):
        steering.steer(lm, CLEAN[name], d, float("nan"))


def test_an_encoder_needs_a_mask_to_read_its_answer(tiny):
    with pytest.raises(InputError, match="mask token"):
        prompt_of(tiny["bert"], "The tiger jumped out of a tree")


def test_the_whole_targets_log_probability_is_the_sum_over_its_tokens(tiny):
    lm = tiny["t5"]
    result = ablation.ablate(lm, "The tiger jumped", [ablation.Ablation("target", 0, "mlp")], target="out of a tree")
    ids = [t.id for t in result.clean_trace.tokens["target"]]
    with torch.no_grad():
        logits = lm.model(input_ids=prompt_of(lm, "The tiger jumped").inputs["input_ids"],
                          decoder_input_ids=torch.tensor([ids])).logits[0]  # fmt: skip
    by_hand = sum(float(torch.log_softmax(logits[i], -1)[ids[i + 1]]) for i in range(len(ids) - 1))
    assert result.target_logprobs[0] == pytest.approx(by_hand, abs=1e-4)
    assert result.target_logprobs[1] != pytest.approx(by_hand, abs=1e-4)


def test_a_stopped_sweep_hands_back_what_it_measured(tiny):
    lm = tiny["gpt2"]
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 1  # after the first pass

    with pytest.raises(ablation.Stopped) as stopped:
        ablation.head_importance(lm, CLEAN["gpt2"], rows=4, should_stop=should_stop)
    partial = stopped.value.partial
    assert partial.passes == 1 and np.isfinite(partial.change[0]).all() and np.isnan(partial.change[1]).all()
    with pytest.raises(ablation.Stopped) as stopped:
        patching.patch_sweep(sharpened(lm), CLEAN["gpt2"], CORRUPT["gpt2"], should_stop=lambda: True)
    assert stopped.value.partial.passes == 0 and np.isnan(stopped.value.partial.restored).all()
