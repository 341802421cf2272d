"""The instrumented run: one forward pass that keeps every attention map and hidden state.

``run(lm, text)`` tokenizes, runs the model once with ``output_attentions`` and
``output_hidden_states`` (the model is loaded with eager attention, so weights are real) and
returns a frozen ``Trace``. ``RunCache`` keeps recent traces so re-plots never re-run the model.
"""

from __future__ import annotations

import numpy as np
import torch

from explorer.core.cache import BoundedCache
from explorer.core.errors import InputError
from explorer.core.limits import MAX_CHARS, MAX_RUN_NEW_TOKENS, MAX_TOKENS
from explorer.core.loading import LoadedModel
from explorer.core.tokens import decoded_offsets, encode, token_rows
from explorer.core.trace import Trace

JUNK = {"\x7f", "\ufffd"}  # delete and the replacement character: bytes that were not text


def check_text(text, what: str = "text", allow_empty: bool = False) -> str:
    """Refuse what cannot be tokenized meaningfully, with a sentence saying why."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InputError(f"The {what} must be a string, not {type(text).__name__}.")
    if not allow_empty and not text.strip():
        raise InputError(f"The {what} is empty: type a few words.")
    if len(text) > MAX_CHARS:
        raise InputError(f"The {what} has {len(text):,} characters; at most {MAX_CHARS:,} can be analysed at once.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(f"The {what} holds an invalid character (a lone surrogate at position {err.start}).") from err
    return text


def binary_note(text: str, what: str = "text") -> str | None:
    """A sentence when a text looks like binary data (a NUL byte, or more than 1% control or undecodable
    characters), which a tokenizer takes without a word; None for plain text. Such a text is still analysed."""
    junk = [i for i, ch in enumerate(text or "") if ch in JUNK or (ch < " " and ch not in "\t\n\r")]
    if junk and ("\x00" in text or len(junk) > max(2, len(text) // 100)):
        return (
            f"The {what} looks like binary data: {len(junk):,} control or undecodable characters (the first at "
            f"position {junk[0]}); they are analysed as they are."
        )
    return None


def _max_positions(lm: LoadedModel) -> int:
    return min(MAX_TOKENS, lm.max_positions or MAX_TOKENS)


def _encode(lm: LoadedModel, text: str, add_special_tokens: bool = True):
    ids, offsets = encode(lm.tokenizer, text, add_special_tokens)
    limit = _max_positions(lm)
    truncated = len(ids) > limit
    if truncated:
        ids, offsets = ids[:limit], offsets[:limit]
    if not ids:
        raise InputError("The text produced no tokens.")
    return ids, offsets, truncated


def _continue(lm: LoadedModel, ids: list[int], offsets: list, text: str, steps: int):
    """Greedy continuation of a decoder's input: (all ids, all offsets, prompt + continuation text)."""
    steps = int(np.clip(steps, 1, MAX_RUN_NEW_TOKENS))
    steps = min(steps, _max_positions(lm) - len(ids))
    if steps <= 0:
        return ids, offsets, text
    x = torch.tensor([ids], device=lm.device)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    new = lm.model.generate(input_ids=x, max_new_tokens=steps, do_sample=False, num_beams=1, pad_token_id=pad)
    new = new[0, len(ids) :].tolist()
    continuation = lm.tokenizer.decode(new, skip_special_tokens=False)
    base = len(text)
    new_offsets = [(base + a, base + b) for a, b in decoded_offsets(lm.tokenizer, new)]
    return ids + new, offsets + new_offsets, text + continuation


def _stack(layers) -> np.ndarray:
    """A tuple of per-layer (1, ...) tensors -> one (L, ...) float32 array."""
    return torch.cat(layers, dim=0).float().cpu().numpy()


@torch.no_grad()
def run(
    lm: LoadedModel, text: str, target: str | None = None, max_new_tokens: int = 20, generate: int = 0, forward=None
) -> Trace:
    """Run ``lm`` once on ``text`` and keep everything (see ``Trace``).

    For encoder-decoders, ``text`` is the source; the target stream is ``target`` when given,
    else the model's own greedy output of up to ``max_new_tokens`` tokens.
    For decoders, ``generate`` > 0 first extends the text greedily by that many tokens; the trace
    then covers prompt and continuation (``meta["prompt_tokens"]`` marks the boundary). Under a
    causal mask, row i of each attention map is exactly what token i attended to when generated.
    ``forward`` runs the instrumented pass (default: the model itself; ``explorer.core.nnsight_backend``
    passes one that runs it through nnsight, locally or on NDIF).
    """
    forward = forward or lm.model
    text = check_text(text)
    adapter = lm.spec.adapter
    ids, offsets, truncated = _encode(lm, text)
    x = torch.tensor([ids], device=lm.device)
    meta = {"truncated": truncated, "max_tokens": _max_positions(lm)}
    if adapter.continues_prompt and generate > 0:
        ids, offsets, text = _continue(lm, ids, offsets, text, generate)
        meta["prompt_tokens"] = x.shape[1]
        x = torch.tensor([ids], device=lm.device)
    if not adapter.is_encoder_decoder:
        out = forward(input_ids=x, output_attentions=True, output_hidden_states=True)
        logits = out.logits[0].float().cpu().numpy() if getattr(out, "logits", None) is not None else None
        return Trace(
            lm.spec.key, adapter.family, {"input": text}, {"input": token_rows(lm.tokenizer, ids, offsets)},
            {"self": _stack(out.attentions)}, {"input": _stack(out.hidden_states)}, logits, meta,
        )  # fmt: skip
    start = lm.model.config.decoder_start_token_id
    if target is not None:
        target = check_text(target, "target text", allow_empty=True)
        tgt = lm.tokenizer(text_target=target, add_special_tokens=False)["input_ids"][: _max_positions(lm) - 1]
        dec = [start, *tgt]
        meta["target_source"] = "given"
    else:
        steps = int(np.clip(max_new_tokens, 1, MAX_RUN_NEW_TOKENS))
        gen = lm.model.generate(input_ids=x, max_new_tokens=steps, do_sample=False, num_beams=1)
        dec = gen[0].tolist()
        meta["target_source"] = "generated"
    y = torch.tensor([dec], device=lm.device)
    out = forward(input_ids=x, decoder_input_ids=y, output_attentions=True, output_hidden_states=True)
    target_text = lm.tokenizer.decode(dec, skip_special_tokens=True)
    return Trace(
        lm.spec.key,
        adapter.family,
        {"source": text, "target": target_text},
        {
            "source": token_rows(lm.tokenizer, ids, offsets),
            "target": token_rows(lm.tokenizer, dec, decoded_offsets(lm.tokenizer, dec)),
        },
        {
            "encoder_self": _stack(out.encoder_attentions),
            "decoder_self": _stack(out.decoder_attentions),
            "cross": _stack(out.cross_attentions),
        },
        {"source": _stack(out.encoder_hidden_states), "target": _stack(out.decoder_hidden_states)},
        out.logits[0].float().cpu().numpy(),
        meta,
    )


class RunCache:
    """Recent traces keyed by (model, inputs, settings), bounded by bytes, least recently used first out.

    Thread-safe; two requests for the same key at once run the model once (a ``BoundedCache``).
    """

    def __init__(self, max_bytes: int = 512 * 2**20):
        self._traces: BoundedCache[Trace] = BoundedCache(max_bytes, size=lambda t: t.nbytes)

    @staticmethod
    def key(lm: LoadedModel, text: str, target: str | None, max_new_tokens: int, generate: int) -> tuple:
        generated = lm.spec.adapter.is_encoder_decoder and target is None
        extended = generate if lm.spec.adapter.continues_prompt else 0
        return (lm.spec.key, lm.spec.source, text, target, max_new_tokens if generated else None, extended)

    def get(
        self, lm: LoadedModel, text: str, target: str | None = None, max_new_tokens: int = 20, generate: int = 0
    ) -> Trace:
        key = self.key(lm, text, target, max_new_tokens, generate)
        return self._traces.get(key, lambda: run(lm, text, target, max_new_tokens, generate))

    @property
    def max_bytes(self) -> int:
        return self._traces.max_bytes

    @property
    def nbytes(self) -> int:
        return self._traces.nbytes

    @property
    def hits(self) -> int:
        return self._traces.hits

    @property
    def misses(self) -> int:
        return self._traces.misses

    def __len__(self) -> int:
        return len(self._traces)
