"""The instrumented run: one forward pass that keeps every attention map and hidden state.

``run(lm, text)`` tokenizes, runs the model once with ``output_attentions`` and
``output_hidden_states`` (the model is loaded with eager attention, so weights are real) and
returns a frozen ``Trace``. ``RunCache`` keeps recent traces so re-plots never re-run the model.

A large model's full trace does not fit a cache (a 32-layer, 32-head model at 512 tokens holds 1 GB of
attention maps, and 512 x 128k logits another 260 MB). ``run(..., keep_bytes=n)`` keeps everything when the
trace would hold at most ``n`` bytes (the bundled models and GPT-2-small at 512 tokens: their traces are
exactly today's) and otherwise a *bounded* trace: the top ``TOP_K`` logits per position (fewer if even
those would not fit) with each row's
log-sum-exp, and as many evenly spaced layers of every attention kind and hidden stream as fit in ``n``;
another layer is computed again when a view asks for it (see ``explorer.core.trace``). ``RunCache`` bounds
the traces it keeps by ``EXPLORER_TRACE_MB``; ``run`` called directly keeps everything, as analyses that
compare whole distributions (ablation, patching) need.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import numpy as np
import torch

from explorer.core.cache import BoundedCache
from explorer.core.errors import InputError
from explorer.core.limits import MAX_CHARS, MAX_RUN_NEW_TOKENS, MAX_TOKENS
from explorer.core.loading import LoadedModel
from explorer.core.memory import to_host
from explorer.core.settings import settings
from explorer.core.tokens import decoded_offsets, encode, token_rows
from explorer.core.trace import KeptLayers, LayerNotKept, TopLogits, Trace

TOP_K = 50  # logits a bounded trace keeps per position
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


def _unloaded():
    return None


class Refetch:
    """Runs a bounded trace's model again to get one layer it did not keep (one forward pass per miss).

    Holds the model weakly: once the pool has dropped it, a missing layer gets a sentence instead. The last
    few layers fetched are remembered (``keep`` of them), so moving between two layers costs one pass each.
    """

    def __init__(self, model_key: str, model, forward, inputs: dict, fields: dict[str, str], keep: int = 4):
        self.model_key = model_key
        self._model = weakref.ref(model)
        self._forward = forward  # None: the model itself
        self._inputs = inputs  # CPU tensors of the pass (ids), moved to the model's device per pass
        self._fields = fields  # attention kind or hidden stream -> the output's field
        self._recent: OrderedDict = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def __call__(self, name: str, index: int) -> np.ndarray:
        with self._lock:
            if (name, index) in self._recent:
                self._recent.move_to_end((name, index))
                return self._recent[(name, index)]
        model = self._model()
        if model is None:
            raise LayerNotKept(
                f"Layer {index} is not kept for {self.model_key} at this size, and the model has been unloaded "
                "since: analyse the text again to see it."
            )
        with torch.no_grad():
            device = next(model.parameters()).device
            out = (self._forward or model)(**{k: v.to(device) for k, v in self._inputs.items()},
                                           output_attentions=True, output_hidden_states=True)  # fmt: skip
            layer = to_host(getattr(out, self._fields[name])[index][0])
        with self._lock:
            self._recent[(name, index)] = layer
            while len(self._recent) > self._keep:
                self._recent.popitem(last=False)
        return layer

    def __getstate__(self):  # a pickled trace (a ZeroGPU worker's result) cannot reach the model
        state = dict(self.__dict__, _model=_unloaded, _forward=None, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())


def _projected_bytes(attentions: dict, hidden: dict, logits) -> int:
    """What a full trace of these outputs holds in float32: attention maps, hidden states and logits."""
    tensors = [t for layers in (*attentions.values(), *hidden.values()) for t in layers]
    if logits is not None:
        tensors.append(logits)
    return 4 * sum(t.numel() for t in tensors)


def _evenly(n: int, count: int) -> list[int]:
    """``count`` of the indices 0..n-1, evenly spaced, the first and the last among them (all when count >= n)."""
    if count >= n:
        return list(range(n))
    if count <= 1:
        return [n - 1] * count
    return sorted({int(i) for i in np.linspace(0, n - 1, count).round()})


def _bounded(attentions: dict, hidden: dict, logits, keep_bytes: int, fixed: int, refetch: Refetch, meta: dict):
    """Bounded attentions, hidden states and logits (see the module docstring) within ``keep_bytes``."""
    top = None
    if logits is not None:
        full = logits.float()
        rows = full.shape[0]
        fits = (int(keep_bytes) - fixed - 8 * rows) // (8 * rows)  # each kept logit: an int32 id, a float32
        values, ids = torch.topk(full, max(1, min(TOP_K, full.shape[-1], fits)), dim=-1)
        top = TopLogits(
            ids.cpu().numpy(), values.cpu().numpy(), torch.logsumexp(full, -1).cpu().numpy(), full.shape[-1]
        )
        fixed += top.nbytes
    per_layer = 4 * sum(layers[0].numel() for layers in (*attentions.values(), *hidden.values()))
    slots = max(0, int(keep_bytes - fixed) // per_layer)

    def keep(name: str, layers) -> KeptLayers:
        shape = (len(layers), *layers[0].shape[1:])
        return KeptLayers(name, shape, {i: _stack(layers[i : i + 1])[0] for i in _evenly(len(layers), slots)}, refetch)

    kept_attentions = {name: keep(name, layers) for name, layers in attentions.items()}
    kept_hidden = {name: keep(name, layers) for name, layers in hidden.items()}
    meta["bounded"] = {
        "limit_bytes": int(keep_bytes),
        "full_bytes": _projected_bytes(attentions, hidden, logits),
        "top_k": None if top is None else top.k,
        "layers": {name: sorted(k.kept) for name, k in (*kept_attentions.items(), *kept_hidden.items())},
    }
    return kept_attentions, kept_hidden, top


@torch.no_grad()
def run(
    lm: LoadedModel,
    text: str,
    target: str | None = None,
    max_new_tokens: int = 20,
    generate: int = 0,
    forward=None,
    keep_bytes: int | None = None,
) -> Trace:
    """Run ``lm`` once on ``text`` and keep everything (see ``Trace``), or what fits ``keep_bytes``.

    For encoder-decoders, ``text`` is the source; the target stream is ``target`` when given,
    else the model's own greedy output of up to ``max_new_tokens`` tokens.
    For decoders, ``generate`` > 0 first extends the text greedily by that many tokens; the trace
    then covers prompt and continuation (``meta["prompt_tokens"]`` marks the boundary). Under a
    causal mask, row i of each attention map is exactly what token i attended to when generated.
    ``forward`` runs the instrumented pass (default: the model itself; ``explorer.core.nnsight_backend``
    passes one that runs it through nnsight, locally or on NDIF). ``keep_bytes``: when the full trace would
    hold more, a bounded trace (the module docstring); None keeps everything.
    """
    rerun = forward
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
        texts, tokens = {"input": text}, {"input": token_rows(lm.tokenizer, ids, offsets)}
        attentions, hidden = {"self": out.attentions}, {"input": out.hidden_states}
        logits = out.logits[0] if getattr(out, "logits", None) is not None else None
        inputs, fields = {"input_ids": x.cpu()}, {"self": "attentions", "input": "hidden_states"}
    else:
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
        texts = {"source": text, "target": lm.tokenizer.decode(dec, skip_special_tokens=True)}
        tokens = {
            "source": token_rows(lm.tokenizer, ids, offsets),
            "target": token_rows(lm.tokenizer, dec, decoded_offsets(lm.tokenizer, dec)),
        }
        attentions = {
            "encoder_self": out.encoder_attentions,
            "decoder_self": out.decoder_attentions,
            "cross": out.cross_attentions,
        }
        hidden = {"source": out.encoder_hidden_states, "target": out.decoder_hidden_states}
        logits = out.logits[0]
        inputs = {"input_ids": x.cpu(), "decoder_input_ids": y.cpu()}
        fields = {
            "encoder_self": "encoder_attentions", "decoder_self": "decoder_attentions", "cross": "cross_attentions",
            "source": "encoder_hidden_states", "target": "decoder_hidden_states",
        }  # fmt: skip
    if keep_bytes is None or _projected_bytes(attentions, hidden, logits) <= keep_bytes:
        return Trace(
            lm.spec.key, adapter.family, texts, tokens,
            {name: _stack(layers) for name, layers in attentions.items()},
            {name: _stack(layers) for name, layers in hidden.items()},
            None if logits is None else logits.float().cpu().numpy(), meta,
        )  # fmt: skip
    refetch = Refetch(lm.spec.key, lm.model, rerun, inputs, fields)
    fixed = 200 * sum(len(t) for t in tokens.values())  # what ``Trace.nbytes`` counts for the token rows
    kept_attentions, kept_hidden, top = _bounded(attentions, hidden, logits, keep_bytes, fixed, refetch, meta)
    return Trace(lm.spec.key, adapter.family, texts, tokens, kept_attentions, kept_hidden, top, meta)


class RunCache:
    """Recent traces keyed by (model, inputs, settings), bounded by bytes, least recently used first out;
    each trace bounded by ``trace_bytes`` (a large model's: top-k logits and some layers, see ``run``).

    Thread-safe; two requests for the same key at once run the model once (a ``BoundedCache``).
    """

    def __init__(self, max_bytes: int = 512 * 2**20, trace_bytes: int | None = None):
        self._traces: BoundedCache[Trace] = BoundedCache(max_bytes, size=lambda t: t.nbytes)
        self._trace_bytes = trace_bytes  # None: the process's EXPLORER_TRACE_MB

    @property
    def trace_bytes(self) -> int:
        """The most one kept trace holds; a larger model's traces are bounded (see ``run``)."""
        return settings().trace_bytes if self._trace_bytes is None else self._trace_bytes

    @staticmethod
    def key(lm: LoadedModel, text: str, target: str | None, max_new_tokens: int, generate: int) -> tuple:
        generated = lm.spec.adapter.is_encoder_decoder and target is None
        extended = generate if lm.spec.adapter.continues_prompt else 0
        return (lm.spec.key, lm.spec.source, text, target, max_new_tokens if generated else None, extended)

    def get(
        self, lm: LoadedModel, text: str, target: str | None = None, max_new_tokens: int = 20, generate: int = 0
    ) -> Trace:
        key = self.key(lm, text, target, max_new_tokens, generate)
        return self._traces.get(
            key, lambda: run(lm, text, target, max_new_tokens, generate, keep_bytes=self.trace_bytes)
        )

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


def use_torch_threads(threads: int) -> int:
    """Give each model run ``threads`` intra-op threads (``EXPLORER_TORCH_THREADS``; 0 leaves torch's default, one
    per core); returns the number a run now uses. Called once at start-up, before gradio's worker threads start:
    each takes the number set here.

    A server runs several requests at once, each in its own thread with its own team of intra-op threads (torch's
    default: one per core each). ``bench/load.py --real --compare`` measures the default against one thread per
    run (``docs/scaling.md``, "Capacity per replica").
    """
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
