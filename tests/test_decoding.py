"""Greedy, sampling, step-by-step choice, the beam-search tree and the logit lens, against transformers' generate."""

import copy
import dataclasses
import gc
import itertools
import weakref

import numpy as np
import pytest
import torch

from explorer.analysis.decoding.beam_search import MAX_BEAMS, beam_search
from explorer.analysis.decoding.generate import MAX_NEW_TOKENS, MAX_STREAM_TOKENS, eos_ids, greedy, sample, stream
from explorer.analysis.decoding.logit_lens import logit_lens
from explorer.analysis.decoding.sampling import DecodingSettings, transform
from explorer.analysis.decoding.stepwise import PrefixCache, StepHistory, _top_candidates, next_step
from explorer.core.errors import InputError
from explorer.core.loading import load
from explorer.core.run import run

PROMPT = "To be, or not to be: that is"
SETTINGS = DecodingSettings(temperature=0.9, top_k=40, top_p=0.95, repetition_penalty=1.2)


def prompt_ids(lm):
    return lm.tokenizer(PROMPT)["input_ids"]


def hf_generate(lm, ids, **kwargs):
    pad = lm.model.generation_config.pad_token_id
    pad = eos_ids(lm)[0] if pad is None else pad
    return lm.model.generate(torch.tensor([ids]), pad_token_id=pad, **kwargs)


def model_logprob(lm, ids, start: int) -> float:
    """Sum of the model's log-probs of ids[start:], from one plain forward pass (decoders)."""
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


# ------------------------------------------------------------------ greedy and sampling


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5"])
def test_greedy_equals_generate(tiny, name):
    lm = tiny[name]
    ours = greedy(lm, prompt_ids(lm), max_new_tokens=12)
    assert list(ours.ids) == hf_generate(lm, prompt_ids(lm), max_new_tokens=12, do_sample=False)[0].tolist()
    assert len(ours.token_logprobs) == len(ours.new_ids) and all(lp <= 0 for lp in ours.token_logprobs)


def test_greedy_logprob_is_the_models_own(tiny):
    lm = tiny["gpt2"]
    ours = greedy(lm, prompt_ids(lm), max_new_tokens=8)
    assert ours.logprob == pytest.approx(model_logprob(lm, list(ours.ids), len(prompt_ids(lm))), abs=1e-4)


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_sampling_equals_generate_with_the_same_torch_seed(tiny, name):
    lm = tiny[name]
    ours = sample(lm, prompt_ids(lm), SETTINGS, n_samples=3, max_new_tokens=10, seed=7)
    torch.manual_seed(7)
    theirs = hf_generate(lm, prompt_ids(lm), max_new_tokens=10, num_return_sequences=3, **SETTINGS.generate_kwargs())
    for seq, row in zip(ours, theirs.tolist()):
        assert list(seq.ids) == row[: len(seq.ids)]  # generate pads rows that ended early


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_streamed_tokens_are_the_sampled_ones_and_may_run_long(tiny, name):
    lm = tiny[name]
    ids = prompt_ids(lm)
    sampled = sample(lm, ids, SETTINGS, n_samples=1, max_new_tokens=12, seed=5)[0]
    streamed = list(stream(lm, ids, SETTINGS, max_new_tokens=12, seed=5))
    assert tuple(t for t, _ in streamed) == sampled.new_ids
    assert [lp for _, lp in streamed] == pytest.approx(list(sampled.token_logprobs), abs=1e-5)
    with pytest.raises(InputError, match="number of new tokens"):
        sample(lm, ids, SETTINGS, n_samples=1, max_new_tokens=MAX_NEW_TOKENS + 1)
    if name == "gpt2":  # longer than the whole-sequence views allow (this seed does not end early)
        long = stream(lm, ids, DecodingSettings(), max_new_tokens=MAX_NEW_TOKENS + 40, seed=1)
        assert len(list(itertools.islice(long, MAX_NEW_TOKENS + 1))) == MAX_NEW_TOKENS + 1
    with pytest.raises(InputError, match="number of new tokens"):
        next(stream(lm, ids, SETTINGS, max_new_tokens=MAX_STREAM_TOKENS + 1))
    with pytest.raises(InputError, match="seed"):
        next(stream(lm, ids, SETTINGS, max_new_tokens=4, seed=2**64))


def test_same_seed_same_samples_other_seed_other_samples(tiny):
    lm = tiny["gpt2"]
    a = sample(lm, prompt_ids(lm), DecodingSettings(), n_samples=2, max_new_tokens=8, seed=1)
    b = sample(lm, prompt_ids(lm), DecodingSettings(), n_samples=2, max_new_tokens=8, seed=1)
    c = sample(lm, prompt_ids(lm), DecodingSettings(), n_samples=2, max_new_tokens=8, seed=2)
    assert [s.ids for s in a] == [s.ids for s in b]
    assert [s.ids for s in a] != [s.ids for s in c]  # 2 x 8 draws from ~400 tokens: equal by chance ~never
    assert a[0].ids != a[1].ids


def test_tiny_temperature_samples_the_greedy_text(tiny):
    lm = tiny["llama"]
    cold = sample(lm, prompt_ids(lm), DecodingSettings(temperature=1e-6), n_samples=2, max_new_tokens=8, seed=3)
    assert all(s.ids == greedy(lm, prompt_ids(lm), 8).ids for s in cold)


# ------------------------------------------------------------------ step by step


def test_steps_reproduce_with_a_seed_and_follow_clicks(tiny):
    lm = tiny["gpt2"]
    h = StepHistory.start(lm, PROMPT)
    for _ in range(3):
        h = h.advance(lm, SETTINGS, seed=11)
    again = StepHistory.start(lm, PROMPT)
    for _ in range(3):
        again = again.advance(lm, SETTINGS, seed=11)
    assert h.new_ids == again.new_ids and all(s.how == "sampled" for s in h.steps)
    # undo then redo the same step with the same seed draws the same token
    assert h.undo().advance(lm, SETTINGS, seed=11).new_ids == h.new_ids
    assert h.undo().undo().new_ids == h.new_ids[:1]
    # a click wins over the sampler; its probability and rank are reported from the model
    clicked = h.steps[0].candidates[4]
    k = h.undo().undo().undo().advance(lm, SETTINGS, seed=11, choice=clicked.id)
    chosen = k.steps[0].chosen  # recomputed through the cache: the same up to float rounding
    assert (chosen.id, chosen.text, chosen.rank, k.steps[0].how) == (clicked.id, clicked.text, clicked.rank, "clicked")
    assert chosen.model_prob == pytest.approx(clicked.model_prob, rel=1e-5)


def test_step_distribution_and_greedy_choice(tiny):
    lm = tiny["gpt2"]
    ids = prompt_ids(lm)
    step = next_step(lm, ids, DecodingSettings(greedy=True), top_n=5)
    with torch.no_grad():
        probs = torch.softmax(lm.model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
    assert step.how == "greedy" and step.chosen.id == int(probs.argmax()) and step.chosen.rank == 1
    assert [c.id for c in step.candidates] == torch.argsort(probs, descending=True)[:5].tolist()
    assert [c.rank for c in step.candidates] == [1, 2, 3, 4, 5]
    assert step.candidates[0].prob == pytest.approx(float(probs.max()), abs=1e-6)
    filtered = next_step(lm, ids, DecodingSettings(top_k=3), seed=0, top_n=5)
    assert filtered.kept == 3 and [c.prob > 0 for c in filtered.candidates] == [True] * 3 + [False] * 2
    assert [c.rank for c in filtered.candidates] == [1, 2, 3, 4, 5]  # filtered-out ones follow, by the model
    penalised = next_step(lm, ids, DecodingSettings(repetition_penalty=10.0, greedy=True), top_n=5)
    assert penalised.chosen.id not in ids and penalised.candidates[0] == penalised.chosen
    assert sum(c.prob for c in filtered.candidates[:3]) == pytest.approx(1.0, abs=1e-5)
    assert greedy(lm, ids, 1).new_ids == (step.chosen.id,)


@pytest.mark.parametrize("settings", [DecodingSettings(), DecodingSettings(top_k=3), DecodingSettings(top_p=0.5),
                                      DecodingSettings(temperature=0.3, min_p=0.2), SETTINGS])  # fmt: skip
def test_candidates_are_the_full_sort_of_the_vocabulary(settings):
    """The candidate pool gives what sorting the whole vocabulary gives: after the settings, then by the model."""
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        logits = torch.randn(500, generator=gen) * 3
        final = transform(logits, torch.tensor([1, 2, 3]), settings)[-1]
        model_probs = torch.softmax(logits, -1)
        by_model = torch.argsort(model_probs, descending=True, stable=True)
        full = by_model[torch.argsort(final.probs[by_model], descending=True, stable=True)]
        assert _top_candidates(final.probs, model_probs, 12) == full[:12].tolist()


def test_steps_on_t5_use_the_source(tiny):
    lm = tiny["t5"]
    h = StepHistory.start(lm, PROMPT)
    assert h.prompt_ids == (lm.model.config.decoder_start_token_id,) and h.source_ids
    for _ in range(4):
        h = h.advance(lm, DecodingSettings(greedy=True))
        if h.finished:
            break
    assert h.ids == greedy(lm, prompt_ids(lm), len(h.new_ids)).ids


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5"])
def test_steps_reuse_the_kv_cache_and_match_a_full_forward(tiny, name):
    """Steps, an undo with a different choice and an unrelated history interleaved: every step's
    distribution equals the model's plain forward over the whole text, and a step feeds one token."""
    lm = tiny[name]
    cache = PrefixCache(lm)
    if name == "t5":  # the decoder side starts from the start token; the other history has another source
        source, other_source = tuple(prompt_ids(lm)), tuple(prompt_ids(lm)[1:])
        start, other = [lm.model.config.decoder_start_token_id], [lm.model.config.decoder_start_token_id]
    else:
        source = other_source = None
        start, other = prompt_ids(lm), prompt_ids(lm)[1:] + [7]

    def full(ids, src):
        with torch.no_grad():
            if src:
                return lm.model(input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([ids])).logits[0, -1]
            return lm.model(input_ids=torch.tensor([ids])).logits[0, -1]

    fed = []  # tokens each forward pass was given

    def count(module, args, kwargs):
        fed.append(kwargs["decoder_input_ids" if source else "input_ids"].shape[1])

    steps = [start, start + [11], start + [11, 12], start + [11, 13], other, start + [11, 13, 14], start]
    hook = lm.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        for ids in steps:
            src = other_source if ids is other else source
            ours = cache.next_logits(ids, src)
            expected = full(ids, src).float()
            fed.pop()  # the plain forward's
            torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
    finally:
        hook.remove()
    # the whole text, one token per step, one after the undo, a new entry, one token, the start's last token
    assert fed == [len(start), 1, 1, 1, len(other), 1, 1]
    assert len(cache._entries) == 2


def test_a_model_dropped_by_the_pool_is_freed_with_its_step_caches(tiny_dir):
    lm = load(str(tiny_dir["gpt2"]))
    StepHistory.start(lm, PROMPT).advance(lm, DecodingSettings(greedy=True))
    model = weakref.ref(lm.model)
    del lm
    gc.collect()
    assert model() is None


def test_step_history_refuses_to_go_past_the_end(tiny):
    lm = tiny["gpt2"]
    h = StepHistory.start(lm, PROMPT)
    eos = eos_ids(lm)[0]
    h = h.advance(lm, DecodingSettings(), choice=eos)
    assert h.finished
    with pytest.raises(InputError, match="undo"):
        h.advance(lm, DecodingSettings())
    assert not h.undo().finished


# ------------------------------------------------------------------ beam search


def eos_it_likes(lm, ids, step: int = 3) -> int:
    """A token the model picks ``step`` steps in, used as end-of-sequence so beams finish at different lengths."""
    return greedy(lm, ids, step + 1).new_ids[step]


def assert_beams_equal_generate(lm, ids, num_beams, length_penalty=1.0, early_stopping=False, eos=None, new=10):
    """All num_beams finished hypotheses, their scores and the number of steps run equal generate's."""
    ours = beam_search(lm, ids, num_beams, new, length_penalty, early_stopping, eos_token_id=eos)
    theirs = hf_generate(lm, ids, num_beams=num_beams, num_return_sequences=num_beams, do_sample=False,
                         max_new_tokens=new, length_penalty=length_penalty, early_stopping=early_stopping,
                         eos_token_id=eos, output_scores=True, return_dict_in_generate=True)  # fmt: skip
    assert len(ours.finished) == num_beams
    for hyp, row, score in zip(ours.finished, theirs.sequences.tolist(), theirs.sequences_scores.tolist()):
        assert list(hyp.ids) == row[: len(hyp.ids)]
        assert hyp.score == pytest.approx(score, abs=1e-5)
    assert ours.n_steps == len(theirs.scores)  # the search stopped at the same step
    return ours


@pytest.mark.parametrize("name", ["gpt2", "t5"])
@pytest.mark.parametrize("num_beams", [2, 4])
@pytest.mark.parametrize("length_penalty", [1.0, 0.5])
def test_beam_search_equals_generate(tiny, name, num_beams, length_penalty):
    lm = tiny[name]
    ids = prompt_ids(lm)
    ours = assert_beams_equal_generate(lm, ids, num_beams, length_penalty, eos=eos_it_likes(lm, ids))
    assert [h.score for h in ours.finished] == sorted((h.score for h in ours.finished), reverse=True)


@pytest.fixture(scope="module")
def peaked(tiny):
    """Tiny gpt2 and t5 of the fixture's configs with 64 tokens and weights drawn wider (std 0.3).

    Their next-token distributions are peaked and differ from step to step, so beams finish at
    different lengths and searches stop early (at the fixture's std 0.02 every distribution is
    nearly uniform and every search runs to the end). They depend on no trained tokenizer, so each
    run searches the same trees.
    """
    out = {}
    for name in ("gpt2", "t5"):
        config = copy.deepcopy(tiny[name].model.config)
        config.vocab_size = 64
        torch.manual_seed(0)
        model = type(tiny[name].model)(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
        out[name] = dataclasses.replace(tiny[name], model=model)
    return out


PEAKED_PROMPT = [5, 17, 33, 2, 40, 9, 21]


@pytest.mark.parametrize("name", ["gpt2", "t5"])
@pytest.mark.parametrize("early_stopping", [False, True, "never"])
def test_beam_search_stopping_rules_equal_generate(peaked, name, early_stopping):
    """End-of-sequence tokens the model likes fill the finished list at different lengths, which exercises
    how finished hypotheses are scored, when they enter the list and every rule for stopping early."""
    lm = peaked[name]
    ids = PEAKED_PROMPT
    first = next_step(lm, [lm.model.config.decoder_start_token_id] if name == "t5" else ids,
                      DecodingSettings(greedy=True), source_ids=ids, top_n=5).candidates  # fmt: skip
    steps, lengths = set(), set()
    for eos in (first[0].id, first[1].id, first[3].id, eos_it_likes(lm, ids, 1), eos_it_likes(lm, ids, 3)):
        for length_penalty in (1.0, 2.0, -0.5):
            ours = assert_beams_equal_generate(lm, ids, 3, length_penalty, early_stopping, eos, new=8)
            steps.add(ours.n_steps)
            lengths.update(len(h.new_ids) for h in ours.finished)
    assert len(lengths) > 2  # hypotheses finished at several lengths
    if early_stopping != "never":
        assert min(steps) < 8  # and some searches stopped before max_new_tokens


def test_beam_tree_keeps_num_beams_per_step_and_scores_add_up(tiny):
    lm = tiny["gpt2"]
    ids = prompt_ids(lm)
    k = 3
    result = beam_search(lm, ids, k, 8, eos_token_id=eos_it_likes(lm, ids))
    assert result.nodes[0].status == "root"
    for step in range(1, result.n_steps + 1):
        nodes = result.at_step(step)
        assert len(nodes) == 2 * k  # every candidate considered, kept or not
        kept = [n for n in nodes if n.status == "kept"]
        last_at_max_length = step == 8
        assert len(kept) == (0 if last_at_max_length else k)
        for n in nodes:  # each continues a beam that was kept one step earlier (or the prompt)
            parent = result.nodes[n.parent]
            assert parent.status == ("root" if step == 1 else "kept") and parent.step == step - 1
        assert [n.logprob for n in nodes] == sorted((n.logprob for n in nodes), reverse=True)
    statuses = {n.status for n in result.nodes}
    assert {"kept", "pruned", "finished"} <= statuses
    for hyp in result.finished:  # a hypothesis's score is the model's log-prob of its tokens
        assert hyp.logprob == pytest.approx(model_logprob(lm, list(hyp.ids), len(ids)), abs=1e-3)
        assert hyp.score == pytest.approx(hyp.logprob / len(hyp.new_ids) ** result.length_penalty, abs=1e-4)
        assert [result.nodes[i].token for i in result.path(hyp.node)] == list(hyp.new_ids)
        assert result.nodes[hyp.node].status == "finished"


def test_one_beam_is_greedy(tiny):
    lm = tiny["llama"]
    assert beam_search(lm, prompt_ids(lm), 1, 6).best.ids == greedy(lm, prompt_ids(lm), 6).ids


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(num_beams=0), "beams"),
        (dict(num_beams=MAX_BEAMS + 1), "beams"),
        (dict(max_new_tokens=0), "new tokens"),
        (dict(max_new_tokens=65), "new tokens"),
        (dict(early_stopping="sometimes"), "Early stopping"),
    ],
)
def test_beam_search_bounds(tiny, kwargs, words):
    lm = tiny["gpt2"]
    with pytest.raises(InputError, match=words):
        beam_search(lm, prompt_ids(lm), **{"num_beams": 2, "max_new_tokens": 4, **kwargs})


def test_encoders_and_bad_prompts_are_refused(tiny):
    with pytest.raises(InputError, match="does not generate"):
        greedy(tiny["bert"], [5, 6], 3)
    with pytest.raises(InputError, match="no tokens"):
        greedy(tiny["gpt2"], [], 3)
    with pytest.raises(InputError, match="vocabulary"):
        sample(tiny["gpt2"], [10**6], DecodingSettings(), 1, 3)
    with pytest.raises(InputError, match="at most 128"):
        greedy(tiny["gpt2"], [5] * 120, 20)
    with pytest.raises(InputError, match="seed"):
        sample(tiny["gpt2"], [5], DecodingSettings(), 1, 3, seed=-1)


# ------------------------------------------------------------------ logit lens


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5"])
def test_logit_lens_last_layer_is_the_models_output(tiny, name):
    lm = tiny[name]
    trace = run(lm, PROMPT)
    lens = logit_lens(lm, trace, top_k=5)
    stream = "target" if name == "t5" else "input"
    layers, positions = trace.hidden[stream].shape[:2]
    assert lens.ids.shape == lens.probs.shape == (layers, positions, 5) and lens.stream == stream
    probs = torch.softmax(torch.from_numpy(np.array(trace.logits)), -1)
    top = torch.topk(probs, 5, dim=-1)
    np.testing.assert_allclose(lens.probs[-1], top.values.numpy(), atol=1e-4)
    assert (lens.ids[-1, :, 0] == top.indices[:, 0].numpy()).all()
    np.testing.assert_allclose(lens.final_token_probs[-1], top.values[:, 0].numpy(), atol=1e-4)


def test_logit_lens_normalises_each_earlier_layer_once(tiny):
    lm = tiny["gpt2"]
    trace = run(lm, PROMPT)
    lens = logit_lens(lm, trace, top_k=3)
    hidden = torch.from_numpy(np.array(trace.hidden["input"][1]))
    with torch.no_grad():
        expected = torch.softmax(lm.model.lm_head(lm.model.transformer.ln_f(hidden)), -1)
    np.testing.assert_allclose(lens.probs[1], torch.topk(expected, 3, -1).values.numpy(), atol=1e-5)


def test_logit_lens_refuses_encoders(tiny):
    lm = tiny["bert"]
    with pytest.raises(InputError, match="logit lens"):
        logit_lens(lm, run(lm, PROMPT))
