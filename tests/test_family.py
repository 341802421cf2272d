"""The family adapter answers every family question from the model itself, checked on real tiny models."""

import numpy as np
import pytest
from transformers import BertConfig, GPT2Config, T5Config

from explorer.analysis.decoding.generate import check_generative
from explorer.analysis.lora.finetune import check_trainable
from explorer.core.errors import CapabilityError, InputError
from explorer.core.family import ADAPTERS, CAPABILITIES, adapter
from explorer.core.run import run
from explorer.core.spec import CROSS_ATTENTION, FINE_TUNE, GENERATE, LM_HEAD, MLM, ModelSpec, adapter_for
from tests.tiny_models import TINY

TEXT = "The tiger jumped out of a tree to get a drink."
NAMES = list(TINY)


@pytest.fixture(scope="module")
def traces(tiny):
    return {name: run(lm, TEXT) for name, lm in tiny.items()}


def test_the_factory_asks_is_encoder_decoder_first():
    assert adapter_for(T5Config()).is_encoder_decoder
    assert adapter_for(BertConfig(architectures=["BertForMaskedLM"])).masked_lm
    assert adapter_for(GPT2Config(architectures=["GPT2LMHeadModel"])).continues_prompt
    # an encoder-decoder flag wins over a misleading architecture name
    assert adapter_for(GPT2Config(is_encoder_decoder=True, architectures=["GPT2LMHeadModel"])).family == (
        "encoder_decoder"
    )
    with pytest.raises(ValueError, match="Unknown model family"):
        adapter("recurrent")


@pytest.mark.parametrize("name", NAMES)
def test_streams_and_kinds_are_those_a_run_produces(tiny, traces, name):
    lm, trace = tiny[name], traces[name]
    family = lm.spec.adapter
    assert trace.adapter is family
    assert set(family.streams) == set(trace.tokens) == set(trace.hidden)
    assert family.attention_kinds == tuple(trace.attentions)
    assert trace.texts[family.primary_stream] == TEXT
    assert trace.logits.shape[0] == len(trace.tokens[family.logits_stream])


@pytest.mark.parametrize("name", NAMES)
def test_causal_kinds_are_exactly_the_lower_triangular_maps(traces, name):
    trace = traces[name]
    for kind, weights in trace.attentions.items():
        if weights.shape[-1] != weights.shape[-2]:
            assert not trace.adapter.is_causal(kind)  # cross-attention: queries and keys of two streams
            continue
        above = weights[..., np.triu(np.ones(weights.shape[-2:], bool), k=1)].sum()
        assert trace.adapter.is_causal(kind) == (above == 0), kind


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_follow_what_the_model_does(tiny, name):
    lm = tiny[name]
    spec = lm.spec
    assert spec.can(LM_HEAD) == (lm.model.get_output_embeddings() is not None)
    assert spec.can(GENERATE) == lm.model.can_generate()
    assert spec.can(CROSS_ATTENTION) == bool(getattr(lm.model.config, "is_encoder_decoder", False))
    assert spec.can(MLM) == ("MaskedLM" in type(lm.model).__name__)
    assert spec.can(FINE_TUNE) == ("CausalLM" in type(lm.model).__name__ or "LMHead" in type(lm.model).__name__)
    for capability in CAPABILITIES:
        assert (spec.why_not(capability) is None) == spec.can(capability)


def test_what_a_model_lacks_is_one_sentence_naming_it(tiny):
    bert, gpt2, t5 = tiny["bert"].spec, tiny["gpt2"].spec, tiny["t5"].spec
    reason = bert.why_not(GENERATE)
    assert reason.startswith(f"'{bert.key}' is a BERT-style encoder: it fills in masked tokens but does not generate")
    assert reason.count(". ") == 1 and reason.endswith("model.")  # the reason, then what to pick instead
    assert "masked-language-model head" in gpt2.why_not(MLM)
    assert "encoder-decoder" in gpt2.why_not(CROSS_ATTENTION)
    assert "decoders" in t5.why_not(FINE_TUNE)
    with pytest.raises(CapabilityError, match="does not generate text") as caught:
        check_generative(tiny["bert"])
    assert isinstance(caught.value, InputError)  # shown to the user as it is
    with pytest.raises(InputError, match="fine-tuning here works for decoders"):
        check_trainable(tiny["t5"])


def test_a_model_without_its_head_says_so():
    caps = adapter("encoder").capabilities(has_lm_head=False)  # e.g. a hub encoder transformers knows no MLM head for
    spec = ModelSpec("bare-bert", "x", "encoder", 2, 4, caps)
    assert not spec.can(MLM) and not spec.can(LM_HEAD)
    assert "without a language-model head" in spec.why_not(MLM)
    assert "does not generate text" in spec.why_not(GENERATE)  # the family's own reason comes first


def test_every_family_explains_every_capability_it_lacks():
    for family in ADAPTERS.values():
        with_head = family.capabilities(has_lm_head=True)
        for capability in set(CAPABILITIES) - with_head:
            sentence = family.missing(capability, "m")
            assert sentence.startswith(f"'m' is a {family.name}: ") and sentence.endswith("."), capability
