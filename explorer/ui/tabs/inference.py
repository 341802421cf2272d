"""Faster inference, measured on the loaded model: quantization at several precisions against float32, and
speculative decoding (a draft proposes k tokens, the model checks them in one pass) against plain greedy.

The quantized copy looked inside is kept per browser session (``QuantizedCopies``, made in ``build`` and counted
in the app's one budget with the LoRA tab's fine-tunes), so showing another matrix or precision again does not
quantize again; it is freed when the browser tab closes. Handlers that use it take it after the app context."""

from __future__ import annotations

import gradio as gr
import numpy as np

from explorer.analysis.inference import quantization, quantization_effects, speculative, speculative_speedup
from explorer.analysis.inference.quantized_sessions import QuantizedCopies
from explorer.core.errors import InputError
from explorer.core.family import GENERATE, LM_HEAD
from explorer.core.tokens import token_label
from explorer.plots.inference import acceptance_bars, error_bars, size_bars, speedup_lines, weight_histogram
from explorer.plots.interventions import distribution_pair
from explorer.plots.text import message_figure
from explorer.ui.assets import ASSETS_DIR
from explorer.ui.context import AppContext, about, bind, guarded, layer_slider, md_escape, owner_of, warning
from explorer.ui.stops import StopRequests

EXPLANATION = """Two ways to make a model cheaper, measured here on the loaded model. **Quantization** stores each \
weight in fewer bits: 16-bit floats, 8-bit integers with a scale per output channel, 4-bit integers with a scale \
per group of 32 or 128 weights (*symmetric* around 0, or *asymmetric* with a zero point). Where this CPU has no \
kernel for a format the integers are stored and rounded back to float to run (*simulated*: the same numbers, not \
the speed); torch's dynamic int8 is a real kernel. Compare size, error, agreement with float32 and speed. \
**Speculative decoding**: a cheap *draft* proposes k tokens, the model checks all of them in one forward pass and \
keeps the longest run it agrees with, plus one token of its own — greedy output is exactly the same, only faster \
when the draft is often right."""
STOPS = StopRequests()
DEFAULT_PRECISIONS = ["float16", "int8", "int4-g32-sym", "int4-g128-asym", "int8-dynamic"]
# Numbers only, and one word for how a precision runs: its sentence is in the note under the table (a long
# sentence in a cell pushed the numbers behind a sideways scroll at 1280 px).
TABLE_COLUMNS = ["precision", "runs as", "size (MiB)", "× float32", "formula (MiB)", "KL (nats)", "top-1 agree",
                 "bits/byte", "forward ×", "per token ×"]  # fmt: skip
RUNS_AS = {"reference": "as loaded", "cast": "cast", "simulated": "simulated", "kernel": "int8 kernel"}
HELDOUT_CHARS = 1500  # of the held-out sample: KL, agreement and bits per byte
DRAFT_MODEL = "tiny-gpt2-draft"  # bundled: a 0.9M-parameter decoder on tiny-gpt2's tokenizer
DRAFTS = {
    "early": "early exit (the model's first layers)",
    "lookup": "prompt lookup (n-grams of the text)",
    "model": f"a small draft model: {DRAFT_MODEL}",
}
ACCEPTED, REFUSED, REPLACED = "accepted", "refused", "verifier's token"


def heldout_text() -> str:
    return (ASSETS_DIR / "heldout" / "modern.txt").read_text(encoding="utf-8")[:HELDOUT_CHARS]


def _model(ctx: AppContext, selection, capability: str):
    if selection is None:
        raise InputError("Analyze a text first.")
    lm = ctx.model(selection)
    lm.spec.require(capability)
    return lm


def _mib(n) -> float:
    return round(n / 2**20, 2)


def _ratio(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.2f}"


def how_they_ran(reports) -> str:
    """One line per way of running, naming its precisions: ``- **int8, int4-g32-sym**: simulated: ...``."""
    ways: dict[str, list[str]] = {}
    for r in reports:
        ways.setdefault(r.note, []).append(r.name)
    return "\n".join(f"- **{md_escape(', '.join(names))}**: {md_escape(note)}" for note, names in ways.items())


def _inside(ctx: AppContext, copies: QuantizedCopies, selection, shown, matrix, request) -> tuple:
    """Errors per matrix, one matrix's histogram and the next token, from the session's copy at ``shown``
    (made the first time only), and the matrix picker's update."""
    lm = _model(ctx, selection, LM_HEAD)
    if shown not in quantization.PRECISIONS or shown == "float32":
        raise InputError(f"Pick a precision to look inside: {', '.join(list(quantization.PRECISIONS)[1:])}.")
    copy = copies.get(owner_of(request), lm, shown)
    if not copy.errors:
        msg = message_figure(f"{shown} keeps every weight as it is.")
        return msg, msg, _next_token(lm, copy, shown, selection), gr.update(choices=[], value=None)
    names = list(copy.errors)
    if matrix not in copy.errors:  # the biggest matrix first
        matrix = max(names, key=lambda n: lm.model.get_parameter(n).numel())
    errors = error_bars(copy.errors, f"{shown}: error per weight matrix · {about(selection)}")
    h = quantization.weight_histogram(lm, copy, matrix)
    histogram = weight_histogram(h.edges, h.before, h.after,
                                 f"{shown}: {matrix} ({h.distinct_after} distinct values) · {about(selection)}")  # fmt: skip
    return errors, histogram, _next_token(lm, copy, shown, selection), gr.update(choices=names, value=matrix)


def _next_token(lm, copy, shown, selection):
    nxt = quantization_effects.next_token_comparison(lm, copy, selection.text)
    return distribution_pair(dict(zip(nxt.labels, nxt.reference.tolist())), dict(zip(nxt.labels, nxt.quantized.tolist())),
                             f"Next token, float32 vs {shown} · {about(selection)}", shown, clean_name="float32")  # fmt: skip


@guarded(lambda msg: (warning(msg), [], *(message_figure(msg),) * 4, gr.update()))
def quantize_view(
    ctx: AppContext, copies: QuantizedCopies, selection, names, shown, request: gr.Request,
    progress=gr.Progress(),  # noqa: B008 (gradio idiom)
):  # fmt: skip
    lm = _model(ctx, selection, LM_HEAD)
    names = [n for n in (names or []) if n != "float32"]
    if not names:
        raise InputError("Pick at least one precision to compare with float32.")
    shown = shown if shown in names else names[0]
    with STOPS.running(request) as should_stop:
        reports = quantization_effects.compare_precisions(
            lm, names, heldout_text(), selection.text, new_tokens=8, repeats=3,
            progress=lambda f: progress(f, desc="quantizing and measuring"), should_stop=should_stop,
        )  # fmt: skip
    rows = [
        [r.name, RUNS_AS.get(r.kind, r.kind), _mib(r.stored_bytes), f"{r.size_ratio:.2f}", _mib(r.formula_bytes), round(r.mean_kl, 4),
         f"{r.top1_agreement:.1%}", _ratio(r.bits_per_byte), _ratio(r.latency.forward_ratio),
         _ratio(r.latency.token_ratio)]
        for r in reports
    ]  # fmt: skip
    sizes = size_bars(
        ["float32", *[r.name for r in reports]], [reports[0].float32_bytes, *[r.stored_bytes for r in reports]],
        [reports[0].float32_bytes, *[r.formula_bytes for r in reports]], f"Size of the weights · {about(selection)}",
    )  # fmt: skip
    errors, histogram, pair, matrices = _inside(ctx, copies, selection, shown, None, request)
    done = "" if len(reports) == len(names) else f" Stopped after {len(reports)} of {len(names)} precisions."
    note = (
        f"Measured on **{md_escape(lm.spec.key)}** against float32: KL divergence, top-1 agreement and bits per byte "
        f"over {HELDOUT_CHARS:,} characters of held-out modern English; time ratios (> 1: slower than float32) are "
        f"medians of interleaved runs, forward pass and per generated token. Simulated formats round the weights and "
        f"run in float32, so their time is float32's.{done}\n\n{how_they_ran(reports)}"
    )
    return note, rows, sizes, errors, histogram, pair, matrices


@guarded(lambda msg: (*(message_figure(msg),) * 3, gr.update()))
def inside_view(ctx: AppContext, copies: QuantizedCopies, selection, shown, matrix, request: gr.Request):
    """Another precision or matrix looked inside, from this session's copies (quantized only the first time)."""
    return _inside(ctx, copies, selection, shown, matrix, request)


def unloaded(ctx: AppContext, copies: QuantizedCopies, request: gr.Request) -> None:
    """The browser tab closed: its quantized copies are freed."""
    copies.end(owner_of(request))


def offers_draft_model(ctx: AppContext, lm) -> bool:
    """Whether the bundled draft model can draft for ``lm``: a decoder with its vocabulary (tiny-gpt2's)."""
    if lm.spec.adapter.is_encoder_decoder or not lm.spec.can(GENERATE):
        return False
    try:
        return ctx.tokenizer(DRAFT_MODEL).get_vocab() == lm.tokenizer.get_vocab()
    except Exception:  # a server without the bundled draft offers the other two
        return False


def _draft(ctx: AppContext, lm, kind: str, layers):
    if kind == "model":
        if not offers_draft_model(ctx, lm):
            raise InputError(
                f"{DRAFT_MODEL} drafts only for models with its vocabulary (tiny-gpt2's); pick another draft."
            )
        return speculative.model_draft(lm, ctx.pool.get(DRAFT_MODEL))
    if kind == "early":
        return speculative.early_exit_draft(lm, int(layers))
    if kind == "lookup":
        return speculative.PromptLookupDraft()
    raise InputError(f"Pick a draft: {', '.join(DRAFTS.values())}.")


def _written_steps(lm, result) -> list[tuple[str, str | None]]:
    """Each step's proposals, kept (green) or refused (red), and the verifier's own token after them."""
    out = []
    for step in result.steps:
        for i, token in enumerate(step.proposed):
            out.append((token_label(lm.tokenizer, token), ACCEPTED if i < step.accepted else REFUSED))
        out.append((token_label(lm.tokenizer, step.token), REPLACED))
        out.append((" | ", None))
    return out


@guarded(lambda msg: (warning(msg), [], message_figure(msg)))
def speculate_view(ctx: AppContext, selection, kind, layers, k, new_tokens, temperature, seed, request: gr.Request):
    lm = _model(ctx, selection, GENERATE)
    prompt = lm.tokenizer(selection.text)["input_ids"]
    sampling = float(temperature) if temperature not in (None, "") and float(temperature) > 0 else None
    with STOPS.running(request) as should_stop:
        result = speculative.speculative_generate(lm, prompt, _draft(ctx, lm, kind, layers), int(k), int(new_tokens),
                                                  sampling, int(seed or 0), should_stop=should_stop)  # fmt: skip
    text = lm.tokenizer.decode(list(result.new_ids), skip_special_tokens=True)
    note = (
        f"{len(result.new_ids)} tokens in {len(result.steps)} steps ({result.tokens_per_step:.2f} per model pass) · "
        f"acceptance α = **{result.alpha:.0%}** · draft cost c = {result.cost_ratio:.2f} of a model pass · expected "
        f"speed-up (1 − α^(k+1)) / ((1 − α)(c·k + 1)) = **{result.expected_speedup:.2f}×** · "
        f"{'greedy: exactly plain greedy’s tokens' if sampling is None else f'sampling at temperature {sampling:g}'}"
        f"\n\n“{md_escape(text)}”"
    )
    title = f"Proposals kept, by position ({DRAFTS[kind]}, k = {int(k)}) · {about(selection)}"
    return note, _written_steps(lm, result), acceptance_bars(result.acceptance_by_position, title)


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def speedup_view(
    ctx: AppContext, selection, kind, layers, new_tokens, request: gr.Request,
    progress=gr.Progress(),  # noqa: B008 (gradio idiom)
):  # fmt: skip
    lm = _model(ctx, selection, GENERATE)
    prompt = lm.tokenizer(selection.text)["input_ids"]
    with STOPS.running(request) as should_stop:
        points = speculative_speedup.speedup_by_k(
            lm, prompt, _draft(ctx, lm, kind, layers), (1, 2, 4, 8), int(new_tokens), 3,
            progress=lambda f: progress(f, desc="timing plain and speculative decoding"), should_stop=should_stop,
        )  # fmt: skip
    same = all(p.same_tokens for p in points)
    note = (
        f"Greedy speculative decoding against plain greedy, interleaved, median of 3; "
        f"{'every run wrote exactly plain greedy’s tokens' if same else '⚠️ a run differed from plain greedy'}. "
        + " · ".join(
            f"k = {p.k}: α {p.alpha:.0%}, measured {p.measured:.2f}×, formula {p.expected:.2f}×" for p in points
        )
        + ". The formula counts checking k + 1 tokens as one plain step; on a CPU it costs more (the output layer "
        "runs once per position), so the dotted line redoes the count with the passes' measured costs."
    )
    figure = speedup_lines([p.k for p in points], [p.measured for p in points], [p.expected for p in points],
                           f"Speed-up against k ({DRAFTS[kind]}) · {about(selection)}",
                           [p.explained for p in points])  # fmt: skip
    return note, figure


@guarded(lambda msg: (gr.update(), gr.update()))
def layer_range(ctx: AppContext, selection, kind):
    """After an analysis: the early-exit slider fitted to the model, and the drafts it can use."""
    if selection is None:
        return gr.update(), gr.update()
    lm = ctx.model(selection)
    n = lm.spec.n_layers
    kinds = [k for k in DRAFTS if k != "model" or offers_draft_model(ctx, lm)]
    drafts = gr.update(choices=[(DRAFTS[k], k) for k in kinds], value=kind if kind in kinds else "early")
    return layer_slider(n - 1, max(1, n // 2)), drafts  # an exit below the last layer


def build(ctx: AppContext, shared) -> None:
    copies = QuantizedCopies(ctx.copies_budget)  # per browser session, counted with the LoRA fine-tunes
    with gr.Tab("Quantize & speculate", id="inference"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        with gr.Tabs():
            with gr.Tab("Quantization"):
                shared.requires(LM_HEAD)
                with gr.Row():
                    names = gr.CheckboxGroup(list(quantization.PRECISIONS)[1:], value=DEFAULT_PRECISIONS,
                                             label="Precisions (each against float32)", scale=4)  # fmt: skip
                    shown = gr.Dropdown(list(quantization.PRECISIONS)[1:], value="int4-g32-sym",
                                        label="Look inside", scale=1)  # fmt: skip
                with gr.Row():
                    run_quant = gr.Button("Quantize and measure", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
                table = gr.Dataframe(headers=TABLE_COLUMNS, interactive=False, wrap=True)
                quant_note = gr.Markdown()  # under the table: what was measured, and how each precision ran
                sizes = gr.Plot(label="Sizes")
                matrix = gr.Dropdown([], label="Weight matrix (histogram)", allow_custom_value=True)
                with gr.Row():
                    errors, histogram = gr.Plot(label="Errors"), gr.Plot(label="Histogram")
                pair = gr.Plot(label="Next token")
            with gr.Tab("Speculative decoding"):
                shared.requires(GENERATE)
                with gr.Row():
                    kind = gr.Radio([(v, k) for k, v in DRAFTS.items()], value="early", label="Draft")
                    layers = gr.Slider(1, 3, value=2, step=1, label="Early exit after layer")
                    k = gr.Slider(1, speculative.MAX_K, value=4, step=1, label="k (tokens proposed per step)")
                with gr.Row():
                    new_tokens = gr.Slider(1, 64, value=24, step=1, label="New tokens")
                    temperature = gr.Slider(0, speculative.MAX_TEMPERATURE, value=0, step=0.1,
                                            label="Temperature (0 = greedy)")  # fmt: skip
                    seed = gr.Number(0, label="Seed", precision=0)
                with gr.Row():
                    run_spec = gr.Button("Generate speculatively", variant="primary")
                    run_speedup = gr.Button("Measure the speed-up for k = 1, 2, 4, 8")
                spec_note = gr.Markdown()
                steps = gr.HighlightedText(label="Steps: proposals kept (green), refused (red), the model's own token",
                                           color_map={ACCEPTED: "green", REFUSED: "red", REPLACED: "blue"},
                                           combine_adjacent=False, show_legend=True)  # fmt: skip
                acceptance = gr.Plot(label="Acceptance")
                speedup_note = gr.Markdown()
                speedup = gr.Plot(label="Speed-up")

    shared.on_analyzed(bind(layer_range, ctx), [shared.state, kind], [layers, kind], api_name=False)
    shared.results_of_analysis(quant_note, table, sizes, errors, histogram, pair, spec_note, steps, acceptance,
                               speedup_note, speedup)  # fmt: skip
    heavy = {"concurrency_limit": ctx.settings.model_runs, "concurrency_id": "model_run"}
    quant = run_quant.click(bind(quantize_view, ctx, copies), [shared.state, names, shown],
                            [quant_note, table, sizes, errors, histogram, pair, matrix], api_name="inference_quantize",
                            **heavy)  # fmt: skip
    for control in (shown, matrix):
        control.input(bind(inside_view, ctx, copies), [shared.state, shown, matrix],
                      [errors, histogram, pair, matrix], api_name=f"inference_{'precision' if control is shown else 'matrix'}",
                      **heavy)  # fmt: skip
    spec = run_spec.click(bind(speculate_view, ctx), [shared.state, kind, layers, k, new_tokens, temperature, seed],
                          [spec_note, steps, acceptance], api_name="inference_speculate", **heavy)  # fmt: skip
    timed = run_speedup.click(bind(speedup_view, ctx), [shared.state, kind, layers, new_tokens], [speedup_note, speedup],
                              api_name="inference_speedup", **heavy)  # fmt: skip
    stop.click(STOPS.stop, None, None, cancels=[quant, spec, timed], api_name="inference_stop")
    root = gr.context.Context.root_block  # the app being built: free the copies when its browser tab closes
    if root is not None:
        root.unload(bind(unloaded, ctx, copies))
