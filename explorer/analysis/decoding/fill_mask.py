"""Family-specific predictions: BERT-style fill-mask and T5-style span infilling."""

from __future__ import annotations

import re

import numpy as np
import torch

from explorer.core.errors import InputError
from explorer.core.trace import Trace

SENTINEL = re.compile(r"<extra_id_(\d+)>")


def mask_token_at(text: str, start: int, end: int, mask_token: str) -> str:
    """``text`` with the characters ``start:end`` (one token's span) replaced by the mask token.

    ``mask_token_at("the cat sat", 4, 7, "[MASK]")`` -> ``"the [MASK] sat"``
    """
    if not 0 <= start < end <= len(text):
        raise InputError(f"No token covers characters {start}–{end} of the text.")
    return text[:start] + mask_token + text[end:]


def masked_positions(trace: Trace, mask_id: int) -> list[int]:
    return [i for i, t in enumerate(trace.tokens[trace.adapter.primary_stream]) if t.id == mask_id]


def fill_mask(trace: Trace, position: int, top_n: int = 10) -> tuple[list[int], list[float]]:
    """The ``top_n`` most probable tokens at one position of an encoder's masked-LM logits: (ids, probs)."""
    if trace.logits is None:
        raise InputError("This encoder has no masked-LM head, so it cannot fill in tokens.")
    if not 0 <= position < trace.logits.shape[0]:
        raise InputError(f"Position {position} is outside the text's {trace.logits.shape[0]} tokens.")
    probs = torch.softmax(torch.from_numpy(np.array(trace.logits[position])), dim=-1)
    top = probs.topk(min(top_n, probs.numel()))
    return top.indices.tolist(), top.values.tolist()


def infill_spans(source: str, generated: str) -> tuple[dict[int, str], str]:
    """Read T5's answer to a span-corrupted source: sentinel number -> text, and the source filled in.

    ``infill_spans("Let there be <extra_id_0>.", "<extra_id_0> light<extra_id_1>")``
    -> ``({0: "light"}, "Let there be light.")``
    """
    pieces = SENTINEL.split(generated)
    spans: dict[int, str] = {}
    for number, text in zip(pieces[1::2], pieces[2::2]):
        spans.setdefault(int(number), text.replace("</s>", "").replace("<pad>", "").strip())
    filled = SENTINEL.sub(lambda m: f"[{spans.get(int(m.group(1)), '?')}]", source)
    return spans, filled
