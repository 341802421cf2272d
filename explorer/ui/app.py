"""The app factory: the shell (model picker, text, status) and the tabs built from one context."""

from __future__ import annotations

import gradio as gr

from explorer.core.run import MAX_CHARS, check_text
from explorer.core.spec import FAMILY_NAMES
from explorer.ui.context import AppContext, Selection, guarded
from explorer.ui.shell import Shared
from explorer.ui.tabs import attention, attribution, decoding, embeddings, lora, tokens

TABS = [tokens, embeddings, attention, decoding, lora, attribution]  # views not built yet do not appear
INTRO = (
    "# LLM Explorer\nPick a model, type a text, and look inside: its tokens and every attention head. "
    "Bundled models work offline; hub ids (e.g. `gpt2`, `bert-base-uncased`, `t5-small`) load where a network exists."
)
CSS = ".explorer-status p { margin: 0.2em 0; }"
THEME = gr.themes.Soft()


def summary(ctx: AppContext, selection: Selection) -> str:
    lm = ctx.model(selection)
    trace = ctx.trace(selection)
    counts = ", ".join(f"{len(v)} {k} tokens" for k, v in trace.tokens.items())
    note = ""
    if trace.meta.get("truncated"):
        note = f" The text was cut to its first {trace.meta['max_tokens']} tokens."
    if trace.meta.get("target_source") == "generated":
        note += f" Target: the model's own greedy output, “{trace.texts['target']}”."
    return (
        f"**{lm.spec.key}** · {FAMILY_NAMES[lm.spec.family]} · {lm.spec.n_layers} layers × {lm.spec.n_heads} heads"
        f" · {counts}.{note}"
    )


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    ctx = ctx or AppContext()
    with gr.Blocks(title="LLM Explorer") as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            model = gr.Dropdown(
                ctx.model_choices(), value=ctx.default_model, label="Model", allow_custom_value=not ctx.hosted,
                info="A bundled model, a catalogue name, a hub id or a local folder.", scale=1,
            )  # fmt: skip
            text = gr.Textbox(ctx.default_text, label="Text", lines=2, max_length=MAX_CHARS, scale=3)
        with gr.Row():
            target = gr.Textbox(
                "", label="Target text (encoder-decoder models; empty: the model's own output)", scale=3,
                max_length=MAX_CHARS,
            )  # fmt: skip
            button = gr.Button("Analyze", variant="primary", scale=1)
        status = gr.Markdown(elem_classes="explorer-status")
        state = gr.State(None)
        shared = Shared(state, model, text, status)
        with gr.Tabs():
            for tab in TABS:
                tab.build(ctx, shared)

        @guarded(lambda msg: (gr.skip(), f"⚠️ {msg}"))
        def analyze(model_name: str, text_value: str, target_value: str):
            check_text(text_value)
            selection = Selection(model_name, text_value, target_value or None)
            ctx.trace(selection)  # loads the model and runs it once; later views read the cache
            return selection, summary(ctx, selection)

        def then_views(event, named: bool = True) -> None:
            for fn, inputs, outputs, api_name in shared._listeners:
                event.then(fn, inputs, outputs, api_name=api_name if named else False)

        run_model = {"concurrency_limit": 2, "concurrency_id": "model_run"}
        triggers = [button.click, text.submit, target.submit, model.change, demo.load]
        then_views(gr.on(triggers, analyze, [model, text, target], [state, status], api_name="analyze", **run_model))
        for preset, preset_text in shared._presets:
            chosen = preset.click(lambda t=preset_text: t, None, text, api_name=False)
            then_views(chosen.then(analyze, [model, text, target], [state, status], api_name=False, **run_model), False)
    return demo


def launch(demo: gr.Blocks, **kwargs) -> None:
    """Serve the app; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT decide where (default 127.0.0.1:7860)."""
    demo.queue(default_concurrency_limit=8).launch(theme=THEME, css=CSS, **kwargs)
