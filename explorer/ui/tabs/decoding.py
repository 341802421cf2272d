"""Next-token tab: the distribution, the decoding knobs, step-by-step generation, strategies, logit lens."""

from __future__ import annotations

import gradio as gr

from explorer.analysis.decoding.beam_search import MAX_BEAMS
from explorer.analysis.decoding.distribution import next_token_stages
from explorer.analysis.decoding.fill_mask import check_fills_in, fill_first_mask, fill_spans, text_to_mask
from explorer.analysis.decoding.generate import MAX_SAMPLES, stream_progress
from explorer.analysis.decoding.logit_lens import top_token_grid
from explorer.analysis.decoding.sampling import DecodingSettings
from explorer.analysis.decoding.stepwise import StepHistory
from explorer.analysis.decoding.strategies import compare_strategies
from explorer.core.errors import InputError
from explorer.core.limits import MAX_NEW_TOKENS, MAX_STREAM_TOKENS
from explorer.core.spec import GENERATE
from explorer.plots.decoding import beam_tree, logit_bars, logit_lens_grid, prediction_bars, stage_bars
from explorer.plots.text import message_figure
from explorer.ui.context import AppContext, Selection, about, bind, guarded, md_escape, warning

EXPLANATION = """A language model ends in a **distribution** over its whole vocabulary: the logits go \
through a softmax. **Decoding** turns it into text. *Greedy* takes the most probable token; *sampling* \
draws one, after reshaping: **temperature** divides the logits (low = sharper, high = flatter), **top-k** \
keeps the k most probable tokens, **top-p** keeps the smallest set whose mass reaches p — so it keeps few \
tokens when the model is sure and many when it is not — and **min-p** drops tokens far less likely than the \
best one. **Beam search** follows several hypotheses and keeps the best by total log-probability."""
HISTORY_COLUMNS = ["step", "token", "how", "probability", "rank", "alternatives"]
STRATEGY_COLUMNS = ["strategy", "continuation", "log-probability", "finished"]


def settings_of(temperature, top_k, top_p, min_p, penalty, greedy) -> DecodingSettings:
    return DecodingSettings(
        temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), min_p=float(min_p),
        repetition_penalty=float(penalty), greedy=bool(greedy),
    ).validate()  # fmt: skip


def _generating(ctx: AppContext, selection: Selection | None):
    """The selection's model, which must be able to write; a sentence when nothing was analyzed yet."""
    if selection is None:
        raise InputError("Analyze a text first.")
    lm = ctx.model(selection)
    lm.spec.require(GENERATE)
    return lm


# ---------------------------------------------------------------- distribution


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def show_distribution(ctx: AppContext, selection: Selection | None, top_n_v, show_v, *knob_values):
    """The next token after the text: the model's top tokens through each decoding stage (or their logits)."""
    if selection is None:
        return "", message_figure("Analyze a text first.")
    lm = _generating(ctx, selection)
    dist = next_token_stages(lm, ctx.trace(selection), settings_of(*knob_values), int(top_n_v))
    note = (
        f"After “{md_escape(dist.after)}”: entropy **{dist.entropy_bits:.2f} bits**; the top {len(dist.ids)} "
        f"hold {1 - dist.rest:.1%} of the probability; **{dist.survivors:,}** of {dist.vocab_size:,} tokens "
        "survive the settings."
    )
    title = f"Next token after “{dist.after}” · {about(selection)}"
    if show_v == "logits":
        return note, logit_bars(dist.labels, dist.logits, title)
    return note, stage_bars(dist.labels, dist.stage_names, dist.probs, dist.kept, title)


# ---------------------------------------------------------------- step by step


def shown_probability(p: float) -> str:
    """A probability as a person reads it: three decimals, or two significant figures below 0.001 (a sampled
    token at rank 8,664 read "0")."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.2g}"


def history_rows(h: StepHistory) -> list[list]:
    return [
        [s.index + 1, s.chosen.text, s.how, shown_probability(s.chosen.prob), s.chosen.rank,
         ", ".join(f"{c.text} {shown_probability(c.prob)}" for c in s.candidates[:5])]
        for s in h.steps
    ]  # fmt: skip


def history_view(lm, h: StepHistory):
    """(history, summary, table rows, the last step's alternatives) for the step-by-step outputs."""
    source = "" if h.source_ids is None else "(decoder output) "
    last = h.steps[-1].candidates if h.steps else ()
    choices = [(f"{c.text}  ({shown_probability(c.prob)})", c.id) for c in last]
    text = lm.tokenizer.decode(list(h.new_ids), skip_special_tokens=True)
    summary = f"{source}**{md_escape(text.strip() or '…')}** · log-probability {h.logprob:.2f}" + (
        " · ended" if h.finished else ""
    )
    return h, summary, history_rows(h), gr.update(choices=choices, value=None)


@guarded(lambda msg: (gr.skip(), warning(msg), gr.skip(), gr.skip()))
def step_action(ctx: AppContext, action: str, selection, h, choice, seed_v, *knob_values):
    """``start`` afresh from the text, take the ``next`` token, ``undo`` the last, or ``take`` another one."""
    lm = _generating(ctx, selection)
    if action == "start" or h is None:
        h = StepHistory.start(lm, selection.text)
        if action == "start":
            return history_view(lm, h)
    if action == "undo":
        return history_view(lm, h.undo())
    settings = settings_of(*knob_values)
    if action == "take":  # the alternatives shown are those of the last step: redo it with the one picked
        return history_view(lm, h.retake(lm, settings, int(seed_v or 0), choice))
    return history_view(lm, h.advance(lm, settings, int(seed_v or 0)))


def step_start(ctx: AppContext, selection, h, choice, seed_v, *knob_values):
    return step_action(ctx, "start", selection, h, choice, seed_v, *knob_values)


def step_next(ctx: AppContext, selection, h, choice, seed_v, *knob_values):
    return step_action(ctx, "next", selection, h, choice, seed_v, *knob_values)


def step_undo(ctx: AppContext, selection, h, choice, seed_v, *knob_values):
    return step_action(ctx, "undo", selection, h, choice, seed_v, *knob_values)


def step_take(ctx: AppContext, selection, h, choice, seed_v, *knob_values):
    return step_action(ctx, "take", selection, h, choice, seed_v, *knob_values)


# ---------------------------------------------------------------- write


def written_parts(prompt_text: str, new_text: str) -> list[tuple[str, str | None]]:
    """The prompt and, marked, what the model wrote (for ``gr.HighlightedText``)."""
    return [(prompt_text, None), (new_text or " …", "written")]


def write_stats(progress) -> str:
    """``12 of 100 tokens · 85.3 tokens/s · model log-probability -30.2 (-2.52 per token)``, and whether it ended."""
    n, logprob = len(progress.new_ids), progress.logprob
    return (
        f"{n} of {progress.limit} tokens · {progress.tokens_per_second:.1f} tokens/s · model log-probability "
        f"{logprob:.1f} ({logprob / max(n, 1):.2f} per token)"
    ) + (" · ended (end-of-sequence token)" if progress.ended else "")


@guarded(lambda msg: (gr.skip(), warning(msg)))
def write(ctx: AppContext, selection, tokens_v, seed_v, *knob_values):
    """Stream a continuation: the text so far and its speed, about ten times a second."""
    lm = _generating(ctx, selection)
    settings = settings_of(*knob_values)
    shown = selection.text if lm.spec.adapter.continues_prompt else ""
    for progress in stream_progress(lm, selection.text, settings, int(tokens_v), seed_v or 0):
        yield written_parts(shown, progress.text), write_stats(progress)


# ---------------------------------------------------------------- strategies, logit lens, fill in


@guarded(lambda msg: ([["⚠️", msg, "", ""]], message_figure(msg)))
def compare(ctx: AppContext, selection, new_v, samples_v, beams_v, penalty_v, seed_v, *knob_values):
    """Greedy, samples and beam search side by side, and the beam search's tree."""
    lm = _generating(ctx, selection)
    settings = settings_of(*knob_values)
    result = compare_strategies(
        lm, selection.text, settings, int(new_v), int(samples_v), int(beams_v), float(penalty_v), int(seed_v or 0)
    )
    rows = [[r.strategy, r.text, round(r.logprob, 3), r.finished] for r in result.rows]
    title = f"Beam search · width {int(beams_v)} · length penalty {float(penalty_v)} · {about(selection)}"
    return rows, beam_tree(result.tree, title)


@guarded(message_figure)
def show_lens(ctx: AppContext, selection):
    """What each layer would predict next if it were the last."""
    if selection is None:
        return message_figure("Analyze a text first.")
    lm = _generating(ctx, selection)
    grid = top_token_grid(lm, ctx.trace(selection))
    title = f"Logit lens: each layer's top next token · {about(selection)}"
    return logit_lens_grid(grid.labels, grid.probs, grid.positions, title)


def _position(value) -> int | None:
    """The dropdown's token position, or None when none (or something other than a position) is picked."""
    if value in (None, "") or not str(value).lstrip("-").isdigit() or int(value) < 0:
        return None
    return int(value)


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def fill_in(ctx: AppContext, selection, position_v, new_v):
    """T5: the spans marked with sentinels, filled. BERT: the guesses for the picked (or typed) mask."""
    if selection is None:
        raise InputError("Analyze a text first.")
    lm = ctx.model(selection)
    check_fills_in(lm)
    if lm.spec.adapter.is_encoder_decoder:
        fill = fill_spans(lm, selection.text, int(new_v))
        table = "\n".join(
            f"- {md_escape(f'<extra_id_{k}>')} → **{md_escape(v or '∅')}**" for k, v in sorted(fill.spans.items())
        )
        note = f"{md_escape(fill.filled)}\n\n{table}\n\nThe model wrote: {md_escape(fill.raw)}"
        return note, message_figure(f"{fill.filled} · each sentinel's span found by beam search of width 4")
    trace = ctx.trace(selection)
    tokenizer = lm.tokenizer
    masked_text = text_to_mask(
        trace, selection.text, _position(position_v), tokenizer.mask_token, tokenizer.mask_token_id
    )
    if masked_text is not None:
        trace = ctx.trace(Selection(selection.model, masked_text))
    fill = fill_first_mask(lm, trace, 10)
    shown = " ".join(
        f"**[{md_escape(t.display)}]**" if i == fill.position else md_escape(t.display)
        for i, t in enumerate(fill.tokens)
    )
    masked = Selection(selection.model, trace.texts["input"])
    title = f"Fill in “{fill.tokens[fill.position].display}” · {about(masked)}"
    return shown, prediction_bars(fill.labels, fill.probs, "p(token | both sides)", title)


def mask_choices(ctx: AppContext, selection):
    """The text's own tokens, to pick one to mask (after each analysis)."""
    try:
        trace = ctx.trace(selection) if selection is not None else None
    except Exception:  # the analysis reported it already
        return gr.skip()
    if trace is None or "input" not in trace.tokens:
        return gr.update(choices=[], value=None)
    choices = [(f"{i}: {t.display}", i) for i, t in enumerate(trace.tokens["input"]) if not t.special]
    return gr.update(choices=choices, value=None)


# ---------------------------------------------------------------- layout and wiring


def build(ctx: AppContext, shared) -> None:
    with gr.Tab("Next token", id="decoding"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        with gr.Row():
            temperature = gr.Slider(0.05, 3.0, value=1.0, step=0.05, label="Temperature")
            top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Top-p (1 = off)")
            min_p = gr.Slider(0.0, 0.5, value=0.0, step=0.01, label="Min-p (0 = off)")
            penalty = gr.Slider(1.0, 2.0, value=1.0, step=0.05, label="Repetition penalty")
        with gr.Row():
            greedy = gr.Checkbox(False, label="Greedy (always the most probable token)")
            seed = gr.Number(0, label="Seed", precision=0)
        knobs = [temperature, top_k, top_p, min_p, penalty, greedy]
        with gr.Tabs():
            with gr.Tab("Distribution"):
                with gr.Row():
                    top_n = gr.Slider(5, 40, value=15, step=1, label="Tokens shown")
                    show = gr.Radio(["probabilities", "logits"], value="probabilities", label="Show")
                dist_note = gr.Markdown()
                dist_plot = gr.Plot(label="Next-token distribution through the decoding settings")
            with gr.Tab("Step by step"):
                gr.Markdown("Advance one token at a time with the settings above, or pick any candidate yourself.")
                with gr.Row():
                    start = gr.Button("Start from the text")
                    step_button = gr.Button("Next token", variant="primary")
                    undo = gr.Button("Undo")
                with gr.Row():
                    candidate = gr.Dropdown(
                        [], label="…or replace the last token with one of its alternatives", interactive=True, scale=3,
                        allow_custom_value=True,
                    )  # fmt: skip
                    take = gr.Button("Replace", scale=1)
                step_text = gr.Markdown()
                history_table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True)
            with gr.Tab("Write"):
                gr.Markdown(
                    "Let the model write on with the settings above, token by token as it comes. "
                    "Stop whenever you like; the same seed writes the same text."
                )
                with gr.Row():
                    write_tokens = gr.Slider(1, MAX_STREAM_TOKENS, value=100, step=1, label="Tokens to write", scale=3)
                    write_button = gr.Button("Write", variant="primary", scale=1)
                    stop_button = gr.Button("Stop", variant="stop", scale=1)
                written = gr.HighlightedText(
                    label="Text", color_map={"written": "green"}, show_legend=False, combine_adjacent=True
                )
                write_stats_note = gr.Markdown()
            with gr.Tab("Strategies"):
                with gr.Row():
                    new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=12, step=1, label="New tokens")
                    n_samples = gr.Slider(1, MAX_SAMPLES, value=3, step=1, label="Samples")
                    beams = gr.Slider(1, MAX_BEAMS, value=3, step=1, label="Beam width")
                    length_penalty = gr.Slider(-1.0, 2.0, value=1.0, step=0.1, label="Length penalty")
                run_strategies = gr.Button("Compare greedy, sampling and beam search", variant="primary")
                strategies_table = gr.Dataframe(headers=STRATEGY_COLUMNS, interactive=False, wrap=True)
                tree_plot = gr.Plot(label="Beam search tree")
            with gr.Tab("Fill in"):
                gr.Markdown(
                    "**BERT-style** models predict a hidden token from both sides: pick a token to mask (or type "
                    "`[MASK]` in the text). **T5-style** models were trained to fill spans marked by sentinels: "
                    "type e.g. `Let there be <extra_id_0>: and there was light.`"
                )
                with gr.Row():
                    position = gr.Dropdown([], label="Token to mask (BERT-style models)", allow_custom_value=True)
                    fill_button = gr.Button("Fill in", variant="primary")
                fill_note = gr.Markdown()
                fill_plot = gr.Plot(label="Predictions")
            with gr.Tab("Logit lens") as lens_tab:
                gr.Markdown(
                    "What would each layer predict if it were the last? The final norm and the output layer "
                    "applied to every layer's hidden state: watch the prediction form with depth."
                )
                lens_plot = gr.Plot(label="Logit lens")
        history = gr.State(None)

    shared.on_analyzed(bind(mask_choices, ctx), [shared.state], [position])
    shared.results_of_analysis(fill_note, fill_plot, history, step_text, history_table, written, write_stats_note,
                               strategies_table, tree_plot)  # fmt: skip
    fill_button.click(
        bind(fill_in, ctx), [shared.state, position, new_tokens], [fill_note, fill_plot], api_name="fill_in"
    )
    distribution = bind(show_distribution, ctx)
    dist_inputs = [shared.state, top_n, show, *knobs]
    shared.on_analyzed(distribution, dist_inputs, [dist_note, dist_plot], api_name="next_token")
    for control in (top_n, show, *knobs):
        control.change(distribution, dist_inputs, [dist_note, dist_plot], api_name=False, trigger_mode="always_last")
    step_inputs = [shared.state, history, candidate, seed, *knobs]
    step_outputs = [history, step_text, history_table, candidate]
    for button, handler in ((start, step_start), (step_button, step_next), (undo, step_undo), (take, step_take)):
        button.click(bind(handler, ctx), step_inputs, step_outputs, api_name=handler.__name__)
    writing = write_button.click(
        bind(write, ctx), [shared.state, write_tokens, seed, *knobs], [written, write_stats_note], api_name="write",
        concurrency_limit=ctx.settings.model_runs, concurrency_id="model_run",
    )  # fmt: skip
    stop_button.click(None, None, None, cancels=[writing], api_name=False)
    compare_inputs = [shared.state, new_tokens, n_samples, beams, length_penalty, seed, *knobs]
    run_strategies.click(
        bind(compare, ctx), compare_inputs, [strategies_table, tree_plot], api_name="strategies",
        concurrency_limit=ctx.settings.model_runs, concurrency_id="model_run",
    )  # fmt: skip
    lens_tab.select(bind(show_lens, ctx), shared.state, lens_plot, api_name="logit_lens")
