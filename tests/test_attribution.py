"""Attribution: completeness of integrated gradients, a model where only one token matters, every family,
encoder-decoder scores on the source, bounds, stopping, the shared model left untouched, and the app endpoints."""

import json
import re
import time
import uuid

import httpx
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from explorer.analysis.attribution.attribute import Prediction, Stopped, attribute, attribution_matrix, predictions_of
from explorer.analysis.attribution.methods import METHODS, register
from explorer.core.errors import InputError
from explorer.core.loading import load
from explorer.plots.attribution import attribution_bars, attribution_heatmap, attribution_text_html
from tests import tiny_models
from tests.plotly_json import plot_data

TEXTS = {
    "decoder": "The tiger jumped out of a tree",
    "encoder": "The tiger jumped out of a [MASK].",
    "encoder_decoder": "The tiger <extra_id_0> out of a tree.",
}
BUNDLED = ["tiny-gpt2", "tiny-bert", "tiny-t5"]


@pytest.fixture(scope="module")
def models(tiny):
    """Every tiny random-weight family and the bundled checkpoints, by name."""
    return {**tiny, **{key: load(key) for key in BUNDLED}}


def text_for(lm) -> str:
    text = TEXTS[lm.spec.family]
    return text.replace("[MASK]", lm.tokenizer.mask_token) if lm.tokenizer.mask_token else text


# ---------------------------------------------------------------- plain model calls the tests compare with


def direct_output(lm, pred: Prediction, token_id: int, embeds=None, output="probability") -> float:
    """The explained output from a plain model call (ids, or embeddings where given), not through the module."""
    with torch.no_grad():
        inputs = {"input_ids": torch.tensor([pred.ids])} if embeds is None else {"inputs_embeds": embeds}
        if pred.decoder_ids is not None:
            inputs["decoder_input_ids"] = torch.tensor([pred.decoder_ids])
        logits = lm.model(**inputs).logits[0, pred.position]
    values = {"probability": logits.softmax(-1), "log-probability": logits.log_softmax(-1), "logit": logits}
    return float(values[output][token_id])


def words_replaced(lm, ids, keep=None, baseline="pad") -> torch.Tensor:
    """Token embeddings with every non-special token (or only the one at ``keep``) replaced by the
    padding token's embedding (``baseline="pad"``, where there is one) or zeros."""
    table = lm.model.get_input_embeddings().weight.detach()
    pad = lm.tokenizer.pad_token_id
    fill = table[pad] if baseline == "pad" and pad is not None else torch.zeros(table.shape[1])
    embeds = table[torch.tensor([ids])].clone()
    special = set(lm.tokenizer.all_special_ids)
    for i, t in enumerate(ids):
        if t not in special and (keep is None or i == keep):
            embeds[0, i] = fill
    return embeds


# ---------------------------------------------------------------- completeness and correctness


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "t5", *BUNDLED])
@pytest.mark.parametrize("output, baseline", [("probability", "pad"), ("log-probability", "pad"), ("logit", "zero")])
def test_integrated_gradients_are_complete_within_the_reported_delta(models, name, output, baseline):
    lm = models[name]
    pred = predictions_of(lm, text_for(lm), 3).predictions[-1]
    result = attribute(lm, pred, "integrated_gradients", 50, output, baseline=baseline)
    f_input = direct_output(lm, pred, result.token_id, output=output)
    f_baseline = direct_output(lm, pred, result.token_id, words_replaced(lm, list(pred.ids), baseline=baseline), output)
    assert result.value == pytest.approx(f_input, abs=1e-5)
    assert result.baseline_value == pytest.approx(f_baseline, abs=1e-5)
    gap = result.scores.sum() - (f_input - f_baseline)
    assert abs(gap) <= abs(result.delta) + 1e-4
    assert gap == pytest.approx(result.delta, abs=1e-4)  # the delta reported is this gap


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "t5", "tiny-gpt2", "tiny-bert"])
def test_a_hundred_steps_converge_within_five_percent(models, name):
    # Not the bundled tiny-t5: its output is rough along the path (0.66 total variation for a net change
    # of 0.14 on one of these predictions), and no rule brings its delta under 5% in 200 steps.
    lm = models[name]
    for pred in predictions_of(lm, text_for(lm), 3).predictions:
        result = attribute(lm, pred, "integrated_gradients", 100, "log-probability")
        assert abs(result.delta) <= 0.05 * abs(result.value - result.baseline_value) + 1e-4


@pytest.mark.parametrize("name", ["gpt2", "bert", "t5", "tiny-t5"])
def test_ablation_scores_equal_removing_each_token_by_hand(models, name):
    lm = models[name]
    pred = predictions_of(lm, text_for(lm), 2).predictions[-1]
    result = attribute(lm, pred, "ablation", output="log-probability")
    f_input = direct_output(lm, pred, result.token_id, output="log-probability")
    for i in range(len(pred.ids)):
        removed = direct_output(lm, pred, result.token_id, words_replaced(lm, list(pred.ids), i), "log-probability")
        assert result.scores[i] == pytest.approx(f_input - removed, abs=1e-4)


def test_encoder_decoder_scores_land_on_the_source_tokens(models):
    lm = models["tiny-t5"]
    text = "The tiger jumped out of a tree."
    source = lm.tokenizer(text)["input_ids"]
    task = predictions_of(lm, text, 4)
    start = lm.model.config.decoder_start_token_id
    for k, pred in enumerate(task.predictions):
        assert pred.ids == tuple(source) and pred.decoder_ids[0] == start and len(pred.decoder_ids) == k + 1
    pred = task.predictions[1]
    result = attribute(lm, pred, "integrated_gradients", 50, "log-probability")
    source_labels = [lm.tokenizer.convert_ids_to_tokens(i).replace("▁", "␣") for i in source]
    assert list(result.labels) == source_labels and len(result.scores) == len(source)
    assert np.abs(result.scores[:-1]).max() > 1e-3  # words carry attribution; </s> is held fixed
    assert result.scores[-1] == 0.0
    # the decoder prefix is fed as given, not attributed: another prefix gives another explanation
    other = Prediction(pred.ids, pred.position, result.token_id, "", (start, source[0]))
    assert not np.allclose(attribute(lm, other, "integrated_gradients", 50, "log-probability").scores, result.scores)


def one_token_gpt2(tokenizer, position: int, width: int = 16) -> GPT2LMHeadModel:
    """A one-layer GPT-2 whose prediction at every later position reads only the token at ``position``.

    Dimensions 0-7 carry the word, 8 marks ``position`` (a position embedding), 9-15 the output. The
    only head's query is constant and its key reads the marker, so it attends to ``position`` alone;
    its value copies that word into the output dimensions, which alone reach the LM head. The MLP
    is zero. Other tokens reach the output only through layer-norm statistics, made tiny by scale.
    """
    vocab = len(tokenizer)
    cfg = GPT2Config(vocab_size=vocab, n_positions=32, n_embd=width, n_layer=1, n_head=1, tie_word_embeddings=False,
                     bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    model = GPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(0)
    words, marker, out = slice(0, 8), 8, slice(9, 16)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        t, block = model.transformer, model.transformer.h[0]
        t.wte.weight[:, words] = 0.1 * torch.randn(vocab, 8, generator=g)
        t.wpe.weight[position, marker] = 1.0
        block.ln_1.weight.fill_(1.0)
        qkv = block.attn.c_attn.weight  # (d, 3d): query | key | value
        block.attn.c_attn.bias[0] = 1.0  # a constant query...
        qkv[marker, width] = 200.0  # ...meets a key that reads the marker
        qkv[words, 2 * width : 2 * width + 8] = torch.eye(8)  # the value is the word
        block.attn.c_proj.weight[0:8, out] = 10 * torch.randn(8, 7, generator=g)
        t.ln_f.weight[out] = 1.0
        model.lm_head.weight[:, out] = torch.randn(vocab, 7, generator=g)
    return model


@pytest.mark.parametrize("position", [0, 3, 6])
def test_a_model_where_only_one_token_matters_gets_nearly_all_the_attribution(tmp_path, position):
    _, tokenizer = tiny_models.build("gpt2")
    one_token_gpt2(tokenizer, position).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    lm = load(str(tmp_path))
    ids = tokenizer("The tiger jumped out of a tree to get")["input_ids"]
    assert len(ids) > position + 3 and not set(ids) & set(tokenizer.all_special_ids)
    pred = Prediction(tuple(ids), len(ids) - 1, None, "last")
    for method in METHODS:
        scores = np.abs(attribute(lm, pred, method, 50).scores)
        if method == "occlusion":  # every window covering the token shares its effect
            assert scores[position] >= 0.99 * scores.max()
        else:
            assert scores[position] / scores.sum() > 0.95, method


# ---------------------------------------------------------------- every family, every method, the matrix


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "t5", *BUNDLED])
def test_every_family_and_method_gives_one_finite_score_per_input_token(models, name):
    lm = models[name]
    task = predictions_of(lm, text_for(lm), 3)
    pred = task.predictions[0]
    for method in METHODS:
        result = attribute(lm, pred, method, 8)
        assert result.scores.shape == (len(pred.ids),) and np.all(np.isfinite(result.scores))
        assert (result.delta is not None) == (method == "integrated_gradients")
        if not METHODS[method].signed:
            assert np.all(result.scores >= 0)


def test_decoder_predictions_follow_the_greedy_continuation(models):
    lm = models["tiny-gpt2"]
    prompt = lm.tokenizer(TEXTS["decoder"])["input_ids"]
    task = predictions_of(lm, TEXTS["decoder"], 4)
    with torch.no_grad():
        generated = lm.model.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False,
                                      pad_token_id=lm.tokenizer.eos_token_id)[0, len(prompt):].tolist()  # fmt: skip
    assert [p.token_id for p in task.predictions] == generated[: len(task.predictions)]
    for k, pred in enumerate(task.predictions):
        assert pred.ids == tuple(prompt + generated[:k]) and pred.position == len(prompt) + k - 1
    assert task.predictions[0].label.startswith("next token")


def test_an_encoder_decoder_output_without_words_is_named_not_quoted_empty(models):
    """T5's first output token is a sentinel: one token of output has no words, and the note said “”. Its
    sentinels say which span each part of the output fills: they stay in the quote."""
    t5 = models["tiny-t5"]
    one = predictions_of(t5, "Let there be light.", 1)
    assert [p.token_id for p in one.predictions] == [t5.tokenizer.convert_tokens_to_ids("<extra_id_0>")]
    assert "“”" not in one.note and "no words, only <extra_id_0>" in one.note and "try one such as" in one.note
    more = predictions_of(t5, "Let there be light.", 4)  # words after the sentinel: quoted with the sentinels
    assert more.note.startswith("The model's greedy output: “<extra_id_0> ") and "no words" not in more.note
    assert "</s>" not in more.note and "<pad>" not in more.note


def test_generation_matrix_is_causal_for_a_decoder_and_full_for_t5(models):
    lm = models["tiny-gpt2"]
    task = predictions_of(lm, TEXTS["decoder"], 4)
    matrix = attribution_matrix(lm, task, "input_x_gradient")
    n_prompt = len(task.predictions[0].ids)
    assert matrix.scores.shape == (len(task.predictions), n_prompt + len(task.predictions) - 1)
    for r in range(len(task.predictions)):
        assert np.isfinite(matrix.scores[r, : n_prompt + r]).all() and np.isnan(matrix.scores[r, n_prompt + r :]).all()
    single = attribute(lm, task.predictions[2], "input_x_gradient")
    np.testing.assert_allclose(matrix.scores[2, : len(single.scores)], single.scores, rtol=1e-5, atol=1e-7)
    t5 = models["tiny-t5"]
    t5_task = predictions_of(t5, TEXTS["encoder_decoder"], 3)
    t5_matrix = attribution_matrix(t5, t5_task, "saliency")
    assert t5_matrix.scores.shape == (len(t5_task.predictions), len(t5_task.predictions[0].ids))
    assert np.isfinite(t5_matrix.scores).all()


def test_an_encoder_explains_each_mask_or_each_word_masked_in_turn(models):
    lm = models["tiny-bert"]
    mask = lm.tokenizer.mask_token_id
    task = predictions_of(lm, "the tiger [MASK] out of a tree.", 3)
    assert len(task.predictions) == 1 and task.predictions[0].ids[task.predictions[0].position] == mask
    task = predictions_of(lm, "the tiger jumped.", 3)
    ids = lm.tokenizer("the tiger jumped.")["input_ids"]
    assert [p.position for p in task.predictions] == list(range(1, len(ids) - 1))  # not [CLS], [SEP]
    assert all(p.ids[p.position] == mask for p in task.predictions)
    matrix = attribution_matrix(lm, task, "ablation")
    assert matrix.scores.shape == (len(ids) - 2, len(ids))
    assert np.allclose(matrix.scores[np.arange(len(ids) - 2), np.arange(1, len(ids) - 1)], 0, atol=1e-6)  # [MASK] held


# ---------------------------------------------------------------- bounds, progress, stopping, the registry


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda lm, p: attribute(lm, p, "no_such_method"), "Unknown attribution method"),
        (lambda lm, p: attribute(lm, p, "integrated_gradients", 10_000), "steps"),
        (lambda lm, p: attribute(lm, p, "integrated_gradients", 50, "odds"), "Unknown output"),
        (lambda lm, p: predictions_of(lm, "word " * 200), "at most"),
        (lambda lm, p: predictions_of(lm, "   "), "empty"),
        (lambda lm, p: predictions_of(lm, "hello", 1000), "number of tokens"),
    ],
)
def test_bad_settings_get_one_clear_sentence(models, call, expected):
    lm = models["tiny-gpt2"]
    pred = predictions_of(lm, "hello there", 1).predictions[0]
    with pytest.raises(InputError, match=expected):
        call(lm, pred)


def test_progress_rises_to_one_and_stop_ends_the_run(models):
    lm = models["tiny-gpt2"]
    pred = predictions_of(lm, TEXTS["decoder"], 1).predictions[0]
    seen = []
    attribute(lm, pred, "integrated_gradients", 40, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) >= 1
    seen = []
    attribute(lm, pred, "ablation", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) >= 1
    calls = []

    def stop_after_first_batch():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Stopped):
        attribute(lm, pred, "ablation", should_stop=stop_after_first_batch)
    assert len(calls) == 2


def test_a_registered_method_is_available_by_name(models):
    @register("gradient_sum", "Gradient sum", "the gradient summed over the embedding")
    def gradient_sum(job):
        x = job.x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(job.forward(x).sum(), x)
        return grad[0].sum(-1), None

    try:
        lm = models["gpt2"]
        pred = predictions_of(lm, TEXTS["decoder"], 1).predictions[0]
        ours = attribute(lm, pred, "gradient_sum").scores
        saliency = attribute(lm, pred, "saliency").scores
        assert ours.shape == saliency.shape and np.all(np.abs(ours) <= saliency * np.sqrt(32) + 1e-6)
    finally:
        METHODS.pop("gradient_sum")


def test_the_shared_model_is_left_as_it_was(models):
    lm = models["tiny-gpt2"]
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in lm.model.modules()]
    pred = predictions_of(lm, TEXTS["decoder"], 2).predictions[1]
    for method in METHODS:
        attribute(lm, pred, method, 8)
    with pytest.raises(Stopped):
        attribute(lm, pred, "integrated_gradients", should_stop=lambda: True)
    assert not any(p.requires_grad or p.grad is not None for p in lm.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    assert hooks == [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                     for m in lm.model.modules()]  # fmt: skip
    assert not lm.model.training and torch.is_grad_enabled()


# ---------------------------------------------------------------- figures


def test_coloured_text_escapes_and_marks_the_sign():
    html = attribution_text_html(["<b>", "␣cat"], [0.5, -1.0], "IG")
    assert "<b>" not in html and "&lt;b&gt;" in html
    assert "rgba(214, 96, 77, 0.425)" in html and "rgba(67, 147, 195, 0.850)" in html


def test_bars_and_heatmap_check_shapes_and_keep_gaps():
    fig = attribution_bars(["a", "b", "c"], {"IG": np.array([1.0, -2.0, 0.0]), "Saliency": np.ones(3)})
    assert len(fig.data) == 2 and fig.data[0].marker.color[1] == "rgb(67, 147, 195)"
    with pytest.raises(ValueError):
        attribution_bars(["a"], {"IG": np.ones(2)})
    scores = np.array([[1.0, np.nan], [-0.5, 0.25]])
    heat = attribution_heatmap(scores, ["x", "y"], ["a", "b"])
    assert np.isnan(np.asarray(heat.data[0].z)[0, 1]) and heat.data[0].zmin == -1.0
    with pytest.raises(ValueError):
        attribution_heatmap(scores, ["x"], ["a", "b"])


# ---------------------------------------------------------------- the app


@pytest.mark.parametrize("name", ["gpt2", "bert", "t5"])
def test_attribution_endpoints_for_each_family(client, tiny_dir, name):
    text = {"gpt2": TEXTS["decoder"], "bert": "the tiger jumped out of a [MASK].", "t5": TEXTS["encoder_decoder"]}
    status = client.predict(str(tiny_dir[name]), text[name], "", api_name="/analyze")
    assert "⚠️" not in status
    targets = client.predict(3, api_name="/attribution_targets")
    assert targets["choices"] and targets["value"] in [value for _, value in targets["choices"]]
    note, html_a, html_b, bars = client.predict(
        "integrated_gradients", "ablation", "probability", "pad", 3, 20, 0, api_name="/attribution"
    )
    assert "convergence delta" in note and not note.startswith("⚠️")
    assert html_a.count("<span") == html_b.count("<span") > 1
    assert len(plot_data(bars)) == 2
    note, heat = client.predict("saliency", "probability", "zero", 3, 20, api_name="/attribution_matrix")
    (trace,) = plot_data(heat)
    rows = re.search(r"(\d+) rows?\b", note)  # the note counts the rows the matrix shows
    assert rows and int(rows[1]) == len(trace["y"]) >= 1


def test_attribution_refuses_bad_input_with_a_sentence(client, tiny_dir):
    client.predict(str(tiny_dir["gpt2"]), TEXTS["decoder"], "", api_name="/analyze")
    note, *_ = client.predict(
        "integrated_gradients", "ablation", "probability", "pad", 3, 20, 99, api_name="/attribution"
    )
    assert note.startswith("⚠️") and "predictions" in note
    client.predict(str(tiny_dir["gpt2"]), "word " * 100, "", api_name="/analyze")
    note, *_ = client.predict(
        "integrated_gradients", "ablation", "probability", "pad", 3, 20, 0, api_name="/attribution"
    )
    assert note.startswith("⚠️") and "at most" in note and "Traceback" not in note
    client.predict(api_name="/attribution_stop")  # nothing running: stopping is harmless


def test_stop_ends_a_running_generation_matrix(client):
    client.predict("tiny-gpt2", "It is a truth universally acknowledged, that a single man", "", api_name="/analyze")
    job = client.submit("integrated_gradients", "probability", "pad", 16, 200, api_name="/attribution_matrix")
    deadline = time.monotonic() + 120
    while job.status().code.name not in ("PROGRESS", "FINISHED"):  # progress: the run has its stop flag
        assert time.monotonic() < deadline, "the attribution never started"
        time.sleep(0.05)
    client.predict(api_name="/attribution_stop")  # (a browser also cancels the event; this client cannot)
    note, _ = job.result()
    assert note.startswith("⚠️ Stopped before the attribution finished")  # the run itself ended, not its event
    note, *_ = client.predict("saliency", "input_x_gradient", "probability", "pad", 2, 10, 0, api_name="/attribution")
    assert not note.startswith("⚠️")  # the session goes on


def test_a_client_that_leaves_stops_the_generation_matrix(app_url, client, monkeypatch):
    """A client that drops its connection mid-run (a closed laptop) ends the work like Stop: no row after."""
    from explorer.analysis.attribution import attribute as analysis

    started = []
    original = analysis.attribute

    def counted(*args, **kwargs):
        started.append(time.monotonic())
        return original(*args, **kwargs)

    monkeypatch.setattr(analysis, "attribute", counted)
    url, session = app_url.rstrip("/"), uuid.uuid4().hex[:11]
    config = httpx.get(f"{url}/config", timeout=30).json()
    kinds = {c["id"]: c.get("type") for c in config["components"]}
    events = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}

    def join(endpoint: str, args: list) -> str:
        values = iter(args)  # the server holds a state's value: its place in the data is empty
        data = [None if kinds.get(i) == "state" else next(values) for i in events[endpoint]["inputs"]]
        body = {"data": data, "fn_index": events[endpoint]["id"], "session_hash": session, "event_data": None,
                "trigger_id": None}  # fmt: skip
        return httpx.post(f"{url}/gradio_api/queue/join", json=body, timeout=60).json()["event_id"]

    def messages(event: str):
        with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=300) as s:
            for line in s.iter_lines():
                if line.startswith("data:") and json.loads(line[5:]).get("event_id") == event:
                    yield json.loads(line[5:])

    text = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
    for message in messages(join("analyze", ["tiny-gpt2", text, ""])):
        if message["msg"] == "process_completed":
            break
    # the largest matrix: 16 rows of integrated gradients with 200 steps
    for message in messages(join("attribution_matrix", ["integrated_gradients", "probability", "pad", 16, 200])):
        if message["msg"] == "process_generating":  # the first row is done: leave (the stream closes)
            break
    assert 1 <= len(started) < 16
    time.sleep(1.0)
    counted_then = len(started)
    time.sleep(8.0)  # several rows' time at this size
    assert len(started) == counted_then <= 3, f"{len(started)} rows were started after the client left"
