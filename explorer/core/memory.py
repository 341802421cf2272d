"""How much memory a checkpoint needs, from its safetensors headers alone (no weights read).

A safetensors file starts with an 8-byte little-endian length N and N bytes of JSON naming every
tensor's dtype and shape; the weights follow. Reading the header of each file of a folder (a sharded
checkpoint lists its files in ``model.safetensors.index.json``) tells the size of the model at any
dtype before a byte of weights is read, so the pool can refuse a model that cannot fit with one
sentence instead of running out of memory half-way through loading it.

    >>> dtype_bytes("BF16"), dtype_bytes("F32")
    (2, 4)
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MAX_HEADER = 100 * 2**20  # safetensors' own bound on a header; anything larger is not a safetensors file
INDEX = "model.safetensors.index.json"

# safetensors dtype -> (bytes per element, whether it is a floating-point type loading converts)
_DTYPES = {
    "F64": (8, True), "F32": (4, True), "F16": (2, True), "BF16": (2, True),
    "F8_E4M3": (1, True), "F8_E5M2": (1, True),
    "I64": (8, False), "U64": (8, False), "I32": (4, False), "U32": (4, False),
    "I16": (2, False), "U16": (2, False), "I8": (1, False), "U8": (1, False), "BOOL": (1, False),
}  # fmt: skip


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a safetensors dtype name (``"BF16"`` -> 2)."""
    return _DTYPES[dtype][0]


@dataclass(frozen=True)
class CheckpointSize:
    """What a checkpoint's headers say: its tensors' element counts by safetensors dtype, and its files."""

    files: tuple[Path, ...]
    elements: dict[str, int]  # dtype name -> elements stored in that dtype

    @property
    def parameters(self) -> int:
        return sum(self.elements.values())

    @property
    def stored_bytes(self) -> int:
        """The bytes of all tensors as stored (the files' sizes less their headers)."""
        return sum(n * dtype_bytes(d) for d, n in self.elements.items())

    def bytes_at(self, dtype: torch.dtype) -> int:
        """The tensors' bytes once loaded with floating-point weights converted to ``dtype`` (integers keep theirs)."""
        size = torch.empty((), dtype=dtype).element_size()
        return sum(n * (size if _DTYPES[d][1] else dtype_bytes(d)) for d, n in self.elements.items())


def read_header(path: Path) -> dict:
    """The JSON header of one safetensors file: tensor name -> {dtype, shape, data_offsets} (metadata dropped)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if not 0 < length <= MAX_HEADER:
            raise ValueError(f"{path.name} has a header of {length:,} bytes, so it is not a safetensors file")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def checkpoint_files(folder: Path) -> tuple[Path, ...]:
    """The safetensors files of a checkpoint folder: those its index names (sharded), else every ``*.safetensors``."""
    index = folder / INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return tuple(folder / name for name in shards)
    return tuple(sorted(folder.glob("*.safetensors")))


def checkpoint_size(folder: str | Path) -> CheckpointSize:
    """Read the headers of a checkpoint folder's safetensors files (never their weights)."""
    files = checkpoint_files(Path(folder))
    elements: dict[str, int] = {}
    for path in files:
        for info in read_header(path).values():
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            elements[info["dtype"]] = elements.get(info["dtype"], 0) + count
    return CheckpointSize(files, elements)


def hub_checkpoint_size(repo_id: str) -> CheckpointSize | None:
    """The size of a hub model from its headers, fetched with range requests (``huggingface_hub``); None if unknown."""
    try:
        from huggingface_hub import get_safetensors_metadata

        meta = get_safetensors_metadata(repo_id)
    except Exception:  # offline, gated, no safetensors: the loader explains those itself
        return None
    elements: dict[str, int] = {}
    for file_meta in meta.files_metadata.values():
        for info in file_meta.tensors.values():
            count = 1
            for dim in info.shape:
                count *= int(dim)
            elements[info.dtype] = elements.get(info.dtype, 0) + count
    return CheckpointSize(tuple(Path(name) for name in meta.files_metadata), elements)


def human_bytes(n: float) -> str:
    """``1536 * 2**20`` -> ``"1.5 GB"``: binary units, one decimal, as the refusals say them."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's values as a numpy array in host memory: copied off any GPU, half precision widened to float32
    (numpy has no bfloat16), integers and float32 as they are. The one way analysis hands tensors to numpy."""
    tensor = tensor.detach()
    if tensor.is_floating_point() and tensor.element_size() < 4:
        tensor = tensor.float()
    return tensor.cpu().numpy()
