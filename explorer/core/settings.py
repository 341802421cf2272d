"""The server's settings: every ``EXPLORER_*`` variable, read once at start-up into one frozen object.

``settings()`` is the process's object (read from the environment the first time it is asked
for); the app context carries it to the views. ``Settings.from_env(environ)`` parses any mapping,
and a bad value stops start-up with one sentence naming the variable (``SettingsError``).
``configure`` replaces the process's object (tests, or a host that builds settings itself).

==========================  ======================================  ==================================
variable                    default                                 field
==========================  ======================================  ==================================
``EXPLORER_DEVICE``         ``cuda`` if available, else ``cpu``     ``device`` ("" means: pick)
``EXPLORER_HOSTED``         off                                     ``hosted``
``EXPLORER_POOL_MB``        4096                                    ``pool_mb``
``EXPLORER_MODELS_DIR``     the repository's ``models/``            ``models_dir``
``EXPLORER_CACHE_DIR``      ``$XDG_CACHE_HOME/llm-explorer``, else  ``cache_dir``
                            ``~/.cache/llm-explorer``
``EXPLORER_CACHE_MB``       500                                     ``cache_mb``
``EXPLORER_WARMUP``         1                                       ``warmup``
``EXPLORER_TRACE_MB``       320                                     ``trace_mb``
``EXPLORER_LORA_MAX_MB``    1024                                    ``lora_max_mb``
``EXPLORER_LORA_TOTAL_MB``  4096                                    ``lora_total_mb``
``EXPLORER_LORA_TRAININGS`` 2                                       ``lora_trainings``
``EXPLORER_LORA_TTL_S``     7200                                    ``lora_ttl_s``
``EXPLORER_LORA_PER_CLIENT`` 16                                     ``lora_per_client``
``EXPLORER_TORCH_THREADS``  0 (torch's own: one per core)          ``torch_threads``
``EXPLORER_MODEL_RUNS``     2                                       ``model_runs``
``EXPLORER_UNQUEUED_REPLOTS`` 1 (re-plots skip gradio's queue)        ``unqueued_replots``
``EXPLORER_ANALYTICS``      off                                     ``analytics``
``EXPLORER_NDIF_API_KEY``   none                                    ``ndif_api_key`` (never shown)
``HF_HUB_OFFLINE``          off                                     ``hub_offline``
==========================  ======================================  ==================================
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from explorer.core.errors import ExplorerError

MB = 2**20
BUNDLED_MODELS = Path(__file__).resolve().parents[2] / "models"
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class SettingsError(ExplorerError):
    """An ``EXPLORER_*`` variable holds a value that cannot be used; the message names it."""


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llm-explorer"


@dataclass(frozen=True)
class Settings:
    """What the server was started with; see the module docstring for each variable."""

    device: str = ""  # a torch device ("cpu", "cuda", "cuda:1"); "" picks CUDA when available
    hosted: bool = False  # only catalogue models load (a public Space)
    pool_mb: float = 4096  # memory for loaded models; least recently used ones are dropped
    models_dir: Path = BUNDLED_MODELS  # bundled models and catalogue.json
    cache_dir: Path = field(default_factory=lambda: default_cache_dir(os.environ))  # projections, numba's code
    cache_mb: float = 500  # disk the projection cache may use
    warmup: bool = True  # compile UMAP's code in the background at start-up
    trace_mb: float = 320  # a kept trace larger than this keeps top-k logits and some layers (GPT-2-small: 262)
    lora_max_mb: float = 1024  # the largest model one session may copy for LoRA
    lora_total_mb: float = 4096  # what all sessions' LoRA copies may hold together
    lora_trainings: int = 2  # LoRA trainings that run at once; others queue
    lora_ttl_s: float = 7200  # a session's fine-tune is freed this long after it was last replaced
    lora_per_client: int = 16  # fine-tunes one client address may hold at once
    torch_threads: int = 0  # intra-op threads of each model run (0: torch's default, one per core); see run.py
    model_runs: int = 2  # long model work (decoding comparisons, attribution, interventions...) at once; others queue
    unqueued_replots: bool = True  # re-plots from a kept trace are one HTTP request each, not gradio's queue
    analytics: bool = False  # gradio's telemetry (also on when gradio's own GRADIO_ANALYTICS_ENABLED is)
    hub_offline: bool = False  # HF_HUB_OFFLINE: never try the network
    ndif_api_key: str = field(default="", repr=False)  # catalogue models marked "remote": "ndif" run on NDIF

    @property
    def pool_bytes(self) -> int:
        return int(self.pool_mb * MB)

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_mb * MB)

    @property
    def trace_bytes(self) -> int:
        return int(self.trace_mb * MB)

    @property
    def lora_max_bytes(self) -> int:
        return int(self.lora_max_mb * MB)

    @property
    def lora_total_bytes(self) -> int:
        return int(self.lora_total_mb * MB)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse the variables of ``environ`` (default: ``os.environ``); unset or empty ones keep their default."""
        environ = os.environ if environ is None else environ
        values = {"cache_dir": default_cache_dir(environ)}
        for name, (attr, parse) in VARIABLES.items():
            raw = environ.get(name)
            if raw is not None and raw.strip():
                values[attr] = parse(name, raw.strip())
        return cls(**values)


def _flag(name: str, raw: str) -> bool:
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise SettingsError(f"{name} must be 1 (on) or 0 (off), not {raw!r}.")


def _number(unit: str, whole: bool = False, minimum: float = 0) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = int(raw) if whole else float(raw)
        except ValueError:
            value = None
        if value is None or not minimum <= value < float("inf"):
            kind = "a whole number" if whole else "a number"
            raise SettingsError(f"{name} must be {kind} of {unit}, at least {minimum:g}, not {raw!r}.")
        return value

    return parse


def _folder(name: str, raw: str) -> Path:
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{name} must name a folder, and {raw!r} is a file.")
    return path


def _device(name: str, raw: str) -> str:
    kind = raw.split(":")[0]
    if kind not in ("cpu", "cuda", "mps", "xpu") or (":" in raw and not raw.split(":", 1)[1].isdigit()):
        raise SettingsError(f"{name} must be a torch device such as cpu, cuda or cuda:1, not {raw!r}.")
    return raw


def _secret(name: str, raw: str) -> str:
    """A key kept as it is: never echoed in an error, never in ``repr(settings)`` (the field has ``repr=False``)."""
    return raw


# variable -> (field, parser). Every variable the explorer reads is here, and nowhere else.
VARIABLES: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "EXPLORER_DEVICE": ("device", _device),
    "EXPLORER_HOSTED": ("hosted", _flag),
    "EXPLORER_POOL_MB": ("pool_mb", _number("megabytes")),
    "EXPLORER_MODELS_DIR": ("models_dir", _folder),
    "EXPLORER_CACHE_DIR": ("cache_dir", _folder),
    "EXPLORER_CACHE_MB": ("cache_mb", _number("megabytes")),
    "EXPLORER_WARMUP": ("warmup", _flag),
    "EXPLORER_TRACE_MB": ("trace_mb", _number("megabytes")),
    "EXPLORER_LORA_MAX_MB": ("lora_max_mb", _number("megabytes")),
    "EXPLORER_LORA_TOTAL_MB": ("lora_total_mb", _number("megabytes")),
    "EXPLORER_LORA_TRAININGS": ("lora_trainings", _number("trainings at once", whole=True, minimum=1)),
    "EXPLORER_LORA_TTL_S": ("lora_ttl_s", _number("seconds", minimum=1)),
    "EXPLORER_LORA_PER_CLIENT": ("lora_per_client", _number("fine-tunes per client", whole=True, minimum=1)),
    "EXPLORER_TORCH_THREADS": ("torch_threads", _number("threads", whole=True)),
    "EXPLORER_MODEL_RUNS": ("model_runs", _number("model runs at once", whole=True, minimum=1)),
    "EXPLORER_UNQUEUED_REPLOTS": ("unqueued_replots", _flag),
    "EXPLORER_ANALYTICS": ("analytics", _flag),
    "EXPLORER_NDIF_API_KEY": ("ndif_api_key", _secret),
    "HF_HUB_OFFLINE": ("hub_offline", _flag),
}

_current: Settings | None = None
_lock = threading.Lock()


def settings() -> Settings:
    """The process's settings, read from the environment once (the first call)."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = Settings.from_env()
    return _current


def configure(new: Settings) -> Settings:
    """Make ``new`` the process's settings; returns the ones it replaces."""
    global _current
    with _lock:
        old, _current = _current, new
    return old


@contextmanager
def overridden(**changes) -> Iterator[Settings]:
    """``with overridden(hosted=True):`` the process's settings with a few fields changed, then restored."""
    old = settings()
    configure(dataclasses.replace(old, **changes))
    try:
        yield settings()
    finally:
        configure(old)
