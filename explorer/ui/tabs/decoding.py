"""Next-token tab: the distribution, the decoding knobs, step-by-step generation, strategies, logit lens."""

from __future__ import annotations

import time

import gradio as gr
import numpy as np
import torch

from explorer.analysis.decoding import generate as decoding
from explorer.analysis.decoding.beam_search import MAX_BEAMS, beam_search
from explorer.analysis.decoding.fill_mask import SENTINEL, fill_mask, infill_spans, mask_token_at, masked_positions
from explorer.analysis.decoding.logit_lens import logit_lens
from explorer.analysis.decoding.sampling import DecodingSettings, next_token_distribution, transform
from explorer.analysis.decoding.stepwise import StepHistory
from explorer.core.errors import InputError
from explorer.core.spec import GENERATE
from explorer.core.tokens import token_label
from explorer.plots.decoding import beam_tree, logit_lens_grid, stage_bars
from explorer.plots.text import message_figure
from explorer.ui.context import AppContext, Selection, about, guarded, md_escape, warning

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


def _generating(ctx: AppContext, selection: Selection):
    lm = ctx.model(selection)
    lm.spec.require(GENERATE)
    return lm


def _written(lm, prompt_text: str, new_ids: list[int]) -> list[tuple[str, str | None]]:
    """The prompt and, marked, what the model wrote (for ``gr.HighlightedText``)."""
    return [(prompt_text, None), (lm.tokenizer.decode(new_ids, skip_special_tokens=True) or " …", "written")]


def _write_stats(new_ids: list[int], logprob: float, seconds: float, limit: int) -> str:
    rate = len(new_ids) / seconds if seconds > 0 else 0.0
    return (
        f"{len(new_ids)} of {limit} tokens · {rate:.1f} tokens/s · model log-probability {logprob:.1f} "
        f"({logprob / max(len(new_ids), 1):.2f} per token)"
    )


def build(ctx: AppContext, shared) -> None:  # noqa: C901  (one tab, four small views)
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
                    write_tokens = gr.Slider(
                        1, decoding.MAX_STREAM_TOKENS, value=100, step=1, label="Tokens to write", scale=3
                    )
                    write_button = gr.Button("Write", variant="primary", scale=1)
                    stop_button = gr.Button("Stop", variant="stop", scale=1)
                written = gr.HighlightedText(
                    label="Text", color_map={"written": "green"}, show_legend=False, combine_adjacent=True
                )
                write_stats = gr.Markdown()
            with gr.Tab("Strategies"):
                with gr.Row():
                    new_tokens = gr.Slider(1, decoding.MAX_NEW_TOKENS, value=12, step=1, label="New tokens")
                    n_samples = gr.Slider(1, decoding.MAX_SAMPLES, value=3, step=1, label="Samples")
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

    @guarded(lambda msg: (warning(msg), message_figure(msg)))
    def show_distribution(selection, top_n_v, show_v, *knob_values):
        if selection is None:
            return "", message_figure("Analyze a text first.")
        lm = _generating(ctx, selection)
        settings = settings_of(*knob_values)
        trace = ctx.trace(selection)
        stream = lm.spec.adapter.target_stream
        logits = torch.from_numpy(np.array(trace.logits[-1]))
        previous = torch.tensor([t.id for t in trace.tokens[stream]])
        stages = transform(logits, previous, settings)
        top = next_token_distribution(logits, int(top_n_v))
        ids = top["ids"]
        labels = [token_label(lm.tokenizer, i) for i in ids]
        kept = int(stages[-1].kept_mask.sum())
        note = (
            f"After “{md_escape(trace.labels(stream)[-1])}”: entropy **{top['entropy_bits']:.2f} bits**; the top {len(ids)} "
            f"hold {1 - top['rest']:.1%} of the probability; **{kept:,}** of {logits.numel():,} tokens survive the settings."
        )
        title = f"Next token after “{trace.labels(stream)[-1]}” · {about(selection)}"
        if show_v == "logits":
            fig = stage_bars(labels, ["logit"], logits[ids].numpy()[None], np.ones((1, len(ids)), bool), title)
            fig.update_layout(yaxis={"title": "logit (softmax turns these into probabilities)", "rangemode": "normal"})
            return note, fig
        names = [s.name for s in stages]
        probs = np.stack([s.probs[ids].numpy() for s in stages])
        kept_mask = np.stack([s.kept_mask[ids].numpy() for s in stages])
        return note, stage_bars(labels, names, probs, kept_mask, title)

    def history_rows(lm, h) -> list[list]:
        return [
            [s.index + 1, s.chosen.text, s.how, round(s.chosen.prob, 4), s.chosen.rank,
             ", ".join(f"{c.text} {c.prob:.2f}" for c in s.candidates[:5])]
            for s in h.steps
        ]  # fmt: skip

    def history_view(lm, h):
        text = lm.tokenizer.decode(list(h.new_ids), skip_special_tokens=True)
        source = "" if h.source_ids is None else "(decoder output) "
        last = h.steps[-1].candidates if h.steps else ()
        choices = [(f"{c.text}  ({c.prob:.3f})", c.id) for c in last]
        summary = f"{source}**{md_escape(text.strip() or '…')}** · log-probability {h.logprob:.2f}" + (
            " · ended" if h.finished else ""
        )
        return h, summary, history_rows(lm, h), gr.update(choices=choices, value=None)

    @guarded(lambda msg: (gr.skip(), warning(msg), gr.skip(), gr.skip()))
    def step_action(action, selection, h, choice, seed_v, *knob_values):
        if selection is None:
            raise InputError("Analyze a text first.")
        lm = _generating(ctx, selection)
        if action == "start" or h is None:
            h = StepHistory.start(lm, selection.text)
            if action == "start":
                return history_view(lm, h)
        if action == "undo":
            return history_view(lm, h.undo())
        settings = settings_of(*knob_values)
        if action == "take":  # the alternatives shown are those of the last step: redo it with the one picked
            if choice is None or not h.steps:
                raise InputError("Take a first step, then pick one of its alternatives.")
            return history_view(lm, h.undo().advance(lm, settings, int(seed_v or 0), int(choice)))
        return history_view(lm, h.advance(lm, settings, int(seed_v or 0)))

    @guarded(lambda msg: (gr.skip(), warning(msg)))
    def write(selection, tokens_v, seed_v, *knob_values):
        """Stream a continuation: the text so far and its speed, about ten times a second."""
        if selection is None:
            raise InputError("Analyze a text first.")
        lm = _generating(ctx, selection)
        settings = settings_of(*knob_values)
        prompt = lm.tokenizer(selection.text)["input_ids"]
        limit = decoding.check_count(int(tokens_v), 1, decoding.MAX_STREAM_TOKENS, "number of tokens to write")
        shown = selection.text if lm.spec.adapter.continues_prompt else ""
        new, logprob, start, last = [], 0.0, time.perf_counter(), 0.0
        for token, token_logprob in decoding.stream(lm, prompt, settings, limit, seed_v or 0):
            new.append(token)
            logprob += token_logprob
            now = time.perf_counter()
            if now - last >= 0.1 or len(new) == limit:
                last = now
                yield _written(lm, shown, new), _write_stats(new, logprob, now - start, limit)
        yield (
            _written(lm, shown, new),
            _write_stats(new, logprob, time.perf_counter() - start, limit)
            + (" · ended (end-of-sequence token)" if new and new[-1] in decoding.eos_ids(lm) else ""),
        )

    @guarded(lambda msg: ([["⚠️", msg, "", ""]], message_figure(msg)))
    def compare(selection, new_v, samples_v, beams_v, penalty_v, seed_v, *knob_values):
        if selection is None:
            raise InputError("Analyze a text first.")
        lm = _generating(ctx, selection)
        settings = settings_of(*knob_values)
        prompt = lm.tokenizer(selection.text)["input_ids"]
        new_v = int(new_v)
        rows = []
        g = decoding.greedy(lm, prompt, new_v)
        rows.append(["greedy", g.text, round(g.logprob, 3), g.finished])
        sampled = decoding.sample(lm, prompt, settings, int(samples_v), new_v, int(seed_v or 0))
        rows += [[f"sample {i + 1}", s.text, round(s.logprob, 3), s.finished] for i, s in enumerate(sampled)]
        result = beam_search(lm, prompt, int(beams_v), new_v, float(penalty_v))
        rows += [
            [f"beam {i + 1} (score {h.score:.3f})", h.text, round(h.logprob, 3), True]
            for i, h in enumerate(result.finished[: int(beams_v)])
        ]
        nodes = [
            {"id": n.id, "parent": n.parent, "step": n.step, "score": n.logprob, "status": n.status,
             "label": "⟨start⟩" if n.token is None else token_label(lm.tokenizer, n.token)}
            for n in result.nodes
        ]  # fmt: skip
        return rows, beam_tree(
            nodes, f"Beam search · width {int(beams_v)} · length penalty {float(penalty_v)} · {about(selection)}"
        )

    @guarded(message_figure)
    def show_lens(selection):
        if selection is None:
            return message_figure("Analyze a text first.")
        lm = _generating(ctx, selection)
        trace = ctx.trace(selection)
        lens = logit_lens(lm, trace, top_k=1)
        labels = np.vectorize(lambda i: token_label(lm.tokenizer, int(i)))(lens.ids[..., 0])
        title = f"Logit lens: each layer's top next token · {about(selection)}"
        return logit_lens_grid(labels, lens.probs[..., 0], trace.labels(lens.stream), title)

    @guarded(lambda msg: (warning(msg), message_figure(msg)))
    def fill_in(selection, position_v, new_v):
        if selection is None:
            raise InputError("Analyze a text first.")
        lm = ctx.model(selection)
        if lm.spec.adapter.continues_prompt:
            raise InputError(f"{lm.spec.key} only writes left to right; filling in is for BERT- and T5-style models.")
        if lm.spec.adapter.is_encoder_decoder:
            if not SENTINEL.search(selection.text):
                raise InputError("Mark the span to fill with a sentinel such as <extra_id_0> in the text.")
            prompt = lm.tokenizer(selection.text)["input_ids"]
            best = beam_search(lm, prompt, 4, int(new_v)).best
            raw = lm.tokenizer.decode(list(best.new_ids), skip_special_tokens=False)
            spans, filled = infill_spans(selection.text, raw)
            table = "\n".join(
                f"- {md_escape(f'<extra_id_{k}>')} → **{md_escape(v or '∅')}**" for k, v in sorted(spans.items())
            )
            note = f"{md_escape(filled)}\n\n{table}\n\nThe model wrote: {md_escape(raw)}"
            return note, message_figure("Spans filled (beam width 4).")
        trace = ctx.trace(selection)
        mask_id = lm.tokenizer.mask_token_id
        masked = masked_positions(trace, mask_id)
        if position_v not in (None, "") and str(position_v).lstrip("-").isdigit() and int(position_v) >= 0:
            token = trace.tokens["input"][int(position_v)] if int(position_v) < len(trace.tokens["input"]) else None
            if token is None or token.special:
                raise InputError("Pick one of the text's own tokens to mask.")
            if token.id != mask_id:
                text = mask_token_at(selection.text, token.start, token.end, lm.tokenizer.mask_token)
                trace = ctx.trace(Selection(selection.model, text))
                masked = masked_positions(trace, mask_id)
        if not masked:
            raise InputError(f"Pick a token to mask, or type {lm.tokenizer.mask_token} in the text.")
        where = masked[0]
        ids, probs = fill_mask(trace, where, 10)
        labels = [token_label(lm.tokenizer, i) for i in ids]
        shown = " ".join(
            f"**[{md_escape(t.display)}]**" if i == where else md_escape(t.display)
            for i, t in enumerate(trace.tokens["input"])
        )
        title = f"Fill in “{trace.tokens['input'][where].display}” · {about(Selection(selection.model, trace.texts['input']))}"
        fig = stage_bars(labels, ["p(token | both sides)"], np.array([probs]), np.ones((1, len(ids)), bool), title)
        return shown, fig

    def mask_choices(selection):
        try:
            trace = ctx.trace(selection) if selection is not None else None
        except Exception:  # the analysis reported it already
            return gr.skip()
        if trace is None or "input" not in trace.tokens:
            return gr.update(choices=[], value=None)
        tokens = trace.tokens["input"]
        choices = [(f"{i}: {t.display}", i) for i, t in enumerate(tokens) if not t.special]
        return gr.update(choices=choices, value=None)

    shared.on_analyzed(mask_choices, [shared.state], [position])
    fill_button.click(fill_in, [shared.state, position, new_tokens], [fill_note, fill_plot], api_name="fill_in")

    dist_inputs = [shared.state, top_n, show, *knobs]
    shared.on_analyzed(show_distribution, dist_inputs, [dist_note, dist_plot], api_name="next_token")
    for control in (top_n, show, *knobs):
        control.change(
            show_distribution, dist_inputs, [dist_note, dist_plot], api_name=False, trigger_mode="always_last"
        )
    step_inputs = [history, candidate, seed, *knobs]
    step_outputs = [history, step_text, history_table, candidate]
    for button, action in ((start, "start"), (step_button, "next"), (undo, "undo"), (take, "take")):
        button.click(
            lambda *a, action=action: step_action(action, *a),
            [shared.state, *step_inputs],
            step_outputs,
            api_name=f"step_{action}",
        )
    writing = write_button.click(
        write, [shared.state, write_tokens, seed, *knobs], [written, write_stats], api_name="write",
        concurrency_limit=2, concurrency_id="model_run",
    )  # fmt: skip
    stop_button.click(None, None, None, cancels=[writing], api_name=False)
    compare_inputs = [shared.state, new_tokens, n_samples, beams, length_penalty, seed, *knobs]
    run_strategies.click(
        compare, compare_inputs, [strategies_table, tree_plot], api_name="strategies",
        concurrency_limit=2, concurrency_id="model_run",
    )  # fmt: skip
    lens_tab.select(show_lens, shared.state, lens_plot, api_name="logit_lens")
