"""One loader for a catalogue key, a hub id or a local ``save_pretrained`` folder.

Every model is loaded with eager attention (fused attention returns no weights), from
safetensors only, with ``trust_remote_code=False``. Every failure becomes a ``ModelLoadError``
whose message is one sentence a user can act on, naming what is available instead.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
)
from transformers.models.auto import modeling_auto
from transformers.utils import logging as hf_logging

from explorer.core.catalogue import bundled_keys, catalogue, hosted_mode, remote_entry, tokenizer_catalogue
from explorer.core.errors import ModelLoadError
from explorer.core.family import FamilyAdapter
from explorer.core.memory import INDEX, CheckpointSize, checkpoint_size, hub_checkpoint_size, human_bytes
from explorer.core.settings import settings
from explorer.core.spec import ModelSpec, adapter_for, spec_from_config

hf_logging.disable_progress_bar()  # per-weight progress bars belong in a terminal, not in server logs

_LOAD_LOCK = threading.Lock()
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")
MAX_NAME = 200


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for instrumented runs: shared and read-only once in the pool."""

    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: object
    device: torch.device

    @property
    def max_positions(self) -> int | None:
        """The longest input the model's position embeddings allow, where its config says (None: no limit known)."""
        config = self.model.config
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        return int(limit) if limit else None

    @property
    def nbytes(self) -> int:
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)


def pick_device() -> torch.device:
    """``EXPLORER_DEVICE`` if set (``cpu``, ``cuda``, ``cuda:1``), else CUDA when available, else CPU."""
    wanted = settings().device
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU (exact, and what CPU kernels are fast at); on a GPU bfloat16 where it is supported, else
    float16: half the memory, so 1-8B models fit, and every view reads float32 copies of what it shows."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _has_accelerate() -> bool:
    try:
        import accelerate  # noqa: F401  (a dependency of peft, so normally present)
    except ImportError:
        return False
    return True


def placement(device: torch.device) -> dict:
    """``from_pretrained``'s placement arguments: on CUDA with accelerate, weights go straight to the GPU
    (``device_map="auto"`` spreads a model too large for one GPU over the GPUs, then the CPU); elsewhere
    they load on the CPU and the model is moved once loaded (an empty dict)."""
    if device.type != "cuda" or not _has_accelerate():
        return {}
    return {"device_map": "auto" if device.index is None else {"": str(device)}}


def _available() -> str:
    return ", ".join(bundled_keys())


_hub_reachable_cache: tuple[float, bool] | None = None


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (remembered for a minute).

    Checked up front because the hub client otherwise retries an unreachable host for ~30 s.
    """
    global _hub_reachable_cache
    if settings().hub_offline:
        return False
    now = time.monotonic()
    if _hub_reachable_cache and now - _hub_reachable_cache[0] < 60:
        return _hub_reachable_cache[1]
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            ok = True
    except OSError:
        ok = False
    _hub_reachable_cache = (now, ok)
    return ok


@dataclass(frozen=True)
class Source:
    key: str  # the name the UI shows
    location: str  # what from_pretrained receives
    kind: str  # "bundled", "catalogue", "folder" or "hub"
    description: str = ""


def resolve(name: str) -> Source:
    """Turn what a user typed into a loadable source, or raise ``ModelLoadError``."""
    name = (name or "").strip()
    entries = catalogue()
    if not name:
        raise ModelLoadError(f"No model given. Available offline: {_available()}.")
    if len(name) > MAX_NAME:
        raise ModelLoadError(f"A model name is at most {MAX_NAME} characters. Available offline: {_available()}.")
    if name in entries:
        e = entries[name]
        return Source(e.key, e.location, "bundled" if e.bundled else "catalogue", e.description)
    by_source = {e.source: e for e in entries.values() if not e.bundled}
    if name in by_source:
        e = by_source[name]
        return Source(e.key, e.location, "catalogue", e.description)
    if hosted_mode():
        raise ModelLoadError(
            f"'{name}' is not in the catalogue, and this hosted app loads catalogue models only: {', '.join(entries)}."
        )
    path = Path(name).expanduser()
    if path.is_dir():
        return Source(name, str(path), "folder")
    if name.startswith((".", "/", "~")) or not HUB_ID.match(name):
        raise ModelLoadError(
            f"Unknown model '{name}': not a catalogue key, an existing folder or a hub id. "
            f"Available offline: {_available()}."
        )
    return Source(name, name, "hub")


def _check_folder(folder: Path, what: str = "model") -> None:
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"The folder '{folder}' has no config.json, so it is not a saved transformers {what}.")
    if not any(folder.glob("*.safetensors")):
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
            raise ModelLoadError(
                f"The folder '{folder}' holds only pickled .bin weights; LLM Explorer loads safetensors only "
                "(pickle files can run code). Re-save it with model.save_pretrained(folder)."
            )
        raise ModelLoadError(f"The folder '{folder}' has a config.json but no model.safetensors weights.")


def _hub_kwargs(source: Source) -> dict:
    """For hub ids: use only the local cache when the hub cannot be reached."""
    if source.kind in ("hub", "catalogue") and not hub_reachable():
        return {"local_files_only": True}
    return {}


def _explain(err: Exception, source: Source) -> ModelLoadError:
    text = str(err)
    offline = source.kind in ("hub", "catalogue") and not hub_reachable()
    if "safetensors" in text.lower() and ("bin" in text.lower() or "does not appear" in text):
        return ModelLoadError(
            f"'{source.key}' has no safetensors weights (only pickled .bin files), and LLM Explorer "
            f"loads safetensors only. Available offline: {_available()}."
        )
    if offline:
        return ModelLoadError(
            f"'{source.key}' is not downloaded yet and the Hugging Face Hub cannot be reached (no network). "
            f"Available offline: {_available()}."
        )
    if "not a valid model identifier" in text or "Repository Not Found" in text or "404" in text:
        return ModelLoadError(
            f"No model '{source.key}' exists on the Hugging Face Hub (or it is private). "
            f"Available offline: {_available()}."
        )
    if "does not recognize this architecture" in text or "Unrecognized" in text:
        return ModelLoadError(
            f"'{source.key}' is not a model type this version of transformers knows. "
            f"Try a GPT-2, BERT or T5 style model, or one of: {_available()}."
        )
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return ModelLoadError(f"'{source.key}' could not be loaded: {first[:300]}")


AUTO_CLASSES = {c.__name__: c for c in (AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForMaskedLM)}


def _model_class(family: FamilyAdapter, config):
    """The family's auto class with its head; a bare ``AutoModel`` where transformers knows no such head."""
    cls = AUTO_CLASSES[family.auto_class]
    if cls is AutoModelForMaskedLM and config.model_type not in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return AutoModel
    return cls


def missing_weights(model: torch.nn.Module, info: dict) -> tuple[list[str], list[str]]:
    """(head, body) weights the checkpoint lacked, which transformers initialised at random.

    The body is what sits under the model's base prefix (``bert.``, ``transformer.``); the head is the rest
    (``cls.predictions.*``, ``lm_head.*``). Weights tied to the embeddings are not missing.
    """
    prefix = f"{model.base_model_prefix}." if getattr(model, "base_model_prefix", "") else ""
    missing = sorted(info.get("missing_keys") or [])
    body = [k for k in missing if not prefix or k.startswith(prefix)]  # no prefix: nothing is known to be a head
    return [k for k in missing if k not in body], body


def _cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub model already downloaded, where the cache has one."""
    from huggingface_hub import try_to_load_from_cache

    for name in (INDEX, "model.safetensors"):
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def source_size(source: Source) -> CheckpointSize | None:
    """The checkpoint's size from its safetensors headers (no weights read): a folder's files, a hub model's
    cached files, else its headers fetched from the hub; None when nothing can be read (the load explains)."""
    folder = Path(source.location)
    if not folder.is_dir() and source.kind in ("hub", "catalogue"):
        folder = _cached_snapshot(source.location)
        if folder is None:
            return hub_checkpoint_size(source.location) if hub_reachable() else None
    try:
        size = checkpoint_size(folder)
    except (OSError, ValueError, KeyError):
        return None  # a broken file: from_pretrained says what is wrong with it
    return size if size.files else None


def check_fits(source: Source, dtype: torch.dtype, max_bytes: int | None) -> None:
    """Refuse, with one sentence, a model whose weights at ``dtype`` need more than ``max_bytes``."""
    size = source_size(source) if max_bytes is not None else None
    if size is None:
        return
    need = size.bytes_at(dtype)
    if need > max_bytes:
        raise ModelLoadError(
            f"'{source.key}' needs about {human_bytes(need)} for its {size.parameters:,} weights in "
            f"{str(dtype).removeprefix('torch.')}, more than the {human_bytes(max_bytes)} the model pool may hold "
            "(EXPLORER_POOL_MB), so it is not loaded."
        )


def load(name: str, device: torch.device | None = None, max_bytes: int | None = None) -> LoadedModel:
    """Load a model and its tokenizer, eager attention, safetensors only, in eval mode, frozen.

    On CPU in float32; on a GPU in bfloat16/float16 (``load_dtype``), placed by accelerate (``placement``).
    With ``max_bytes`` (the pool's bound), a checkpoint whose headers say it needs more is refused before
    any weight is read.
    """
    remote = remote_entry((name or "").strip())
    if remote is not None:  # runs on NDIF: no weights here (explorer.core.nnsight_backend)
        from explorer.core.nnsight_backend import remote_model

        return remote_model(remote)
    source = resolve(name)
    if source.kind in ("folder", "bundled"):
        folder = Path(source.location)
        if source.kind == "bundled" and not folder.is_dir():
            raise ModelLoadError(f"The bundled model folder '{folder}' is missing; is the repository complete?")
        _check_folder(folder)
    device = device or pick_device()
    dtype = load_dtype(device)
    check_fits(source, dtype, max_bytes)
    kwargs = {"trust_remote_code": False, **_hub_kwargs(source)}
    weights = {"attn_implementation": "eager", "use_safetensors": True, "dtype": dtype, **placement(device)}
    try:
        # One load at a time in the process: transformers builds the model on the meta device through
        # process-wide state, and two loads at once break each other and every later load.
        with _LOAD_LOCK:
            config = AutoConfig.from_pretrained(source.location, **kwargs)
            adapter = adapter_for(config)
            cls = _model_class(adapter, config)
            model, info = cls.from_pretrained(
                source.location, config=config, output_loading_info=True, **weights, **kwargs
            )
            head, body = missing_weights(model, info)
            if body:
                raise ModelLoadError(
                    f"'{source.key}' lacks {len(body)} of its weights (e.g. {body[0]}); they would be random, "
                    "so it is not loaded. Re-save the complete model with save_pretrained."
                )
            if head and not adapter.masked_lm:
                raise ModelLoadError(
                    f"'{source.key}' was saved without its language-model head (e.g. {head[0]}): a random head would "
                    "write random text and be shown as the model's, so it is not loaded. Use a checkpoint saved "
                    "with its head (a ...ForCausalLM or ...ForConditionalGeneration model)."
                )
            if head:  # an encoder saved without its masked-LM head (sentence-embedding models): load it headless
                cls = AutoModel
                model = cls.from_pretrained(source.location, config=config, **weights, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
    except ModelLoadError:
        raise
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, ... : explain them all
        raise _explain(err, source) from err
    if "device_map" in weights:  # inputs go where the embeddings are (the first GPU the map used)
        device = model.get_input_embeddings().weight.device
    else:
        model.to(device)
    model.eval().requires_grad_(False)
    has_head = cls is not AutoModel
    spec = spec_from_config(
        source.key, source.location, config, has_head, description=source.description, bundled=source.kind == "bundled"
    )
    return LoadedModel(spec, model, tokenizer, device)


def load_tokenizer(name: str):
    """A tokenizer alone: a tokenizer-catalogue key (e.g. ``gpt2-bpe``), or any model name ``load`` takes."""
    entries = tokenizer_catalogue()
    if name in entries:
        source = Source(name, entries[name].location, "bundled" if entries[name].bundled else "catalogue")
    else:
        source = resolve(name)
    try:
        return AutoTokenizer.from_pretrained(source.location, trust_remote_code=False, **_hub_kwargs(source))
    except Exception as err:
        raise _explain(err, source) from err
