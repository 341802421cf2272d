"""Multi-head, grouped-query and multi-query attention: what each costs in KV-cache memory.

Every query head needs keys and values to attend over. *Multi-head* attention (MHA) gives each query head its
own (kv-heads = heads); *grouped-query* attention (GQA, Ainslie et al. 2023) lets a group of g query heads share
one key and one value head (kv-heads = heads / g); *multi-query* attention (MQA, Shazeer 2019) shares a single
one among them all (kv-heads = 1). The cache holds keys and values per kv-head, so it shrinks by the same factor:
2 × layers × kv-heads × head-dim × positions × bytes per element (``kv_cache.formula_bytes``).

``variant_bytes`` applies the formula to the loaded model's shape and to a few published ones (``PRESETS``), with
the variant each was built with marked. ``measure_variant`` builds a tiny random Llama model of each kind
(``num_key_value_heads`` = heads, heads / g, 1), runs one real forward pass, and measures the bytes of the
``past_key_values`` it returns, beside the formula's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.analysis.inference.kv_cache import DTYPE_BYTES, CacheShape, cache_bytes, formula_bytes
from explorer.core.errors import InputError

MHA, GQA, MQA = "multi-head", "grouped-query", "multi-query"
VARIANTS = (MHA, GQA, MQA)
# Published shapes (layers, query heads, kv-heads, head dim) and context, from each model's config; the same
# models as the KV cache tab's memory calculator.
PRESETS: dict[str, tuple[CacheShape, int]] = {
    "GPT-2 small": (CacheShape(layers=12, kv_heads=12, head_dim=64, heads=12), 1024),
    "GPT-2 XL": (CacheShape(layers=48, kv_heads=25, head_dim=64, heads=25), 1024),
    "Llama-2-7B (all heads cached)": (CacheShape(layers=32, kv_heads=32, head_dim=128, heads=32), 4096),
    "Llama-3-8B (grouped-query: 8 kv-heads)": (CacheShape(layers=32, kv_heads=8, head_dim=128, heads=32), 8192),
}
MAX_MEASURED_HEADS = 64
MAX_MEASURED_POSITIONS = 4096


def grouped_kv_heads(heads: int) -> int | None:
    """The kv-heads of a grouped-query version of a model with ``heads`` query heads: the model's own when it is
    grouped already, else the divisor of ``heads`` between 1 and ``heads`` nearest a quarter of it (Llama-3-8B
    shares each kv-head among 4 query heads); None where ``heads`` has no such divisor (2, or a prime)."""
    divisors = [d for d in range(2, heads) if heads % d == 0]
    return min(divisors, key=lambda d: (abs(d - heads / 4), d)) if divisors else None


def kv_heads_of(variant: str, heads: int, built_kv_heads: int | None = None) -> int | None:
    """The kv-heads of ``variant`` for ``heads`` query heads (None: no grouped-query version exists)."""
    if variant == MHA:
        return heads
    if variant == MQA:
        return 1
    if variant == GQA:
        if built_kv_heads is not None and 1 < built_kv_heads < heads:
            return built_kv_heads
        return grouped_kv_heads(heads)
    raise InputError(f"Pick an attention variant: {', '.join(VARIANTS)}.")


def built_variant(shape: CacheShape) -> str:
    """Which of the three a model was built with."""
    if shape.kv_heads == shape.heads:
        return MHA
    return MQA if shape.kv_heads == 1 else GQA


@dataclass(frozen=True)
class VariantBytes:
    """One model's cache under one attention variant, at ``positions`` positions."""

    model: str
    variant: str
    heads: int
    kv_heads: int
    layers: int
    head_dim: int
    positions: int
    bytes_per_element: float
    built: bool  # the variant the model was built with
    loaded: bool  # the loaded model (the others are presets)

    @property
    def nbytes(self) -> int:
        return formula_bytes(self.layers, self.kv_heads, self.head_dim, self.positions, self.bytes_per_element)

    @property
    def share_of_multi_head(self) -> float:
        return self.kv_heads / self.heads


def variant_bytes(
    model: str, shape: CacheShape, positions: int, dtype: str = "float16", loaded: bool = False
) -> list[VariantBytes]:
    """The cache of ``shape`` at ``positions`` positions under each variant that exists for its head count."""
    if positions is None or int(positions) < 1:
        raise InputError("The number of positions must be a whole number, 1 or more.")
    if dtype not in DTYPE_BYTES:
        raise InputError(f"Pick a number format: {', '.join(DTYPE_BYTES)}.")
    built = built_variant(shape)
    out = []
    for variant in VARIANTS:
        kv = kv_heads_of(variant, shape.heads, shape.kv_heads)
        if kv is None or any(v.kv_heads == kv for v in out):  # e.g. one head: all three are the same
            continue
        out.append(VariantBytes(model, variant, shape.heads, kv, shape.layers, shape.head_dim, int(positions),
                                DTYPE_BYTES[dtype], variant == built, loaded))  # fmt: skip
    return out


def compare_variants(
    loaded_key: str | None, loaded_shape: CacheShape | None, positions: int, dtype: str = "float16"
) -> list[VariantBytes]:
    """The loaded model's variants (first, when given) and every preset's, all at ``positions`` positions."""
    rows = variant_bytes(loaded_key, loaded_shape, positions, dtype, loaded=True) if loaded_shape else []
    for name, (shape, _) in PRESETS.items():
        rows += variant_bytes(name, shape, positions, dtype)
    return rows


# ---------------------------------------------------------------- measured on tiny random models


@dataclass(frozen=True)
class MeasuredVariant:
    """One real forward pass of a tiny random Llama model of one variant: the cache's bytes, and the formula's."""

    variant: str
    heads: int
    kv_heads: int
    layers: int
    head_dim: int
    positions: int
    measured_bytes: int
    formula_bytes: int
    cached_shape: tuple[int, ...]  # one layer's keys: (batch, kv-heads, positions, head dim)


def tiny_llama(kv_heads: int, heads: int = 8, layers: int = 2, head_dim: int = 16, vocab: int = 64, seed: int = 0):
    """A random-weight Llama decoder with ``heads`` query heads and ``kv_heads`` key/value heads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=heads * head_dim, intermediate_size=2 * heads * head_dim,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
        max_position_embeddings=MAX_MEASURED_POSITIONS,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@torch.no_grad()
def measure_variant(
    variant: str, heads: int = 8, layers: int = 2, head_dim: int = 16, positions: int = 32
) -> MeasuredVariant:
    """Build a tiny random Llama model of ``variant``, run ``positions`` tokens through it with the cache on and
    measure the ``past_key_values`` it returns (float32) beside the formula's bytes."""
    for value, what, top in ((heads, "number of heads", MAX_MEASURED_HEADS), (layers, "number of layers", 8),
                             (head_dim, "head dimension", 256), (positions, "number of positions",
                                                                  MAX_MEASURED_POSITIONS)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise InputError(f"The {what} must be a whole number from 1 to {top}.")
    kv = kv_heads_of(variant, heads)
    if kv is None:
        raise InputError(f"{heads} heads cannot be split into groups: grouped-query attention needs a head count "
                         "with a divisor other than 1 and itself.")  # fmt: skip
    model = tiny_llama(kv, heads, layers, head_dim)
    ids = torch.randint(0, model.config.vocab_size, (1, positions), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, use_cache=True, return_dict=True)
    cache = out.get("cache") if "cache" in out else out.get("past_key_values")
    keys = cache.layers[0].keys
    element = keys.element_size()
    return MeasuredVariant(variant, heads, kv, layers, head_dim, positions, cache_bytes(cache),
                           formula_bytes(layers, kv, head_dim, positions, element), tuple(keys.shape))  # fmt: skip


def measure_variants(heads: int = 8, layers: int = 2, head_dim: int = 16, positions: int = 32) -> list[MeasuredVariant]:
    """``measure_variant`` for each variant that exists for ``heads``."""
    return [measure_variant(v, heads, layers, head_dim, positions) for v in VARIANTS if kv_heads_of(v, heads)]
