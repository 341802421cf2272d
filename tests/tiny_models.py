"""Tiny random-weight models of every family, saved with ``save_pretrained`` (no network needed).

Tokenizers are trained here on a short text with the project's own recipes, so the folders are
complete transformers checkpoints that the loader treats exactly like a hub download.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from explorer.core import tokenizer_training

TEXT = (
    "The tiger jumped out of a tree to get a drink because it was thirsty. "
    "In the beginning God created the heaven and the earth. To be, or not to be: that is the question. "
    "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune, "
    "or to take arms against a sea of troubles, and by opposing end them? 1234567890 ,.;:!?'\"()-"
) * 3

# Model name -> family, as the contract suite is parametrised.
TINY = {"gpt2": "decoder", "llama": "decoder", "bert": "encoder", "t5": "encoder_decoder"}


def build(name: str):
    """(model, tokenizer) for one tiny config, with a fixed seed."""
    torch.manual_seed(0)
    if name in ("gpt2", "llama"):
        tok = tokenizer_training.train_byte_level_bpe([TEXT], 400)
        if name == "gpt2":
            cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=4,
                             bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
            return GPT2LMHeadModel(cfg), tok
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
        return LlamaForCausalLM(cfg), tok
    if name == "bert":
        tok = tokenizer_training.train_wordpiece([TEXT], 300)
        cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=128)  # fmt: skip
        return BertForMaskedLM(cfg), tok
    tok = tokenizer_training.train_unigram([TEXT], 300)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                   num_heads=4, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)  # fmt: skip
    return T5ForConditionalGeneration(cfg), tok


def save(name: str, folder: Path) -> Path:
    model, tok = build(name)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
