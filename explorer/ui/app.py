"""The app factory: the shell (model picker, text, status) and the tabs built from one context."""

from __future__ import annotations

import os

import gradio as gr

from explorer.analysis.lora_files import MAX_FILE_BYTES
from explorer.core.run import MAX_CHARS, check_text
from explorer.core.spec import FAMILY_NAMES
from explorer.ui.context import AppContext, Selection, guarded, md_escape, warning
from explorer.ui.export import export_panel
from explorer.ui.lessons import lesson_note, lesson_path, lesson_presets
from explorer.ui.share import descendants, share_button, share_link_box, wire_share_link
from explorer.ui.shell import Shared
from explorer.ui.tabs import attention, attribution, decoding, embeddings, kv_cache, lora, tokens
from explorer.ui.validation import refuse_bad_inputs

TABS = [tokens, embeddings, attention, decoding, kv_cache, lora, attribution]  # views not built yet do not appear
INTRO = (
    "# LLM Explorer\nPick a model, type a text, and look inside: its tokens, embeddings, every attention head, "
    "the next token and how decoding picks it, the KV cache, a LoRA fine-tune and attribution. "
    "Bundled models work offline; hub ids (e.g. `gpt2`, `bert-base-uncased`, `t5-small`) load where a network exists."
)
CSS = """
.explorer-status p { margin: 0.2em 0; }
.explorer-large { --text-xxs: 12px; --text-xs: 15px; --text-sm: 17px; --text-md: 20px; --text-lg: 24px;
                  --text-xl: 30px; --text-xxl: 36px; --prose-text-size: 20px; --block-label-text-size: 17px;
                  --block-info-text-size: 16px; --block-title-text-size: 19px; --section-header-text-size: 20px;
                  --input-text-size: 20px; --button-large-text-size: 22px; --button-small-text-size: 18px; }
.explorer-large .prose, .explorer-large .js-plotly-plot { font-size: 20px; }
"""
# Presenter fonts: a class on the app's root scales every text size the theme defines.
LARGE_FONTS_JS = "(on) => { document.querySelector('.gradio-container')?.classList.toggle('explorer-large', !!on); }"
THEME = gr.themes.Soft()
# Uploads: the only files the app takes are LoRA adapters (kilobytes to a few MB; at most 64 MB is read);
# gradio refuses a larger body while it streams in (HTTP 413, "File exceeds maximum allowed size").
MAX_UPLOAD_BYTES = MAX_FILE_BYTES


def analytics_enabled() -> bool:
    """Gradio's telemetry: off unless ``EXPLORER_ANALYTICS`` (or gradio's own ``GRADIO_ANALYTICS_ENABLED``) is on."""
    wanted = os.environ.get("EXPLORER_ANALYTICS") or os.environ.get("GRADIO_ANALYTICS_ENABLED") or ""
    return wanted.strip().lower() in ("1", "true", "yes", "on")


def summary(ctx: AppContext, selection: Selection) -> str:
    lm = ctx.model(selection)
    trace = ctx.trace(selection)
    counts = ", ".join(f"{len(v)} {k} tokens" for k, v in trace.tokens.items())
    note = ""
    if trace.meta.get("truncated"):
        note = f" The text was cut to its first {trace.meta['max_tokens']} tokens."
    if trace.meta.get("target_source") == "generated":
        note += f" Target: the model's own greedy output, “{md_escape(trace.texts['target'])}”."
    return (
        f"**{md_escape(lm.spec.key)}** · {FAMILY_NAMES[lm.spec.family]} · {lm.spec.n_layers} layers × {lm.spec.n_heads} heads"
        f" · {counts}.{note}"
    )


def classroom_extras(tab: gr.Tab, shared: Shared) -> None:
    """Below a tab's own views: its lesson note with teaching presets, and the export of its figures."""
    note, presets = lesson_note(tab.id), lesson_presets(tab.id)
    if note or presets:
        with gr.Accordion("Lesson notes and examples", open=False):
            gr.Markdown(note or "")
            with gr.Row():
                for label, preset_text in presets.items():
                    shared.preset_button(label, preset_text)
    plots = [b for b in descendants(tab) if isinstance(b, gr.Plot)]
    export_panel(plots, tab.label or str(tab.id))


def build_tabs(ctx: AppContext, shared: Shared, tabs: gr.Tabs) -> list[gr.Tab]:
    """Every view in ``TABS``, each followed by its lesson notes and export; returns the tab blocks."""
    built = []
    for module in TABS:
        known = set(map(id, tabs.children))
        module.build(ctx, shared)
        for tab in [b for b in tabs.children if id(b) not in known and isinstance(b, gr.Tab)]:
            with tab:  # re-open the tab to append the classroom extras below its views
                classroom_extras(tab, shared)
            built.append(tab)
    return built


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    ctx = ctx or AppContext()
    # delete_cache: files handed to users (exports, adapters) leave gradio's cache after an hour, checked every 10 min
    with gr.Blocks(title="LLM Explorer", delete_cache=(600, 3600), analytics_enabled=analytics_enabled()) as demo:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            with gr.Column(scale=4):
                with gr.Accordion("Lesson path (for a class)", open=False):
                    gr.Markdown(lesson_path())
            large = gr.Checkbox(False, label="Large fonts (presenter)", scale=1, min_width=160)
            make_link = share_button()
        link = share_link_box()
        large.change(None, large, None, js=LARGE_FONTS_JS, api_name=False)
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
        with gr.Tabs() as tabs:
            tab_blocks = build_tabs(ctx, shared, tabs)
        shell = {"model": model, "text": text, "target": target, "large": large}
        restored = wire_share_link(demo, make_link, link, shell, tabs, tab_blocks)

        @guarded(lambda msg: (gr.skip(), warning(msg)))
        def analyze(model_name: str, text_value: str, target_value: str):
            check_text(text_value)
            selection = Selection(model_name, text_value, target_value or None)
            ctx.trace(selection)  # loads the model and runs it once; later views read the cache
            return selection, summary(ctx, selection)

        def then_views(event, named: bool = True) -> None:
            for fn, inputs, outputs, api_name in shared._listeners:
                event.then(fn, inputs, outputs, api_name=api_name if named else False)

        # An analysis is one forward pass, and a cache hit when the text was seen: its own queue, so it never
        # waits behind long decoding or attribution work ("model_run"); re-plots use the default limit.
        run_model = {"concurrency_limit": 4, "concurrency_id": "analysis"}
        # model.input, not .change: a share link sets the model on load and analyzes once (below), not twice at once
        triggers = [button.click, text.submit, target.submit, model.input]
        then_views(gr.on(triggers, analyze, [model, text, target], [state, status], api_name="analyze", **run_model))
        # On page load: restore what a share link holds, then analyze.
        then_views(restored.then(analyze, [model, text, target], [state, status], api_name=False, **run_model), False)
        for preset, preset_text in shared._presets:
            chosen = preset.click(lambda t=preset_text: t, None, text, api_name=False)
            then_views(chosen.then(analyze, [model, text, target], [state, status], api_name=False, **run_model), False)
    return refuse_bad_inputs(demo)  # every event's inputs checked once, before any handler


def launch(demo: gr.Blocks, **kwargs) -> None:
    """Serve the app; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT decide where (default 127.0.0.1:7860)."""
    kwargs.setdefault("max_file_size", MAX_UPLOAD_BYTES)
    demo.queue(default_concurrency_limit=8).launch(theme=THEME, css=CSS, **kwargs)
