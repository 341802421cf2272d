"""The pre-training probes and the training recipes' evaluations put their inputs on the model's device and
bring results to the host before numpy: on CPU (here) the same code paths run, in float32 and on a bfloat16
copy (the dtype a GPU loads), and give what the plain forward pass gives."""

import copy

import numpy as np
import pytest
import torch

from explorer.analysis.pretraining import probes
from explorer.core.loading import load
from explorer.training import recipes

TEXT = "In the beginning God created the heaven and the earth."


@pytest.fixture(scope="module")
def bundled():
    return {name: load(name) for name in ("tiny-gpt2", "tiny-bert", "tiny-t5")}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_probes_run_on_the_models_device_and_dtype(bundled, dtype):
    models = {name: copy.deepcopy(lm.model).to(dtype) for name, lm in bundled.items()}
    for name, objective in (("tiny-gpt2", "next_token"), ("tiny-bert", "masked"), ("tiny-t5", "span")):
        written = probes.samples(objective, models[name], bundled[name].tokenizer, seed=0)
        assert len(written) == len(probes.PROMPTS[objective]) and all(isinstance(w, str) for _, w in written)
        assert any(w.strip() for _, w in written), name
    ids = np.array(bundled["tiny-gpt2"].tokenizer(TEXT)["input_ids"])
    maps = probes.attention_on(models["tiny-gpt2"], ids, False)
    assert maps.dtype == np.float32 and maps.shape[2:] == (len(ids), len(ids))
    assert np.allclose(maps.sum(-1), 1, atol=2e-2)
    enc = probes.attention_on(models["tiny-t5"], ids[:10], True)
    assert enc.shape[2:] == (10, 10)


def test_same_samples_as_before_on_cpu(bundled):
    """The sampled continuation draws from a CPU generator: the same seed writes the same text twice."""
    lm = bundled["tiny-gpt2"]
    first = probes.continue_prompt(lm.model, lm.tokenizer, "And God said", torch.Generator().manual_seed(3), 6)
    again = probes.continue_prompt(lm.model, lm.tokenizer, "And God said", torch.Generator().manual_seed(3), 6)
    assert first == again and first


def test_recipe_evaluations_run_and_match_a_plain_forward_pass(bundled):
    lm = bundled["tiny-gpt2"]
    got = recipes.bits_per_byte(lm.model, lm.tokenizer, [TEXT], seq_len=64)
    ids = torch.tensor([[*lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"], lm.tokenizer.eos_token_id]])
    with torch.no_grad():
        logits = lm.model(ids[:, :-1]).logits[0]
    expected = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()
    assert got["held_out_tokens"] == ids.shape[1] - 1 and np.isclose(got["held_out_loss"], expected, rtol=1e-4)
    bert = bundled["tiny-bert"]
    accuracy = recipes.fill_mask_accuracy(bert.model, bert.tokenizer, [TEXT * 3], seq_len=32, passes=2)
    assert accuracy["masked_tokens"] > 0 and 0 <= accuracy["top1_accuracy"] <= accuracy["top5_accuracy"] <= 1
