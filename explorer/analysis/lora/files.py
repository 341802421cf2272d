"""An adapter as one safetensors file: the A and B matrices, and the settings in the file's metadata.

Only the adapter travels (kilobytes to a few MB), never the base model. Loading checks that the file
was made for the same base model and that every name and shape lines up before copying anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from explorer.analysis.lora.data import TrainingData
from explorer.analysis.lora.finetune import LoraSession, LoraSettings
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel

FORMAT = "llm-explorer-lora/1"
MAX_FILE_BYTES = 64 * 2**20


def adapter_filename(session: LoraSession) -> str:
    """A file name that says what the adapter is: ``lora-<model>-r<rank>.safetensors``."""
    return f"lora-{session.base.spec.key.replace('/', '_')[:40]}-r{session.settings.r}.safetensors"


def save_adapter(session: LoraSession, path: str | Path) -> Path:
    """Write the session's adapter weights and settings to ``path`` (a .safetensors file)."""
    from peft import get_peft_model_state_dict  # imported when used: see finetune.lora_config

    with session.lock:
        tensors = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(session.peft).items()}
    metadata = {
        "format": FORMAT,
        "base_model": session.base.spec.key,
        "settings": json.dumps(session.settings.to_dict()),
        "steps_trained": str(len(session.losses)),
    }
    path = Path(path)
    save_file(tensors, str(path), metadata=metadata)
    return path


def _read(path: str | Path) -> tuple[dict, dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError("No adapter file was received.")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"The adapter file is {path.stat().st_size / 2**20:.0f} MB; at most 64 MB is accepted.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError("That file is not a safetensors file; upload an adapter downloaded from this tab.") from err
    if metadata.get("format") != FORMAT:
        raise InputError("That safetensors file carries no LLM Explorer adapter settings; upload one downloaded here.")
    return metadata, tensors


def load_adapter(lm: LoadedModel, path: str | Path, data: TrainingData) -> LoraSession:
    """A new session on ``lm`` whose adapter holds the weights in ``path``."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict  # imported when used

    metadata, tensors = _read(path)
    if metadata.get("base_model") != lm.spec.key:
        raise InputError(
            f"This adapter was trained on '{metadata.get('base_model')}', not '{lm.spec.key}': pick that model first."
        )
    try:
        raw = json.loads(metadata["settings"])
        settings = LoraSettings(**{**raw, "targets": tuple(raw["targets"])}).validate()
    except (KeyError, TypeError, ValueError) as err:
        raise InputError("The adapter's settings in the file are unreadable.") from err
    session = LoraSession(lm, settings, data)
    expected = get_peft_model_state_dict(session.peft)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        session.close()
        raise InputError(f"The adapter does not fit this model: {'missing' if missing else 'unexpected'} "
                         f"weight {(missing or extra)[0]}.")  # fmt: skip
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            session.close()
            raise InputError(
                f"The adapter's {name} is {tuple(tensor.shape)}, but this model needs {tuple(expected[name].shape)}."
            )
        if not tensor.is_floating_point():  # int8 numbers copied into float matrices would mean nothing
            session.close()
            raise InputError(f"The adapter's {name} holds {str(tensor.dtype).replace('torch.', '')} numbers; "
                             "an adapter holds floating-point matrices (float32, float16 or bfloat16).")  # fmt: skip
        if not bool(torch.isfinite(tensor).all()):
            session.close()
            raise InputError(f"The adapter's {name} holds NaN or infinite numbers, so it would break the model.")
    with session.lock:
        set_peft_model_state_dict(session.peft, tensors)
        session.heldout_after = None
    return session
