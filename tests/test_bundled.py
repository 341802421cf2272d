"""Model tier: the bundled checkpoints load offline, are what their cards say, and still perform.

Quality is re-measured on a slice of the held-out text and compared with the card's figure.
"""

import json
import re

import pytest

from explorer.core.catalogue import bundled_keys, catalogue, models_dir
from explorer.core.loading import load, load_tokenizer
from explorer.training import recipes
from explorer.training.corpus import build_corpus
from explorer.training.data import token_stream

MAX_BYTES = 25 * 2**20


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


@pytest.fixture(scope="module")
def bundled():
    return {key: load(key) for key in bundled_keys()}


def card(key: str) -> dict:
    return json.loads((models_dir() / key / "card.json").read_text())


@pytest.mark.parametrize("key", bundled_keys())
def test_bundled_model_is_complete_small_and_safetensors(key):
    folder = models_dir() / key
    weights = folder / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= MAX_BYTES
    assert not list(folder.glob("*.bin"))
    for name in ("config.json", "tokenizer.json", "README.md", "card.json"):
        assert (folder / name).is_file(), name
    assert "Measured quality" in (folder / "README.md").read_text()


@pytest.mark.parametrize("key", bundled_keys())
def test_bundled_model_loads_offline_as_its_catalogue_family(bundled, key):
    lm = bundled[key]
    assert lm.spec.family == catalogue()[key].family
    assert (lm.spec.n_layers, lm.spec.n_heads) == (catalogue()[key].layers, catalogue()[key].heads)
    assert lm.spec.bundled


def test_decoder_bits_per_byte_on_held_out_text(bundled, corpus):
    lm = bundled["tiny-gpt2"]
    measured = recipes.bits_per_byte(lm.model, lm.tokenizer, corpus.held_out[:12])
    assert card("tiny-gpt2")["bits_per_byte"] <= 1.8  # the target the bundled decoder was trained to
    assert measured["bits_per_byte"] < 2.1  # this slice is harder than the whole held-out set
    assert abs(measured["bits_per_byte"] - card("tiny-gpt2")["bits_per_byte"]) < 0.2


def test_decoder_writes_real_words(bundled, corpus):
    import torch

    lm = bundled["tiny-gpt2"]
    known = set(re.findall(r"[a-z]+", " ".join(corpus.train).lower()))  # words of the training text
    ids = lm.tokenizer("And the king said", return_tensors="pt")["input_ids"]
    torch.manual_seed(0)
    out = lm.model.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=lm.tokenizer.eos_token_id)
    words = re.findall(r"[a-z]+", lm.tokenizer.decode(out[0, ids.shape[1] :]).lower())
    assert len(words) >= 10
    assert sum(w in known for w in words) / len(words) > 0.9


def test_encoder_fill_mask_top5_on_held_out_text(bundled, corpus):
    lm = bundled["tiny-bert"]
    measured = recipes.fill_mask_accuracy(
        lm.model, lm.tokenizer, corpus.held_out[:12], seq_len=recipes.RECIPES["encoder"].seq_len
    )
    assert card("tiny-bert")["top5_accuracy"] >= 0.35  # the target the bundled encoder was trained to
    assert measured["top5_accuracy"] > 0.3
    assert abs(measured["top5_accuracy"] - card("tiny-bert")["top5_accuracy"]) < 0.08


def test_encoder_decoder_beats_the_unigram_baseline(bundled, corpus):
    lm = bundled["tiny-t5"]
    stream = token_stream(lm.tokenizer, corpus.train[:200], lm.tokenizer.eos_token_id)
    measured = recipes.span_infill_loss(lm.model, lm.tokenizer, stream, corpus.held_out[:12])
    assert card("tiny-t5")["held_out_loss"] < card("tiny-t5")["unigram_baseline_loss"] - 0.7
    assert measured["held_out_loss"] < measured["unigram_baseline_loss"] - 0.5
    assert abs(measured["held_out_loss"] - card("tiny-t5")["held_out_loss"]) < 0.5


def test_gpt2_bpe_tokenizer_is_bundled_with_the_real_vocabulary():
    tok = load_tokenizer("gpt2-bpe")
    assert len(tok) == 50257
    assert tok("Hello world")["input_ids"] == [15496, 995]  # GPT-2's published ids
