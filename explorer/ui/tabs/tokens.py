"""Tokenization tab: live tokens, tokenizers compared, BPE replayed merge by merge, and a BPE you train."""

from __future__ import annotations

import re
from html import escape

import gradio as gr

from explorer.analysis.tokens.bpe import MAX_REPLAY_WORDS, replay_check, train_bpe
from explorer.analysis.tokens.counts import token_counts, tokenizers_side_by_side
from explorer.analysis.tokens.table import (
    MERGE_COLUMNS,
    STEP_COLUMNS,
    TOKEN_COLUMNS,
    merge_rows,
    replay_rows,
    token_rows_table,
    token_table,
)
from explorer.core.catalogue import tokenizer_catalogue
from explorer.core.errors import InputError
from explorer.core.run import check_text
from explorer.core.tokens import is_byte_level, tokenize
from explorer.plots.tokens import comparison_html, token_spans_html
from explorer.ui.assets import presets, sample_texts
from explorer.ui.context import AppContext, Selection, bind, guarded, md_escape, user_message, warning

EXPLANATION = """A model never sees letters: a **tokenizer** cuts the text into pieces from a fixed vocabulary \
and each piece becomes an **id**. Whole words would need an endless vocabulary and still meet unknown words; \
single letters make sequences long and meaningless. **Subwords** sit between: frequent words stay whole, rare \
ones split into known parts. **BPE** (GPT-2) starts from bytes and repeatedly merges the most frequent \
adjacent pair; **WordPiece** (BERT) picks merges by how much they raise the likelihood and marks word-inner \
pieces with `##`; **Unigram** (T5) starts large and prunes the pieces that matter least. **Special tokens** \
(`[CLS]`, `</s>`, `<|endoftext|>`) mark structure. Below, `␣` is a space inside a token, `↵` a newline, and \
`<e2 80>` the raw bytes of a piece that holds part of a character."""
COMPARE_DEFAULT = ["current model", "gpt2-bpe", "tiny-bert", "tiny-t5"]


def _round(value) -> float | str:
    return "–" if value is None else round(value, 2)


def live_view(tokenizer, text: str) -> tuple[str, str, tuple]:
    """(spans HTML, counts line, tokens) for a text under one tokenizer."""
    tokens = tokenize(tokenizer, text)
    counts = token_counts(text, tokens)
    line = (
        f"**{counts['tokens']}** tokens · {counts['characters']} characters · {counts['bytes']} bytes · "
        f"{_round(counts['chars_per_token'])} characters per token"
    )
    return token_spans_html(tokens, text, byte_level=is_byte_level(tokenizer)), line, tokens


def trained_view(tokenizer, text: str) -> str:
    """The current text under a trained tokenizer, as HTML: its counts line (bold as HTML, not ``**``) and spans."""
    html, line, _ = live_view(tokenizer, text)
    line = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escape(line, quote=False))
    return f"<p>{line}</p>{html}"


def _tokenizer(ctx: AppContext, selection_or_model):
    name = selection_or_model.model if isinstance(selection_or_model, Selection) else selection_or_model
    return ctx.tokenizer(name)


@guarded(lambda msg: (warning(msg), "", gr.skip(), []))
def show_live(ctx: AppContext, model_name: str, text: str, selection: Selection | None, chosen_stream: str):
    """Live: the tokenizer alone, on every edit; the table follows the last analysis (all streams)."""
    if not text:
        return "Type a text to see its tokens.", "", gr.skip(), []
    check_text(text)
    html, line, tokens = live_view(_tokenizer(ctx, model_name), text)
    if selection is None or selection.text != text or selection.model != model_name:
        return line, html, gr.update(visible=False), token_rows_table(tokens, text)
    trace = ctx.trace(selection)
    streams = list(trace.tokens)
    chosen_stream = chosen_stream if chosen_stream in streams else streams[0]
    radio = gr.update(value=chosen_stream, visible=len(streams) > 1)
    return line, html, radio, token_table(trace, chosen_stream)


def _tokenizers(ctx: AppContext, names: list[str]) -> tuple[dict, list[str]]:
    """The tokenizers by name, and a sentence for each that could not be loaded (the others still shown)."""
    tokenizers, problems = {}, []
    for name in dict.fromkeys(names):
        try:
            tokenizers[name] = _tokenizer(ctx, name)
        except Exception as err:  # one missing tokenizer must not hide the others
            problems.append(f"{name}: {user_message(err)}")
    return tokenizers, problems


@guarded(lambda msg: ([["⚠️", msg, "", ""]], ""))
def show_comparison(ctx: AppContext, model_name: str, text: str, chosen_v: list[str], hub_v: str):
    """The text under each chosen tokenizer (and one typed by hub id or folder): counts and spans."""
    check_text(text)
    names = [model_name if c == "current model" else c for c in chosen_v or []]
    if hub_v and hub_v.strip():
        names.append(hub_v.strip())
    tokenizers, problems = _tokenizers(ctx, names)
    compared = tokenizers_side_by_side(text, tokenizers)
    table_rows = [
        [r["tokenizer"], r["tokens"], _round(r["chars_per_token"]), _round(r["bytes_per_token"])] for r in compared.rows
    ]
    sections = [(r["tokenizer"], r["tokens"], compared.tokens[r["tokenizer"]]) for r in compared.rows]
    return table_rows, comparison_html(sections, text, problems)


@guarded(lambda msg: (warning(msg), []))
def show_replay(ctx: AppContext, model_name: str, text: str, word_v: str):
    """The model's byte-level BPE (else GPT-2's) replayed on a word, merge by merge, checked against the tokenizer."""
    if not isinstance(model_name, str):
        raise InputError(f"The model must be a name, not {type(model_name).__name__}.")
    target = (word_v or "").strip() or text
    check_text(target, "word")
    tokenizer = _tokenizer(ctx, model_name)
    note = f"Replaying **{md_escape(model_name)}**'s byte-level BPE."
    if not is_byte_level(tokenizer):
        tokenizer = ctx.tokenizer("gpt2-bpe")
        note = f"**{md_escape(model_name)}** does not use byte-level BPE, so this replays GPT-2's BPE (gpt2-bpe)."
    replay = replay_check(tokenizer, target)
    if replay.total_words > MAX_REPLAY_WORDS:
        note += f" Showing the first {MAX_REPLAY_WORDS} of {replay.total_words} words."
    if replay.matches is not None:
        note += (
            " The replay ends in exactly the tokenizer's own tokens ✓." if replay.matches else " ⚠️ The replay differs."
        )
    return note, replay_rows(replay.words)


def train(ctx: AppContext, source_v: str, pasted_v: str, vocab_v, progress=gr.Progress()):  # noqa: B008 (gradio idiom)
    """Train a byte-level BPE on a bundled or pasted text: the note, its first merges, and the tokenizer (state)."""
    try:
        text = pasted_v if source_v == "pasted text" else sample_texts()[source_v]
        if not text or not text.strip():
            raise InputError("Paste a text to train on, or pick a bundled one.")
        trained = train_bpe(text, int(vocab_v), progress=lambda f, m: progress(f, desc=m))
    except Exception as err:
        return warning(user_message(err)), [], ""
    note = (
        f"Learned **{len(trained.merges)} merges** from {len(text):,} characters: a vocabulary of "
        f"{trained.vocab_size} (256 bytes + merges + 1 special token). The first merges are the most "
        "frequent pairs; below, the current text re-tokenized with this vocabulary."
    )
    return note, merge_rows(trained.merges), trained


@guarded(lambda msg: warning(msg))
def show_trained(ctx: AppContext, trained, text: str):
    """The current text under the BPE just trained."""
    if not trained or isinstance(trained, str):
        return ""
    check_text(text)
    return trained_view(trained.tokenizer, text)


# ---------------------------------------------------------------- layout and wiring


def build(ctx: AppContext, shared) -> None:
    other_tokenizers = [k for k in tokenizer_catalogue()] + ["tiny-gpt2", "tiny-bert", "tiny-t5"]
    with gr.Tab("Tokens", id="tokens"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        with gr.Row():
            for label, text in presets("tokenization").items():
                shared.preset_button(label, text)
        with gr.Tabs():
            with gr.Tab("Live"):
                counts = gr.Markdown()
                spans = gr.HTML()
                # All stream names from the start: only visibility and value change per model.
                stream = gr.Radio(["input", "source", "target"], value="input", label="Token stream", visible=False)
                table = gr.Dataframe(headers=TOKEN_COLUMNS, interactive=False, wrap=True, label="Tokens")
            with gr.Tab("Compare tokenizers"):
                with gr.Row():
                    chosen = gr.CheckboxGroup(
                        ["current model", *other_tokenizers], value=COMPARE_DEFAULT, label="Tokenizers", scale=3
                    )
                    hub_id = gr.Textbox(label="Another tokenizer (hub id or folder)", scale=1)
                compare_table = gr.Dataframe(
                    headers=["tokenizer", "tokens", "chars/token", "bytes/token"], interactive=False, label="Counts"
                )
                compare_html = gr.HTML()
            with gr.Tab("BPE replay"):
                gr.Markdown(
                    "Byte-level BPE, merge by merge: each word starts as bytes; at every step the adjacent pair "
                    "with the **lowest rank** (learned earliest) is merged, until no pair in the merge list is left."
                )
                word = gr.Textbox(label="Word or phrase (empty: the whole text)", value="unbelievably")
                replay_note = gr.Markdown()
                replay_table = gr.Dataframe(headers=STEP_COLUMNS, interactive=False, wrap=True, label="Merges")
            with gr.Tab("Train your own BPE"):
                with gr.Row():
                    source = gr.Radio(
                        ["pasted text", *sample_texts()], value=next(iter(sample_texts())), label="Train on"
                    )
                    vocab_size = gr.Slider(260, 5000, value=1000, step=10, label="Vocabulary size")
                pasted = gr.Textbox(label="Pasted text (up to 2 MB)", lines=4)
                train_button = gr.Button("Train", variant="primary")
                train_note = gr.Markdown()
                merges_table = gr.Dataframe(headers=MERGE_COLUMNS, interactive=False, label="First merges learned")
                trained_spans = gr.HTML()
        trained_state = gr.State(None)

    live, live_inputs = bind(show_live, ctx), [shared.model, shared.text, shared.state, stream]
    live_outputs = [counts, spans, stream, table]
    shared.text.change(live, live_inputs, live_outputs, api_name="tokenize", trigger_mode="always_last")
    shared.on_analyzed(live, live_inputs, live_outputs)
    stream.change(live, live_inputs, live_outputs, api_name=False)
    comparison, compare_inputs = bind(show_comparison, ctx), [shared.model, shared.text, chosen, hub_id]
    for trigger in (chosen.change, hub_id.submit):
        trigger(comparison, compare_inputs, [compare_table, compare_html], api_name=False)
    shared.on_analyzed(comparison, compare_inputs, [compare_table, compare_html], api_name="compare_tokenizers")
    replay, replay_inputs = bind(show_replay, ctx), [shared.model, shared.text, word]
    word.submit(replay, replay_inputs, [replay_note, replay_table], api_name="bpe_replay")
    shared.on_analyzed(replay, replay_inputs, [replay_note, replay_table])
    train_button.click(
        bind(train, ctx), [source, pasted, vocab_size], [train_note, merges_table, trained_state],
        api_name="train_bpe", concurrency_limit=1, concurrency_id="bpe_training",
    ).then(bind(show_trained, ctx), [trained_state, shared.text], trained_spans, api_name=False)  # fmt: skip
