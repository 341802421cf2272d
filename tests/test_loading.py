"""The loader on save_pretrained folders, the bundled catalogue, and every failure it must explain."""

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from explorer.core.catalogue import bundled_keys, catalogue
from explorer.core.errors import ModelLoadError
from explorer.core.loading import load, load_dtype, pick_device, resolve
from explorer.core.memory import checkpoint_size
from explorer.core.pool import ModelPool
from explorer.core.settings import overridden
from tests.tiny_models import TINY


@pytest.mark.parametrize("name", list(TINY))
def test_a_save_pretrained_folder_loads_with_eager_attention_and_its_family(tiny, name):
    lm = tiny[name]
    assert lm.spec.family == TINY[name]
    assert lm.model.config._attn_implementation == "eager"
    assert not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())


def test_catalogue_names_bundled_and_known_hub_models_of_each_family():
    entries = catalogue()
    for key in [
        "gpt2",
        "distilgpt2",
        "smollm2-135m",
        "bert-base-uncased",
        "distilbert-base-uncased",
        "t5-small",
        "flan-t5-small",
    ]:
        assert key in entries
    assert {entries[k].family for k in bundled_keys()} == {"decoder", "encoder", "encoder_decoder"}


def _message(name: str) -> str:
    with pytest.raises(ModelLoadError) as err:
        load(name)
    text = str(err.value)
    assert "Traceback" not in text and "\n" not in text
    return text


@pytest.mark.parametrize("name", ["", "   ", "no such model!", "../../etc/passwd", "x" * 500])
def test_unknown_names_get_one_sentence_naming_what_is_available(name):
    text = _message(name)
    assert "tiny-gpt2" in text


def test_an_unreachable_hub_id_says_there_is_no_network():
    text = _message("someone/some-model-that-is-not-cached")
    assert "no network" in text and "tiny-gpt2" in text


def test_a_catalogue_hub_model_that_is_not_downloaded_says_so():
    text = _message("gpt2")
    assert "no network" in text


def test_a_folder_without_config_is_explained(tmp_path):
    (tmp_path / "weights.txt").write_text("nothing here")
    assert "no config.json" in _message(str(tmp_path))


def test_a_folder_without_weights_is_explained(tiny_dir, tmp_path):
    shutil.copy(tiny_dir["gpt2"] / "config.json", tmp_path / "config.json")
    assert "no model.safetensors" in _message(str(tmp_path))


def test_a_bin_only_checkpoint_is_refused(tiny_dir, tmp_path):
    folder = tmp_path / "bin-only"
    shutil.copytree(tiny_dir["gpt2"], folder)
    weights = load_file(folder / "model.safetensors")
    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    text = _message(str(folder))
    assert "safetensors only" in text


def test_hosted_mode_loads_catalogue_keys_only(tiny_dir):
    with overridden(hosted=True):
        text = _message(str(tiny_dir["gpt2"]))
        assert resolve("tiny-gpt2").kind == "bundled"
    assert "catalogue" in text


def test_device_follows_the_settings():
    with overridden(device="cpu"):
        assert pick_device() == torch.device("cpu")
    with overridden(device=""):
        assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_pool_shares_one_model_and_evicts_the_least_recently_used(tiny_dir):
    sizes = [checkpoint_size(tiny_dir[n]).bytes_at(load_dtype(pick_device())) for n in ("gpt2", "bert")]
    pool = ModelPool(max_bytes=max(sizes))  # room for one model only (a smaller pool refuses both)
    assert sum(sizes) > pool.max_bytes
    gpt = pool.get(str(tiny_dir["gpt2"]))
    assert pool.get(str(tiny_dir["gpt2"])) is gpt
    pool.get(str(tiny_dir["bert"]))
    assert pool.loaded() == [str(tiny_dir["bert"])]
    roomy = ModelPool(max_bytes=2**30)
    for name in ("gpt2", "bert", "t5"):
        roomy.get(str(tiny_dir[name]))
    roomy.get(str(tiny_dir["gpt2"]))
    assert roomy.loaded()[-1] == str(tiny_dir["gpt2"])


def test_pool_errors_are_explained_not_raised_raw():
    with pytest.raises(ModelLoadError):
        ModelPool().get("definitely not a model")


def test_different_models_load_at_once_and_loading_still_works_after(tiny_dir):
    """transformers builds models on the meta device through process-wide state: two loads at once
    used to fail ("Cannot copy out of meta tensor") and leave every later load failing."""
    from concurrent.futures import ThreadPoolExecutor

    names = [str(tiny_dir[n]) for n in ("gpt2", "bert", "t5", "llama")] * 2
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        loaded = list(pool.map(load, names))
    assert [lm.spec.family for lm in loaded[:4]] == ["decoder", "encoder", "encoder_decoder", "decoder"]
    assert load(str(tiny_dir["gpt2"])).spec.family == "decoder"


def _saved_without_head(tmp_path, name: str):
    """A tiny model of ``name`` saved from its headless base class (``BertModel``, ``LlamaModel``)."""
    from tests import tiny_models

    full, tokenizer = tiny_models.build(name)
    folder = tmp_path / f"{name}-headless"
    full.base_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, full


def test_an_encoder_saved_without_its_masked_lm_head_loads_headless_and_cannot_fill_masks(tmp_path):
    from explorer.analysis.decoding.fill_mask import fill_mask
    from explorer.core.errors import InputError
    from explorer.core.run import run
    from explorer.core.spec import MLM

    folder, full = _saved_without_head(tmp_path, "bert")
    lm = load(str(folder))
    assert lm.spec.family == "encoder" and not lm.spec.can(MLM)
    assert lm.model.get_output_embeddings() is None  # no head at all, rather than a random one
    trace = run(lm, "the tiger [MASK] out of a tree.")
    assert trace.logits is None
    with pytest.raises(InputError, match="no masked-LM head"):
        fill_mask(trace, 3, 5)
    again = run(load(str(folder)), "the tiger [MASK] out of a tree.")
    np.testing.assert_array_equal(trace.hidden["input"], again.hidden["input"])  # nothing random: loads agree


def test_a_decoder_saved_without_its_own_head_is_refused_with_a_sentence(tmp_path):
    folder, full = _saved_without_head(tmp_path, "llama")
    assert not full.config.tie_word_embeddings  # its head is a matrix of its own, absent from the folder
    with pytest.raises(ModelLoadError, match="without its language-model head"):
        load(str(folder))


def test_a_checkpoint_missing_body_weights_is_refused(tmp_path, tiny_dir):
    from safetensors.torch import save_file

    folder = tmp_path / "gpt2-incomplete"
    shutil.copytree(tiny_dir["gpt2"], folder)
    weights = load_file(folder / "model.safetensors")
    dropped = next(k for k in weights if ".h.1.mlp.c_fc.weight" in k)
    del weights[dropped]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="lacks 1 of its weights"):
        load(str(folder))
