"""The family adapter: the one place that knows what a model family is and can do.

Three families, picked from a transformers config the way inseq picks its model class (the
``is_encoder_decoder`` flag first, then the architecture's name; see ``explorer.core.spec.adapter_for``).
This module is plain data (no torch, no transformers), so views may ask it too:

==================  ============  ==========  =========  ===========================  ===========  =========
family              primary       target      logits     attention kinds (causal*)    generates    cross-attn
==================  ============  ==========  =========  ===========================  ===========  =========
``decoder``         ``input``     ``input``   ``input``  ``self``*                    yes          no
``encoder``         ``input``     —           ``input``  ``self``                     no (fills    no
                                                                                      masks)
``encoder_decoder`` ``source``    ``target``  ``target`` ``encoder_self``,            yes          yes
                                                         ``decoder_self``*, ``cross``
==================  ============  ==========  =========  ===========================  ===========  =========

The *primary* stream is where the user's text goes; the *target* stream is where generated tokens
are written (for a decoder the same stream: its output continues its input). Views and analysis ask
an adapter (``spec.adapter``, ``trace.adapter``) or a spec's capabilities (``spec.can(GENERATE)``,
``spec.require(GENERATE)``) instead of comparing family names, and what a model cannot do is
explained by the one sentence ``missing`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["decoder", "encoder", "encoder_decoder"]
FAMILIES: tuple[Family, ...] = ("decoder", "encoder", "encoder_decoder")

# Capabilities a view can require (``ModelSpec.capabilities``, ``ModelSpec.can``).
GENERATE = "generate"  # produces text token by token (decoders, encoder-decoders)
MLM = "mlm"  # has a masked-LM head (fill-mask)
CROSS_ATTENTION = "cross_attention"  # decoder attends to an encoder
LM_HEAD = "lm_head"  # a trace carries logits over the vocabulary
FINE_TUNE = "fine_tune"  # the LoRA view can fine-tune it (causal language modelling: decoders so far)
CAPABILITIES = (GENERATE, MLM, CROSS_ATTENTION, LM_HEAD, FINE_TUNE)

# What a model of another family is for, said when a view needs what it lacks.
_PICK = {
    GENERATE: "Pick a decoder (GPT-style) or an encoder-decoder (T5-style) model.",
    MLM: "Pick an encoder (BERT-style) model such as tiny-bert.",
    CROSS_ATTENTION: "Pick an encoder-decoder (T5-style) model such as tiny-t5.",
    LM_HEAD: "Pick a model saved with its language-model head.",
    FINE_TUNE: "Pick tiny-gpt2 or another decoder.",
}


@dataclass(frozen=True)
class FamilyAdapter:
    """What one family's models take in, put out and can do; see the module docstring's table."""

    family: Family
    name: str  # "GPT-style decoder"
    is_encoder_decoder: bool
    primary_stream: str  # the token stream the user's text becomes
    target_stream: str | None  # where generated tokens are written (None: the family does not generate)
    logits_stream: str  # the stream whose positions ``trace.logits`` rows follow
    attention_kinds: tuple[str, ...]
    causal_kinds: frozenset[str]  # kinds whose maps are lower-triangular (a token sees only its past)
    can_generate: bool
    has_cross_attention: bool
    masked_lm: bool  # its language-model head fills masked positions (instead of predicting the next token)
    auto_class: str  # the transformers auto class that loads it with its head
    lacks: tuple[tuple[str, str], ...]  # capability -> what the family does instead, as a clause

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.primary_stream,) if self.target_stream in (None, self.primary_stream) else (
            self.primary_stream, self.target_stream,
        )  # fmt: skip

    @property
    def continues_prompt(self) -> bool:
        """Whether generated tokens extend the user's own stream (decoders), so a prompt can be continued."""
        return self.target_stream == self.primary_stream

    def is_causal(self, kind: str) -> bool:
        return kind in self.causal_kinds

    def capabilities(self, has_lm_head: bool) -> frozenset[str]:
        """What a model of this family can do, given whether it was loaded with its language-model head."""
        caps = {CROSS_ATTENTION} if self.has_cross_attention else set()
        if has_lm_head:
            caps.add(LM_HEAD)
            if self.can_generate:
                caps.add(GENERATE)
            if self.masked_lm:
                caps.add(MLM)
            if self.can_generate and not self.is_encoder_decoder:
                caps.add(FINE_TUNE)
        return frozenset(caps)

    def missing(self, capability: str, model_key: str) -> str:
        """The one sentence that says why ``model_key`` (of this family) cannot serve ``capability``."""
        clause = dict(self.lacks).get(capability)
        if clause is None:  # the family could, this checkpoint cannot: it came without its head
            return f"'{model_key}' was loaded without a language-model head, so it makes no token predictions. {_PICK[LM_HEAD]}"
        return f"'{model_key}' is a {self.name}: {clause}. {_PICK[capability]}"


ADAPTERS: dict[str, FamilyAdapter] = {
    "decoder": FamilyAdapter(
        "decoder", "GPT-style decoder", False, "input", "input", "input", ("self",), frozenset({"self"}),
        can_generate=True, has_cross_attention=False, masked_lm=False, auto_class="AutoModelForCausalLM",
        lacks=(
            (MLM, "it predicts the next token and has no masked-language-model head to fill in [MASK]"),
            (CROSS_ATTENTION, "it attends only to its own tokens, with no second stream to cross-attend to"),
        ),
    ),
    "encoder": FamilyAdapter(
        "encoder", "BERT-style encoder", False, "input", None, "input", ("self",), frozenset(),
        can_generate=False, has_cross_attention=False, masked_lm=True, auto_class="AutoModelForMaskedLM",
        lacks=(
            (GENERATE, "it fills in masked tokens but does not generate text"),
            (CROSS_ATTENTION, "it attends only to its own tokens, with no second stream to cross-attend to"),
            (FINE_TUNE, "fine-tuning here works for decoders (GPT-style) so far"),
        ),
    ),
    "encoder_decoder": FamilyAdapter(
        "encoder_decoder", "T5-style encoder-decoder", True, "source", "target", "target",
        ("encoder_self", "decoder_self", "cross"), frozenset({"decoder_self"}),
        can_generate=True, has_cross_attention=True, masked_lm=False, auto_class="AutoModelForSeq2SeqLM",
        lacks=(
            (MLM, "it writes an output text and has no masked-language-model head to fill in [MASK]"),
            (FINE_TUNE, "fine-tuning here works for decoders (GPT-style) so far"),
        ),
    ),
}  # fmt: skip

FAMILY_NAMES = {family: adapter.name for family, adapter in ADAPTERS.items()}


def adapter(family: str) -> FamilyAdapter:
    """The adapter of a family name (``"decoder"``, ``"encoder"``, ``"encoder_decoder"``)."""
    try:
        return ADAPTERS[family]
    except KeyError:
        raise ValueError(f"Unknown model family {family!r}: expected one of {', '.join(FAMILIES)}.") from None
