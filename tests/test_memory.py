"""The memory estimate from safetensors headers, and the pool's refusal of a model that cannot fit."""

import shutil
import struct

import pytest
import torch
from safetensors import safe_open

from explorer.core.errors import ModelLoadError
from explorer.core.loading import load_dtype, pick_device, placement, resolve, source_size
from explorer.core.memory import INDEX, checkpoint_files, checkpoint_size, human_bytes
from explorer.core.pool import ModelPool
from tests import tiny_models
from tests.tiny_models import TINY


def _tensor_bytes(folder) -> int:
    """The sum of every tensor's bytes, read in full with safetensors itself."""
    total = 0
    for path in checkpoint_files(folder):
        with safe_open(str(path), "pt") as f:
            total += sum(f.get_tensor(k).nbytes for k in f.keys())
    return total


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The tiny GPT-2 saved in shards of at most 20 KB, with an index."""
    folder = tmp_path_factory.mktemp("sharded") / "gpt2"
    model, tok = tiny_models.build("gpt2")
    model.save_pretrained(folder, max_shard_size="20KB")
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", list(TINY))
def test_the_estimate_equals_the_sum_of_the_tensors_bytes_and_the_loaded_weights(tiny_dir, tiny, name):
    size = checkpoint_size(tiny_dir[name])
    assert size.stored_bytes == _tensor_bytes(tiny_dir[name])
    assert size.bytes_at(torch.float32) == size.stored_bytes  # saved in float32
    weights = sum(p.numel() * p.element_size() for p in tiny[name].model.parameters())
    assert size.bytes_at(load_dtype(tiny[name].device)) == weights  # float32 on CPU, half precision on a GPU
    assert size.parameters == sum(p.numel() for p in tiny[name].model.parameters())


def test_half_precision_halves_the_floating_point_weights(tiny_dir):
    size = checkpoint_size(tiny_dir["gpt2"])
    assert size.bytes_at(torch.bfloat16) * 2 == size.bytes_at(torch.float32)
    assert size.bytes_at(torch.float16) == size.bytes_at(torch.bfloat16)


def test_a_sharded_checkpoint_is_read_through_its_index(sharded, tiny_dir):
    files = checkpoint_files(sharded)
    assert (sharded / INDEX).is_file() and len(files) > 2
    size = checkpoint_size(sharded)
    assert size.files == files
    assert size.stored_bytes == _tensor_bytes(sharded) == checkpoint_size(tiny_dir["gpt2"]).stored_bytes


def test_a_pool_too_small_refuses_with_one_sentence(tiny_dir):
    need = checkpoint_size(tiny_dir["gpt2"]).bytes_at(load_dtype(pick_device()))
    pool = ModelPool(max_bytes=need - 1)
    with pytest.raises(ModelLoadError) as err:
        pool.get(str(tiny_dir["gpt2"]))
    text = str(err.value)
    assert "\n" not in text and text.count(". ") == 0 and text.endswith(".")
    params = checkpoint_size(tiny_dir["gpt2"]).parameters
    assert human_bytes(need) in text and "EXPLORER_POOL_MB" in text and f"{params:,} weights" in text
    assert pool.loaded() == []
    assert ModelPool(max_bytes=need).get(str(tiny_dir["gpt2"])).nbytes == need  # exactly enough loads


def test_the_refusal_reads_no_weights(sharded, tmp_path):
    """Every shard cut short after its header: loading would fail, the refusal still comes with its sentence."""
    cut = tmp_path / "cut"
    shutil.copytree(sharded, cut)
    for path in checkpoint_files(cut):
        raw = path.read_bytes()
        (length,) = struct.unpack("<Q", raw[:8])
        path.write_bytes(raw[: 8 + length])
    with pytest.raises(ModelLoadError, match="EXPLORER_POOL_MB"):
        ModelPool(max_bytes=1000).get(str(cut))
    with pytest.raises(ModelLoadError) as err:  # the weights are really unreadable: a pool that fits tries them
        ModelPool(max_bytes=2**30).get(str(cut))
    assert "EXPLORER_POOL_MB" not in str(err.value)


def test_an_unknown_size_never_refuses():
    assert source_size(resolve("someone/some-model-that-is-not-cached")) is None  # offline, not cached


def test_cpu_loads_in_float32_and_cuda_is_placed_by_accelerate():
    assert load_dtype(torch.device("cpu")) == torch.float32
    assert placement(torch.device("cpu")) == {}
    assert placement(torch.device("cuda")) == {"device_map": "auto"}  # accelerate comes with peft
    assert placement(torch.device("cuda:1")) == {"device_map": {"": "cuda:1"}}


def test_a_file_that_is_not_safetensors_is_said_so(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ValueError, match="not a safetensors file"):
        checkpoint_size(tmp_path)
