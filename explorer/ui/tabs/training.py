"""Training tab: pre-train a tiny model from scratch under any of the three objectives and watch it learn,
place it on the project's scaling study, and tune the bundled decoder to a planted preference (DPO or IPO)."""

from __future__ import annotations

import gradio as gr
import numpy as np

from explorer.analysis.pretraining import configs, preferences, scaling
from explorer.analysis.pretraining.opened import open_run, shown_name
from explorer.analysis.pretraining.trainer import PretrainRun, train_live
from explorer.core.errors import InputError
from explorer.core.family import FINE_TUNE
from explorer.plots.attention import attention_heatmap
from explorer.plots.lora import before_after_bars
from explorer.plots.text import message_figure, shorten
from explorer.plots.training import head_score_curves, loss_curves, preference_curves, scaling_plot
from explorer.ui.context import AppContext, about, bind, guarded, md_escape, owner_of, warning
from explorer.ui.gpu import on_gpu
from explorer.ui.stops import StopRequests

EXPLANATION = """How a model gets its knowledge. **Pre-train** a tiny model from random weights on the bundled \
texts with one of the three objectives: *next token* (GPT), *masked tokens* (BERT), *span corruption* (T5). \
Watch the training and held-out loss fall (a uniform guess scores ln(vocabulary)), the samples turn from noise \
into words, and heads learn to look at the previous token and to copy repeated text (induction). **Scaling** \
places your run on a small study of the same recipe at several sizes and budgets, with a fitted power law. \
**Preferences** tunes the bundled decoder (a LoRA adapter) on pairs of answers, one preferred, with DPO or IPO."""
STOPS = StopRequests()
OBJECTIVES = [("next token (decoder)", "next_token"), ("masked tokens (encoder)", "masked"),
              ("span corruption (encoder-decoder)", "span")]  # fmt: skip
SCORE = {"next_token": "induction", "masked": "previous_token", "span": "previous_token"}
AXIS_TITLES = {"parameters": "non-embedding parameters", "tokens": "training tokens", "compute": "compute, 6·N·D FLOPs"}
LOSS_LABELS = {"dpo": "DPO", "ipo": "IPO", "dpo+nll": "DPO + NLL"}


def _run_views(record, objective: str):
    s = record.settings
    name = dict((v, k) for k, v in OBJECTIVES)[objective]
    title = f"{name}: {record.parameters:,} parameters"
    curves = loss_curves(record.tokens_seen, record.train_loss, record.eval_tokens, record.held_out_loss,
                         "tokens seen", f"Loss while training · {title}")  # fmt: skip
    which = SCORE[objective]
    if record.checkpoints:
        steps, scores = record.score_history(which)
        heads = head_score_curves(
            steps, scores, which.replace("_", "-"), f"Heads' {which.replace('_', '-')} score · {title}"
        )
        last = record.checkpoints[-1]
        layer, head = np.unravel_index(int(np.argmax(getattr(last, which))), getattr(last, which).shape)
        n = len(record.repeat_tokens)
        pattern = attention_heatmap(last.attention[layer, head, :n, :n], record.repeat_tokens, record.repeat_tokens,
                                    f"Layer {layer} head {head} on a repeated sequence, step {last.step} · {title}",
                                    causal=objective == "next_token")  # fmt: skip
        samples = "\n".join(f"- “{md_escape(p)}” → “{md_escape(o.replace(chr(10), ' ↵ '))}”" for p, o in last.samples)
    else:
        heads = pattern = message_figure("The first checkpoint comes soon.")
        samples = ""
    held = record.held_out_loss[-1] if len(record.held_out_loss) else float("nan")
    stopped = " · stopped" if record.stopped else ""
    note = (
        f"Step **{record.done_steps} of {s.steps}** · {int(record.tokens_seen[-1]) if len(record.tokens_seen) else 0:,} "
        f"tokens seen of {record.train_tokens_available:,} in the training text · held-out loss **{held:.3f}** "
        f"(uniform guess ln {record.vocab_size} = {np.log(record.vocab_size):.2f}) · {record.seconds:.0f} s{stopped}"
        + (f"\n\nSamples at step {record.checkpoints[-1].step}:\n{samples}" if samples else "")
    )
    summary = {"parameters": record.non_embedding_parameters,
               "tokens": float(record.tokens_seen[-1]) if len(record.tokens_seen) else 0.0,
               "compute": record.compute, "loss": float(held), "objective": objective}  # fmt: skip
    return note, curves, heads, pattern, summary


@guarded(lambda msg: (warning(msg), *(message_figure(msg),) * 3, gr.skip(), gr.skip()))
def pretrain(ctx: AppContext, objective, steps, width, layers, seed, request: gr.Request):
    """Streamed: the views redraw about twice a second while the model trains; Stop or leaving ends it.
    The run itself goes to the session's state, so its model can be opened in the other tabs afterwards."""
    steps = int(steps)
    settings = configs.PretrainSettings(objective=objective, steps=steps, width=int(width), layers=int(layers),
                                        seed=int(seed or 0), warmup=min(40, steps // 5))  # fmt: skip
    settings.validate()
    run = PretrainRun(settings)
    try:
        with STOPS.running(request) as should_stop:
            for record in train_live(run, should_stop=should_stop):
                yield *_run_views(record, objective), run
    finally:
        run.end_training()  # the optimiser goes; the model stays until opened, replaced or the session ends


@guarded(lambda msg: (gr.skip(), warning(msg)))
def open_trained(ctx: AppContext, run, request: gr.Request):
    """The run's model as it is now, private to this browser session, becomes the model every tab analyzes."""
    if not isinstance(run, PretrainRun):
        raise InputError("Train a model first: its model can be opened once the run has started (or was stopped).")
    name = open_run(ctx.trained, owner_of(request), run)
    label = shown_name(name)
    note = (
        f"**{md_escape(label)}** is now the model of every tab (figure titles name it). It is yours alone: "
        "no other browser session can open it, and it is freed when you close this page or open another."
    )
    return gr.update(choices=[*ctx.model_choices(), (label, name)], value=name), note


def release_run(ctx: AppContext, run) -> None:
    """``gr.State``'s delete_callback: the session expired or closed, so its training run is freed."""
    if isinstance(run, PretrainRun):
        run.close()


def unloaded(ctx: AppContext, request: gr.Request) -> None:
    """The browser tab closed: the trained model it opened is freed."""
    ctx.trained.end(owner_of(request))


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def scaling_view(ctx: AppContext, axis, mine):
    study = scaling.bundled_study()
    x, loss = scaling.frontier(study, axis)
    fit = scaling.power_law_fit(x, loss)
    grid = np.geomspace(x.min(), x.max(), 50)
    labels = [f"{int(n):,} params, {int(t):,} tokens" for n, t in zip(study.non_embedding_parameters, study.tokens)]
    live = (mine[axis], mine["loss"]) if mine and mine.get("objective") == "next_token" and mine.get(axis) else None
    figure = scaling_plot(study.axis(axis), study.held_out_loss, labels, grid, fit.predict(grid), "power-law fit", live,
                          AXIS_TITLES[axis], f"Held-out loss against {AXIS_TITLES[axis]}")  # fmt: skip
    yours = "" if live else " Pre-train a next-token model to see your run as a star."
    note = (
        f"Fit through the frontier ({len(x)} points): **{md_escape(fit.describe())}**, α's 95% interval "
        f"{fit.alpha_interval[0]:.3f}–{fit.alpha_interval[1]:.3f}. {md_escape(study.about)}{yours}"
    )
    return note, figure


@guarded(lambda msg: (warning(msg), message_figure(msg), message_figure(msg)))
def tune(ctx: AppContext, selection, loss, beta, steps, request: gr.Request, progress=gr.Progress()):  # noqa: B008
    if selection is None:
        raise InputError("Analyze a text first: the model it uses is tuned (on a private copy).")
    lm = ctx.model(selection)
    lm.spec.require(FINE_TUNE)
    settings = preferences.PreferenceSettings(loss=loss, beta=float(beta), steps=int(steps)).validate()
    run = preferences.PreferenceRun(lm, settings)
    try:
        with STOPS.running(request) as should_stop:
            record = run.train(lambda f: progress(f, desc=f"{loss.upper()} steps"), should_stop)
    finally:
        run.close()
    curves = preference_curves(record.steps, record.chosen_logp, record.rejected_logp, record.reward_margin,
                               f"{loss.upper()} (β {settings.beta:g}) · {about(selection)}")  # fmt: skip
    shift = record.shifts[0]
    bars = before_after_bars(shift.tokens, shift.before, shift.after,
                             f"Next token after “{shorten(shift.prompt, 30)}”, before and after · {about(selection)}")  # fmt: skip
    shares = "; ".join(
        f"“{md_escape(s.prompt)}”: {s.polite_share[0]:.0%} → **{s.polite_share[1]:.0%}**" for s in record.shifts
    )
    note = (
        f"{len(record.steps)} steps in {record.seconds:.0f} s{' (stopped)' if record.stopped else ''} · reward margin "
        f"{record.reward_margin[0]:.2f} → **{record.reward_margin[-1]:.2f}**, pairs ranked right "
        f"{record.reward_accuracy[-1]:.0%} · chosen log π {record.chosen_logp[0]:.1f} → {record.chosen_logp[-1]:.1f}, "
        f"rejected {record.rejected_logp[0]:.1f} → {record.rejected_logp[-1]:.1f}. Polite words' share of the "
        f"polite and rude next words on held-out prompts: {shares}. The shared model is unchanged."
    )
    if loss == "dpo" and record.chosen_logp[-1] < record.chosen_logp[0]:
        note += (
            " Both answers became less likely: DPO only widens their gap, and often does it by pushing both down."
            " **DPO + NLL** also trains on the chosen answer and holds its likelihood up."
        )
    return note, curves, bars


def build(ctx: AppContext, shared) -> None:
    limits = configs.LIMITS
    with gr.Tab("Training", id="training"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        with gr.Tabs():
            with gr.Tab("Pre-train"):
                with gr.Row():
                    objective = gr.Radio(OBJECTIVES, value="next_token", label="Objective", scale=3)
                    steps = gr.Slider(10, 1000, value=300, step=10, label="Steps", scale=2)
                    width = gr.Slider(*limits["width"], value=64, step=16, label="Width")
                    layers = gr.Slider(*limits["layers"], value=2, step=1, label="Layers")
                    seed = gr.Number(0, label="Seed", precision=0, min_width=80)
                with gr.Row():
                    run_button = gr.Button("Train from scratch", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
                note = gr.Markdown()
                curves = gr.Plot(label="Loss")
                with gr.Row():
                    heads, pattern = gr.Plot(label="Head scores"), gr.Plot(label="Attention pattern")
                with gr.Row():
                    open_button = gr.Button("Open this model in the other tabs", scale=1)
                    open_note = gr.Markdown()
                mine = gr.State(None)
                live = gr.State(None, time_to_live=ctx.settings.lora_ttl_s, delete_callback=bind(release_run, ctx))
            with gr.Tab("Scaling"):
                with gr.Row():
                    axis = gr.Radio(list(AXIS_TITLES), value="parameters", label="Against", scale=3)
                    fit_button = gr.Button("Fit the power law", variant="primary", scale=1)
                scaling_note = gr.Markdown()
                scaling_figure = gr.Plot(label="Scaling")
            with gr.Tab("Preferences"):
                shared.requires(FINE_TUNE)
                with gr.Row():
                    loss = gr.Radio([(LOSS_LABELS[k], k) for k in preferences.LOSSES], value="dpo", label="Loss")
                    beta = gr.Slider(0.01, 1.0, value=0.1, step=0.01, label="β")
                    tune_steps = gr.Slider(5, 100, value=30, step=5, label="Steps")
                    tune_button = gr.Button("Tune to the preference (private copy)", variant="primary")
                tune_note = gr.Markdown()
                with gr.Row():
                    tune_curves, tune_bars = gr.Plot(label="Preference"), gr.Plot(label="Before and after")

    one_each = {"concurrency_limit": ctx.settings.lora_trainings, "concurrency_id": "lora_train"}  # queued like LoRA
    trained = run_button.click(on_gpu(bind(pretrain, ctx), duration=120), [objective, steps, width, layers, seed],
                               [note, curves, heads, pattern, mine, live], api_name="training_pretrain", **one_each)  # fmt: skip
    shared.opens_model(
        open_button.click(bind(open_trained, ctx), live, [shared.model, open_note], api_name="training_open")
    )
    fitted = fit_button.click(bind(scaling_view, ctx), [axis, mine], [scaling_note, scaling_figure],
                              api_name="training_scaling")  # fmt: skip
    axis.change(bind(scaling_view, ctx), [axis, mine], [scaling_note, scaling_figure], api_name=False)
    tuned = tune_button.click(on_gpu(bind(tune, ctx), duration=120), [shared.state, loss, beta, tune_steps], [tune_note, tune_curves, tune_bars],
                              api_name="training_preferences", **one_each)  # fmt: skip
    stop.click(STOPS.stop, None, None, cancels=[trained, fitted, tuned], api_name="training_stop")
    root = gr.context.Context.root_block  # the app being built: free the opened model when its browser tab closes
    if root is not None:
        root.unload(bind(unloaded, ctx))
