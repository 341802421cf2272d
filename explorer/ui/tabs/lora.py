"""LoRA tab: fine-tune a private copy of the model in the browser, live, and see what changed.

The handlers take the app context first and, where they start or end a fine-tune, this app's registry of
live fine-tunes (``SessionRegistry``, bounded by the server's settings and made in ``build``).
"""

from __future__ import annotations

import gradio as gr

from explorer.analysis.lora import compare
from explorer.analysis.lora.data import bundled_datasets, check_probes
from explorer.analysis.lora.files import adapter_filename, save_adapter
from explorer.analysis.lora.finetune import (
    LoraSession,
    LoraSettings,
    adaptable_modules,
    check_trainable,
    default_targets,
    lora_parameter_count,
    parameter_count,
    train_live,
)
from explorer.analysis.lora.sessions import (
    SessionRegistry,
    compare_with_full_finetuning,
    start_from_file,
    start_training,
)
from explorer.core.errors import InputError
from explorer.core.family import FINE_TUNE
from explorer.core.limits import MAX_TRAINING_CHARS as MAX_CHARS
from explorer.plots import lora as plots
from explorer.plots.text import message_figure
from explorer.ui.context import AppContext, bind, guarded, md_escape, owner_of, user_message, warning
from explorer.ui.export import scratch_folder
from explorer.ui.gpu import on_gpu
from explorer.ui.stops import StopRequests

PASTED = "your own text"
COMPARE_COLUMNS = ["probe", "KL(adapted ‖ base), bits", "base: top 3", "adapted: top 3"]
GENERATION_COLUMNS = ["probe", "base model", "adapted model (same seed)"]
# Widths set, so text wraps inside its column: sized by their text, a long top-3 or continuation took the
# table's width and pushed the adapted model's column out of sight at 1280 px.
COMPARE_WIDTHS, GENERATION_WIDTHS = ["22%", "18%", "30%", "30%"], ["16%", "42%", "42%"]
REPORT_COLUMNS = ["method", "trainable parameters", "training memory (MB)", "time (s)", "steps",
                  "held-out loss before", "held-out loss after", "mean KL on probes (bits)"]  # fmt: skip

EXPLANATION = """**LoRA** (low-rank adaptation) fine-tunes a model without touching its weights. Beside a frozen \
weight matrix W it learns two thin ones, A (r × in) and B (out × r), and uses W + (alpha / r)·B·A. B starts at \
zero, so a fresh adapter changes nothing; only A and B train, a fraction of a percent of the model.

*Why low rank works:* a pretrained model already holds most of what a new task needs, and the change fine-tuning \
makes is measurably low-rank — a few directions per matrix carry it. **r** is how many directions the update may \
use (capacity and parameter count grow with r); **alpha** scales the update by alpha / r, so raising alpha is like \
raising the learning rate of the adapter, and keeping alpha fixed lets you change r without retuning.

Train on a bundled style or your own text, watch the loss fall, then compare the base and adapted model on the same \
prompts. Your fine-tune runs on **your own copy** of the model: nobody else sees it and the shared model never \
changes. At most {trainings} trainings run at once on this server; if others are training, yours waits in the queue."""


def _model(ctx: AppContext, selection):
    return ctx.model(selection) if selection is not None else ctx.pool.get(ctx.default_model)


def _as_list(chosen) -> list:
    """The dropdown's value as a list: one module name may come alone through the API."""
    if chosen is None:
        return []
    if isinstance(chosen, str):
        return [chosen]
    if isinstance(chosen, (list, tuple)):
        return list(chosen)
    raise InputError("Pick the modules to adapt from the list (their names, e.g. attn.c_attn).")


def _settings(targets, r, alpha, dropout, lr, steps, batch, seed) -> LoraSettings:
    try:
        return LoraSettings(
            tuple(_as_list(targets)),
            int(r),
            float(alpha),
            float(dropout),
            float(lr),
            int(steps),
            int(batch),
            int(seed or 0),
        ).validate()
    except (TypeError, ValueError) as err:
        raise InputError("Every training setting must be a number.") from err


def _text(choice: str, pasted: str) -> str:
    if choice == PASTED:
        return pasted or ""
    if choice not in bundled_datasets():
        raise InputError(f"Pick one of the datasets: {', '.join(bundled_datasets())}, or {PASTED}.")
    return bundled_datasets()[choice].text


def _need(session: LoraSession | None) -> LoraSession:
    if session is None or session.peft is None:
        raise InputError("Train an adapter first (or upload one).")
    return session


def _status(session: LoraSession) -> str:
    steps, total = len(session.losses), session.settings.steps
    rate = steps / session.seconds if session.seconds else 0.0
    text = f"Step **{steps}/{total}**" + (f" · loss {session.losses[-1]:.3f} · {rate:.1f} steps/s" if steps else "")
    text += f" · held-out loss before: {session.heldout_before:.3f}"
    if session.heldout_after is not None:
        text += f", after: **{session.heldout_after:.3f}**"
    return text


def _curve(session: LoraSession):
    title = f"LoRA training loss · r = {session.settings.r} · {session.base.spec.key}"
    return plots.loss_curve(
        session.losses, session.settings.steps, session.heldout_before, session.heldout_after, title
    )


def _client(request: gr.Request | None) -> str | None:
    """The client's address, which bounds how many fine-tunes one address may hold."""
    return getattr(getattr(request, "client", None), "host", None)


def _top3(top) -> str:
    return ", ".join(f"{label} {p:.2f}" for label, p in top)


# ---------------------------------------------------------------- handlers (the app context first)


@guarded(lambda msg: (gr.skip(), warning(msg)))
def setup(ctx: AppContext, selection, chosen, r):
    """The model's modules to adapt (kept where they still exist) and what a LoRA of rank r trains."""
    lm = _model(ctx, selection)
    try:
        check_trainable(lm, ctx.settings.lora_max_bytes)
    except InputError as err:  # the module box must not keep the previous model's names
        return gr.update(choices=[], value=[]), f"⚠️ {err}"
    kinds = list(adaptable_modules(lm.model))
    chosen = [c for c in _as_list(chosen) if c in kinds] or default_targets(lm.model)
    trainable = lora_parameter_count(lm.model, chosen, int(r))
    total = parameter_count(lm.model) + trainable
    return gr.update(choices=kinds, value=chosen), (
        f"**{md_escape(lm.spec.key)}**: LoRA trains **{trainable:,}** of {total:,} parameters (**{trainable / total:.2%}**). "
        f"Your private copy takes {lm.nbytes / 2**20:,.1f} MB (per-session limit "
        f"{ctx.settings.lora_max_bytes / 2**20:,.0f} MB)."
    )


def describe(ctx: AppContext, choice):
    datasets = bundled_datasets()
    return f"*{datasets[choice].about}*" if choice in datasets else "*Paste a few paragraphs in a distinctive style.*"


def probes_of(ctx: AppContext, choice, current):
    datasets = bundled_datasets()
    return "\n".join(datasets[choice].probes) if choice in datasets else current


def train(ctx: AppContext, fine_tunes: SessionRegistry, selection, choice, pasted_v, targets_v, r, alpha_v, dropout_v,
          lr_v, steps_v, batch_v, seed_v, probe_text, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (gradio idiom)  # fmt: skip
    """Train live: yields (session, status, loss curve, adapter mode) every half second; errors end it with a sentence."""
    try:
        lm = _model(ctx, selection)
        check_trainable(lm, ctx.settings.lora_max_bytes)
        lora = _settings(targets_v, r, alpha_v, dropout_v, lr_v, steps_v, batch_v, seed_v)
        check_probes(probe_text)  # refuse bad probes before training, not after
        session = start_training(fine_tunes, owner_of(request), lm, lora, _text(choice, pasted_v), _client(request))
        yield session, _status(session), _curve(session), "on"
        for _ in train_live(session, lambda done, total: progress((done, total), desc="training")):
            yield session, _status(session), _curve(session), gr.skip()
        if session.closed:
            yield gr.skip(), "This training was replaced by a newer one.", gr.skip(), gr.skip()
            return
        session.finish()
        yield session, _status(session) + " · done.", _curve(session), session.mode
    except Exception as err:  # every error reaches the user as a sentence
        yield gr.skip(), warning(user_message(err)), gr.skip(), gr.skip()


FULL_STOPS = StopRequests()  # the full fine-tune comparison's stop flag per browser session


@guarded(lambda msg: (warning(msg), gr.skip()))
def stopped(ctx: AppContext, session, request: gr.Request = None):
    FULL_STOPS.stop(request)
    session = _need(session)
    session.finish()
    return _status(session) + " · stopped.", _curve(session)


@guarded(lambda msg: ([["⚠️", msg, "", ""]], message_figure(msg), message_figure(msg), []))
def compare_view(ctx: AppContext, session, probe_text, shown):
    """The comparison table, one probe's next-token distribution before and after, what moved, generations."""
    session = _need(session)
    view = compare.probe_view(session, check_probes(probe_text), shown)
    key, c = session.base.spec.key, view.shown
    table = [[row.prompt, round(row.kl_bits, 4), _top3(row.base_top), _top3(row.adapted_top)] for row in view.rows]
    title = f"After “{c.prompt}” · KL(adapted ‖ base) = {c.kl_bits:.3f} bits · {key}"
    return (
        table,
        plots.before_after_bars(list(view.labels), view.base, view.adapted, title),
        plots.moved_bars(list(view.moved_labels), view.moved_before, view.moved_after, key),
        [list(row) for row in view.generations],
    )


@guarded(lambda msg: (message_figure(msg), gr.skip(), warning(msg), message_figure(msg), message_figure(msg)))
def update_view(ctx: AppContext, session, chosen):
    """‖ΔW‖ per layer and module, and one matrix's singular values and ΔW."""
    session = _need(session)
    u = compare.update_view(session, chosen)
    key = session.base.spec.key
    note = (
        f"**{md_escape(u.name)}**: ΔW is {u.shape[0]} × {u.shape[1]}, numerical rank **{u.rank}** "
        f"(r = {u.r}); ‖ΔW‖ = {u.norm:.4f}, {u.norm / u.weight_norm:.2%} of ‖W‖. "
        f"Trained on {u.steps} steps."
    )
    return (
        plots.norm_heatmap(u.blocks, u.kinds, u.norms, u.relative, key),
        gr.update(choices=u.names, value=u.name),
        note,
        plots.singular_values(u.singular_values, u.r, f"Singular values of {u.name} · {key}"),
        plots.delta_heatmap(u.pooled, f"ΔW of {u.name} · {key}", u.pooled_from),
    )


@guarded(lambda msg: warning(msg))
def set_mode(ctx: AppContext, session, mode_v, probe_text):
    """The same private model with the adapter on, off or merged: its greedy continuation, and the logits checked."""
    check = compare.switch_mode(_need(session), mode_v, check_probes(probe_text)[0])
    return (
        f"Adapter **{md_escape(check.mode)}**. Greedy continuation of “{md_escape(check.prompt)}”: "
        f"**{md_escape(check.greedy.strip() or '…')}**\n\n"
        f"Next-token logits, largest difference: merged vs adapter on **{check.on_vs_merged:.2e}** (the same model, "
        f"up to float rounding); adapter on vs off **{check.on_vs_off:.3f}**."
    )


@guarded(lambda msg: (None, warning(msg)))
def download(ctx: AppContext, session):
    session = _need(session)
    path = save_adapter(session, scratch_folder() / adapter_filename(session))
    return str(path), f"Saved {path.stat().st_size / 1024:,.1f} kB: the A and B matrices and the settings."


@guarded(lambda msg: (gr.skip(), warning(msg), gr.skip()))
def upload(ctx: AppContext, fine_tunes: SessionRegistry, selection, path, choice, pasted_v, request: gr.Request):
    """A new fine-tune holding an uploaded adapter, measured on the current training data."""
    if not path:
        return gr.skip(), "", gr.skip()
    lm = _model(ctx, selection)
    check_trainable(lm, ctx.settings.lora_max_bytes)
    session = start_from_file(fine_tunes, owner_of(request), lm, path, _text(choice, pasted_v), _client(request))
    s = session.settings
    return (
        session,
        (
            f"Loaded an adapter with r = {s.r}, alpha = {s.alpha:g} on {md_escape(', '.join(s.targets))}. Held-out loss on the "
            f"current data: {session.heldout_before:.3f} without it, **{session.heldout_after:.3f}** with it."
        ),
        _curve(session),
    )


@guarded(lambda msg: [[f"⚠️ {msg}", "", "", "", "", "", "", ""]])
def full_compare(ctx: AppContext, fine_tunes: SessionRegistry, session, probe_text, request: gr.Request,
                 progress=gr.Progress()):  # noqa: B008 (gradio idiom)  # fmt: skip
    """The LoRA run next to full fine-tuning on the same data (tiny models): parameters, memory, time, result."""
    session = _need(session)
    with FULL_STOPS.running(request) as should_stop:  # the Stop button, or the browser tab closing, ends it
        reports = compare_with_full_finetuning(
            fine_tunes, owner_of(request), session, check_probes(probe_text),
            progress=lambda f: progress(f, desc="full fine-tuning"), should_stop=should_stop,
        )  # fmt: skip
    return [
        [r.method, f"{r.trainable:,} ({r.trainable / r.total:.2%})", round(r.training_bytes / 2**20, 1),
         round(r.seconds, 2), r.steps, round(r.heldout_before, 3), round(r.heldout_after, 3), round(r.mean_kl_bits, 4)]
        for r in reports
    ]  # fmt: skip


def release_state(ctx: AppContext, fine_tunes: SessionRegistry, session) -> None:
    """``gr.State``'s delete_callback: the session expired or closed, so its fine-tune is freed."""
    if isinstance(session, LoraSession):
        fine_tunes.end(getattr(session, "owner", None))


def unloaded(ctx: AppContext, fine_tunes: SessionRegistry, request: gr.Request) -> None:
    """The browser tab closed: its fine-tune is freed (a full fine-tune it started stops: ``stop_session``)."""
    fine_tunes.end(owner_of(request))


# ---------------------------------------------------------------- layout and wiring


def build(ctx: AppContext, shared) -> None:
    fine_tunes = SessionRegistry.from_settings(ctx.settings, ctx.copies_budget)  # live fine-tunes, by session

    datasets = bundled_datasets()
    first = next(iter(datasets.values()))
    with gr.Tab("LoRA", id="lora"):
        gr.Markdown(EXPLANATION.format(trainings=ctx.settings.lora_trainings), elem_classes="explorer-explain")
        shared.requires(FINE_TUNE)
        with gr.Row():
            data_choice = gr.Radio([*datasets, PASTED], value=first.name, label="Training data", scale=2)
            data_note = gr.Markdown(f"*{first.about}*")
        pasted = gr.Textbox(
            "", label=f"Your own text (with '{PASTED}'; a few paragraphs, at most {MAX_CHARS:,} characters)", lines=3,
            max_length=MAX_CHARS,
        )  # fmt: skip
        with gr.Row():
            targets = gr.Dropdown(
                [], value=[], multiselect=True, allow_custom_value=True, label="Modules to adapt", scale=2,
                info="Linear layers inside every block: attention projections and the MLP.",
            )  # fmt: skip
            rank = gr.Slider(1, 64, value=8, step=1, label="Rank r")
            alpha = gr.Slider(1, 128, value=16, step=1, label="Alpha")
            dropout = gr.Slider(0.0, 0.5, value=0.0, step=0.05, label="LoRA dropout")
        with gr.Row():
            lr = gr.Number(0.003, label="Learning rate", minimum=1e-6, maximum=1.0)
            steps = gr.Slider(10, 500, value=100, step=10, label="Steps")
            batch = gr.Slider(1, 16, value=4, step=1, label="Batch (windows of 64 tokens)")
            seed = gr.Number(0, label="Seed", precision=0, minimum=0)
        setup_note = gr.Markdown()
        probes = gr.Textbox("\n".join(first.probes), label="Probe prompts (one a line, at most 8)", lines=3)
        with gr.Row():
            train_button = gr.Button("Train a new adapter", variant="primary")
            stop_button = gr.Button("Stop", variant="stop")
        train_status = gr.Markdown()
        loss_plot = gr.Plot(label="Loss")
        with gr.Tabs():
            with gr.Tab("Before vs after"):
                with gr.Row():
                    compare_button = gr.Button("Compare base and adapted", variant="primary")
                    probe_shown = gr.Slider(1, 8, value=1, step=1, label="Probe shown")
                compare_table = gr.Dataframe(
                    headers=COMPARE_COLUMNS, interactive=False, wrap=True, column_widths=COMPARE_WIDTHS
                )
                probe_plot = gr.Plot(label="Next-token distribution")
                moved_plot = gr.Plot(label="Tokens that moved most")
                generation_table = gr.Dataframe(
                    headers=GENERATION_COLUMNS, interactive=False, wrap=True, column_widths=GENERATION_WIDTHS
                )
            with gr.Tab("Inside the update"):
                gr.Markdown(
                    "ΔW = (alpha / r)·B·A for every adapted matrix. Its singular values show the rank: at most r are "
                    "above round-off, however large the matrix."
                )
                with gr.Row():
                    update_button = gr.Button("Show the update", variant="primary")
                    module = gr.Dropdown([], label="Matrix", allow_custom_value=True)
                norm_plot = gr.Plot(label="‖ΔW‖ per layer and module")
                update_note = gr.Markdown()
                with gr.Row():
                    sv_plot = gr.Plot(label="Singular values")
                    delta_plot = gr.Plot(label="ΔW")
            with gr.Tab("Adapter"):
                mode = gr.Radio(
                    [("adapter on", "on"), ("adapter off (base model)", "off"), ("merged into the weights", "merged")],
                    value="on", label="The same private model, three ways",
                )  # fmt: skip
                mode_note = gr.Markdown()
                with gr.Row():
                    download_button = gr.Button("Download the adapter (safetensors)")
                    download_file = gr.File(label="Adapter file", interactive=False)
                    upload_file = gr.File(label="Upload an adapter", file_types=[".safetensors"], type="filepath")
                upload_note = gr.Markdown()
                full_button = gr.Button("Compare with full fine-tuning (tiny models)")
                report_table = gr.Dataframe(headers=REPORT_COLUMNS, interactive=False, wrap=True)
        session_state = gr.State(
            None, time_to_live=ctx.settings.lora_ttl_s, delete_callback=bind(release_state, ctx, fine_tunes)
        )  # a fine-tune is freed this long after it was made (or when the tab closes)

    setup_ = bind(setup, ctx)
    shared.on_analyzed(setup_, [shared.state, targets, rank], [targets, setup_note], api_name="lora_setup")
    for control in (targets, rank):
        control.input(setup_, [shared.state, targets, rank], [targets, setup_note], api_name=False,
                       trigger_mode="always_last")  # fmt: skip
    data_choice.change(bind(describe, ctx), data_choice, data_note, api_name=False)
    data_choice.change(bind(probes_of, ctx), [data_choice, probes], probes, api_name=False)
    knobs = [targets, rank, alpha, dropout, lr, steps, batch, seed]
    trainings = {"concurrency_limit": ctx.settings.lora_trainings, "concurrency_id": "lora_train"}  # others queue
    training = train_button.click(
        on_gpu(bind(train, ctx, fine_tunes), duration=120), [shared.state, data_choice, pasted, *knobs, probes],
        [session_state, train_status, loss_plot, mode], api_name="lora_train", **trainings,
    )  # fmt: skip
    stop_button.click(bind(stopped, ctx), session_state, [train_status, loss_plot], cancels=[training],
                      api_name="lora_stop")  # fmt: skip
    compare_inputs = [session_state, probes, probe_shown]
    compare_outputs = [compare_table, probe_plot, moved_plot, generation_table]
    compare_button.click(bind(compare_view, ctx), compare_inputs, compare_outputs, api_name="lora_compare")
    probe_shown.release(bind(compare_view, ctx), compare_inputs, compare_outputs, api_name=False)
    update_inputs = [session_state, module]
    update_outputs = [norm_plot, module, update_note, sv_plot, delta_plot]
    update_button.click(bind(update_view, ctx), update_inputs, update_outputs, api_name="lora_update")
    module.input(bind(update_view, ctx), update_inputs, update_outputs, api_name=False)
    mode.input(bind(set_mode, ctx), [session_state, mode, probes], mode_note, api_name="lora_mode")
    download_button.click(bind(download, ctx), session_state, [download_file, upload_note], api_name="lora_download")
    upload_file.upload(
        bind(upload, ctx, fine_tunes), [shared.state, upload_file, data_choice, pasted], [session_state, upload_note, loss_plot],
        api_name="lora_upload",
    )  # fmt: skip
    full_button.click(bind(full_compare, ctx, fine_tunes), [session_state, probes], report_table,
                      api_name="lora_full_finetune", **trainings)  # fmt: skip
    root = gr.context.Context.root_block  # the app being built: free the fine-tune when its browser tab closes
    if root is not None:
        root.unload(bind(unloaded, ctx, fine_tunes))
