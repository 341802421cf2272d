"""Attribution tab: which input tokens drove one prediction (two methods side by side), and a
target × source matrix over a whole generated continuation. Bounded, with progress and a Stop button."""

from __future__ import annotations

import gradio as gr

from explorer.analysis.attribution.attribute import (
    BASELINES,
    MAX_MATRIX_ROWS,
    MAX_STEPS,
    METHODS,
    OUTPUTS,
    Attribution,
    attribute,
    attribution_rows,
    check_method,
    matrix_of,
    predictions_of,
)
from explorer.core.errors import InputError
from explorer.core.family import LM_HEAD
from explorer.core.limits import MAX_EXPLAINED_TOKENS as MAX_NEW_TOKENS
from explorer.plots.attribution import attribution_bars, attribution_heatmap, attribution_text_html
from explorer.plots.text import message_figure
from explorer.ui.context import AppContext, about, bind, guarded, md_escape, warning
from explorer.ui.gpu import on_gpu
from explorer.ui.stops import StopRequests

EXPLANATION = """**Attribution** asks which input tokens drove one prediction: it scores each token by how \
much the output — the probability (or log-probability, or logit) of the predicted token — depends on it. **Integrated gradients** \
walks from a *baseline* (every word's embedding replaced by the padding token's, or by zeros; special \
tokens kept) to the real input, adding up gradients on the way; its scores sum to the change in the output, \
and the *convergence delta* says how far the sum is off. **Saliency** is the size of the gradient, \
**input × gradient** its first-order estimate, **ablation** and **occlusion** remove tokens and watch the \
output move. <span style="color:#d6604d">Red</span> tokens raised the output, \
<span style="color:#4393c3">blue</span> ones lowered it.

What it can tell you: which tokens the prediction is *sensitive* to, measured against a chosen baseline. \
What it cannot: *why*, or how the model combines them — methods disagree, scores depend on the baseline, and a \
token can matter only together with another. **Unlike attention**, which shows where one head of one layer \
mixes information from, attribution follows the whole model from input to output: a token can draw \
attention everywhere and still not change the prediction, or matter through a path no single head shows."""
METHOD_CHOICES = [(m.name, key) for key, m in METHODS.items()]
SIGN_NOTE = "red raised the output, blue lowered it"


def value_line(result: Attribution) -> str:
    """The explained output, and for integrated gradients the completeness check."""
    line = (
        f"{METHODS[result.method].name}: {result.output} of “{md_escape(result.token)}” = **{result.value:.4g}** "
        f"(baseline {result.baseline_value:.4g})"
    )
    if result.delta is None:
        return line
    change = result.value - result.baseline_value
    share = abs(result.delta) / max(abs(change), 1e-12)
    warn = " ⚠️ large: raise the steps" if share > 0.05 and abs(result.delta) > 1e-4 else ""
    return (
        f"{line} · scores sum to {float(result.scores.sum()):.4g}, f(input) − f(baseline) = {change:.4g}, "
        f"convergence delta **{result.delta:.2g}** ({share:.1%} of the change){warn}"
    )


STOPS = StopRequests()  # the Stop button's flag per session, read by both runs


def task_of(ctx: AppContext, selection, new_v):
    if selection is None:
        raise InputError("Analyze a text first.")
    lm = ctx.model(selection)
    return lm, predictions_of(lm, selection.text, int(new_v))


@guarded(lambda msg: gr.update(choices=[], value=None))
def list_predictions(ctx: AppContext, selection, new_v):
    if selection is None:
        return gr.update(choices=[], value=None)
    lm = ctx.model(selection)
    task = predictions_of(lm, selection.text, int(new_v))
    return gr.update(choices=[(p.label, i) for i, p in enumerate(task.predictions)], value=first_word(lm, task))


def first_word(lm, task) -> int:
    """The first prediction that is a word: T5's first token is often a sentinel."""
    special = set(lm.tokenizer.all_special_ids)
    return next((i for i, p in enumerate(task.predictions) if p.token_id not in special), 0)


@guarded(lambda msg: (warning(msg), "", "", message_figure(msg)))
def attribute_view(
    ctx: AppContext, selection, a_v, b_v, output_v, baseline_v, new_v, steps_v, index, request: gr.Request,
    progress=gr.Progress(),  # noqa: B008 (gradio idiom)
):  # fmt: skip
    lm, task = task_of(ctx, selection, new_v)
    index = first_word(lm, task) if index in (None, "") else index
    if not str(index).isdigit() or int(index) >= MAX_NEW_TOKENS:
        raise InputError(f"Pick one of the {len(task.predictions)} predictions listed.")
    moved = ""
    if int(index) >= len(task.predictions):
        # A choice from the list for another "Tokens to generate": the click can go out before the new list arrives.
        moved = (
            f"Prediction {int(index) + 1} is not among the {len(task.predictions)} listed now; the first word instead: "
        )
        index = first_word(lm, task)
    pred = task.predictions[int(index)]
    methods = [check_method(a_v).key] + ([check_method(b_v).key] if b_v and b_v != a_v else [])
    results = []
    with STOPS.running(request) as should_stop:
        for i, method in enumerate(methods):
            part = lambda f, i=i: progress((i + f) / len(methods), desc="attributing")  # noqa: E731
            results.append(attribute(lm, pred, method, int(steps_v), output_v, part, should_stop, baseline_v))
    first = results[0]
    htmls = [attribution_text_html(list(r.labels), r.scores, METHODS[r.method].name) for r in results]
    lines = "\n".join(f"- {value_line(r)}" for r in results)
    head = f"{moved}**{md_escape(pred.label)}** · {md_escape(task.note)} · {SIGN_NOTE}."
    figure = attribution_bars(
        list(first.labels), {METHODS[r.method].name: r.scores for r in results},
        f"Why “{first.token}” ({output_v}) · {about(selection)}",
    )  # fmt: skip
    return f"{head}\n{lines}", htmls[0], htmls[1] if len(htmls) > 1 else "", figure


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def matrix_view(
    ctx: AppContext, selection, a_v, output_v, baseline_v, new_v, steps_v, request: gr.Request,
    progress=gr.Progress(),  # noqa: B008 (gradio idiom)
):  # fmt: skip
    """Streamed row by row: a press of Stop or a client that leaves ends the work at the next row."""
    lm, task = task_of(ctx, selection, new_v)
    report = lambda f: progress(f, desc="attributing each generated token")  # noqa: E731
    total = min(len(task.predictions), MAX_MATRIX_ROWS)
    rows = []
    with STOPS.running(request) as should_stop:
        for row in attribution_rows(lm, task, a_v, int(steps_v), output_v, report, should_stop, baseline_v):
            rows.append(row)
            yield f"⏳ {len(rows)} of {total} rows …", gr.skip()
    matrix = matrix_of(task, rows)
    shown = len(matrix.row_labels)
    cut = f" (the first {shown} of {len(task.predictions)})" if shown < len(task.predictions) else ""
    deltas = [abs(d) for d in matrix.deltas if d is not None]
    worst = f" · largest convergence delta {max(deltas):.2g}" if deltas else ""
    note = f"{md_escape(task.note)} {shown} row{'s' if shown != 1 else ''}{cut} · {METHODS[a_v].name} · {SIGN_NOTE}{worst}."
    title = f"{METHODS[a_v].name} · {output_v} of each explained token · {about(selection)}"
    yield note, attribution_heatmap(matrix.scores, list(matrix.row_labels), list(matrix.column_labels), title)


def build(ctx: AppContext, shared) -> None:
    with gr.Tab("Attribution", id="attribution"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        shared.requires(LM_HEAD)
        with gr.Row():
            method_a = gr.Dropdown(METHOD_CHOICES, value="integrated_gradients", label="Method A")
            method_b = gr.Dropdown(METHOD_CHOICES, value="ablation", label="Method B (side by side)")
            output = gr.Radio(list(OUTPUTS), value="probability", label="Explain the token's")
            baseline = gr.Radio(
                [(text, key) for key, text in BASELINES.items()], value="pad", label="Baseline (words replaced by)"
            )
        with gr.Row():
            new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=6, step=1, label="Tokens to generate (decoders, T5)")
            steps = gr.Slider(2, MAX_STEPS, value=50, step=1, label="Integrated-gradients steps")
        with gr.Row():
            stop = gr.Button("Stop", variant="stop", scale=1)
        with gr.Tabs():
            with gr.Tab("One prediction"):
                with gr.Row():
                    # Choices are filled per text; API calls may pass any index.
                    prediction = gr.Dropdown(
                        [], label="Prediction to explain", allow_custom_value=True, interactive=True, scale=3
                    )
                    run = gr.Button("Attribute", variant="primary", scale=1)
                note = gr.Markdown()
                with gr.Row():
                    text_a = gr.HTML()
                    text_b = gr.HTML()
                bars = gr.Plot(label="Attribution per token")
            with gr.Tab("Whole generation"):
                gr.Markdown(
                    "Every generated token (rows) explained by the input tokens (columns): for a decoder the prompt "
                    "and the tokens written before it (grey: not yet written), for T5 the source; for a BERT-style "
                    f"encoder each word masked in turn. At most {MAX_MATRIX_ROWS} rows; method A."
                )
                run_matrix = gr.Button("Attribute the whole generation", variant="primary")
                matrix_note = gr.Markdown()
                matrix_plot = gr.Plot(label="Target × source attribution")

    shared.on_analyzed(
        bind(list_predictions, ctx), [shared.state, new_tokens], [prediction], api_name="attribution_targets"
    )
    new_tokens.release(bind(list_predictions, ctx), [shared.state, new_tokens], [prediction], api_name=False)
    shared.results_of_analysis(note, text_a, text_b, bars, matrix_note, matrix_plot)
    heavy = {"concurrency_limit": ctx.settings.model_runs, "concurrency_id": "model_run"}
    one = run.click(
        on_gpu(bind(attribute_view, ctx)), [shared.state, method_a, method_b, output, baseline, new_tokens, steps, prediction],
        [note, text_a, text_b, bars], api_name="attribution", **heavy,
    )  # fmt: skip
    whole = run_matrix.click(
        on_gpu(bind(matrix_view, ctx)), [shared.state, method_a, output, baseline, new_tokens, steps], [matrix_note, matrix_plot],
        api_name="attribution_matrix", **heavy,
    )  # fmt: skip

    stop.click(STOPS.stop, None, None, cancels=[one, whole], api_name="attribution_stop")
