"""The KV cache, measured: the same greedy tokens with the cache on and off, timed token by token.

With the cache, each step feeds one new token and reads the keys and values of the earlier ones
from the cache; without it, each step runs the whole text again, so its cost grows with the
position. ``KVCacheExperiment`` alternates runs with and without the cache on one prompt, checks
that both write the same tokens, and records every step's latency and the bytes the cache holds.
``cache_bytes`` measures a cache object; ``formula_bytes`` is what it should hold:
2 (keys and values) × layers × kv-heads × head-dim × positions × bytes per element, and
``cache_memory`` is the tab's calculator of it for any model's shape. ``cache_contents`` cuts one
layer and head of the finished cache at a step; ``time_attention`` times eager against fused attention.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis.decoding.generate import Runner, check_count, check_generative, check_ids, check_room
from explorer.core.errors import InputError
from explorer.core.limits import MAX_TIMED_TOKENS
from explorer.core.loading import LoadedModel
from explorer.core.tokens import token_rows

MAX_REPEATS = 5
# Further runs are made only while the experiment is expected to stay within this many seconds: at the
# largest settings five pairs of runs took ~100 s alone and ~210 s on a busy server, while the class waited.
TIME_BUDGET_S = 30.0
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int4": 0.5}


# ---------------------------------------------------------------- bytes


@dataclass(frozen=True)
class CacheShape:
    """What one position of a model's self-attention KV cache holds (T5: its decoder)."""

    layers: int
    kv_heads: int
    head_dim: int
    heads: int  # query heads: more than kv_heads for grouped-query attention

    @classmethod
    def of(cls, config) -> CacheShape:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        layers = getattr(text, "num_decoder_layers", None) or text.num_hidden_layers
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or getattr(text, "d_kv", None) or text.hidden_size // heads
        return cls(int(layers), int(kv_heads), int(head_dim), int(heads))


def formula_bytes(layers: int, kv_heads: int, head_dim: int, positions: int, bytes_per_element: float) -> int:
    """2 × layers × kv-heads × head-dim × positions × bytes per element."""
    return int(2 * layers * kv_heads * head_dim * positions * bytes_per_element)


@dataclass(frozen=True)
class CacheMemory:
    """What a KV cache of one shape weighs: per token, per sequence of ``context`` positions, for a batch."""

    layers: int
    kv_heads: int
    head_dim: int
    context: int
    batch: int
    bytes_per_element: float

    @property
    def per_token(self) -> int:
        return formula_bytes(self.layers, self.kv_heads, self.head_dim, 1, self.bytes_per_element)

    @property
    def per_sequence(self) -> int:
        return formula_bytes(self.layers, self.kv_heads, self.head_dim, self.context, self.bytes_per_element)

    @property
    def total(self) -> int:
        return self.per_sequence * self.batch


def cache_memory(layers, kv_heads, head_dim, context, dtype: str, batch) -> CacheMemory:
    """The memory calculator: checks each number (whole, 1 or more) and the number format, by name.

    >>> cache_memory(12, 12, 64, 1024, "float16", 1).per_sequence  # GPT-2 small: 36 MiB
    37748736
    """
    for value, what in ((layers, "layers"), (kv_heads, "kv-heads"), (head_dim, "head dimension"),
                        (context, "context"), (batch, "batch")):  # fmt: skip
        if value is None or int(value) < 1:
            raise InputError(f"The {what} must be a whole number, 1 or more.")
    if dtype not in DTYPE_BYTES:
        raise InputError(f"Pick a number format: {', '.join(DTYPE_BYTES)}.")
    return CacheMemory(int(layers), int(kv_heads), int(head_dim), int(context), int(batch), DTYPE_BYTES[dtype])


def _self_attention_layers(cache) -> list:
    inner = getattr(cache, "self_attention_cache", cache)  # encoder-decoders: the decoder's own cache
    return list(inner.layers)


def cache_bytes(cache) -> int:
    """Bytes of the keys and values a cache object holds for the decoder's self-attention."""
    total = 0
    for layer in _self_attention_layers(cache):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def cross_attention_bytes(cache) -> int:
    """Encoder-decoders also cache the encoder's keys and values once (fixed by the source length)."""
    cross = getattr(cache, "cross_attention_cache", None)
    return 0 if cross is None else cache_bytes(cross)


# ---------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _greedy_run(lm: LoadedModel, prompt_ids: list[int], new_tokens: int, use_cache: bool):
    """One greedy generation, each step timed (only the model's step is inside the timer).

    A generator: yields the count of tokens made after each step, and returns
    ``(tokens, seconds per step, cache bytes after each step, runner)``.
    """
    runner = Runner(lm, prompt_ids, 1, use_cache=use_cache)
    tokens, seconds, held = [], [], []
    for made in range(1, new_tokens + 1):
        _sync(lm.device)
        start = time.perf_counter()
        token = runner.next_logits().argmax(dim=-1)
        _sync(lm.device)
        seconds.append(time.perf_counter() - start)
        held.append(cache_bytes(runner.cache) if runner.cache is not None else 0)
        runner.append(token)
        tokens.append(int(token[0]))
        yield made
    return tokens, seconds, held, runner


@dataclass(frozen=True)
class KVCacheResult:
    """Latencies (repeats, new_tokens) in seconds; step 0 processes the prompt (prefill)."""

    tokens: tuple[int, ...]  # the new tokens
    decoder_ids: tuple[int, ...]  # the decoder side at the end: prompt (or start token) + new tokens
    prompt_length: int  # decoder-side tokens before the first new one
    with_cache: np.ndarray
    without_cache: np.ndarray
    cache_bytes: np.ndarray  # (new_tokens,) measured after each step, cache on
    cross_bytes: int  # encoder-decoders: the encoder's keys and values, cached once
    shape: CacheShape
    bytes_per_element: int
    keys: np.ndarray  # (layers, kv_heads, positions, head_dim) float16: the cache at the end
    values: np.ndarray

    @property
    def positions(self) -> np.ndarray:
        """The position of the token each step writes (0-based); also how many positions the cache
        holds after that step (everything fed so far: the new token itself is fed at the next step)."""
        return self.prompt_length + np.arange(self.with_cache.shape[1])

    @property
    def formula(self) -> np.ndarray:
        """The formula's bytes after each step."""
        s = self.shape
        return np.array([formula_bytes(s.layers, s.kv_heads, s.head_dim, int(p), self.bytes_per_element)
                         for p in self.positions])  # fmt: skip

    def totals(self, cached: bool) -> np.ndarray:
        """Seconds per run (repeats,)."""
        return (self.with_cache if cached else self.without_cache).sum(axis=1)

    def tokens_per_second(self, cached: bool) -> np.ndarray:
        return self.with_cache.shape[1] / self.totals(cached)

    @property
    def speedups(self) -> np.ndarray:
        """Time without the cache over time with it, per repeat (runs are paired in time)."""
        return self.totals(False) / self.totals(True)

    def bytes_at(self, positions: int) -> int:
        """The formula's bytes for ``positions`` positions (e.g. the model's full context)."""
        s = self.shape
        return formula_bytes(s.layers, s.kv_heads, s.head_dim, positions, self.bytes_per_element)

    def slope(self, cached: bool) -> float:
        """Seconds each further position adds to a step (least squares over the steps after the prompt)."""
        latencies = np.median(self.with_cache if cached else self.without_cache, axis=0)[1:]
        if latencies.size < 2:
            return 0.0
        return float(np.polyfit(self.positions[1:], latencies, 1)[0])


class KVCacheExperiment:
    """Greedy generation from one prompt, ``repeats`` times with the cache and without, interleaved.

    ``steps()`` yields ``(done, total, label)`` after every token, so a caller can show progress
    and stop at any point; ``result()`` then summarises the finished pairs of runs. A pair after the
    first starts only if, at the pace of the previous one, it ends within ``budget_s`` of the start.
    """

    def __init__(
        self, lm: LoadedModel, prompt_ids, new_tokens: int = 64, repeats: int = 3, budget_s: float = TIME_BUDGET_S
    ):
        check_generative(lm)
        self.budget_s = budget_s
        self.lm = lm
        self.prompt_ids = check_ids(lm, prompt_ids)
        self.new_tokens = check_count(new_tokens, 2, MAX_TIMED_TOKENS, "number of new tokens")
        self.repeats = check_count(repeats, 1, MAX_REPEATS, "number of repeats")
        check_room(lm, len(self.prompt_ids), self.new_tokens)
        self._runs: dict[bool, list] = {True: [], False: []}

    def steps(self):
        """Runs the experiment, yielding ``(done, total, label)`` after every generated token."""
        n = self.new_tokens
        warm_up = min(n, 8)
        total, done = warm_up + 2 * self.repeats * n, 0
        runs = [("warming up (untimed)", None, warm_up)] + [
            (f"run {r + 1} of {self.repeats}, cache {'on' if cached else 'off'}", cached, n)
            for r in range(self.repeats) for cached in (True, False)
        ]  # fmt: skip
        # No grad-mode context around the yields: a UI may resume this generator on another thread,
        # and the mode would stay set on the first one. The model's steps run under no_grad themselves.
        start, pair_started = time.perf_counter(), None
        for label, cached, length in runs:
            if cached is True:  # a new pair of runs: made only if it is expected to end within the budget
                now = time.perf_counter()
                if pair_started is not None and now + (now - pair_started) - start > self.budget_s:
                    return
                pair_started = now
            steps = _greedy_run(self.lm, self.prompt_ids, length, cached is not False)
            while True:
                try:
                    made = next(steps)
                except StopIteration as end:
                    if cached is not None:
                        self._runs[cached].append(end.value)
                    break
                done += 1
                yield done, total, f"{label}: token {made} of {length}"

    @property
    def runs_done(self) -> int:
        """Pairs of runs (cache on and off) finished: fewer than asked when the time budget ran out."""
        return min(len(self._runs[True]), len(self._runs[False]))

    def result(self) -> KVCacheResult:
        on, off = self._runs[True], self._runs[False]
        if not on or not off:
            raise InputError("The experiment was stopped before a run with and without the cache finished.")
        on, off = on[: self.runs_done], off[: self.runs_done]
        for tokens, *_ in on + off:
            if tokens != on[0][0]:
                step = next(i for i, (a, b) in enumerate(zip(tokens, on[0][0])) if a != b)
                raise InputError(
                    f"With and without the cache the model chose different tokens from step {step + 1} on (two "
                    "near-equal scores rounded differently), so the runs are not comparable: try another text."
                )
        tokens, _, held, runner = on[0]
        layers = _self_attention_layers(runner.cache)
        keys = np.stack([layer.keys[0].float().cpu().numpy() for layer in layers]).astype(np.float16)
        values = np.stack([layer.values[0].float().cpu().numpy() for layer in layers]).astype(np.float16)
        element = layers[0].keys.element_size()
        return KVCacheResult(
            tuple(tokens), tuple(runner.ids[0].tolist()), runner.prompt_len,
            np.array([s for _, s, _, _ in on]), np.array([s for _, s, _, _ in off]), np.array(held), cross_attention_bytes(runner.cache), CacheShape.of(self.lm.model.config), element,
            keys, values,
        )  # fmt: skip


@dataclass(frozen=True)
class CacheContents:
    """The cached keys or values of one layer and kv-head after one step: (rows, head_dim), one row per position."""

    kind: str  # "keys" or "values"
    layer: int
    head: int
    step: int  # 0-based
    matrix: np.ndarray  # (rows, head_dim) float32
    labels: tuple[str, ...]  # the token at each cached position, made visible

    @property
    def rows(self) -> int:
        return self.matrix.shape[0]


def cache_contents(
    result: KVCacheResult, tokenizer, kind: str, layer, head, step, model: str = "the model"
) -> CacheContents:
    """What the cache held after ``step`` (clipped to the last step) for one layer and kv-head.

    The cache only grows: after step s it holds every position fed so far (``result.positions[s]``),
    and no earlier row ever changes. A layer or head outside the cache is refused, naming ``model``.
    """
    data = result.keys if kind == "keys" else result.values  # (layers, kv_heads, positions, dim)
    layers, heads = data.shape[:2]
    layer, head = int(layer), int(head)
    if not (0 <= layer < layers and 0 <= head < heads):
        raise InputError(f"{model} caches {layers} layers × {heads} kv-heads: pick layer < {layers}, head < {heads}.")
    step = min(int(step), result.with_cache.shape[1] - 1)
    rows = int(result.positions[step])  # positions held after that step
    labels = tuple(t.display for t in token_rows(tokenizer, list(result.decoder_ids[:rows]), None))
    return CacheContents(kind, layer, head, step, data[layer, head, :rows].astype(np.float32), labels)


def run_experiment(lm: LoadedModel, prompt_ids, new_tokens: int = 64, repeats: int = 3) -> KVCacheResult:
    """The whole experiment at once (tests and benches)."""
    experiment = KVCacheExperiment(lm, prompt_ids, new_tokens, repeats)
    for _ in experiment.steps():
        pass
    return experiment.result()


# ---------------------------------------------------------------- eager vs fused attention


@dataclass(frozen=True)
class AttentionTiming:
    tokens: int
    eager_seconds: np.ndarray  # (repeats,)
    fused_seconds: np.ndarray

    @property
    def speedup(self) -> float:
        return float(np.median(self.eager_seconds) / np.median(self.fused_seconds))

    @property
    def eager_ms(self) -> float:
        return float(np.median(self.eager_seconds) * 1e3)

    @property
    def fused_ms(self) -> float:
        return float(np.median(self.fused_seconds) * 1e3)


MAX_COPY_BYTES = 1_000_000_000  # the fused-attention copy is made per request; bigger models are refused


def time_attention(lm: LoadedModel, ids, repeats: int = 5) -> AttentionTiming:
    """One forward pass over ``ids`` with eager attention (the shared model) and with fused SDPA.

    The fused run uses a private copy of the model switched to ``sdpa``, so the shared model is
    never changed; the copy is dropped at the end.
    """
    ids = check_ids(lm, ids)
    repeats = check_count(repeats, 1, 20, "number of repeats")
    if lm.nbytes > MAX_COPY_BYTES:
        raise InputError(f"{lm.spec.key} is too big to copy for this comparison ({lm.nbytes / 1e9:.1f} GB).")
    fused = copy.deepcopy(lm.model)
    fused.set_attn_implementation("sdpa")
    x = torch.tensor([ids], device=lm.device)
    inputs = {"input_ids": x}
    if lm.spec.adapter.is_encoder_decoder:
        inputs["decoder_input_ids"] = x
    models = {"eager": lm.model, "fused": fused}
    timings = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(**inputs)  # warm-up
        for _ in range(repeats):  # interleaved, so both see the same load on a shared machine
            for name, model in models.items():
                _sync(lm.device)
                start = time.perf_counter()
                model(**inputs)
                _sync(lm.device)
                timings[name].append(time.perf_counter() - start)
    return AttentionTiming(len(ids), np.array(timings["eager"]), np.array(timings["fused"]))


def time_attention_at_length(lm: LoadedModel, ids, tokens, repeats: int = 5) -> AttentionTiming:
    """``time_attention`` on ``ids`` repeated (or cut) to ``tokens`` tokens, at most the model's positions
    (512 where it names none): ``timing.tokens`` says how many were timed."""
    ids = list(ids)
    if not ids:
        raise InputError("The text has no tokens to time.")
    n = min(int(tokens), lm.max_positions or 512)
    return time_attention(lm, (ids * (n // len(ids) + 1))[:n], repeats=repeats)
