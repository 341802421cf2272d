"""What the next-token tab's handlers call, below the UI: the staged distribution, the strategies side by side,
streamed progress, the step retaken, the logit-lens grid, fill-in and their figures (bundled models)."""

import numpy as np
import pytest
import torch

from explorer.analysis.decoding.distribution import next_token_stages
from explorer.analysis.decoding.fill_mask import (
    SENTINEL,
    check_fills_in,
    fill_first_mask,
    fill_spans,
    sentinel_after,
    span_end_ids,
    text_to_mask,
)
from explorer.analysis.decoding.generate import greedy, sample, stream_progress
from explorer.analysis.decoding.logit_lens import top_token_grid
from explorer.analysis.decoding.sampling import DecodingSettings
from explorer.analysis.decoding.stepwise import StepHistory
from explorer.analysis.decoding.strategies import StrategyRow, compare_strategies
from explorer.core.errors import InputError
from explorer.core.loading import load
from explorer.core.run import run
from explorer.core.tokens import token_label
from explorer.plots.decoding import logit_bars, prediction_bars

TEXT = "To be, or not to be"


@pytest.fixture(scope="module")
def models():
    return {key: load(f"tiny-{key}") for key in ("gpt2", "bert", "t5")}


@pytest.fixture(scope="module")
def gpt2_trace(models):
    return run(models["gpt2"], TEXT)


def test_the_model_stage_is_the_softmax_of_the_last_logits(models, gpt2_trace):
    dist = next_token_stages(models["gpt2"], gpt2_trace, DecodingSettings(), 12)
    probs = torch.softmax(torch.from_numpy(np.array(gpt2_trace.logits[-1])), -1).numpy()
    expected = np.argsort(-probs, kind="stable")[:12]
    assert dist.ids == expected.tolist() and dist.stage_names == ["model"]
    np.testing.assert_allclose(dist.probs[0], probs[expected], rtol=1e-6)
    np.testing.assert_allclose(dist.logits, gpt2_trace.logits[-1][expected])
    assert dist.rest == pytest.approx(1 - probs[expected].sum(), abs=1e-6)
    assert dist.survivors == dist.vocab_size == probs.size and dist.kept.all()
    assert dist.labels[0] == token_label(models["gpt2"].tokenizer, dist.ids[0]) and dist.after == "␣be"


def test_each_setting_adds_its_stage_and_top_k_keeps_k(models, gpt2_trace):
    settings = DecodingSettings(temperature=0.5, top_k=3, repetition_penalty=1.5)
    dist = next_token_stages(models["gpt2"], gpt2_trace, settings, 10)
    assert dist.stage_names == ["model", "repetition penalty", "temperature", "top-k"]
    assert dist.probs.shape == dist.kept.shape == (4, 10) and dist.survivors == 3
    assert dist.kept[-1].sum() == 3  # the three survivors are among the model's ten best
    seen = {t.id for t in gpt2_trace.tokens["input"]}
    for n, token in enumerate(dist.ids):  # the penalty lowers exactly the tokens already in the text
        lowered = dist.probs[1, n] < dist.probs[0, n]
        assert lowered == (token in seen), token_label(models["gpt2"].tokenizer, token)


def test_an_encoder_has_no_next_token(models):
    with pytest.raises(InputError, match="does not predict a next token"):
        next_token_stages(models["bert"], run(models["bert"], TEXT), DecodingSettings(), 5)


def test_stream_progress_reports_the_seeded_sample_and_ends_once(models):
    lm, settings = models["gpt2"], DecodingSettings(temperature=0.9, top_k=20)
    reports = list(stream_progress(lm, TEXT, settings, 12, seed=3, every=0.0))
    expected = sample(lm, lm.tokenizer(TEXT)["input_ids"], settings, 1, 12, seed=3)[0]
    assert reports[-1].new_ids == expected.new_ids and reports[-1].text == expected.text
    assert reports[-1].logprob == pytest.approx(expected.logprob, abs=1e-4)
    assert [r.done for r in reports] == [False] * len(expected.new_ids) + [True]  # every token, then the end
    assert [len(r.new_ids) for r in reports[:-1]] == list(range(1, len(expected.new_ids) + 1))
    assert reports[-1].limit == 12 and reports[-1].tokens_per_second > 0
    with pytest.raises(InputError, match="from 1 to 512"):
        next(stream_progress(lm, TEXT, settings, 0))


def test_stream_progress_says_when_the_end_of_sequence_token_stopped_it(models):
    lm = models["gpt2"]
    eos = lm.tokenizer.eos_token_id
    reports = list(stream_progress(lm, TEXT, DecodingSettings(greedy=True), 40, every=0.0))
    ended = bool(reports[-1].new_ids) and reports[-1].new_ids[-1] == eos
    assert reports[-1].ended == ended and not any(r.ended for r in reports[:-1])


def test_compare_strategies_agrees_with_each_decoder(models):
    lm, settings = models["gpt2"], DecodingSettings(top_k=10)
    prompt = lm.tokenizer(TEXT)["input_ids"]
    result = compare_strategies(lm, TEXT, settings, 6, 2, 3, 1.0, seed=5)
    g, samples = greedy(lm, prompt, 6), sample(lm, prompt, settings, 2, 6, 5)
    assert [(r.strategy, r.text, r.logprob) for r in result.rows[:3]] == [
        ("greedy", g.text, g.logprob),
        ("sample 1", samples[0].text, samples[0].logprob),
        ("sample 2", samples[1].text, samples[1].logprob),
    ]
    beams = result.rows[3:]
    assert 1 <= len(beams) <= 3 and all(r.finished for r in beams)
    assert beams[0].strategy == f"beam 1 (score {result.beams.best.score:.3f})"
    root, *rest = result.tree
    assert root["label"] == "⟨start⟩" and root["parent"] is None
    ids = {n["id"] for n in result.tree}
    assert rest and all(n["parent"] in ids for n in rest) and len(result.tree) == len(result.beams.nodes)


def test_retake_redoes_the_last_step_with_the_chosen_token(models):
    lm, settings = models["gpt2"], DecodingSettings(greedy=True)
    h = StepHistory.start(lm, TEXT)
    with pytest.raises(InputError, match="Take a first step"):
        h.retake(lm, settings, 0, 42)
    h = h.advance(lm, settings)
    other = h.steps[-1].candidates[3].id
    retaken = h.retake(lm, settings, 0, other)
    assert len(retaken.steps) == 1 and retaken.new_ids == (other,) and retaken.steps[-1].how == "clicked"
    with pytest.raises(InputError, match="Take a first step"):
        h.retake(lm, settings, 0, None)


def test_the_lens_grid_ends_in_the_models_own_prediction(models, gpt2_trace):
    lm = models["gpt2"]
    grid = top_token_grid(lm, gpt2_trace)
    n_tokens = len(gpt2_trace.tokens["input"])
    assert grid.labels.shape == grid.probs.shape == (gpt2_trace.n_layers + 1, n_tokens)
    own = [token_label(lm.tokenizer, int(i)) for i in gpt2_trace.logits.argmax(-1)]
    assert grid.labels[-1].tolist() == own and grid.positions == gpt2_trace.labels("input")
    assert ((grid.probs > 0) & (grid.probs <= 1)).all()


def test_text_to_mask_replaces_one_token_of_the_text(models):
    lm = models["bert"]
    text = "the cat sat"
    trace = run(lm, text)
    tokens = trace.tokens["input"]
    cat = next(i for i, t in enumerate(tokens) if t.display == "cat")
    assert text_to_mask(trace, text, cat, "[MASK]", lm.tokenizer.mask_token_id) == "the [MASK] sat"
    assert text_to_mask(trace, text, None, "[MASK]", lm.tokenizer.mask_token_id) is None
    for bad in (0, len(tokens) - 1, len(tokens), -1):  # [CLS], [SEP], past the end, negative
        with pytest.raises(InputError, match="Pick one of the text's own tokens"):
            text_to_mask(trace, text, bad, "[MASK]", lm.tokenizer.mask_token_id)
    masked = run(lm, "the [MASK] sat")  # a typed mask is a special token: it is filled with no position picked
    position = next(i for i, t in enumerate(masked.tokens["input"]) if t.id == lm.tokenizer.mask_token_id)
    with pytest.raises(InputError, match="Pick one of the text's own tokens"):
        text_to_mask(masked, "the [MASK] sat", position, "[MASK]", lm.tokenizer.mask_token_id)


def test_fill_first_mask_ranks_the_masked_position(models):
    lm = models["bert"]
    trace = run(lm, "the tiger [MASK] out of a [MASK].")
    fill = fill_first_mask(lm, trace, 7)
    first = next(i for i, t in enumerate(trace.tokens["input"]) if t.id == lm.tokenizer.mask_token_id)
    assert fill.position == first and len(fill.ids) == 7 and fill.ids[0] == int(trace.logits[first].argmax())
    assert fill.probs == sorted(fill.probs, reverse=True)
    assert fill.labels == [token_label(lm.tokenizer, i) for i in fill.ids]
    with pytest.raises(InputError, match="Pick a token to mask"):
        fill_first_mask(lm, run(lm, "no mask here"))


def test_fill_spans_and_who_may_fill_in(models):
    lm = models["t5"]
    text = "The tiger <extra_id_0> out of a tree."
    fill = fill_spans(lm, text, 6)
    assert 0 in fill.spans and fill.raw.startswith("<extra_id_0>")
    assert fill.filled == text.replace("<extra_id_0>", f"[{fill.spans[0]}]")
    with pytest.raises(InputError, match="sentinel"):
        fill_spans(lm, "No sentinel here.", 6)
    check_fills_in(models["bert"])
    check_fills_in(lm)
    with pytest.raises(InputError, match="only writes left to right"):
        check_fills_in(models["gpt2"])


def test_a_span_answer_ends_with_the_last_blank_asked_for(models):
    """tiny-t5 went on past its one blank: "<extra_id_0> king of the<extra_id_1>two<extra_id_2> and ... <extra_id_6>"."""
    lm = models["t5"]
    one = fill_spans(lm, "When Mary and John went to the <extra_id_0>, John gave a drink to Mary.", 40)
    assert set(SENTINEL.findall(one.raw)) <= {"0", "1"} and one.raw.startswith("<extra_id_0>") and one.spans[0]
    two = fill_spans(lm, "The tiger <extra_id_0> out of a <extra_id_1> to get a drink.", 40)
    assert set(SENTINEL.findall(two.raw)) <= {"0", "1", "2"} and set(two.spans) == {0, 1}
    tokenizer = lm.tokenizer
    assert sentinel_after(tokenizer, "Let there be <extra_id_99>.") is None  # the last one: </s> alone ends it
    assert sentinel_after(tokenizer, "No blank.") is None
    assert sentinel_after(tokenizer, "<extra_id_3> and <extra_id_0>") == tokenizer.convert_tokens_to_ids("<extra_id_4>")
    assert span_end_ids(tokenizer, "Let there be <extra_id_99>.", [1]) == [1]


def test_logit_and_prediction_bars():
    fig = logit_bars(["a", "b", "c"], np.array([2.0, -1.0, -3.5]), "tiny-gpt2")
    assert [t.name for t in fig.data] == ["logit"] and list(fig.data[0].y) == [2.0, -1.0, -3.5]
    assert fig.layout.yaxis.rangemode == "normal"
    fig = prediction_bars(["x", "y"], [0.7, 0.2], "p(token | both sides)", "tiny-bert")
    assert fig.data[0].name == "p(token | both sides)" and list(fig.data[0].y) == [0.7, 0.2]
    with pytest.raises(ValueError):
        prediction_bars(["x", "y"], [0.7, 0.2, 0.1], "p")


def test_a_repeated_comparison_reuses_each_part_and_reruns_only_what_changed(tiny_dir):
    """A class runs one comparison many times: the model runs for the first; a new seed reruns only the
    samples; another text, or another model, runs everything again."""
    import gc
    import weakref

    from explorer.core.loading import load

    lm = load(str(tiny_dir["gpt2"]))
    forwards = []
    hook = lm.model.register_forward_hook(lambda *_: forwards.append(1))
    settings = DecodingSettings(top_k=10)
    try:
        first = compare_strategies(lm, TEXT, settings, 6, 2, 3, 1.0, seed=5)
        alone = len(forwards)
        again = compare_strategies(lm, TEXT, settings, 6, 2, 3, 1.0, seed=5)
        assert alone > 0 and len(forwards) == alone and again.rows == first.rows and again.tree == first.tree
        reseeded = compare_strategies(lm, TEXT, settings, 6, 2, 3, 1.0, seed=6)
        sampling = len(forwards) - alone
        assert 0 < sampling < alone and reseeded.rows[0] == first.rows[0] and reseeded.rows[3:] == first.rows[3:]
        assert reseeded.rows[1:3] == [
            StrategyRow(f"sample {i + 1}", s.text, s.logprob, s.finished)
            for i, s in enumerate(sample(lm, lm.tokenizer(TEXT)["input_ids"], settings, 2, 6, 6))
        ]
        before = len(forwards)
        compare_strategies(lm, TEXT + " And", settings, 6, 2, 3, 1.0, seed=5)
        assert len(forwards) - before >= alone - 2  # a new prompt: all three parts run (the samples' loop above)
    finally:
        hook.remove()
    other = load(str(tiny_dir["llama"]))  # another model keeps its own results
    assert compare_strategies(other, TEXT, settings, 6, 2, 3, 1.0, seed=5).rows != first.rows
    model = weakref.ref(lm.model)
    del lm
    gc.collect()
    assert model() is None  # the results are freed with their model
