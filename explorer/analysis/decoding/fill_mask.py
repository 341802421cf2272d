"""Family-specific predictions: BERT-style fill-mask and T5-style span infilling."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis.decoding.beam_search import beam_search
from explorer.analysis.decoding.generate import eos_ids
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.tokens import token_label
from explorer.core.trace import Token, Trace

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
    asked = {int(n) for n in SENTINEL.findall(source)}  # spans the model wrote for sentinels not in the text: not shown
    spans: dict[int, str] = {}
    for number, text in zip(pieces[1::2], pieces[2::2]):
        if int(number) in asked:
            spans.setdefault(int(number), text.replace("</s>", "").replace("<pad>", "").strip())
    filled = SENTINEL.sub(lambda m: f"[{spans.get(int(m.group(1)), '?')}]", source)
    return spans, filled


# ---------------------------------------------------------------- the fill-in view


def check_fills_in(lm: LoadedModel) -> None:
    """Refuse, with a sentence, a model that only writes left to right (a decoder)."""
    if lm.spec.adapter.continues_prompt:
        raise InputError(f"{lm.spec.key} only writes left to right; filling in is for BERT- and T5-style models.")


@dataclass(frozen=True)
class SpanFill:
    """T5's answer to a text with sentinels: sentinel number -> span, the text filled in, what the model wrote."""

    spans: dict[int, str]
    filled: str
    raw: str


def sentinel_after(tokenizer, text: str) -> int | None:
    """The id of the sentinel after the last one ``text`` asks for, or None (no sentinel in the text, or none after
    it in the vocabulary): it closes the answer's last span ("<X0> light <X1>")."""
    numbers = [int(n) for n in SENTINEL.findall(text)]
    if not numbers:
        return None
    after = tokenizer.convert_tokens_to_ids(f"<extra_id_{max(numbers) + 1}>")
    return None if after is None or after == tokenizer.unk_token_id else int(after)


def span_end_ids(tokenizer, text: str, eos: list[int]) -> list[int]:
    """Where T5's answer to ``text`` is complete: its end of sequence, or ``sentinel_after``. What a model writes
    after that fills blanks the text does not have (tiny-t5 went on to "<extra_id_6>" for a one-blank text)."""
    after = sentinel_after(tokenizer, text)
    return [*eos, after] if after is not None else list(eos)


def fill_spans(lm: LoadedModel, text: str, max_new_tokens: int, num_beams: int = 4) -> SpanFill:
    """Let an encoder-decoder fill the spans ``text`` marks with sentinels (``<extra_id_0>``), by beam search that
    ends with the last span asked for (``span_end_ids``)."""
    if not SENTINEL.search(text):
        raise InputError("Mark the span to fill with a sentinel such as <extra_id_0> in the text.")
    prompt = lm.tokenizer(text)["input_ids"]
    ends = span_end_ids(lm.tokenizer, text, eos_ids(lm))
    best = beam_search(lm, prompt, num_beams, max_new_tokens, eos_token_id=ends).best
    raw = lm.tokenizer.decode(list(best.new_ids), skip_special_tokens=False)
    spans, filled = infill_spans(text, raw)
    return SpanFill(spans, filled, raw)


def text_to_mask(trace: Trace, text: str, position: int | None, mask_token: str, mask_id: int) -> str | None:
    """``text`` with the token at ``position`` of the trace replaced by the mask token; None when there is
    nothing to change (no position picked, or that token is the mask already)."""
    if position is None:
        return None
    tokens = trace.tokens["input"]
    token = tokens[position] if 0 <= position < len(tokens) else None
    if token is None or token.special:
        raise InputError("Pick one of the text's own tokens to mask.")
    if token.id == mask_id:
        return None
    return mask_token_at(text, token.start, token.end, mask_token)


@dataclass(frozen=True)
class MaskFill:
    """An encoder's guesses at the first masked position of a text: the text's ``tokens``, the masked
    ``position``, and the ``top_n`` candidate ``ids``, their ``labels`` and ``probs``, most probable first."""

    tokens: tuple[Token, ...]
    position: int
    ids: list[int]
    labels: list[str]
    probs: list[float]


def fill_first_mask(lm: LoadedModel, trace: Trace, top_n: int = 10) -> MaskFill:
    """What a masked-LM encoder predicts at the first mask token of ``trace``."""
    masked = masked_positions(trace, lm.tokenizer.mask_token_id)
    if not masked:
        raise InputError(f"Pick a token to mask, or type {lm.tokenizer.mask_token} in the text.")
    ids, probs = fill_mask(trace, masked[0], top_n)
    labels = [token_label(lm.tokenizer, i) for i in ids]
    return MaskFill(trace.tokens["input"], masked[0], ids, labels, probs)
