"""What one live pre-training run is: its objective, the model's size and the optimiser's settings.

Three objectives, one family each, on the same tiny configuration:

=============  ===================  ==========================================================
objective      family (model)       what is predicted
=============  ===================  ==========================================================
next_token     decoder (GPT-2)      every token from the ones before it
masked         encoder (RoBERTa     15% of tokens, hidden behind [MASK] (BERT's 80/10/10 rule)
               pre-layer-norm)
span           encoder-decoder      T5's corrupted spans, written out after sentinel tokens
               (T5)
=============  ===================  ==========================================================

Every size is bounded (``LIMITS``) so a run stays small enough for a shared server. The weights are
drawn from the run's own ``torch.Generator``, never from torch's process-wide one, so a seed gives
the same model whatever else the process is doing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForMaskedLM,
    T5Config,
    T5ForConditionalGeneration,
)

from explorer.analysis.pretraining.corpus import bundled_split
from explorer.core import objectives, tokenizer_training
from explorer.core.errors import InputError

INIT_STD = 0.02
PROBE_POSITIONS = 40  # position embeddings for at least the repeated-sequence probe ([CLS] + 2 × 16 + [SEP])
TOKENIZERS_DIR = Path(__file__).resolve().parents[3] / "assets" / "tokenizers"  # <objective>-<vocab>/


@dataclass(frozen=True)
class Objective:
    name: str
    family: str
    about: str
    tokenizer: object  # (texts, vocab_size) -> tokenizer
    model: object  # (PretrainSettings, tokenizer) -> model


def _gpt2(s: PretrainSettings, tok) -> torch.nn.Module:
    config = GPT2Config(
        vocab_size=len(tok), n_positions=max(s.seq_len, PROBE_POSITIONS), n_embd=s.width, n_layer=s.layers, n_head=s.heads,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        architectures=["GPT2LMHeadModel"],
    )  # fmt: skip
    config._attn_implementation = "eager"
    return GPT2LMHeadModel(config)


def _roberta(s: PretrainSettings, tok) -> torch.nn.Module:
    config = RobertaPreLayerNormConfig(
        vocab_size=len(tok), hidden_size=s.width, num_hidden_layers=s.layers, num_attention_heads=s.heads,
        intermediate_size=4 * s.width, max_position_embeddings=max(s.seq_len, PROBE_POSITIONS) + 2, type_vocab_size=1,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, architectures=["RobertaPreLayerNormForMaskedLM"],
    )  # fmt: skip
    config._attn_implementation = "eager"
    return RobertaPreLayerNormForMaskedLM(config)


def _t5(s: PretrainSettings, tok) -> torch.nn.Module:
    config = T5Config(
        vocab_size=len(tok), d_model=s.width, d_kv=s.width // s.heads, d_ff=4 * s.width, num_layers=s.layers,
        num_decoder_layers=s.layers, num_heads=s.heads, dropout_rate=0.0, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
        architectures=["T5ForConditionalGeneration"],
    )  # fmt: skip
    config._attn_implementation = "eager"
    return T5ForConditionalGeneration(config)


OBJECTIVES: dict[str, Objective] = {
    "next_token": Objective(
        "next_token", "decoder", "Next-token prediction: a GPT-style decoder predicts every token from those before it.",
        tokenizer_training.train_byte_level_bpe, _gpt2,
    ),
    "masked": Objective(
        "masked", "encoder", "Masked language modelling: a BERT-style encoder fills in 15% of the tokens, hidden.",
        tokenizer_training.train_wordpiece, _roberta,
    ),
    "span": Objective(
        "span", "encoder_decoder", "Span corruption: a T5-style encoder-decoder writes out the spans cut from its input.",
        tokenizer_training.train_unigram, _t5,
    ),
}  # fmt: skip

# name -> (lowest, highest) allowed
LIMITS = {
    "width": (16, 256),
    "layers": (1, 4),
    "heads": (1, 8),
    "seq_len": (16, 128),
    "batch": (1, 32),
    "steps": (1, 2000),
    "vocab": (256, 4096),
    "seed": (0, 2**31 - 1),
    "checkpoints": (1, 12),
    "eval_every": (1, 500),
}


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that defines one live run; the defaults finish in about a minute on two CPU cores."""

    objective: str = "next_token"
    width: int = 64
    layers: int = 2
    heads: int = 2
    seq_len: int = 64
    batch: int = 16
    steps: int = 400
    lr: float = 3e-3
    warmup: int = 40
    weight_decay: float = 0.01
    vocab: int = 1024
    mask_rate: float = 0.15
    seed: int = 0
    eval_every: int = 25
    checkpoints: int = 5

    @property
    def family(self) -> str:
        return OBJECTIVES[self.objective].family

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len

    def validate(self) -> PretrainSettings:
        if self.objective not in OBJECTIVES:
            raise InputError(f"The objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r:.30}.")
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"The setting {name} must be a whole number, not {value!r:.20}.")
            if not low <= value <= high:
                raise InputError(f"The setting {name} must be from {low} to {high}, not {value}.")
        for name in ("lr", "weight_decay", "mask_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"The setting {name} must be a finite number, not {value!r:.20}.")
        if self.width % self.heads:
            raise InputError(f"The width ({self.width}) must be a multiple of the number of heads ({self.heads}).")
        checks = [
            (1e-5 <= self.lr <= 0.1, "The learning rate must be from 0.00001 to 0.1."),
            (0 <= self.warmup <= self.steps, "Warm-up must be from 0 steps to the number of steps."),
            (0 <= self.weight_decay <= 1, "Weight decay must be from 0 to 1."),
            (0.05 <= self.mask_rate <= 0.5, "The mask rate must be from 0.05 to 0.5."),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def build_tokenizer(settings: PretrainSettings, texts) -> object:
    """The objective's kind of tokenizer for ``texts`` (the training documents only).

    For the bundled training documents at a vocabulary size with a committed tokenizer
    (``assets/tokenizers/<objective>-<vocab>``, written by ``write_bundled_tokenizers``) that one is loaded:
    the ``tokenizers`` library's Unigram trainer gives scores that differ slightly from process to process,
    and a seed must give the same run everywhere. Other texts and sizes are trained, once per process for
    each (objective, vocabulary size, texts), and then shared read-only."""
    texts = tuple(texts)
    folder = TOKENIZERS_DIR / f"{settings.objective}-{settings.vocab}"
    if texts == bundled_split().train and folder.is_dir():
        return _committed_tokenizer(folder)
    return _tokenizer(settings.objective, settings.vocab, texts)


@lru_cache(maxsize=8)
def _tokenizer(objective: str, vocab: int, texts: tuple[str, ...]):
    return OBJECTIVES[objective].tokenizer(list(texts), vocab)


@lru_cache(maxsize=4)
def _committed_tokenizer(folder: Path):
    return AutoTokenizer.from_pretrained(folder)


def write_bundled_tokenizers(folder: Path = TOKENIZERS_DIR, vocab: int = 1024) -> list[Path]:
    """Train each objective's tokenizer on the bundled training documents and save it under ``folder``
    (``python -c "from explorer.analysis.pretraining.configs import write_bundled_tokenizers as w; w()"``)."""
    written = []
    for name, objective in OBJECTIVES.items():
        path = Path(folder) / f"{name}-{vocab}"
        objective.tokenizer(list(bundled_split().train), vocab).save_pretrained(path)
        written.append(path)
    return written


def build_model(settings: PretrainSettings, tokenizer) -> torch.nn.Module:
    """A fresh model for ``settings``, every matrix drawn N(0, 0.02²) from a generator seeded by the run.

    Vectors (biases, layer-norm scales) keep transformers' fixed start (zeros and ones), so nothing
    random comes from torch's process-wide generator.
    """
    model = OBJECTIVES[settings.objective].model(settings, tokenizer)
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):  # tied weights appear once
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=generator) * INIT_STD)
    return model.eval()


def batch_maker(settings: PretrainSettings, tokenizer, stream: np.ndarray):
    """``next_batch(rng) -> dict of tensors`` for the objective (``explorer.core.objectives``)."""
    makers = {
        "next_token": partial(objectives.causal_lm_batch, stream, settings.batch, settings.seq_len),
        "masked": partial(
            objectives.masked_lm_batch, stream, settings.batch, settings.seq_len, tokenizer=tokenizer,
            long_every=0, rate=settings.mask_rate,
        ),
        "span": partial(objectives.span_corruption_batch, stream, settings.batch, settings.seq_len, tokenizer=tokenizer),
    }  # fmt: skip
    return makers[settings.objective]


def separator_id(settings: PretrainSettings, tokenizer) -> int:
    """The token that joins documents in the stream: [SEP] for the encoder, end-of-text otherwise."""
    return tokenizer.sep_token_id if settings.objective == "masked" else tokenizer.eos_token_id


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, those outside the token and position embeddings): the scaling laws count the second."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    embedded = sum(p.numel() for p in model.parameters() if id(p) in embeddings)
    return total, total - embedded
