"""Steering: add a direction to the residual stream and see the model's output move.

The direction is the difference of two mean hidden states after one layer: of two word lists
(“love, joy, happy” minus “hate, grief, sad”), or of two texts, each averaged over its positions
(special tokens left out). Adding ``strength`` × direction after that layer at every position,
generation included, pushes the model toward the first list (a negative strength toward the second).
For an encoder, the fill-in at the mask is compared instead of a continuation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.analysis.interventions.prompt import prompt_of
from explorer.analysis.interventions.sites import Capture, Edit, find_sites, intervene
from explorer.core.errors import InputError
from explorer.core.limits import MAX_EXPLAINED_TOKENS
from explorer.core.loading import LoadedModel
from explorer.core.run import check_text
from explorer.core.tokens import token_label

MAX_STRENGTH = 50.0
MAX_WORDS = 32


@dataclass(frozen=True)
class Direction:
    stream: str
    layer: int
    vector: torch.Tensor  # (d_model,)
    norm: float
    residual_norm: float  # typical size of the residual stream there (mean over the texts' positions)
    described: str


def _phrases(value: str) -> list[str]:
    value = check_text(value, "word list")
    parts = [p.strip() for p in value.replace("\n", ",").split(",") if p.strip()]
    if not parts:
        raise InputError("Give at least one word or text on each side, separated by commas.")
    if len(parts) > MAX_WORDS:
        raise InputError(f"Give at most {MAX_WORDS} words or texts on each side, not {len(parts)}.")
    return parts


def _mean_state(lm: LoadedModel, sites, stream: str, layer: int, phrases: list[str]) -> tuple[torch.Tensor, float]:
    states = []
    for phrase in phrases:
        prompt = prompt_of(lm, phrase if not lm.spec.adapter.masked_lm else f"{phrase} {lm.tokenizer.mask_token}")
        capture = Capture(wanted={(stream, layer, "resid", None)})
        with torch.no_grad(), intervene(lm, sites, capture=capture):
            lm.model(**prompt.batch(1))
        x = capture.seen[(stream, layer, "resid", None)][0]
        keep = [i for i, t in enumerate(prompt.tokens[stream]) if not t.special] or list(range(x.shape[0]))
        states.append(x[keep])
    rows = torch.cat(states)
    return rows.mean(0), float(rows.norm(dim=-1).mean())


def direction(lm: LoadedModel, layer: int, positive: str, negative: str) -> Direction:
    """mean hidden state of ``positive``'s phrases − mean of ``negative``'s, after ``layer`` of the main stack."""
    sites = find_sites(lm)
    stream = lm.spec.adapter.primary_stream
    n = len(sites.layers[stream])
    if not 0 <= int(layer) < n:
        raise InputError(f"Layer {layer} does not exist: this model has layers 0–{n - 1}.")
    pos, neg = _phrases(positive), _phrases(negative)
    a, norm_a = _mean_state(lm, sites, stream, int(layer), pos)
    b, norm_b = _mean_state(lm, sites, stream, int(layer), neg)
    vector = a - b
    described = f"mean of {len(pos)} minus mean of {len(neg)} after layer {layer}"
    return Direction(stream, int(layer), vector, float(vector.norm()), (norm_a + norm_b) / 2, described)


@dataclass(frozen=True)
class Steered:
    plain: str
    steered: str
    plain_top: list[tuple[str, float]]  # the answer position's top tokens (label, probability)
    steered_top: list[tuple[str, float]]
    strength: float
    direction: Direction


def _top(lm, logits: torch.Tensor, k: int = 8) -> list[tuple[str, float]]:
    probs = torch.softmax(logits.float(), -1)
    top = probs.topk(min(k, probs.numel()))
    return [(token_label(lm.tokenizer, i), float(p)) for i, p in zip(top.indices.tolist(), top.values.tolist())]


@torch.no_grad()
def steer(lm: LoadedModel, text: str, d: Direction, strength: float, new_tokens: int = 20) -> Steered:
    """The model's greedy continuation (or, for an encoder, its fill-in) with and without the direction added."""
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise InputError("The strength is a number.") from None
    if not abs(strength) <= MAX_STRENGTH:  # also refuses NaN
        raise InputError(f"The strength takes a number from −{MAX_STRENGTH:g} to {MAX_STRENGTH:g}.")
    new_tokens = int(min(max(int(new_tokens), 1), MAX_EXPLAINED_TOKENS))
    sites = find_sites(lm)
    prompt = prompt_of(lm, text)
    edit = Edit(d.stream, d.layer, "resid", value=d.vector * strength, add=True)
    outputs = []
    for edits in ([], [edit]):
        with intervene(lm, sites, edits):
            logits = lm.model(**prompt.batch(1)).logits[0, prompt.point]
            written = ""
            if lm.spec.can("generate"):
                pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
                gen = lm.model.generate(
                    input_ids=prompt.inputs["input_ids"], max_new_tokens=new_tokens, do_sample=False, num_beams=1,
                    pad_token_id=pad,
                )  # fmt: skip
                new = gen[0] if lm.spec.adapter.is_encoder_decoder else gen[0, prompt.inputs["input_ids"].shape[1] :]
                drop = {
                    lm.tokenizer.pad_token_id,
                    lm.tokenizer.eos_token_id,
                }  # T5's sentinels stay: they say which span
                written = lm.tokenizer.decode([int(i) for i in new if int(i) not in drop], skip_special_tokens=False)
        outputs.append((written, _top(lm, logits)))
    (plain, plain_top), (steered, steered_top) = outputs
    return Steered(plain, steered, plain_top, steered_top, strength, d)
