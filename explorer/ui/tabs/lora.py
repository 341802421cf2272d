"""LoRA tab: fine-tune a private copy of the model in the browser, live, and see what changed."""

from __future__ import annotations

import time

import gradio as gr
import numpy as np

from explorer.analysis.decoding import generate as decoding
from explorer.analysis.lora import compare
from explorer.analysis.lora.data import bundled_datasets, check_probes, training_data
from explorer.analysis.lora.files import load_adapter, save_adapter
from explorer.analysis.lora.finetune import (
    LoraSession,
    LoraSettings,
    adaptable_modules,
    check_trainable,
    default_targets,
    lora_parameter_count,
    parameter_count,
    session_bytes,
    session_max_bytes,
)
from explorer.analysis.lora.sessions import SessionRegistry
from explorer.core.errors import InputError
from explorer.core.limits import MAX_TRAINING_CHARS as MAX_CHARS
from explorer.core.settings import settings
from explorer.core.tokens import token_label
from explorer.plots import lora as plots
from explorer.plots.text import message_figure
from explorer.ui.context import AppContext, guarded, md_escape, user_message, warning
from explorer.ui.export import scratch_folder

PASTED = "your own text"
TRAININGS = settings().lora_trainings  # trainings that run at once; others queue
SESSION_TTL_S = settings().lora_ttl_s  # a fine-tune is freed this long after it was made (or when the tab closes)
COMPARE_COLUMNS = ["probe", "KL(adapted ‖ base), bits", "base: top 3", "adapted: top 3"]
GENERATION_COLUMNS = ["probe", "base model", "adapted model (same seed)"]
REPORT_COLUMNS = ["method", "trainable parameters", "training memory (MB)", "time (s)", "steps",
                  "held-out loss before", "held-out loss after", "mean KL on probes (bits)"]  # fmt: skip

EXPLANATION = f"""**LoRA** (low-rank adaptation) fine-tunes a model without touching its weights. Beside a frozen \
weight matrix W it learns two thin ones, A (r × in) and B (out × r), and uses W + (alpha / r)·B·A. B starts at \
zero, so a fresh adapter changes nothing; only A and B train, a fraction of a percent of the model.

*Why low rank works:* a pretrained model already holds most of what a new task needs, and the change fine-tuning \
makes is measurably low-rank — a few directions per matrix carry it. **r** is how many directions the update may \
use (capacity and parameter count grow with r); **alpha** scales the update by alpha / r, so raising alpha is like \
raising the learning rate of the adapter, and keeping alpha fixed lets you change r without retuning.

Train on a bundled style or your own text, watch the loss fall, then compare the base and adapted model on the same \
prompts. Your fine-tune runs on **your own copy** of the model: nobody else sees it and the shared model never \
changes. At most {TRAININGS} trainings run at once on this server; if others are training, yours waits in the queue."""


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


def _positions(lm) -> int:
    return lm.max_positions or 1024


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


def build(ctx: AppContext, shared) -> None:  # noqa: C901  (one tab: set-up, training, three views)
    sessions = SessionRegistry()  # this app's live fine-tunes, by browser session

    def start(request: gr.Request | None, lm, make, nbytes: int) -> LoraSession:
        """A new fine-tune for this browser session, replacing its previous one, within the memory budget
        and the number of fine-tunes one client address may hold."""
        owner = request.session_hash if request is not None else "local"
        client = getattr(getattr(request, "client", None), "host", None)
        return sessions.start(owner, nbytes, make, client)

    def release_state(session) -> None:  # gr.State's delete_callback: the session expired or closed
        if isinstance(session, LoraSession):
            sessions.end(getattr(session, "owner", None))

    datasets = bundled_datasets()
    first = next(iter(datasets.values()))
    with gr.Tab("LoRA", id="lora"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
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
                compare_table = gr.Dataframe(headers=COMPARE_COLUMNS, interactive=False, wrap=True)
                probe_plot = gr.Plot(label="Next-token distribution")
                moved_plot = gr.Plot(label="Tokens that moved most")
                generation_table = gr.Dataframe(headers=GENERATION_COLUMNS, interactive=False, wrap=True)
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
        session_state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=release_state)

    @guarded(lambda msg: (gr.skip(), warning(msg)))
    def setup(selection, chosen, r):
        lm = _model(ctx, selection)
        try:
            check_trainable(lm)
        except InputError as err:  # the module box must not keep the previous model's names
            return gr.update(choices=[], value=[]), f"⚠️ {err}"
        kinds = list(adaptable_modules(lm.model))
        chosen = [c for c in _as_list(chosen) if c in kinds] or default_targets(lm.model)
        choices = gr.update(choices=kinds, value=chosen)
        trainable = lora_parameter_count(lm.model, chosen, int(r))
        total = parameter_count(lm.model) + trainable
        return choices, (
            f"**{md_escape(lm.spec.key)}**: LoRA trains **{trainable:,}** of {total:,} parameters (**{trainable / total:.2%}**). "
            f"Your private copy takes {lm.nbytes / 2**20:,.1f} MB (per-session limit "
            f"{session_max_bytes() / 2**20:,.0f} MB)."
        )

    def describe(choice):
        return (
            f"*{datasets[choice].about}*" if choice in datasets else "*Paste a few paragraphs in a distinctive style.*"
        )

    def probes_of(choice, current):
        return "\n".join(datasets[choice].probes) if choice in datasets else current

    def train(selection, choice, pasted_v, targets_v, r, alpha_v, dropout_v, lr_v, steps_v, batch_v, seed_v,
              probe_text, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (gradio idiom)  # fmt: skip
        """Train live: yields (session, status, loss curve) every half second; errors end it with a sentence."""
        try:
            knobs = (targets_v, r, alpha_v, dropout_v, lr_v, steps_v, batch_v, seed_v)
            yield from run_training(selection, choice, pasted_v, knobs, probe_text, request, progress)
        except Exception as err:  # every error reaches the user as a sentence
            yield gr.skip(), warning(user_message(err)), gr.skip(), gr.skip()

    def run_training(selection, choice, pasted_v, knobs, probe_text, request, progress):
        lm = _model(ctx, selection)
        check_trainable(lm)
        settings = _settings(*knobs)
        check_probes(probe_text)  # refuse bad probes before training, not after
        data = training_data(lm.tokenizer, _text(choice, pasted_v), max_positions=_positions(lm))
        session = start(request, lm, lambda: LoraSession(lm, settings, data), session_bytes(lm, settings, data))
        chunk, last = max(1, settings.steps // 50), 0.0
        yield session, _status(session), _curve(session), "on"
        while not session.done:
            session.train(chunk)
            progress((len(session.losses), settings.steps), desc="training")
            if time.perf_counter() - last > 0.5 or session.done:
                last = time.perf_counter()
                yield session, _status(session), _curve(session), gr.skip()
        if session.closed:
            yield gr.skip(), "This training was replaced by a newer one.", gr.skip(), gr.skip()
            return
        session.finish()
        yield session, _status(session) + " · done.", _curve(session), session.mode

    @guarded(lambda msg: (warning(msg), gr.skip()))
    def stopped(session):
        session = _need(session)
        session.finish()
        return _status(session) + " · stopped.", _curve(session)

    @guarded(lambda msg: ([["⚠️", msg, "", ""]], message_figure(msg), message_figure(msg), []))
    def compare_view(session, probe_text, shown):
        session = _need(session)
        probe_list = check_probes(probe_text)
        comparisons = compare.compare_probes(session, probe_list)

        def top3(p):
            return ", ".join(
                f"{token_label(session.base.tokenizer, i)} {float(p[i]):.2f}" for i in p.topk(3).indices.tolist()
            )

        table = [[c.prompt, round(c.kl_bits, 4), top3(c.base), top3(c.adapted)] for c in comparisons]
        c = comparisons[min(int(shown or 1), len(comparisons)) - 1]
        ids = compare.top_union(c)
        labels = [token_label(session.base.tokenizer, i) for i in ids]
        bars = plots.before_after_bars(labels, c.base[ids].numpy(), c.adapted[ids].numpy(),
                                       f"After “{c.prompt}” · KL(adapted ‖ base) = {c.kl_bits:.3f} bits · {session.base.spec.key}")  # fmt: skip
        moved_ids, before, after = compare.moved_tokens(comparisons)
        moved = plots.moved_bars(
            [token_label(session.base.tokenizer, i) for i in moved_ids], before, after, session.base.spec.key
        )
        rows = [[p, *compare.generations(session, p, seed=session.settings.seed)] for p in probe_list]
        return table, bars, moved, rows

    @guarded(lambda msg: (message_figure(msg), gr.skip(), warning(msg), message_figure(msg), message_figure(msg)))
    def update_view(session, chosen):
        session = _need(session)
        deltas = compare.delta_weights(session)
        blocks, kinds, norms, relative = compare.norm_grid(deltas)
        names = [f"{d.block} {d.kind}" for d in deltas]
        pick = names.index(chosen) if chosen in names else int(np.argmax([d.norm for d in deltas]))
        d = deltas[pick]
        values = d.singular_values()
        rank_found = compare.numerical_rank(values)
        r = session.settings.r
        note = (
            f"**{md_escape(names[pick])}**: ΔW is {d.delta.shape[0]} × {d.delta.shape[1]}, numerical rank **{rank_found}** "
            f"(r = {r}); ‖ΔW‖ = {d.norm:.4f}, {d.norm / d.weight_norm:.2%} of ‖W‖. "
            f"Trained on {len(session.losses)} steps."
        )
        pooled = compare.downsampled(d.delta)
        shape = tuple(d.delta.shape) if pooled.shape != tuple(d.delta.shape) else None
        return (
            plots.norm_heatmap(blocks, kinds, norms, relative, session.base.spec.key),
            gr.update(choices=names, value=names[pick]),
            note,
            plots.singular_values(values, r, f"Singular values of {names[pick]} · {session.base.spec.key}"),
            plots.delta_heatmap(pooled, f"ΔW of {names[pick]} · {session.base.spec.key}", shape),
        )

    @guarded(lambda msg: warning(msg))
    def set_mode(session, mode_v, probe_text):
        session = _need(session)
        prompt = check_probes(probe_text)[0]
        session.set_mode(mode_v)
        logits = compare.merge_check(session, prompt)
        with session.lock:
            greedy = decoding.greedy(session.lm, session.base.tokenizer(prompt)["input_ids"], 16).text
        on_vs_merged = float((logits["on"] - logits["merged"]).abs().max())
        on_vs_off = float((logits["on"] - logits["off"]).abs().max())
        return (
            f"Adapter **{md_escape(mode_v)}**. Greedy continuation of “{md_escape(prompt)}”: "
            f"**{md_escape(greedy.strip() or '…')}**\n\n"
            f"Next-token logits, largest difference: merged vs adapter on **{on_vs_merged:.2e}** (the same model, "
            f"up to float rounding); adapter on vs off **{on_vs_off:.3f}**."
        )

    @guarded(lambda msg: (None, warning(msg)))
    def download(session):
        session = _need(session)
        folder = scratch_folder()
        name = f"lora-{session.base.spec.key.replace('/', '_')[:40]}-r{session.settings.r}.safetensors"
        path = save_adapter(session, folder / name)
        return str(path), f"Saved {path.stat().st_size / 1024:,.1f} kB: the A and B matrices and the settings."

    @guarded(lambda msg: (gr.skip(), warning(msg), gr.skip()))
    def upload(selection, path, choice, pasted_v, request: gr.Request):
        if not path:
            return gr.skip(), "", gr.skip()
        lm = _model(ctx, selection)
        check_trainable(lm)
        data = training_data(lm.tokenizer, _text(choice, pasted_v), max_positions=_positions(lm))
        session = start(request, lm, lambda: load_adapter(lm, path, data), 2 * lm.nbytes)  # counted once loaded
        session.finish()
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
    def full_compare(session, probe_text, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (gradio idiom)
        session = _need(session)
        probe_list = check_probes(probe_text)
        owner = f"{request.session_hash}/full"  # weights, gradients and two optimizer states: 4 copies' worth
        sessions.budget.reserve(owner, 4 * session.base.nbytes)
        try:
            full = compare.full_finetune(session, probe_list, progress=lambda f: progress(f, desc="full fine-tuning"))
        finally:
            sessions.budget.release(owner)
        reports = [compare.lora_report(session, probe_list), full]
        return [
            [r.method, f"{r.trainable:,} ({r.trainable / r.total:.2%})", round(r.training_bytes / 2**20, 1),
             round(r.seconds, 2), r.steps, round(r.heldout_before, 3), round(r.heldout_after, 3), round(r.mean_kl_bits, 4)]
            for r in reports
        ]  # fmt: skip

    shared.on_analyzed(setup, [shared.state, targets, rank], [targets, setup_note], api_name="lora_setup")
    for control in (targets, rank):
        control.input(setup, [shared.state, targets, rank], [targets, setup_note], api_name=False,
                       trigger_mode="always_last")  # fmt: skip
    data_choice.change(describe, data_choice, data_note, api_name=False)
    data_choice.change(probes_of, [data_choice, probes], probes, api_name=False)
    knobs = [targets, rank, alpha, dropout, lr, steps, batch, seed]
    training = train_button.click(
        train, [shared.state, data_choice, pasted, *knobs, probes], [session_state, train_status, loss_plot, mode],
        api_name="lora_train", concurrency_limit=TRAININGS, concurrency_id="lora_train",
    )  # fmt: skip
    stop_button.click(stopped, session_state, [train_status, loss_plot], cancels=[training], api_name="lora_stop")
    compare_button.click(
        compare_view, [session_state, probes, probe_shown], [compare_table, probe_plot, moved_plot, generation_table],
        api_name="lora_compare",
    )  # fmt: skip
    probe_shown.release(compare_view, [session_state, probes, probe_shown],
                        [compare_table, probe_plot, moved_plot, generation_table], api_name=False)  # fmt: skip
    update_inputs = [session_state, module]
    update_outputs = [norm_plot, module, update_note, sv_plot, delta_plot]
    update_button.click(update_view, update_inputs, update_outputs, api_name="lora_update")
    module.input(update_view, update_inputs, update_outputs, api_name=False)
    mode.input(set_mode, [session_state, mode, probes], mode_note, api_name="lora_mode")
    download_button.click(download, session_state, [download_file, upload_note], api_name="lora_download")
    upload_file.upload(
        upload, [shared.state, upload_file, data_choice, pasted], [session_state, upload_note, loss_plot],
        api_name="lora_upload",
    )  # fmt: skip
    full_button.click(full_compare, [session_state, probes], report_table, api_name="lora_full_finetune",
                      concurrency_limit=TRAININGS, concurrency_id="lora_train")  # fmt: skip

    def unloaded(request: gr.Request):
        sessions.end(request.session_hash)

    root = gr.context.Context.root_block  # the app being built: free the fine-tune when its browser tab closes
    if root is not None:
        root.unload(unloaded)
