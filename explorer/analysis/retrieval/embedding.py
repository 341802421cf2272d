"""Text embeddings from any loaded model: the mean of one layer's hidden states over a text's tokens.

``POOLING`` says it in a sentence. The text is tokenized as the model expects (with its special
tokens, such as BERT's ``[CLS]``/``[SEP]`` or T5's ``</s>``), run through the model's *primary* stream
(a decoder or an encoder; an encoder-decoder's encoder), and the hidden states of layer ``layer``
(0 = the embedding output, as in ``Trace.hidden``) are averaged over the positions that are not special
tokens. Texts are batched with right padding and an attention mask; padding never enters a mean.

The model is only read (``torch.no_grad``); the tokenizer is not changed (padding is laid by hand,
so a GPT-2 tokenizer without a padding token needs none set).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from explorer.core.errors import InputError
from explorer.core.limits import MAX_TOKENS
from explorer.core.loading import LoadedModel

POOLING = "mean of the layer's hidden states over the text's tokens, special tokens left out"
BATCH_TOKENS = 8192  # token positions per forward pass (rows × longest row)


def check_layer(lm: LoadedModel, layer) -> int:
    """A layer index 0..n_layers (0: the embedding output), or an ``InputError``."""
    top = lm.spec.n_layers
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer <= top:
        raise InputError(f"Pick a layer from 0 (the embeddings) to {top} for '{lm.spec.key}', not {layer!r}.")
    return int(layer)


def _stack_module(lm: LoadedModel) -> torch.nn.Module:
    """The module whose hidden states are the primary stream's: an encoder-decoder's encoder, else the
    base model without its head (so no batch of logits over the vocabulary is ever made)."""
    if lm.spec.adapter.is_encoder_decoder:
        return lm.model.get_encoder()
    return getattr(lm.model, "base_model", lm.model)


def _max_length(lm: LoadedModel) -> int:
    return min(MAX_TOKENS, lm.max_positions or MAX_TOKENS)


def tokenize_for_pooling(lm: LoadedModel, text: str) -> tuple[list[int], list[bool]]:
    """(ids with the model's special tokens, which of them are pooled), cut to the model's length."""
    ids = list(lm.tokenizer(text, add_special_tokens=True)["input_ids"])[: _max_length(lm)]
    special = set(lm.tokenizer.all_special_ids)
    return ids, [i not in special for i in ids]


@torch.no_grad()
def embed_texts(
    lm: LoadedModel,
    texts: Sequence[str],
    layer: int,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """(n, d) float32: each text's mean-pooled hidden state at ``layer`` (see ``POOLING``).

    Texts are embedded in order, up to 64 at a time; when ``should_stop()`` turns True the first rows,
    those embedded so far, are returned.
    """
    layer = check_layer(lm, layer)
    rows = [tokenize_for_pooling(lm, t) for t in texts]
    for text, (_, pooled) in zip(texts, rows):
        if not any(pooled):
            raise InputError(f"The text “{text[:40]}” has no tokens other than special ones to average.")
    module = _stack_module(lm)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    out = np.zeros((len(texts), _width(lm)), np.float32)
    done = 0
    while done < len(rows):
        size = max(1, BATCH_TOKENS // max(len(ids) for ids, _ in rows[done : done + 64]))
        batch = rows[done : done + min(64, size)]
        longest = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        pooled = torch.zeros((len(batch), longest, 1), dtype=torch.float32)
        for r, (row_ids, row_pooled) in enumerate(batch):
            ids[r, : len(row_ids)] = torch.tensor(row_ids)
            mask[r, : len(row_ids)] = 1
            pooled[r, : len(row_ids), 0] = torch.tensor(row_pooled, dtype=torch.float32)
        hidden = module(
            input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), output_hidden_states=True
        ).hidden_states[layer]  # (B, T, d)
        pooled = pooled.to(hidden.device)
        out[done : done + len(batch)] = ((hidden.float() * pooled).sum(dim=1) / pooled.sum(dim=1)).cpu().numpy()
        done += len(batch)
        if progress is not None:
            progress(done / len(rows))
        if should_stop is not None and done < len(rows) and should_stop():
            return out[:done]
    return out


def _width(lm: LoadedModel) -> int:
    return int(lm.model.get_input_embeddings().weight.shape[1])
