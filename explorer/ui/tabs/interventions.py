"""Interventions tab: switch heads, attention layers or MLPs off, patch activations from a clean run into a
corrupted one, add a steering direction, and see the answer move. Long sweeps show progress and can stop."""

from __future__ import annotations

import gradio as gr
import numpy as np

from explorer.analysis.attention.heads import head_statistics
from explorer.analysis.decoding.logit_lens import top_token_grid
from explorer.analysis.interventions import ablation, patching, steering
from explorer.analysis.interventions.sites import SITE_NAMES
from explorer.core.errors import InputError
from explorer.core.family import LM_HEAD
from explorer.core.limits import MAX_EXPLAINED_TOKENS
from explorer.plots.attention import attention_heatmap
from explorer.plots.decoding import logit_lens_grid
from explorer.plots.interventions import distribution_pair, effect_heatmap
from explorer.plots.text import message_figure
from explorer.ui.context import AppContext, Selection, about, bind, guarded, layer_slider, md_escape, warning
from explorer.ui.stops import StopRequests

EXPLANATION = """Attention shows where a head *looks*; an **intervention** shows what it *does*. **Ablate**: switch \
heads, a layer's attention or its MLP off — *zero* removes the output, *mean* replaces it by its average over a \
reference text — and compare the answer before and after. **Head importance** ablates every head in turn and \
maps how much the answer's log-probability drops. **Patching** runs a *corrupted* text (the answer changed) with \
one activation copied in from the clean text: where the clean answer comes back, that layer and position carried \
it. **Steering** adds a direction (the difference of two word lists' mean hidden states) to the residual stream \
and lets the model write with and without it. The answer is read at the last token (decoders), at the mask \
(encoders) or as the next output token (T5)."""
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
ANSWER_SLOT = {"encoder": " [MASK].", "encoder_decoder": " <extra_id_0>."}  # where each family's answer is read
STOPS = StopRequests()
METRICS = {"change": "Δ log-probability of the answer", "kl": "KL divergence of the whole distribution (nats)"}
STREAM_NAMES = {"input": "the model's stack", "source": "encoder", "target": "decoder"}


def _model(ctx: AppContext, selection: Selection | None):
    if selection is None:
        raise InputError("Analyze a text first.")
    return ctx.model(selection)


def _stoppable(request, sweep):
    """``sweep(should_stop)`` under this session's Stop button: a stopped sweep gives what it measured so far,
    and a sentence that says so."""
    with STOPS.running(request) as should_stop:
        try:
            return sweep(should_stop), ""
        except ablation.Stopped as stop:
            return stop.partial, " Stopped: the map shows what was measured so far."


def _progress(progress, what: str):
    return lambda f: progress(f, desc=what)


@guarded(lambda msg: (gr.update(choices=[], value=[]), gr.update(), gr.update(), gr.update(), gr.update()))
def options(ctx: AppContext, selection):
    """The model's parts, attention kinds, stacks and layers, for the pickers."""
    if selection is None:
        return gr.update(choices=[], value=[]), gr.update(), gr.update(), gr.update(), gr.update()
    lm = ctx.model(selection)
    parts = ablation.ablation_options(lm)
    first_head = next(key for _, key in parts if "|head|" in key)
    kinds = list(lm.spec.adapter.attention_kinds)
    streams = [(STREAM_NAMES.get(s, s), s) for s in lm.spec.adapter.streams]
    layers = lm.spec.n_layers - 1
    return (
        gr.update(choices=parts, value=[first_head]),
        gr.update(choices=kinds, value=kinds[0]),
        gr.update(choices=streams, value=streams[0][1]),
        layer_slider(layers, min(1, layers)),
        layer_slider(layers, layers // 2),
    )


def patching_pair(ctx: AppContext, selection) -> tuple[str, str]:
    """The Mary and John pair for the selected model (the text, and its corrupted twin of as many tokens), with
    the answer's slot of the model's family: nothing after it (decoders), a mask (encoders), a sentinel (T5)."""
    family = ctx.model(selection).spec.family if selection is not None else "decoder"
    slot = ANSWER_SLOT.get(family, "")
    return IOI_CLEAN + slot, IOI_CORRUPTED + slot


def _passes(n: int) -> str:
    return f"{n} forward pass{'' if n == 1 else 'es'}"


def _top(dist) -> dict[str, float]:
    return dict(zip(dist.labels, dist.probs))


def _attention_pair(result, first: ablation.Ablation, selection: Selection):
    kind = first.kind or result.clean_trace.adapter.attention_kinds[0]
    head = first.head or 0
    figures = []
    for name, trace in (("clean", result.clean_trace), ("ablated", result.ablated_trace)):
        weights = trace.attn(first.layer, head, kind)
        q_stream, k_stream = trace.streams_of(kind)
        q_labels, k_labels = trace.labels(q_stream), trace.labels(k_stream)
        title = f"{name}: {kind} attention, layer {first.layer} head {head} · {about(selection)}"
        figures.append(attention_heatmap(weights, q_labels, k_labels, title, causal=trace.adapter.is_causal(kind)))
    return figures


def _lens_pair(lm, result, selection: Selection):
    if lm.spec.adapter.masked_lm:
        text = "The logit lens reads a decoder's next-token head; an encoder's head fills masks."
        return message_figure(text), message_figure(text)
    figures = []
    for name, trace in (("clean", result.clean_trace), ("ablated", result.ablated_trace)):
        grid = top_token_grid(lm, trace)
        figures.append(
            logit_lens_grid(grid.labels, grid.probs, grid.positions, f"Logit lens, {name} · {about(selection)}")
        )
    return figures


@guarded(lambda msg: (warning(msg), *(message_figure(msg),) * 5))
def ablate_view(ctx: AppContext, selection, chosen, mode, reference, answer):
    lm = _model(ctx, selection)
    keys = chosen if isinstance(chosen, list) else [chosen] if chosen else []
    parts = [ablation.parse_ablation(k) for k in keys]
    result = ablation.ablate(lm, selection.text, parts, mode, answer or None, reference or ablation.DEFAULT_REFERENCE,
                             selection.target)  # fmt: skip
    names = ", ".join(result.names)
    note = (
        f"Switched off ({ablation.MODES[mode]}): **{md_escape(names)}** · answer “{md_escape(result.answer_label)}”, "
        f"{md_escape(result.prompt.where)}: log-probability {result.clean_logprob:.3f} → **{result.ablated_logprob:.3f}** "
        f"(**{result.change:+.3f}**, probability ×{np.exp(result.change):.2f}) · KL(clean ‖ ablated) {result.kl:.4f} nats."
    )
    if result.target_logprobs is not None:
        before, after = result.target_logprobs
        note += f" Whole target “{md_escape(result.prompt.target)}”: log-probability {before:.3f} → **{after:.3f}**."
    title = f"Answer distribution, clean vs {names} off · {about(selection)}"
    bars = distribution_pair(_top(result.clean), _top(result.ablated), title, "ablated", result.answer_label)
    return (note, bars, *_attention_pair(result, parts[0], selection), *_lens_pair(lm, result, selection))


def _roles(trace, kind: str) -> np.ndarray:
    """A short role for each head from its statistics: “prev” (previous-token head), “first” (attention sink)."""
    stats = head_statistics(trace.attentions[kind], trace.adapter.is_causal(kind), kind != "cross")
    roles = np.full(stats["entropy"].shape, "", dtype=object)
    roles[np.nan_to_num(stats["first_token"]) > 0.5] = "first"
    roles[np.nan_to_num(stats["previous_token"]) > 0.5] = "prev"
    return roles


@guarded(lambda msg: (warning(msg), message_figure(msg), gr.update(choices=[], value=None)))
def importance_view(
    ctx: AppContext, selection, kind, metric, mode, reference, answer, request: gr.Request,
    progress=gr.Progress(),  # noqa: B008 (gradio idiom)
):  # fmt: skip
    lm = _model(ctx, selection)
    if metric not in METRICS:
        raise InputError(f"Map the {' or the '.join(METRICS.values())}.")
    result, stopped = _stoppable(request, lambda should_stop: ablation.head_importance(
        lm, selection.text, kind, mode, answer or None, reference or ablation.DEFAULT_REFERENCE,
        selection.target, progress=_progress(progress, "ablating every head"), should_stop=should_stop,
    ))  # fmt: skip
    values = result.change if metric == "change" else result.kl
    roles = _roles(ctx.trace(selection), result.kind)
    n_layers, n_heads = values.shape
    title = f"Head importance ({METRICS[metric]}), {result.kind} heads · {about(selection)}"
    figure = effect_heatmap(
        values, [f"L{i}" for i in range(n_layers)], [f"H{h}" for h in range(n_heads)], title,
        "Δ log p" if metric == "change" else "KL", roles, "head", "layer",
    )  # fmt: skip
    order = np.argsort(np.nan_to_num(result.change, nan=0.0), axis=None)
    choices = []
    for flat in order:
        layer, head = divmod(int(flat), n_heads)
        role = (
            f" ({'previous-token' if roles[layer, head] == 'prev' else 'first-token'} head)"
            if roles[layer, head]
            else ""
        )
        key = ablation.ablation_key(ablation.Ablation(result.stream, layer, "head", result.kind, head))
        choices.append((f"L{layer} H{head}{role}: Δ {result.change[layer, head]:+.3f}", key))
    worst = choices[0][0] if choices else ""
    note = (
        f"Answer “{md_escape(result.answer_label)}” (log-probability {result.clean_logprob:.3f}); each cell: that head "
        f"alone switched off ({ablation.MODES[mode]}). {n_layers * n_heads} ablations in {_passes(result.passes)}. "
        f"Largest drop: **{md_escape(worst)}**. Cells say *prev* for a previous-token head and *first* for a head "
        f"that parks on the first token.{stopped}"
    )
    return note, figure, gr.update(choices=choices, value=choices[0][1] if choices else None)


def ablate_picked(ctx: AppContext, picked, current):
    """The head picked under the map, as the Ablate view's selection (switched off there next)."""
    return [picked] if picked else current


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def patch_view(
    ctx: AppContext, selection, corrupted, site, stream, answer, alternative, request: gr.Request,
    progress=gr.Progress(),  # noqa: B008 (gradio idiom)
):  # fmt: skip
    lm = _model(ctx, selection)
    result, stopped = _stoppable(request, lambda should_stop: patching.patch_sweep(
        lm, selection.text, corrupted, site, stream, answer or None, alternative or None, selection.target,
        progress=_progress(progress, "patching every layer and position"), should_stop=should_stop,
    ))  # fmt: skip
    rows = [f"L{i}" for i in range(result.restored.shape[0])]
    where = STREAM_NAMES.get(result.stream, result.stream)
    title = f"Patching the {SITE_NAMES[result.site]} ({where}) · {about(selection)}"
    return _patch_note(result, stopped), _patch_figure(result, rows, "layer", title)


def _patch_note(result: patching.Patching, stopped: str) -> str:
    a, b = (md_escape(x) for x in result.labels)
    head = (
        f"Logit difference “{a}” − “{b}”: clean **{result.clean_diff:.3f}**, corrupted **{result.corrupted_diff:.3f}**. "
        f"Each cell: the corrupted run with that one activation copied from the clean run"
    )
    if result.comparable:
        shown = "; 1 = the clean difference fully restored, 0 = no effect."
    else:
        shown = (
            f"; the two differences are less than {patching.MIN_SPAN} apart, so the map shows the patched logit "
            "difference minus the corrupted one, not a share restored. A corrupted text that changes the answer "
            "(the Mary and John preset) shows more."
        )
    return f"{head}{shown} {result.restored.size} patches in {_passes(result.passes)}.{stopped}"


def _patch_figure(result: patching.Patching, rows: list[str], y_title: str, title: str):
    columns = [c if c == k else f"{k}→{c}" for c, k in zip(result.tokens, result.clean_tokens)]
    if result.comparable:
        values, name = result.restored, "restored"
        bound = max(1.0, float(np.nanmax(np.abs(values))))
    else:
        values, name, bound = result.patched - result.corrupted_diff, "Δ logit diff", None
    return effect_heatmap(values, rows, columns, title, name, None, "position (clean→corrupted token)", y_title,
                          bound=bound)  # fmt: skip


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def patch_heads_view(
    ctx: AppContext, selection, corrupted, layer, kind, answer, alternative, request: gr.Request,
    progress=gr.Progress(),  # noqa: B008 (gradio idiom)
):  # fmt: skip
    lm = _model(ctx, selection)
    result, stopped = _stoppable(request, lambda should_stop: patching.patch_sweep(
        lm, selection.text, corrupted, answer=answer or None, alternative=alternative or None,
        target=selection.target, head_layer=int(layer), kind=kind,
        progress=_progress(progress, "patching every head and position"), should_stop=should_stop,
    ))  # fmt: skip
    rows = [f"H{h}" for h in range(result.restored.shape[0])]
    title = f"Patching each head's output, {result.kind} layer {result.layer} · {about(selection)}"
    return _patch_note(result, stopped), _patch_figure(result, rows, "head", title)


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def steer_view(ctx: AppContext, selection, positive, negative, layer, strength, new_tokens):
    lm = _model(ctx, selection)
    d = steering.direction(lm, int(layer), positive, negative)
    result = steering.steer(lm, selection.text, d, strength, int(new_tokens))
    written = ""
    if lm.spec.can("generate"):
        written = (
            f"\n- without: “{md_escape(result.plain)}”\n- **with** (strength {result.strength:+g}): "
            f"“{md_escape(result.steered)}”"
        )
    note = (
        f"Direction: {md_escape(d.described)}; its length {d.norm:.2f} (the residual stream's is about "
        f"{d.residual_norm:.2f} there), added × {result.strength:+g} at every position.{written}"
    )
    title = f"Answer distribution, plain vs steered (×{result.strength:+g}) · {about(selection)}"
    return note, distribution_pair(
        dict(result.plain_top), dict(result.steered_top), title, "steered", clean_name="plain"
    )


def build(ctx: AppContext, shared) -> None:
    with gr.Tab("Interventions", id="interventions"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        shared.requires(LM_HEAD)
        with gr.Row():
            answer = gr.Textbox("", label="Answer to follow (empty: the clean run's top prediction)", scale=2)
            mode = gr.Radio([(v, k) for k, v in ablation.MODES.items()], value="zero", label="Ablate by", scale=2)
            stop = gr.Button("Stop", variant="stop", scale=1)
        reference = gr.Textbox(ablation.DEFAULT_REFERENCE, label="Reference text (mean ablation)", lines=1)
        with gr.Tabs():
            with gr.Tab("Ablate"):
                with gr.Row():
                    parts = gr.Dropdown([], multiselect=True, label="Switch off", scale=4)
                    run_ablate = gr.Button("Ablate", variant="primary", scale=1)
                ablate_note = gr.Markdown()
                bars = gr.Plot(label="Answer distribution")
                with gr.Row():
                    attn_clean, attn_ablated = gr.Plot(label="Attention, clean"), gr.Plot(label="Attention, ablated")
                lens_clean = gr.Plot(label="Logit lens, clean")  # full width, one above the other: a cell per token
                lens_ablated = gr.Plot(label="Logit lens, ablated")
            with gr.Tab("Head importance"):
                with gr.Row():
                    kind = gr.Dropdown([], label="Attention", scale=1)
                    metric = gr.Radio([(v, k) for k, v in METRICS.items()], value="change", label="Map", scale=2)
                    run_map = gr.Button("Ablate every head", variant="primary", scale=1)
                map_note = gr.Markdown()
                head_map = gr.Plot(label="Head importance")
                with gr.Row():
                    picked = gr.Dropdown([], label="Heads, largest drop first", scale=3)
                    switch_off = gr.Button("Switch this head off (Ablate view)", scale=1)
            with gr.Tab("Patching"):
                pair = gr.Button("Preset: Mary and John, the text and its corrupted twin", size="sm")
                corrupted = gr.Textbox(IOI_CORRUPTED, label="Corrupted text (same number of tokens as the text)")
                with gr.Row():
                    site = gr.Radio(
                        [(SITE_NAMES[s], s) for s in patching.PATCH_SITES], value="resid", label="Patch the"
                    )
                    stream = gr.Dropdown([], label="Stack", scale=1)
                    alternative = gr.Textbox("", label="Corrupted answer (empty: its top prediction)", scale=2)
                    run_patch = gr.Button("Patch every layer and position", variant="primary", scale=1)
                patch_note = gr.Markdown()
                patch_map = gr.Plot(label="Patching")
                with gr.Row():
                    head_layer = gr.Slider(0, 1, value=0, step=1, label="Layer (per-head patching)", scale=3)
                    run_heads = gr.Button("Patch each head of this layer", scale=1)
                heads_note = gr.Markdown()
                heads_map = gr.Plot(label="Per-head patching")
            with gr.Tab("Steering"):
                with gr.Row():
                    positive = gr.Textbox("love, joy, happy, wonderful", label="Toward (words or texts, commas)")
                    negative = gr.Textbox("hate, grief, sad, terrible", label="Away from")
                with gr.Row():
                    steer_layer = gr.Slider(0, 1, value=1, step=1, label="After layer")
                    strength = gr.Slider(
                        -steering.MAX_STRENGTH, steering.MAX_STRENGTH, value=3, step=0.5, label="Strength"
                    )
                    new_tokens = gr.Slider(1, MAX_EXPLAINED_TOKENS, value=12, step=1, label="Tokens to write")
                    run_steer = gr.Button("Steer", variant="primary")
                steer_note = gr.Markdown()
                steer_plot = gr.Plot(label="Steering")

    pickers = [parts, kind, stream, steer_layer, head_layer]
    shared.on_analyzed(bind(options, ctx), [shared.state], pickers, api_name="interventions_options")
    heavy = {"concurrency_limit": ctx.settings.model_runs, "concurrency_id": "model_run"}
    ablate_outputs = [ablate_note, bars, attn_clean, attn_ablated, lens_clean, lens_ablated]
    shared.results_of_analysis(*ablate_outputs, map_note, head_map, patch_note, patch_map, heads_note, heads_map,
                               steer_note, steer_plot)  # fmt: skip
    ablate_inputs = [shared.state, parts, mode, reference, answer]
    one = run_ablate.click(
        bind(ablate_view, ctx), ablate_inputs, ablate_outputs, api_name="interventions_ablate", **heavy
    )
    sweep = run_map.click(
        bind(importance_view, ctx), [shared.state, kind, metric, mode, reference, answer], [map_note, head_map, picked],
        api_name="interventions_heads", **heavy,
    )  # fmt: skip
    chosen = switch_off.click(bind(ablate_picked, ctx), [picked, parts], parts, api_name=False)
    chosen.then(bind(ablate_view, ctx), ablate_inputs, ablate_outputs, api_name=False, **heavy)
    shared.analyze_after(pair.click(bind(patching_pair, ctx), [shared.state], [shared.text, corrupted], api_name=False))
    patch = run_patch.click(
        bind(patch_view, ctx), [shared.state, corrupted, site, stream, answer, alternative], [patch_note, patch_map],
        api_name="interventions_patch", **heavy,
    )  # fmt: skip
    per_head = run_heads.click(
        bind(patch_heads_view, ctx), [shared.state, corrupted, head_layer, kind, answer, alternative],
        [heads_note, heads_map], api_name="interventions_patch_heads", **heavy,
    )  # fmt: skip
    steer = run_steer.click(
        bind(steer_view, ctx), [shared.state, positive, negative, steer_layer, strength, new_tokens],
        [steer_note, steer_plot], api_name="interventions_steer", **heavy,
    )  # fmt: skip
    stop.click(STOPS.stop, None, None, cancels=[one, sweep, patch, per_head, steer], api_name="interventions_stop")
