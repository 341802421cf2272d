"""What the live trainer looks at in the model at its checkpoints, beside the loss.

- **Samples** from fixed prompts: a decoder continues a prompt (sampled at temperature 0.8 from a
  seeded generator), an encoder fills a [MASK], an encoder-decoder writes out a cut span.
- **A repeated sequence**: ``REPEAT_LENGTH`` tokens drawn once from the training stream, then the same
  tokens again. A *previous-token* head puts its weight on position i − 1; an *induction* head, at a
  token of the second copy, looks at the token that followed the same token in the first copy
  (position i − R + 1, for a sequence of period R), which is how a model learns to continue a pattern
  it has seen once (Olsson et al. 2022). Both scores are means over query rows, from 0 to 1.
"""

from __future__ import annotations

import numpy as np
import torch

from explorer.analysis.attention.heads import head_statistics
from explorer.analysis.decoding.fill_mask import span_end_ids
from explorer.core.memory import to_host

REPEAT_LENGTH = 16
SAMPLE_TOKENS = 20
TEMPERATURE = 0.8
PROMPTS = {
    "next_token": ("Hamlet:", "And God said,", "The king is"),
    "masked": ("And God [MASK] the light.", "To be, or not to [MASK].", "The king is [MASK]."),
    "span": (
        "And God said, Let there be <extra_id_0>: and there was light.",
        "To be, or not to be: <extra_id_0> the question.",
        "The king <extra_id_0> dead.",
    ),
}


def repeated_sequence(stream: np.ndarray, length: int = REPEAT_LENGTH, seed: int = 1234) -> np.ndarray:
    """``length`` tokens drawn (with a fixed seed) from ``stream``, twice: shape (2 · length,)."""
    rng = np.random.default_rng(seed)
    pool = np.unique(stream)
    half = rng.choice(pool, size=length, replace=len(pool) < length)
    return np.concatenate([half, half])


def induction_scores(weights: np.ndarray, period: int, offset: int = 0) -> np.ndarray:
    """Mean weight each head (L, H, T, T) puts, from a token of the second copy at i, on key i − period + 1.

    ``offset``: where the first copy starts (1 after a [CLS]). Returns (L, H).
    """
    w = np.asarray(weights, dtype=float)
    queries = np.arange(offset + period, min(offset + 2 * period, w.shape[-2]))
    return w[..., queries, queries - period + 1].mean(axis=-1)


def previous_token_scores(weights: np.ndarray, causal: bool) -> np.ndarray:
    """Mean weight on the token just before each query, per head: (L, H) (``attention.heads``)."""
    return head_statistics(weights, causal=causal)["previous_token"]


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's inputs go: the device of its first parameter (the embeddings)."""
    return next(model.parameters()).device


@torch.no_grad()
def attention_on(model: torch.nn.Module, ids: np.ndarray, is_encoder_decoder: bool) -> np.ndarray:
    """The primary stream's self-attention on ``ids``: (L, H, T, T), float32 numpy."""
    x = torch.from_numpy(np.asarray(ids))[None].to(device_of(model))
    if is_encoder_decoder:
        start = torch.tensor([[model.config.decoder_start_token_id]], device=x.device)
        out = model(input_ids=x, decoder_input_ids=start, output_attentions=True)
        maps = out.encoder_attentions
    else:
        maps = model(input_ids=x, output_attentions=True).attentions
    return to_host(torch.stack([m[0] for m in maps]).float())


@torch.no_grad()
def continue_prompt(model, tokenizer, prompt: str, generator: torch.Generator, n_new: int = SAMPLE_TOKENS) -> str:
    """``n_new`` tokens sampled after ``prompt`` at ``TEMPERATURE`` from ``generator``; the continuation only."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device_of(model))
    limit = model.config.n_positions
    new = []
    for _ in range(n_new):
        logits = model(input_ids=ids[:, -limit:]).logits[0, -1].float().cpu()  # the generator draws on the CPU
        token = torch.multinomial(torch.softmax(logits / TEMPERATURE, dim=-1), 1, generator=generator)
        new.append(int(token))
        ids = torch.cat([ids, token[None].to(ids.device)], dim=1)
    return tokenizer.decode(new)


@torch.no_grad()
def fill_mask(model, tokenizer, prompt: str, top: int = 3) -> str:
    """The ``top`` most likely fillers of the first [MASK], e.g. ``"made / said / saw"``."""
    enc = tokenizer(prompt, return_tensors="pt").to(device_of(model))
    where = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()
    if not len(where):
        return ""
    logits = model(**enc).logits[0, int(where[0])]
    return " / ".join(tokenizer.decode([int(i)]).strip() for i in logits.topk(top).indices)


@torch.no_grad()
def fill_span(model, tokenizer, prompt: str, n_new: int = 8) -> str:
    """The encoder-decoder's greedy output for a prompt with a sentinel (its spans, sentinels shown), up to the end
    of the last span asked for."""
    enc = tokenizer(prompt, return_tensors="pt").to(device_of(model))
    out = torch.tensor([[model.config.decoder_start_token_id]], device=enc["input_ids"].device)
    ends = span_end_ids(tokenizer, prompt, [tokenizer.eos_token_id])
    for _ in range(n_new):
        logits = model(**enc, decoder_input_ids=out).logits[0, -1]
        token = logits.argmax()
        out = torch.cat([out, token.view(1, 1)], dim=1)
        if int(token) in ends:
            break
    return tokenizer.decode(out[0, 1:].tolist(), skip_special_tokens=False).replace("</s>", "").strip()


def samples(objective: str, model, tokenizer, seed: int) -> list[tuple[str, str]]:
    """(prompt, what the model wrote) for each of the objective's fixed prompts."""
    generator = torch.Generator().manual_seed(seed)
    writers = {
        "next_token": lambda p: continue_prompt(model, tokenizer, p, generator),
        "masked": lambda p: fill_mask(model, tokenizer, p),
        "span": lambda p: fill_span(model, tokenizer, p),
    }
    return [(p, writers[objective](p)) for p in PROMPTS[objective]]
