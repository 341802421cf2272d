"""What a model is: its family, its shape and what it can do (``ModelSpec``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from explorer.core.errors import CapabilityError
from explorer.core.family import (  # noqa: F401  (re-exported: the names views import from here)
    CROSS_ATTENTION,
    FAMILIES,
    FAMILY_NAMES,
    FINE_TUNE,
    GENERATE,
    LM_HEAD,
    MLM,
    Family,
    FamilyAdapter,
    adapter,
)


@dataclass(frozen=True)
class ModelSpec:
    """A model's identity and shape, known before or read at load time.

    ``source`` is a bundled folder, a local folder or a hub id; ``key`` is how the UI names it.
    ``capabilities`` (``GENERATE``, ``MLM``, ...) are decided by the family adapter at load time.
    """

    key: str
    source: str
    family: Family
    n_layers: int
    n_heads: int
    capabilities: frozenset[str] = field(default_factory=frozenset)
    description: str = ""
    bundled: bool = False

    @property
    def adapter(self) -> FamilyAdapter:
        return adapter(self.family)

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def why_not(self, capability: str) -> str | None:
        """None when the model can; else the one sentence a view shows instead."""
        return None if self.can(capability) else self.adapter.missing(capability, self.key)

    def require(self, capability: str) -> None:
        """Raise ``CapabilityError`` (an ``InputError``) with ``why_not``'s sentence unless the model can."""
        reason = self.why_not(capability)
        if reason is not None:
            raise CapabilityError(reason)

    @property
    def family_name(self) -> str:
        return self.adapter.name


def family_of(config) -> Family:
    """Pick the family from a transformers config: encoder-decoder flag, then the architecture name."""
    if getattr(config, "is_encoder_decoder", False):
        return "encoder_decoder"
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "MaskedLM" in archs or "ForPreTraining" in archs:
        return "encoder"
    if "CausalLM" in archs or "LMHeadModel" in archs:
        return "decoder"
    from transformers.models.auto import modeling_auto

    if config.model_type in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    return "decoder"


def adapter_for(config) -> FamilyAdapter:
    """The adapter for a transformers config (the factory: one question, ``is_encoder_decoder``, first)."""
    return adapter(family_of(config))


def layer_and_head_counts(config) -> tuple[int, int]:
    """(layers, heads) for the common config spellings; for encoder-decoders, the encoder's."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for layers_name in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        layers = getattr(text, layers_name, None)
        if layers:
            break
    for heads_name in ("num_attention_heads", "n_head", "num_heads", "n_heads"):
        heads = getattr(text, heads_name, None)
        if heads:
            break
    return int(layers), int(heads)


def capabilities_of(family: Family, has_lm_head: bool) -> frozenset[str]:
    return adapter(family).capabilities(has_lm_head)


def spec_from_config(key: str, source: str, config, has_lm_head: bool, **extra) -> ModelSpec:
    family = family_of(config)
    layers, heads = layer_and_head_counts(config)
    return ModelSpec(key, source, family, layers, heads, capabilities_of(family, has_lm_head), **extra)
