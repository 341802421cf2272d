"""What a model is: its family, its shape and what it can do (``ModelSpec``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Family = Literal["decoder", "encoder", "encoder_decoder"]
FAMILIES: tuple[Family, ...] = ("decoder", "encoder", "encoder_decoder")

FAMILY_NAMES = {
    "decoder": "GPT-style decoder",
    "encoder": "BERT-style encoder",
    "encoder_decoder": "T5-style encoder-decoder",
}

# Capabilities a view can require (see ``ModelSpec.capabilities``).
GENERATE = "generate"  # produces text token by token (decoders, encoder-decoders)
MLM = "mlm"  # has a masked-LM head (fill-mask)
CROSS_ATTENTION = "cross_attention"  # decoder attends to an encoder
LM_HEAD = "lm_head"  # a trace carries logits over the vocabulary


@dataclass(frozen=True)
class ModelSpec:
    """A model's identity and shape, known before or read at load time.

    ``source`` is a bundled folder, a local folder or a hub id; ``key`` is how the UI names it.
    """

    key: str
    source: str
    family: Family
    n_layers: int
    n_heads: int
    capabilities: frozenset[str] = field(default_factory=frozenset)
    description: str = ""
    bundled: bool = False

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES[self.family]


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
    caps = set()
    if has_lm_head:
        caps.add(LM_HEAD)
    if family in ("decoder", "encoder_decoder"):
        caps.add(GENERATE)
    if family == "encoder" and has_lm_head:
        caps.add(MLM)
    if family == "encoder_decoder":
        caps.add(CROSS_ATTENTION)
    return frozenset(caps)


def spec_from_config(key: str, source: str, config, has_lm_head: bool, **extra) -> ModelSpec:
    family = family_of(config)
    layers, heads = layer_and_head_counts(config)
    return ModelSpec(key, source, family, layers, heads, capabilities_of(family, has_lm_head), **extra)
