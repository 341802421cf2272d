"""The recipe for the three bundled models: configs, one training loop, evaluation.

``python -m explorer.training --family decoder --steps 2000 --out models/tiny-gpt2`` builds the
corpus, trains the tokenizer and the model, evaluates on held-out text and writes the card.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForMaskedLM,
    T5Config,
    T5ForConditionalGeneration,
)

from explorer.core import objectives, tokenizer_training
from explorer.training.corpus import Corpus

VOCAB_SIZE = 8192
# The decoder's byte-level BPE gets 12k entries: on the modern held-out sample 8k needed 16% more
# tokens per word than GPT-2's 50k BPE, 12k 10% (the goal is within 15%).
VOCAB_SIZES = {"decoder": 12288, "encoder": VOCAB_SIZE, "encoder_decoder": VOCAB_SIZE}
SEQ_LEN = 128


@dataclass
class Recipe:
    family: str
    tokenizer_kind: str
    batch: int = 16
    seq_len: int = SEQ_LEN
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    dropout: float = 0.1
    mask_rate: float = 0.15  # encoder: share of tokens to predict
    repeat_share: float = 0.0  # decoder: share of each batch whose windows end by repeating a stretch of themselves
    copy_share: float = 0.0  # decoder: share of each batch that is a short stretch said again and again
    unlikelihood: float = 0.0  # decoder: weight of the penalty on loops in its own greedy text
    loop_starts: float = 0.0  # decoder: share of the loop penalty's openings that are a document's first tokens
    loop_anchor: float = 0.0  # decoder: weight of a KL to the start model without the loops (loop_unlikelihood)
    short_share: float = 0.0  # encoder-decoder: share of each batch that is a short window, one or two spans
    end_weight: float = 0.0  # encoder-decoder: extra loss weight of the target tokens that end a span (span_ends)
    sinusoidal_positions: bool = False  # encoder: start position embeddings from the sinusoidal table
    optimizer: str = "adamw"  # or "adafactor": steps relative to each weight's scale (T5's own optimizer)
    local_bias: tuple[float, ...] = ()  # encoder-decoder: per-head slopes, a local start for the position bias
    match_prior: float = 0.0  # encoder-decoder: a cross-attention head that starts out matching equal tokens
    notes: list[str] = field(default_factory=list)


RECIPES = {
    "decoder": Recipe("decoder", "byte-level BPE"),
    # Masked LM sat near its unigram plateau in every run so far (loss ~5.7, 17-21% top-5 after
    # 1000-1500 steps): post-norm BERT at lr 1e-3 and 5e-4, with sinusoidal-start positions and no
    # dropout, and pre-norm (20.8%). A decoder learns from every position, MLM from 15% of them:
    # predicting 40% (Wettig et al. 2023; nearly free here, logits only at masked positions) gave 23.1%,
    # the bundled model. Longer runs are the next step.
    "encoder": Recipe(
        "encoder",
        "WordPiece (lower-cased)",
        batch=32,
        seq_len=64,
        lr=7e-4,
        warmup=300,
        dropout=0.0,
        sinusoidal_positions=True,
        mask_rate=0.4,
    ),  # fmt: skip
    # A step of the small T5 is cheap (the decoder sees ~20% of the tokens), so twice the batch.
    # AdamW (lr 1e-3 to 2e-3, 6,550 steps) left a decoder that ignored its encoder: the infill loss of words
    # was the same with the input blanked, every sample ", the". T5's weights start at very different scales
    # (embeddings std 1, queries std 0.008) and AdamW moves each by about lr a step whatever its scale;
    # Adafactor moves each by lr times its own scale, as T5 was trained. Measured from scratch, 200 steps of
    # 16 x 128: Adafactor (lr 1e-2) words 6.48 nats, 0.37 worse with the input blanked; AdamW (1e-3) 7.01, 0.02.
    "encoder_decoder": Recipe(
        "encoder_decoder", "Unigram with 100 sentinels", batch=32, lr=1e-2, warmup=100, optimizer="adafactor"
    ),
}

# The draft model for speculative decoding (``--shape draft``): a GPT-2 decoder about a seventh of
# tiny-gpt2's size that reuses its tokenizer (``--tokenizer-from models/tiny-gpt2``), so its proposals
# are ids the bundled decoder can verify. Most of its parameters are the tied 12,288-row embedding.
DRAFT_SHAPE = {"n_embd": 64, "n_layer": 2, "n_head": 4}
# A model this small under-fits rather than over-fits ten million characters: no dropout, a higher peak lr.
DRAFT_RECIPE = Recipe("decoder", "byte-level BPE", lr=3e-3, warmup=100, dropout=0.0)
SHAPES = ("bundled", "draft")


def recipe_for(family: str, shape: str = "bundled") -> Recipe:
    if shape == "draft":
        if family != "decoder":
            raise SystemExit("--shape draft is a decoder (a draft model for tiny-gpt2)")
        return DRAFT_RECIPE
    return RECIPES[family]


def train_tokenizer(family: str, texts: list[str]):
    trainers = {
        "decoder": tokenizer_training.train_byte_level_bpe,
        "encoder": tokenizer_training.train_wordpiece,
        "encoder_decoder": tokenizer_training.train_unigram,
    }
    return trainers[family](texts, VOCAB_SIZES[family])


def sinusoidal_table(positions: int, width: int) -> torch.Tensor:
    """The Transformer's sinusoidal position encoding (Vaswani et al. 2017): (positions, width)."""
    pos = torch.arange(positions, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, width, 2, dtype=torch.float32) / width)
    table = torch.zeros(positions, width)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return table


def build_model(
    family: str, tokenizer, dropout: float = 0.1, sinusoidal_positions: bool = False, shape: str = "bundled"
) -> torch.nn.Module:
    """About 5M parameters each, so fp32 weights stay under 25 MB; the draft decoder under 1M."""
    if family == "decoder":
        size = {"n_embd": 256, "n_layer": 4, "n_head": 4}
        if shape == "draft":
            drop = {f"{k}_pdrop": dropout for k in ("resid", "embd", "attn")}
            size = {**DRAFT_SHAPE, **drop}
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=512, **size,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        return GPT2LMHeadModel(config)
    if family == "encoder":
        # BERT's layout with the layer norm moved before each sub-layer (RoBERTa-PreLayerNorm): the
        # post-norm BertForMaskedLM sat on its unigram plateau for 1000+ steps in three runs (17% top-5).
        config = RobertaPreLayerNormConfig(
            vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=1024, max_position_embeddings=514, type_vocab_size=1,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        )  # fmt: skip
        model = RobertaPreLayerNormForMaskedLM(config)
        if sinusoidal_positions:
            with torch.no_grad():  # a start with relative-position structure; still learned from there
                embeddings = model.base_model.embeddings.position_embeddings.weight
                table = sinusoidal_table(*embeddings.shape)
                embeddings.copy_(table * config.initializer_range / table.std())
        return model
    config = T5Config(
        vocab_size=len(tokenizer), d_model=256, d_kv=64, d_ff=1024, num_layers=3, num_decoder_layers=3,
        num_heads=4, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, dropout_rate=dropout,
    )  # fmt: skip
    return T5ForConditionalGeneration(config)


@torch.no_grad()
def start_t5_attention(model: T5ForConditionalGeneration, local_bias=(), match_prior: float = 0.0) -> None:
    """Two starting points for a T5 trained from scratch, each a plain initial value of its weights.

    ``local_bias``: the encoder's relative-position bias (shared by its layers) starts at ``-slope * |distance|``
    for each head, so a word's state gathers its neighbours from the first step (compare ALiBi, Press et al. 2022);
    T5's own start is near zero, which leaves the encoder blind to word order until the bias grows.
    ``match_prior``: the first head of the decoder's first cross-attention starts with equal query and key
    projections, so a decoder token looks at the same token in the input (a sentinel at its own sentinel) with
    a logit about ``match_prior`` above the rest (RMS-normed states of a fresh model are near their embeddings).
    """
    if local_bias:
        from transformers.models.t5.modeling_t5 import T5Attention

        attention = model.encoder.block[0].layer[0].SelfAttention
        config = model.config
        distance = torch.arange(-config.relative_attention_max_distance, config.relative_attention_max_distance + 1)
        buckets = T5Attention._relative_position_bucket(
            distance, bidirectional=True, num_buckets=config.relative_attention_num_buckets,
            max_distance=config.relative_attention_max_distance,
        )  # fmt: skip
        for bucket in buckets.unique():
            mean_distance = distance[buckets == bucket].abs().float().mean()
            for head, slope in enumerate(local_bias):
                attention.relative_attention_bias.weight[bucket, head] = -slope * mean_distance
    if match_prior:
        d_model, d_kv = model.config.d_model, model.config.d_kv
        generator = torch.Generator().manual_seed(0)
        basis = torch.linalg.qr(torch.randn(d_model, d_kv, generator=generator))[0].T  # (d_kv, d_model), orthonormal
        scale = (match_prior / d_kv) ** 0.5  # a state of RMS 1 projects to d_kv dims of RMS 1: q.k ~ d_kv * scale**2
        attention = model.decoder.block[0].layer[1].EncDecAttention
        attention.q.weight[:d_kv] = scale * basis
        attention.k.weight[:d_kv] = scale * basis


PREVIOUS_TOKEN_HEAD = (0, 0)  # (layer, head) of the decoder's copy start: the least missed heads of tiny-gpt2's
INDUCTION_HEAD = (1, 2)  # first two layers when each was zeroed in turn (+0.02 and +0.005 nats)


def start_copy_heads(
    model: GPT2LMHeadModel, stream: np.ndarray, steps: tuple[int, int] = (400, 600), seed: int = 0, log=print
):
    """A start for in-context copying in a GPT-2: two heads fitted, the rest of the model untouched.

    A model of a few million weights trained on a few million tokens never forms an induction head (Olsson
    et al. 2022 saw them form after hundreds of millions of tokens), so it cannot say a name again that its
    prompt has just said. Here, before a training stage, two of its heads are fitted to the two halves of one:
    ``PREVIOUS_TOKEN_HEAD`` (its query and key) to look one token back, on the corpus's windows; then its value
    and output, with ``INDUCTION_HEAD``'s query and key, so that in a window saying a stretch again the second
    head looks at the token after the current token's last appearance. Each fit trains only those weights
    (Adam on the attention pattern's log-likelihood); the training stage after it learns what to do with them.
    Returns the mean attention each head gives its target after the fit (a geometric mean), and the heads.
    """
    d, head_dim = model.config.n_embd, model.config.n_embd // model.config.n_head
    length, blocks = SEQ_LEN, model.transformer.h
    rng, mode = np.random.default_rng(seed), model.training
    model.eval()  # no dropout while fitting
    causal = torch.ones(length, length).tril().bool()
    additive = torch.zeros(1, 1, length, length).masked_fill(~causal, float("-inf"))
    positions = model.transformer.wpe.weight[:length]

    def columns(head: int, parts) -> np.ndarray:  # c_attn's columns of a head's query (0), key (1), value (2)
        return np.concatenate(
            [np.arange(part * d + head * head_dim, part * d + (head + 1) * head_dim) for part in parts]
        )

    def pattern(block, x, head):  # (B, T, T) attention of one head of ``block`` on residual stream ``x``
        y = block.ln_1(x)
        q_cols, k_cols = columns(head, [0]), columns(head, [1])
        weight, bias = block.attn.c_attn.weight, block.attn.c_attn.bias
        q, k = y @ weight[:, q_cols] + bias[q_cols], y @ weight[:, k_cols] + bias[k_cols]
        return (q @ k.transpose(1, 2) / head_dim**0.5).masked_fill(~causal, float("-inf")).softmax(-1)

    def fit(targets: dict, n_steps: int, lr: float, loss_of) -> float:
        """Adam on ``loss_of()`` over the given (tensor -> mask of its trainable entries)."""
        for tensor in targets:
            tensor.requires_grad_(True)
        opt = torch.optim.Adam(list(targets), lr=lr)
        for _ in range(n_steps):
            loss = loss_of()
            opt.zero_grad()
            loss.backward()
            for tensor, mask in targets.items():
                tensor.grad *= mask
            opt.step()
        with torch.no_grad():
            return float(torch.exp(-loss_of()).item())

    def mask(tensor, cols=None, rows=None):
        m = torch.zeros_like(tensor)
        if cols is not None:
            m[..., cols] = 1
        if rows is not None:
            m[rows] = 1
        return m

    trainable = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    (prev_layer, prev_head), (ind_layer, ind_head) = PREVIOUS_TOKEN_HEAD, INDUCTION_HEAD
    prev_block, ind_block = blocks[prev_layer], blocks[ind_layer]
    shift = torch.arange(1, length)

    def previous_token_loss():
        ids = torch.from_numpy(objectives.random_windows(stream, 16, length, rng))
        a = pattern(prev_block, model.transformer.wte(ids) + positions, prev_head)
        return -(a[:, shift, shift - 1] + 1e-6).log().mean()

    qk = columns(prev_head, [0, 1])
    attn = prev_block.attn
    prev_score = fit({attn.c_attn.weight: mask(attn.c_attn.weight, cols=qk), attn.c_attn.bias: mask(attn.c_attn.bias, cols=qk)},
                     steps[0], 1e-2, previous_token_loss)  # fmt: skip

    def induction_loss():
        pairs = [objectives.copy_window(stream, length, rng, shuffled=True) for _ in range(16)]
        ids = torch.from_numpy(np.stack([p[0] for p in pairs]))
        x = model.transformer.wte(ids) + positions
        for block in blocks[:ind_layer]:
            out = block(x, attention_mask=additive)
            x = out[0] if isinstance(out, tuple) else out
        a = pattern(ind_block, x, ind_head)
        losses = []
        for row, (_, labels) in enumerate(pairs):
            span = int((labels == -100).sum())  # the stretch's length: a token's last appearance is span back
            q = torch.arange(span, length)
            losses.append(-(a[row, q, q - span + 1] + 1e-6).log().mean())
        return torch.stack(losses).mean()

    v, qk = columns(prev_head, [2]), columns(ind_head, [0, 1])
    rows = slice(prev_head * head_dim, (prev_head + 1) * head_dim)
    ind_attn = ind_block.attn
    targets = {
        attn.c_attn.weight: mask(attn.c_attn.weight, cols=v), attn.c_attn.bias: mask(attn.c_attn.bias, cols=v),
        attn.c_proj.weight: mask(attn.c_proj.weight, rows=rows),
        ind_attn.c_attn.weight: mask(ind_attn.c_attn.weight, cols=qk), ind_attn.c_attn.bias: mask(ind_attn.c_attn.bias, cols=qk),
    }  # fmt: skip
    ind_score = fit(targets, steps[1], 3e-3, induction_loss)
    for p, flag in trainable.items():
        p.requires_grad_(flag)
        p.grad = None
    model.train(mode)
    log(f"copy start: previous-token head {PREVIOUS_TOKEN_HEAD} {prev_score:.2f} on the token before, "
        f"induction head {INDUCTION_HEAD} {ind_score:.2f} on the token after the last appearance (geometric means)")  # fmt: skip
    return {"previous_token": round(prev_score, 3), "induction": round(ind_score, 3),
            "previous_token_head": list(PREVIOUS_TOKEN_HEAD), "induction_head": list(INDUCTION_HEAD)}  # fmt: skip


_DROPOUT_FIELDS = ("dropout_rate", "resid_pdrop", "embd_pdrop", "attn_pdrop", "hidden_dropout_prob",
                   "attention_probs_dropout_prob")  # fmt: skip


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Every dropout of a loaded model set to ``p``, in its config too (so a resumed stage can train
    without it and the saved config says so). T5's attention keeps its rate as a plain float."""
    for name in _DROPOUT_FIELDS:
        if hasattr(model.config, name):
            setattr(model.config, name, p)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = p


def load_trained(family: str, folder: Path):
    """(tokenizer, model) saved by an earlier run, to continue training."""
    from transformers import AutoTokenizer

    classes = {
        "decoder": GPT2LMHeadModel,
        "encoder": AutoModelForMaskedLM,
        "encoder_decoder": T5ForConditionalGeneration,
    }
    # float32 whatever the stored dtype: bundled weights may be stored as float16.
    return AutoTokenizer.from_pretrained(folder), classes[family].from_pretrained(folder, dtype=torch.float32)


@torch.no_grad()
def settle_unseen_tokens(model, stream: np.ndarray) -> int:
    """Set the embedding rows of tokens the training text never contains to the mean of the others; returns how many.

    A byte-level BPE holds all 256 bytes, and a decoder's tied rows for bytes its text never has are trained only by
    the softmax pushing them away from the states it saw: tiny-gpt2's grew to 3.6 in norm (1.1 for the rest) and, in a
    context unlike those states, took greedy decoding ("sit together till\x00sey"). The mean row's logit is the mean
    logit, far below the top one; as an input it stands for "some token"."""
    weight = model.get_input_embeddings().weight
    seen = torch.from_numpy(np.bincount(stream, minlength=weight.shape[0])[: weight.shape[0]] > 0)
    weight[~seen] = weight[seen].mean(0)
    return int((~seen).sum())


def batch_maker(family: str, tokenizer, stream: np.ndarray, recipe: Recipe):
    if family == "decoder":
        return partial(
            objectives.causal_lm_batch, stream, recipe.batch, recipe.seq_len, repeat_share=recipe.repeat_share,
            copy_share=recipe.copy_share,
        )  # fmt: skip
    if family == "encoder":
        return partial(
            objectives.masked_lm_batch, stream, recipe.batch, recipe.seq_len, tokenizer=tokenizer, rate=recipe.mask_rate
        )
    return partial(
        objectives.span_corruption_batch, stream, recipe.batch, recipe.seq_len, tokenizer=tokenizer,
        short_share=recipe.short_share,
    )  # fmt: skip


def separator_id(family: str, tokenizer) -> int:
    return tokenizer.sep_token_id if family == "encoder" else tokenizer.eos_token_id


def lr_at(step: int, steps: int, recipe: Recipe, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak, over the steps or, with a time
    budget, over the share of that time spent (whichever is further along)."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = min(1.0, max((step - recipe.warmup) / max(1, steps - recipe.warmup), time_progress))
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    model,
    next_batch,
    steps: int,
    recipe: Recipe,
    log,
    seed: int = 0,
    checkpoint=None,
    seconds: float | None = None,
    next_prefixes=None,
    span_ends: torch.Tensor | None = None,
) -> list[float]:
    """Plain AdamW (or Adafactor) loop on the model's device; returns the loss of every step. ``checkpoint(step)`` is
    called every 250 steps. With ``seconds`` the run also stops when that much time has passed, its
    learning rate decaying over that time, so a run on a busy machine still ends fully decayed.
    With ``recipe.unlikelihood`` every second step also continues ``next_prefixes(rng)`` (B, P) greedily and
    penalises the continuations' loops (``objectives.loop_unlikelihood``); with ``recipe.loop_anchor`` they are
    also pulled towards a frozen copy of the model as it was when the run began, its looped tokens taken out.
    With ``recipe.end_weight`` an encoder-decoder's target tokens in ``span_ends`` (its sentinels and </s>) count
    1 + end_weight times: the marks that tell it a blank's answer is over and, at the last, to stop."""
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "adafactor":  # its step is lr times the weight's RMS (torch's Adafactor, no momentum)
        opt = torch.optim.Adafactor([{**g, "weight_decay": 0.0} for g in groups], lr=recipe.lr)
    else:
        opt = torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.98))
    reference = copy.deepcopy(model).eval().requires_grad_(False) if recipe.loop_anchor else None
    if recipe.end_weight:
        span_ends = span_ends.to(device)
    model.train()
    losses, looped, start = [], [], time.time()

    def report(step: int) -> None:
        loops = np.mean(looped[-12:]) if looped else None  # share of greedy tokens in a loop
        log(step_line(step, np.mean(losses[-25:]), opt.param_groups[0]["lr"], time.time() - start, loops))

    for step in range(steps):
        time_progress = (time.time() - start) / seconds if seconds else 0.0
        if time_progress >= 1.0:
            if step and step % 25 != 1:  # the last step run was not reported
                report(step - 1)
            log(f"time budget of {seconds:.0f} s spent after {step} steps")
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, recipe, time_progress)
        batch = {k: v.to(device) for k, v in next_batch(rng).items()}
        if recipe.end_weight:
            out = model(**batch)
            loss = out.loss
            total = loss + recipe.end_weight * objectives.marked_loss(out.logits, batch["labels"], span_ends)
        else:
            loss = objectives.objective_loss(model, batch)
            total = loss
        if recipe.unlikelihood and step % 2:
            penalty = objectives.loop_unlikelihood(model, next_prefixes(rng).to(device), reference=reference)
            total = total + recipe.unlikelihood * penalty.unlikelihood + recipe.loop_anchor * penalty.anchor
            looped.append(penalty.looped)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())  # the objective's own loss, comparable with runs without the penalty
        if step % 25 == 0 or step == steps - 1:
            report(step)
        if checkpoint and step and step % 250 == 0:
            checkpoint(step)
    model.eval()
    return losses


def step_line(step: int, loss: float, lr: float, seconds: float, looped: float | None = None) -> str:
    """The training log's progress line, "step N  loss L  lr R  T s[  looped S]" (read back by ``read_step_line``)."""
    loops = f"  looped {looped:.2f}" if looped is not None else ""
    return f"step {step:5d}  loss {loss:.3f}  lr {lr:.2e}  {seconds:7.0f} s{loops}"


STEP_LINE = re.compile(r"step\s+(\d+)\s+loss (\S+)\s+lr (\S+)\s+(\d+) s")


def read_step_line(line: str) -> dict | None:
    """A progress line's step, loss, lr and seconds; None for any other line of the log."""
    match = STEP_LINE.match(line)
    if not match:
        return None
    step, loss, lr, seconds = match.groups()
    return {"step": int(step), "loss": float(loss), "lr": float(lr), "seconds": float(seconds)}


@torch.no_grad()
def bits_per_byte(model, tokenizer, docs: list[str], seq_len: int = 256) -> dict[str, float]:
    """Held-out cross-entropy of a causal LM, per token and per UTF-8 byte of the text."""
    stream = objectives.token_stream(tokenizer, docs, tokenizer.eos_token_id)
    n_bytes = sum(len(d.encode("utf-8")) + 1 for d in docs)  # +1: the separator stands for "\n"
    total_nll, n_tokens = 0.0, 0
    for start in range(0, len(stream) - 1, seq_len):
        ids = torch.from_numpy(stream[start : start + seq_len + 1])[None].to(model.device)
        logits = model(ids[:, :-1]).logits
        nll = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="sum")
        total_nll += nll.item()
        n_tokens += ids.shape[1] - 1
    return {
        "held_out_loss": total_nll / n_tokens,
        "bits_per_byte": total_nll / math.log(2) / n_bytes,
        "held_out_tokens": n_tokens,
        "held_out_bytes": n_bytes,
    }


@torch.no_grad()
def fill_mask_accuracy(
    model, tokenizer, docs: list[str], seq_len: int = SEQ_LEN, seed: int = 1234, passes: int = 1
) -> dict[str, float]:
    """Top-1 / top-5 accuracy on 15% of held-out tokens, each replaced by [MASK]; ``passes`` > 1
    masks the same text again with other random choices (for a short text)."""
    rng = np.random.default_rng(seed)
    stream = objectives.token_stream(tokenizer, docs, tokenizer.sep_token_id)
    hits1 = hits5 = total = 0
    for _ in range(passes):
        for start in range(0, max(1, len(stream) - seq_len), seq_len - 2):
            body = stream[start : start + seq_len - 2]
            ids = np.concatenate([[tokenizer.cls_token_id], body, [tokenizer.sep_token_id]])
            special = np.isin(ids, tokenizer.all_special_ids)
            picked = (rng.random(ids.shape) < 0.15) & ~special
            if not picked.any():
                continue
            inputs = np.where(picked, tokenizer.mask_token_id, ids)
            logits = model(torch.from_numpy(inputs)[None].to(model.device)).logits[0].cpu()
            top5 = logits[torch.from_numpy(picked)].topk(5, dim=-1).indices.numpy()
            truth = ids[picked]
            hits1 += int((top5[:, 0] == truth).sum())
            hits5 += int((top5 == truth[:, None]).any(axis=1).sum())
            total += int(picked.sum())
    return {"top1_accuracy": hits1 / total, "top5_accuracy": hits5 / total, "masked_tokens": total}


def unigram_log_probs(tokenizer, train_stream, seq_len: int = SEQ_LEN, seed: int = 1234) -> np.ndarray:
    """Log frequency of each token among span-corruption targets drawn from the training stream."""
    counts = np.ones(len(tokenizer))  # add-one smoothing
    base_rng = np.random.default_rng(seed + 1)
    for _ in range(200):
        batch = objectives.span_corruption_batch(train_stream, 16, seq_len, base_rng, tokenizer)
        labels = batch["labels"][batch["labels"] != -100].numpy()
        np.add.at(counts, labels, 1)
    return np.log(counts / counts.sum())


@torch.no_grad()
def span_infill_loss(
    model, tokenizer, train_stream, docs: list[str], seq_len: int = SEQ_LEN, seed: int = 1234, passes: int = 1,
    unigram_logp: np.ndarray | None = None,
):  # fmt: skip
    """Held-out span-corruption loss per target token, beside a unigram baseline and beside the same
    model with its input blanked.

    The baseline predicts every target token from its frequency among training targets, ignoring
    the input: what a model that learned nothing about context would score. With the input blanked
    (every encoder token replaced by padding) only the decoder's own guesses are left: a model whose
    loss barely moves then has learned to ignore its encoder. ``passes`` > 1 corrupts the same text
    again with other random spans (for a short text).
    """
    rng = np.random.default_rng(seed)
    if unigram_logp is None:
        unigram_logp = unigram_log_probs(tokenizer, train_stream, seq_len, seed)
    stream = objectives.token_stream(tokenizer, docs, tokenizer.eos_token_id)
    nll = base_nll = blank_nll = 0.0
    n = 0
    window_gaps = []  # (nats under unigram, target tokens) per corrupted window: for the figure's standard error
    marks = set(objectives.span_ends(tokenizer).tolist())
    parts = {part: np.zeros(3) for part in GAP_PARTS}  # nats under unigram, nats under blanked, tokens
    for _ in range(passes):
        for start in range(0, max(1, len(stream) - seq_len), seq_len):
            windows = stream[start : start + seq_len][None]
            # A stream exactly one window long: the window drawn is always this one.
            batch = objectives.span_corruption_batch(windows[0], 1, min(seq_len, len(windows[0])), rng, tokenizer)
            out = model(**{k: v.to(model.device) for k, v in batch.items()})
            blanked = {**batch, "input_ids": torch.full_like(batch["input_ids"], tokenizer.pad_token_id)}
            blank_out = model(**{key: v.to(model.device) for key, v in blanked.items()})
            kept = batch["labels"][0][batch["labels"][0] != -100]  # one window: padding only at the end
            token_nll = torch.nn.functional.cross_entropy(out.logits[0, : len(kept)].cpu(), kept, reduction="none")
            blank_nll_t = torch.nn.functional.cross_entropy(
                blank_out.logits[0, : len(kept)].cpu(), kept, reduction="none"
            )
            token_nll, blank_nll_t = token_nll.numpy(), blank_nll_t.numpy()
            base_t = -unigram_logp[kept.numpy()]
            nll += float(token_nll.sum())
            blank_nll += float(blank_nll_t.sum())
            base_nll += float(base_t.sum())
            n += len(kept)
            window_gaps.append((float(base_t.sum() - token_nll.sum()), len(kept)))
            names = np.array(target_parts(kept.tolist(), marks))
            for part in GAP_PARTS:
                picked = names == part
                parts[part] += (
                    (base_t - token_nll)[picked].sum(),
                    (blank_nll_t - token_nll)[picked].sum(),
                    picked.sum(),
                )
    return {"held_out_loss": nll / n, "unigram_baseline_loss": base_nll / n, "input_blanked_loss": blank_nll / n,
            "target_tokens": n, "gap_standard_error": ratio_standard_error(window_gaps),
            "gap_parts": {part: {"under_unigram": float(v[0] / n), "under_blanked": float(v[1] / n),
                                 "tokens": int(v[2])} for part, v in parts.items()}}  # fmt: skip


# Where an infill figure's gap under unigram comes from: the sentinels and </s> a target is framed by (the
# format, learned early), the first token of each span (the one only the input around the blank can tell)
# and the span's later tokens (which the decoder can also guess from the span so far).
GAP_PARTS = ("sentinels", "first tokens", "later tokens")


def target_parts(targets: list[int], marks: set[int]) -> list[str]:
    """Each target token's part of the gap (``GAP_PARTS``): ``<X0> a b <X1> c <X2> </s>`` ->
    sentinels, first, later, sentinels, first, sentinels, sentinels."""
    parts, after_mark = [], True
    for token in targets:
        mark = token in marks
        parts.append("sentinels" if mark else "first tokens" if after_mark else "later tokens")
        after_mark = mark
    return parts


def ratio_standard_error(parts: list[tuple[float, int]]) -> float:
    """Standard error of sum(values) / sum(counts) over independent parts (a window's tokens are not
    independent of each other, its windows are): the ratio estimator's linearised variance."""
    if len(parts) < 2:
        return float("nan")
    values, counts = np.array(parts, dtype=float).T
    mean = values.sum() / counts.sum()
    residuals = values - mean * counts
    return float(np.sqrt(len(parts) / (len(parts) - 1) * (residuals**2).sum()) / counts.sum())


# Passes over the short modern sample, each with other random masks or spans. At 10 the encoder-decoder's gap under
# unigram had a standard error of 0.02 nats (three seeds: 1.492, 1.499, 1.504); at 40 about 0.01.
MODERN_PASSES = 40


COPY_STRETCH, COPY_GAP = 24, 60  # tokens: a stretch of held-out text, read again this many tokens later


@torch.no_grad()
def copy_reading(model, tokenizer, docs: list[str], windows: int = 64, seed: int = 7) -> dict[str, float]:
    """In-context copying, measured: windows of ``docs`` "S, 60 other tokens, S again" (S a 24-token stretch).
    Mean loss (nats) on S's tokens after its first at the first and at the second reading: a model that reads its
    context (an induction head) predicts the second far better than the first."""
    stream = objectives.token_stream(tokenizer, docs, tokenizer.eos_token_id)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(stream) - COPY_STRETCH - COPY_GAP, size=windows)
    rows = [np.concatenate([stream[a : a + COPY_STRETCH + COPY_GAP], stream[a : a + COPY_STRETCH]]) for a in starts]
    ids = torch.from_numpy(np.stack(rows)).to(next(model.parameters()).device)
    model.eval()
    logp = model(ids).logits.float().log_softmax(-1)
    nll = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]  # nll[:, i] is the loss of token i + 1
    second = COPY_STRETCH + COPY_GAP
    return {
        "first": float(nll[:, : COPY_STRETCH - 1].mean()),
        "second": float(nll[:, second : second + COPY_STRETCH - 1].mean()),
        "windows": windows,
        "stretch": COPY_STRETCH,
        "gap": COPY_GAP,
    }


LOOP_PREFIX, LOOP_TOKENS = 32, 64


@torch.no_grad()
def greedy_loops(model, tokenizer, docs: list[str], prefixes: int = 32, seed: int = 7) -> dict[str, float]:
    """Degeneration, measured: the model continues ``prefixes`` 32-token openings of ``docs`` greedily for 64
    tokens, and the share of those tokens inside a 4-gram the continuation already said (Welleck et al.'s
    seq-rep-4 counted per token). Human text scores near 0; a model stuck in "the door of the door of" near 1."""
    stream = objectives.token_stream(tokenizer, docs, tokenizer.eos_token_id)
    rng = np.random.default_rng(seed)
    ids = torch.from_numpy(objectives.random_windows(stream, prefixes, LOOP_PREFIX, rng))
    full = objectives.greedy_continuations(model, ids.to(next(model.parameters()).device), LOOP_TOKENS)
    looped = objectives.repeated_ngrams(full[:, LOOP_PREFIX:].cpu(), 4)
    text = objectives.repeated_ngrams(torch.from_numpy(objectives.random_windows(stream, prefixes, LOOP_TOKENS, rng)))
    return {"looped": float(looped.float().mean()), "text": float(text.float().mean()), "prefixes": prefixes}


def evaluate_on(family: str, model, tokenizer, docs: list[str], passes: int = 1, unigram_logp=None) -> dict:
    model.eval()
    if family == "decoder":
        return bits_per_byte(model, tokenizer, docs)
    if family == "encoder":
        return fill_mask_accuracy(model, tokenizer, docs, seq_len=RECIPES["encoder"].seq_len, passes=passes)
    return span_infill_loss(model, tokenizer, None, docs, passes=passes, unigram_logp=unigram_logp)


def evaluate(family: str, model, tokenizer, corpus: Corpus, train_stream) -> dict:
    """The corpus's held-out documents (top-level figures), the project's modern sample and the old
    Shakespeare/KJV held-out text (the figures today's first models were measured on)."""
    from explorer.training.corpus import modern_sample

    logp = unigram_log_probs(tokenizer, train_stream) if family == "encoder_decoder" else None
    copying = (
        {
            "copying": copy_reading(model, tokenizer, modern_sample()),
            "loops": greedy_loops(model, tokenizer, modern_sample()),
        }
        if family == "decoder"
        else {}
    )
    return {
        **copying,
        **evaluate_on(family, model, tokenizer, corpus.held_out, unigram_logp=logp),
        "modern": evaluate_on(family, model, tokenizer, modern_sample(), MODERN_PASSES, unigram_logp=logp),
        "old": evaluate_on(family, model, tokenizer, list(corpus.old_held_out), unigram_logp=logp),
    }


def write_metrics(out: Path, metrics: dict) -> None:
    (out / "card.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
