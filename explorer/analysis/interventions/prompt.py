"""What an intervention is measured on: one text, the position where the answer is read, and the answer.

==================  ===================================  ==========================================
family              the answer is read at                 default answer
==================  ===================================  ==========================================
decoder             the last token (the next token)       the clean run's most probable next token
encoder             the first mask token                  the clean run's fill-in there
encoder-decoder     the target's last token (what comes   the clean run's most probable next token
                    next); the target defaults to the
                    first sentinel when the text has one,
                    or when the model opens with one
==================  ===================================  ==========================================
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from functools import cache

import torch

from explorer.analysis.interventions.sites import Edit, Sites, intervene
from explorer.core.errors import InputError
from explorer.core.limits import MAX_TOKENS
from explorer.core.loading import LoadedModel
from explorer.core.run import check_text
from explorer.core.tokens import Token, is_byte_level, token_label, token_rows

SENTINEL = "<extra_id_0>"


@dataclass(frozen=True)
class Prompt:
    """One text as the model takes it (a batch of one) and where its answer is read."""

    text: str
    target: str | None
    inputs: dict[str, torch.Tensor]  # input_ids (and decoder_input_ids), shape (1, T)
    tokens: dict[str, tuple[Token, ...]]  # stream -> tokens
    point: int  # position in the logits stream where the answer is read
    where: str  # that position in words

    def batch(self, n: int) -> dict[str, torch.Tensor]:
        return {k: v.expand(n, -1) for k, v in self.inputs.items()}

    def length(self, stream: str) -> int:
        return len(self.tokens[stream])


def prompt_of(lm: LoadedModel, text: str, target: str | None = None) -> Prompt:
    text = check_text(text)
    tok, adapter = lm.tokenizer, lm.spec.adapter
    ids = tok(text, add_special_tokens=True)["input_ids"]
    if len(ids) > MAX_TOKENS:
        raise InputError(f"Interventions take at most {MAX_TOKENS} tokens; this text has {len(ids)}.")
    rows = {adapter.primary_stream: token_rows(tok, ids, None)}
    inputs = {"input_ids": torch.tensor([ids], device=lm.device)}
    if adapter.is_encoder_decoder:
        if target is None or not target.strip():
            target = SENTINEL if SENTINEL in text else _special_start(lm, ids)
        target = check_text(target, "target text", allow_empty=True)
        dec = [lm.model.config.decoder_start_token_id, *tok(text_target=target, add_special_tokens=False)["input_ids"]]
        dec = dec[:MAX_TOKENS]
        rows[adapter.target_stream] = token_rows(tok, dec, None)
        inputs["decoder_input_ids"] = torch.tensor([dec], device=lm.device)
        shown = f"after the target “{target}”" if target else "at the first token of the output"
        return Prompt(text, target, inputs, rows, len(dec) - 1, f"the next output token {shown}")
    if adapter.masked_lm:
        mask = tok.mask_token_id
        if mask is None or mask not in ids:
            raise InputError(
                f"Put the mask token {tok.mask_token or '[MASK]'} where the answer goes, e.g. "
                f"“The capital of France is {tok.mask_token or '[MASK]'}.”: an encoder's answer is its fill-in."
            )
        point = ids.index(mask)
        return Prompt(text, None, inputs, rows, point, f"the fill-in at {tok.mask_token} (token {point})")
    return Prompt(text, None, inputs, rows, len(ids) - 1, "the next token")


@torch.no_grad()
def _special_start(lm: LoadedModel, ids: list[int]) -> str:
    """The model's first output token when it is a special one (a T5 sentinel: span-corruption models open with
    ``<extra_id_0>``), so that the answer followed is the first real word; else no target."""
    start = lm.model.config.decoder_start_token_id
    x, y = torch.tensor([ids], device=lm.device), torch.tensor([[start]], device=lm.device)
    first = int(lm.model(input_ids=x, decoder_input_ids=y).logits[0, -1].argmax())
    special = set(lm.tokenizer.all_special_ids) - {lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id}
    return lm.tokenizer.convert_ids_to_tokens(first) if first in special else ""


@torch.no_grad()
def logits_at(
    lm: LoadedModel, sites: Sites, prompt: Prompt, edits: list[Edit] = (), rows: int = 1,
    fan_out: tuple[str, int] | None = None,
) -> torch.Tensor:  # fmt: skip
    """The logits at the prompt's answer position, (rows, vocab) float32, with ``edits`` applied.

    With ``fan_out=(stream, layer)``, the pass runs one row up to that layer and only there becomes
    ``rows`` rows (every edit must be at or above it): the layers below, the same for every row, run once.
    A decoder computes the output layer only at its last position, where the answer is read.
    """
    inputs = prompt.batch(1 if fan_out and _can_fan_out(lm, fan_out) else rows)
    if lm.spec.adapter.is_encoder_decoder and fan_out:  # the decoder reads an encoder of ``rows`` rows
        inputs["decoder_input_ids"] = prompt.inputs["decoder_input_ids"].expand(rows, -1)
    keep = forward_options(lm, prompt)
    handle = None
    if inputs["input_ids"].shape[0] == 1 and rows > 1:
        block = sites.layers[fan_out[0]][fan_out[1]].block
        handle = block.register_forward_pre_hook(_widen(rows, threading.get_ident()), with_kwargs=True)
    try:
        with intervene(lm, sites, list(edits)):
            out = lm.model(**inputs, **keep)
    finally:
        if handle is not None:
            handle.remove()
    return out.logits[:, -1 if "logits_to_keep" in keep else prompt.point].float()


def forward_options(lm: LoadedModel, prompt: Prompt) -> dict:
    """How ``logits_at`` calls the model: no cache; a decoder's output layer only where the answer is read."""
    last = prompt.point == prompt.inputs["input_ids"].shape[1] - 1
    if not lm.spec.adapter.is_encoder_decoder and last and "logits_to_keep" in _parameters(lm.model):
        return {"use_cache": False, "logits_to_keep": 1}
    return {"use_cache": False}


def _can_fan_out(lm: LoadedModel, fan_out: tuple[str, int]) -> bool:
    """A T5 decoder cannot widen alone: its cross-attention reads an encoder output of one row."""
    return fan_out[0] != lm.spec.adapter.target_stream or not lm.spec.adapter.is_encoder_decoder


def _widen(rows: int, owner: int):
    def hook(module, args, kwargs):
        if threading.get_ident() != owner:
            return None
        if args:
            return (args[0].expand(rows, *args[0].shape[1:]), *args[1:]), kwargs
        return args, {
            **kwargs,
            "hidden_states": kwargs["hidden_states"].expand(rows, *kwargs["hidden_states"].shape[1:]),
        }

    return hook


@cache
def _forward_parameters(cls) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def _parameters(model) -> frozenset[str]:
    return _forward_parameters(type(model))


def chunks_by_layer(layers: list[int], rows: int) -> list[slice]:
    """Slices of ``layers`` (sorted) of at most ``rows`` items that start where a layer starts when they
    can, so each pass widens as late as possible (see ``logits_at``'s ``fan_out``)."""
    out, start = [], 0
    while start < len(layers):
        end = min(start + rows, len(layers))
        if end < len(layers) and layers[end] == layers[end - 1]:
            whole = max((i for i in range(start + 1, end) if layers[i] != layers[i - 1]), default=None)
            end = whole if whole is not None else end
        out.append(slice(start, end))
        start = end
    return out


def answer_id(lm: LoadedModel, word: str | None, logits: torch.Tensor) -> int:
    """The token a word names (its first token, with the leading space a mid-sentence word has in a
    byte-level vocabulary), or the most probable token of ``logits`` when no word is given."""
    if word is None or not str(word).strip():
        return int(logits.argmax())
    word = str(word)
    if is_byte_level(lm.tokenizer) and not word.startswith(" "):
        word = " " + word
    ids = lm.tokenizer(word, add_special_tokens=False)["input_ids"]
    ids = [i for i in ids if i not in set(lm.tokenizer.all_special_ids)] or ids
    if not ids:
        raise InputError(f"“{word.strip()}” has no tokens in this model's vocabulary.")
    return int(ids[0])


def label(lm: LoadedModel, token_id: int) -> str:
    return token_label(lm.tokenizer, token_id)
