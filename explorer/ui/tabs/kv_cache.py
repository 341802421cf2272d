"""KV cache tab: generate with the cache on and off, timed; what the cache holds and what it costs in memory."""

from __future__ import annotations

import time

import gradio as gr
import numpy as np

from explorer.analysis.inference import attention_variants
from explorer.analysis.inference.kv_cache import (
    DTYPE_BYTES,
    MAX_REPEATS,
    CacheMemory,
    CacheShape,
    KVCacheExperiment,
    cache_contents,
    cache_memory,
    time_attention_at_length,
)
from explorer.core.errors import InputError
from explorer.core.family import GENERATE
from explorer.core.limits import MAX_TIMED_TOKENS as MAX_NEW_TOKENS
from explorer.plots.inference import variant_bars
from explorer.plots.kv_cache import cache_heatmap, latency_plot, memory_plot
from explorer.plots.text import message_figure
from explorer.ui.context import AppContext, about, bind, guarded, md_escape, warning
from explorer.ui.gpu import on_gpu

EXPLANATION = """Each new token attends to every earlier one, through their **keys** and **values**. Without a \
cache the model recomputes them all at every step, so a step costs more the longer the text; a **KV cache** keeps \
them, so a step only computes the new token's. Run the experiment: the same greedy tokens with the cache on and \
off, timed token by token on this machine. The price is memory: 2 (keys and values) × layers × kv-heads × \
head-dim × positions × bytes per number, which grows with every token."""
MAX_LAYERS = 128  # the sliders' range until a run fits them to its model; a model's own is checked in the handler
NOT_SHARED = ["explorer-not-shared"]  # settings a share link leaves out (see explorer.ui.share)
MAX_HEADS = 128
MAX_POSITIONS = 2048
# Timings want the machine to themselves: one experiment at a time, and one eager-vs-fused timing at a time,
# each in its own queue so a short timing never waits behind a long experiment (which is itself time-bounded).
EXPERIMENT_QUEUE = {"concurrency_limit": 1, "concurrency_id": "kv_cache"}
TIMING_QUEUE = {"concurrency_limit": 1, "concurrency_id": "attention_timing"}


def _mib(n: float) -> str:
    return f"{n / 2**20:,.2f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def _spread(values: np.ndarray, fmt: str) -> str:
    values = np.asarray(values, float)
    if values.size == 1:
        return format(values[0], fmt)
    return f"{format(values.mean(), fmt)} ± {format(values.std(ddof=1), fmt)}"


def summary(result, lm, where: str = "") -> str:
    """The experiment's numbers as a small table, and what the cache would weigh at full context.

    ``where`` names the model and text it ran on: the selection may have changed since it started."""
    speedups = result.speedups
    n = result.with_cache.shape[1]
    lines = [
        (f"Run on **{md_escape(where)}**: " if where else "")
        + f"**{n} tokens, {len(speedups)} runs each way.** Same tokens with and without the cache: checked.",
        "",
        "| | cache on | cache off |",
        "|---|---|---|",
        f"| total time (s) | {_spread(result.totals(True), '.3f')} | {_spread(result.totals(False), '.3f')} |",
        f"| tokens per second | {_spread(result.tokens_per_second(True), '.1f')} "
        f"| {_spread(result.tokens_per_second(False), '.1f')} |",
        f"| each further position adds | {result.slope(True) * 1e3:+.3f} ms | {result.slope(False) * 1e3:+.3f} ms |",
        "",
        f"**Speed-up: {np.median(speedups):.2f}×** (runs ranged {speedups.min():.2f}× to {speedups.max():.2f}×).",
    ]
    shape, held = result.shape, int(result.cache_bytes[-1])
    limit = lm.max_positions
    positions = int(result.positions[-1])
    lines.append(
        f"The cache ended holding **{_mib(held)}** for {positions} positions; the formula 2 × {shape.layers} layers × "
        f"{shape.kv_heads} kv-heads × {shape.head_dim} dims × {positions} positions × {result.bytes_per_element} "
        f"bytes gives {_mib(result.formula[-1])}."
    )
    if limit:
        lines.append(
            f"At this model's full context of {limit:,} positions it would hold {_mib(result.bytes_at(limit))} per sequence."
        )
    if result.cross_bytes:
        lines.append(
            f"The encoder's keys and values for the source take {_mib(result.cross_bytes)} more, computed once."
        )
    return "\n".join(lines)


def calculator_note(memory: CacheMemory) -> str:
    """The calculator's sum, written out."""
    m = memory
    return (
        f"2 × {m.layers} × {m.kv_heads} × {m.head_dim} × {m.context:,} × {m.bytes_per_element} bytes = "
        f"**{_mib(m.per_sequence)} per sequence** ({m.per_token / 1024:,.1f} KiB per token); "
        f"for a batch of {m.batch}: **{_mib(m.total)}**."
    )


CALCULATOR_PRESETS = {  # layers, kv-heads, head dim, context: from each model's published config
    name: (shape.layers, shape.kv_heads, shape.head_dim, context)
    for name, (shape, context) in attention_variants.PRESETS.items()
}
VARIANTS_NOTE = """Every query head attends with keys and values; **multi-head** attention caches a key and a value head \
for each query head, **grouped-query** one per group of query heads, **multi-query** a single one for all, so the \
cache shrinks by the same factor (at some cost in quality, which this view does not measure). Speed is another \
matter: the eager vs fused timing is above."""


# ---------------------------------------------------------------- handlers (the app context first)

SKIPS = 3  # the contents view's layer, head and step sliders


def _fitted(value, count: int, keep: bool = True):
    """A slider of ``count`` positions (0 … count - 1), its value kept inside (or moved to the last)."""
    last = count - 1
    return gr.update(maximum=max(last, 1), value=min(int(value or 0), last) if keep else last)


@guarded(lambda msg: (gr.skip(), warning(msg), gr.skip(), gr.skip(), *(gr.skip(),) * SKIPS))
def experiment(ctx: AppContext, selection, new_v, repeats_v, layer_v, head_v, progress=gr.Progress()):  # noqa: B008 (gradio injects it)
    """Generate with the cache on and off, timed: progress first, then the numbers, both figures and the
    contents view's sliders fitted to the cache the run made."""
    if selection is None:
        raise InputError("Analyze a text first.")
    lm = ctx.model(selection)
    run = KVCacheExperiment(lm, lm.tokenizer(selection.text)["input_ids"], int(new_v), int(repeats_v))
    shown, key = 0.0, md_escape(lm.spec.key)
    for done, total, label in run.steps():  # after every token; the screen is told a few times a second
        if time.perf_counter() - shown >= 0.25:
            shown = time.perf_counter()
            progress(done / total, desc=label)
            yield gr.skip(), f"⏳ {label} on {key} …", gr.skip(), gr.skip(), *(gr.skip(),) * SKIPS
    result = run.result()
    short = ""
    if run.runs_done < run.repeats:
        short = (
            f"\n\nRan {run.runs_done} of the {run.repeats} runs asked: more would have taken over "
            f"{run.budget_s:.0f} s on this machine. Fewer new tokens leave room for more runs."
        )
    where = about(selection)
    latency = latency_plot(result.positions, result.with_cache, result.without_cache,
                           (result.slope(True), result.slope(False)), where)  # fmt: skip
    memory = memory_plot(result.positions, result.cache_bytes, result.formula, result.cross_bytes, where)
    layers, heads = result.keys.shape[:2]
    fitted = (_fitted(layer_v, layers), _fitted(head_v, heads), _fitted(0, result.with_cache.shape[1], keep=False))
    yield (result, lm.spec.key, where), summary(result, lm, where) + short, latency, memory, *fitted


@guarded(message_figure)
def show_cache(ctx: AppContext, held, kind_v, layer_v, head_v, step_v):
    """One layer and kv-head of the cache after a step, from the last experiment's result (kept in the session)."""
    if held is None:
        return message_figure("Run the experiment to see what the cache holds.")
    result, key, where = held
    shown = cache_contents(result, ctx.pool.get(key).tokenizer, kind_v, layer_v, head_v, step_v, model=key)
    title = (f"Cached {shown.kind} · layer {shown.layer} · kv-head {shown.head} · after step {shown.step + 1}: "
             f"{shown.rows} positions · {where}")  # fmt: skip
    return cache_heatmap(shown.matrix, list(shown.labels), title)


@guarded(lambda msg: warning(msg))
def time_fused(ctx: AppContext, selection, tokens_v):
    """One forward pass with eager and with fused attention, on the text repeated to the length asked."""
    if selection is None:
        raise InputError("Analyze a text first.")
    lm = ctx.model(selection)
    timing = time_attention_at_length(lm, lm.tokenizer(selection.text)["input_ids"], tokens_v, repeats=5)
    capped = f" (this model sees at most {timing.tokens} positions)" if timing.tokens < int(tokens_v) else ""
    return (
        f"{timing.tokens} tokens{capped}: eager **{timing.eager_ms:.1f} ms**, fused **{timing.fused_ms:.1f} ms** "
        f"(median of 5): fused is **{timing.speedup:.2f}×** as fast. On a GPU and at long contexts the gap widens; "
        "on a CPU with short texts it can be small."
    )


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB"


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def variants_view(ctx: AppContext, selection, positions_v, dtype):
    """The cache of the loaded model and of the presets under each attention variant, at ``positions_v``
    positions; and each variant measured on a tiny random Llama model beside the formula."""
    key, shape = None, None
    if selection is not None:
        lm = ctx.model(selection)
        key, shape = lm.spec.key, CacheShape.of(lm.model.config)
    if positions_v is None or not 1 <= int(positions_v) <= 10**7:
        raise InputError("The number of positions must be a whole number from 1 to 10,000,000.")
    rows = attention_variants.compare_variants(key, shape, int(positions_v), dtype)
    measured = attention_variants.measure_variants()
    m0 = measured[0]
    checked = " · ".join(
        f"{m.variant} ({m.kv_heads} kv-heads): measured {_kib(m.measured_bytes)}, formula {_kib(m.formula_bytes)}"
        for m in measured
    )
    same = all(m.measured_bytes == m.formula_bytes for m in measured)
    note = (
        (f"**{md_escape(key)}** is built with {attention_variants.built_variant(shape)} attention "
         f"({shape.heads} query heads, {shape.kv_heads} kv-heads). " if shape else "")
        + f"Measured on tiny random Llama models ({m0.heads} heads, {m0.layers} layers, head dim {m0.head_dim}, "
        f"{m0.positions} positions, float32), the bytes of the cache a real forward pass returns: {checked}"
        + (" — exactly the formula's." if same else " — ⚠️ not the formula's.")
    )  # fmt: skip
    title = f"KV cache at {int(positions_v):,} positions ({dtype}) by attention variant" + (
        f" · {about(selection)}" if selection is not None else ""
    )
    figure = variant_bars([r.model for r in rows], [r.variant for r in rows], [r.nbytes / 2**20 for r in rows],
                          [r.built for r in rows], key, title)  # fmt: skip
    return note, figure


@guarded(lambda msg: warning(msg))
def calculate(ctx: AppContext, layers, kv_heads, head_dim, context, dtype, batch) -> str:
    return calculator_note(cache_memory(layers, kv_heads, head_dim, context, dtype, batch))


def fill_calculator(ctx: AppContext, name):
    return CALCULATOR_PRESETS[name] if name in CALCULATOR_PRESETS else (gr.skip(),) * 4


def from_model(ctx: AppContext, selection, layer_v, head_v):
    """After an analysis: the calculator and the contents view's sliders fitted to the model's cache."""
    try:
        shape = CacheShape.of(ctx.model(selection).model.config) if selection is not None else None
    except Exception:  # the analysis reported it already
        shape = None
    if shape is None:
        return (gr.skip(),) * 5
    return shape.layers, shape.kv_heads, shape.head_dim, _fitted(layer_v, shape.layers), _fitted(head_v, shape.kv_heads)


# ---------------------------------------------------------------- layout and wiring


def build(ctx: AppContext, shared) -> None:
    with gr.Tab("KV cache", id="kv_cache"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        shared.requires(GENERATE)
        with gr.Row():
            new_tokens = gr.Slider(2, MAX_NEW_TOKENS, value=64, step=1, label="New tokens")
            repeats = gr.Slider(1, MAX_REPEATS, value=3, step=1, label="Runs each way")
            run_button = gr.Button("Run the experiment", variant="primary")
            stop_button = gr.Button("Stop", variant="stop")
        result_note = gr.Markdown()
        with gr.Row():
            latency_fig = gr.Plot(label="Latency per token")
            memory_fig = gr.Plot(label="Cache memory")
        with gr.Accordion("What the cache holds", open=True):
            gr.Markdown(
                "The cached keys (or values) of one layer and head after a step: one row per position, "
                "one column per dimension. Each step adds a row; no earlier row changes — that is why they can be kept."
            )
            with gr.Row():
                kind = gr.Radio(["keys", "values"], value="keys", label="Show")
                layer = gr.Slider(0, MAX_LAYERS - 1, value=0, step=1, label="Layer")
                head = gr.Slider(0, MAX_HEADS - 1, value=0, step=1, label="KV head")
                step = gr.Slider(0, MAX_NEW_TOKENS - 1, value=MAX_NEW_TOKENS - 1, step=1, label="After step")
            cache_fig = gr.Plot(label="Cache contents")
        with gr.Accordion("Memory calculator", open=False):
            with gr.Row():
                preset = gr.Dropdown(list(CALCULATOR_PRESETS), label="Fill in from", value=None)
                # filled from the analysed model, so not a setting a share link should carry
                calc_layers = gr.Number(12, label="Layers", precision=0, elem_classes=NOT_SHARED)
                calc_heads = gr.Number(12, label="KV heads", precision=0, elem_classes=NOT_SHARED)
                calc_dim = gr.Number(64, label="Head dimension", precision=0, elem_classes=NOT_SHARED)
                calc_context = gr.Number(1024, label="Context (positions)", precision=0)
                calc_dtype = gr.Dropdown(list(DTYPE_BYTES), value="float16", label="Numbers stored as")
                calc_batch = gr.Number(1, label="Batch", precision=0)
            calc_note = gr.Markdown()
        with gr.Accordion("Eager vs fused attention", open=False):
            gr.Markdown(
                "The same forward pass with eager attention (every weight materialised, which is what lets this app "
                "show attention maps) and with PyTorch's fused `scaled_dot_product_attention` (the FlashAttention idea: "
                "never write the full weight matrix). The fused run uses a private copy of the model."
            )
            with gr.Row():
                attn_tokens = gr.Slider(8, MAX_POSITIONS, value=256, step=8, label="Tokens (the text, repeated)")
                attn_button = gr.Button("Time both")
            attn_note = gr.Markdown()
        with gr.Accordion("Attention variants: multi-head, grouped-query, multi-query", open=False):
            gr.Markdown(VARIANTS_NOTE)
            with gr.Row():
                var_positions = gr.Number(1024, label="Positions", precision=0)
                var_dtype = gr.Dropdown(list(DTYPE_BYTES), value="float16", label="Numbers stored as")
                var_button = gr.Button("Compare the variants")
            var_note = gr.Markdown()
            var_fig = gr.Plot(label="Attention variants")
        result_state = gr.State(None)

    running = run_button.click(
        on_gpu(bind(experiment, ctx)), [shared.state, new_tokens, repeats, layer, head],
        [result_state, result_note, latency_fig, memory_fig, layer, head, step],
        api_name="kv_cache", **EXPERIMENT_QUEUE,
    )  # fmt: skip
    stop_button.click(None, None, None, cancels=[running], api_name=False)
    shared.results_of_analysis(result_state, result_note, latency_fig, memory_fig, cache_fig, attn_note, var_note,
                               var_fig)  # fmt: skip
    cache_inputs = [result_state, kind, layer, head, step]
    running.then(bind(show_cache, ctx), cache_inputs, cache_fig, api_name="kv_cache_contents")
    for control in (kind, layer, head, step):
        control.change(bind(show_cache, ctx), cache_inputs, cache_fig, api_name=False, trigger_mode="always_last")
    calc_inputs = [calc_layers, calc_heads, calc_dim, calc_context, calc_dtype, calc_batch]
    for control in calc_inputs:
        control.change(bind(calculate, ctx), calc_inputs, calc_note, api_name=False)
    preset.change(bind(fill_calculator, ctx), preset, [calc_layers, calc_heads, calc_dim, calc_context], api_name=False)
    shared.on_analyzed(
        bind(from_model, ctx), [shared.state, layer, head], [calc_layers, calc_heads, calc_dim, layer, head]
    )
    attn_button.click(
        bind(time_fused, ctx), [shared.state, attn_tokens], attn_note, api_name="attention_timing", **TIMING_QUEUE
    )
    var_button.click(bind(variants_view, ctx), [shared.state, var_positions, var_dtype], [var_note, var_fig],
                     api_name="kv_cache_variants")  # fmt: skip
