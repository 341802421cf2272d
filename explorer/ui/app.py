"""The app factory: the shell (model picker, text, status) and the tabs built from one context."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import gradio as gr

from explorer.analysis.lora.files import MAX_FILE_BYTES
from explorer.core.run import binary_note, check_text, use_torch_threads
from explorer.core.settings import settings
from explorer.core.spec import FAMILY_NAMES
from explorer.core.tokens import output_words
from explorer.plots.text import shorten
from explorer.ui.context import AppContext, Selection, bind, md_escape, user_message, warning
from explorer.ui.export import export_panel
from explorer.ui.gpu import on_gpu
from explorer.ui.lessons import lesson_note, lesson_path, lesson_presets
from explorer.ui.share import descendants, share_button, share_link_box, wire_share_link
from explorer.ui.shell import Shared
from explorer.ui.stops import stop_session
from explorer.ui.tabs import (
    attention,
    attribution,
    decoding,
    embeddings,
    inference,
    interventions,
    kv_cache,
    lora,
    retrieval,
    tokens,
    training,
)
from explorer.ui.validation import refuse_bad_inputs

TABS = [
    tokens,
    embeddings,
    attention,
    interventions,
    decoding,
    kv_cache,
    inference,
    lora,
    training,
    attribution,
    retrieval,
]
INTRO = (
    "# LLM Explorer\nPick a model, type a text, and look inside: its tokens, embeddings, every attention head, "
    "what switching heads off or patching activations changes, the next token and how decoding picks it, "
    "the KV cache, a LoRA fine-tune, attribution, and retrieval-augmented answers. "
    "Bundled models work offline; hub ids (e.g. `gpt2`, `bert-base-uncased`, `t5-small`) load where a network exists."
)
CSS = """
.explorer-status p { margin: 0.2em 0; }
.explorer-large { --text-xxs: 12px; --text-xs: 15px; --text-sm: 17px; --text-md: 20px; --text-lg: 24px;
                  --text-xl: 30px; --text-xxl: 36px; --prose-text-size: 20px; --block-label-text-size: 17px;
                  --block-info-text-size: 16px; --block-title-text-size: 19px; --section-header-text-size: 20px;
                  --input-text-size: 20px; --button-large-text-size: 22px; --button-small-text-size: 18px; }
.explorer-large .prose { font-size: 20px; }
/* Figures: drawn at 1/1.3 of their box and shown 1.3 times larger, so every label grows and the figure still fills
   its box. The width is left to the box (auto): a percentage inside a zoomed element is taken of the zoomed
   box in current browsers, and calc(100% / 1.3) drew the figures at 1/1.69, shrinking the text fitted to cells. */
.explorer-large .js-plotly-plot { zoom: 1.3; width: auto !important; }
/* A figure with nothing drawn yet (its button not pressed) takes no room, unless its work is under way (gradio's
   status tracker shows then). It stays displayed, at no height, so the page can still tell a tab has figures. */
.explorer-figure:has(> .empty):not(:has(> [data-testid=status-tracker]:not(.hide))) {
  min-height: 0 !important; height: 0; padding: 0 !important; border-width: 0 !important; overflow: hidden; }
/* Retrieval's ranks on a phone: the rank columns' fixed widths (308 px of a 325 px box) left the document 65 px
   and the passage 168 px, in rows ~170 px tall. There those two columns get room of their own and the table
   scrolls sideways in its box (gradio sets each header's and cell's width inline, from percentages of 325 px). */
@media (max-width: 640px) {
  .explorer-ranks :is(th[data-heading="3"], [role=gridcell][data-col="3"]) {
    width: 120px !important; min-width: 120px !important; max-width: 120px !important; flex: 0 0 120px !important; }
  .explorer-ranks :is(th[data-heading="4"], [role=gridcell][data-col="4"]) {
    width: 280px !important; min-width: 280px !important; max-width: 280px !important; flex: 0 0 280px !important; } }
/* Attention kinds the model lacks are hidden (explorer/ui/tabs/attention.py: kind_classes). */
.explorer-kinds:not(.explorer-has-self) label:has(> input[value="self"]),
.explorer-kinds:not(.explorer-has-encoder_self) label:has(> input[value="encoder_self"]),
.explorer-kinds:not(.explorer-has-decoder_self) label:has(> input[value="decoder_self"]),
.explorer-kinds:not(.explorer-has-cross) label:has(> input[value="cross"]) { display: none; }
/* Presenter mode: the header on one line (no intro, lesson path, labels or notes) and the figure on screen. */
.explorer-presenter .explorer-intro, .explorer-presenter .explorer-toolbar, .explorer-presenter .explorer-explain,
.explorer-presenter .explorer-inputs [data-testid=block-info], .explorer-presenter .explorer-inputs label > span:first-child,
.explorer-presenter .explorer-share-link, .explorer-presenter .explorer-aside { display: none !important; }
/* Two whole lines of text (a fixed line height and padding: 2.6em at the theme's line height cut the second). */
.explorer-presenter .explorer-inputs textarea { height: calc(2.6em + 12px) !important; min-height: 0 !important;
                                                line-height: 1.3em !important; padding-top: 6px !important;
                                                padding-bottom: 6px !important; }
.explorer-presenter [role=tabpanel] fieldset label { padding-top: 3px !important; padding-bottom: 3px !important; }
.explorer-presenter .explorer-inputs .explorer-toggle { padding: 2px 8px !important; }
.explorer-presenter .explorer-toggles { flex-direction: row !important; align-items: center; }
.explorer-presenter [role=tabpanel] .block:has(> [data-testid=block-info]) > [data-testid=block-info],
.explorer-presenter [role=tabpanel] fieldset > [data-testid=block-info] { display: none; }
.explorer-presenter .gradio-container .gap, .explorer-presenter [role=tabpanel] .form { gap: 6px !important; }
"""
# Presenter fonts: a class on the app's root scales every text size the theme defines; the figures redraw at
# their new width (plotly follows window resizes).
LARGE_FONTS_JS = """(on) => {
  document.querySelector('.gradio-container')?.classList.toggle('explorer-large', !!on);
  window.dispatchEvent(new Event('resize'));
}"""
PRESENTER_JS = """(on) => {
  document.querySelector('.gradio-container')?.classList.toggle('explorer-presenter', !!on);
  window.dispatchEvent(new Event('resize'));
}"""
# The model box takes exactly what was typed: gradio's dropdown would pick the first choice containing the
# text on Enter ("gpt2" -> "tiny-gpt2"). Enter after typing leaves the box instead, and gradio then keeps an
# exact choice or the typed text as it is; Enter after moving through the list with the arrows still picks.
EXACT_MODEL_JS = """() => {
  let arrowed = false;
  document.addEventListener('keydown', (e) => {
    const box = e.target.closest && e.target.closest('.explorer-model');
    if (!box || e.target.tagName !== 'INPUT') return;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') { arrowed = true; return; }
    if (e.key !== 'Enter') { arrowed = false; return; }
    if (arrowed) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    e.target.blur();
  }, true);
}"""
# Plotly's bundle costs about half a second of script evaluation when the first figure mounts. When the tab on
# screen shows a figure, evaluate it while the page's first analysis runs on the server, not after it returns;
# a tab without one (the first, Tokens) is left alone. The same URL as gradio's own import: evaluated once.
WARM_FIGURES_JS = """() => {
  const bundle = document.querySelector('link[rel=modulepreload][href*="PlotlyPlot-"]');
  const figure = [...document.querySelectorAll('.explorer-figure')].some((el) => el.offsetParent);
  if (bundle && figure) setTimeout(() => import(bundle.href).catch(() => {}), 20);
}"""
THEME = gr.themes.Soft()
# Uploads: the only files the app takes are LoRA adapters (kilobytes to a few MB; at most 64 MB is read);
# gradio refuses a larger body while it streams in (HTTP 413, "File exceeds maximum allowed size").
MAX_UPLOAD_BYTES = MAX_FILE_BYTES


def analytics_enabled() -> bool:
    """Gradio's telemetry: off unless ``EXPLORER_ANALYTICS`` (or gradio's own ``GRADIO_ANALYTICS_ENABLED``) is on."""
    gradio_own = os.environ.get("GRADIO_ANALYTICS_ENABLED", "").strip().lower() in ("1", "true", "yes", "on")
    return settings().analytics or gradio_own


def summary(ctx: AppContext, selection: Selection) -> str:
    lm = ctx.model(selection)
    trace = ctx.trace(selection)
    counts = ", ".join(f"{len(v)} {k} tokens" for k, v in trace.tokens.items())
    note = ""
    if trace.meta.get("truncated"):
        note = f" The text was cut to its first {trace.meta['max_tokens']} tokens."
    if trace.meta.get("target_source") == "generated":
        target = [t.id for t in trace.tokens["target"][1:]]  # after the decoder's start token
        output = output_words(lm.tokenizer, target, trace.texts["target"])
        note += f" Target: the model's own greedy output: {md_escape(output)}."
    return (
        f"**{md_escape(lm.spec.key)}** · {FAMILY_NAMES[lm.spec.family]} · {lm.spec.n_layers} layers × {lm.spec.n_heads} heads"
        f" · {counts}.{note}"
    )


def requirement_notices(ctx: AppContext, selection: Selection | None, requirements: list) -> list:
    """For each tab's ``shared.requires(...)`` line: shown with the first reason the current model cannot serve
    the tab, hidden when it can (or before any analysis)."""
    spec = ctx.model(selection).spec if selection is not None else None
    updates = []
    for _, capabilities in requirements:
        reasons = [r for r in (spec.why_not(c) for c in capabilities) if r] if spec else []
        updates.append(gr.update(value=warning(reasons[0]), visible=True) if reasons else gr.update(visible=False))
    return updates


def tab_notices(ctx: AppContext, requirements: list, selection: Selection | None):
    """One tab's requirement notices, when its views are drawn (``requirements``: the tab's part of the list)."""
    updates = requirement_notices(ctx, selection, requirements)
    return updates[0] if len(updates) == 1 else updates


class Emptied:
    """An event's function that empties its ``n`` outputs (a figure, a table, a note, a state)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self):
        return None if self.n == 1 else (None,) * self.n


def route_after_analysis_js(tab_ids: list) -> str:
    """The browser's part after an analysis changed the selection: count it, and give the tab on screen that
    count as its new ticket (its views hang off the ticket's change). ``undefined`` leaves an output as it is."""
    return f"""(tab, analysis, ...tickets) => {{
        const count = (analysis || 0) + 1, on_screen = {json.dumps(tab_ids)}.indexOf(tab);
        return [count, ...tickets.map((_, i) => (i === on_screen ? count : undefined))];
    }}"""


def route_opened_js(tab_ids: list, tab_id) -> str:
    """The browser's part when a tab opens: it is now on screen, and its views are drawn if they are behind the
    latest analysis (none yet: nothing to draw)."""
    return f"""(analysis, ...tickets) => {{
        const mine = {json.dumps(tab_ids.index(tab_id))};
        return [{json.dumps(tab_id)}, ...tickets.map((t, i) => (i === mine && analysis > 0 && t !== analysis ? analysis : undefined))];
    }}"""


def wire_views(ctx: AppContext, shared: Shared, tab_blocks: list[gr.Tab]):
    """How views follow an analysis: only the tab on screen draws, the others when they are opened.

    Every event the server answers costs the browser work across the whole page (gradio updates the loading
    status of every component any event has touched), so the routing runs in the browser: a changed selection
    (the state's change) counts an analysis and gives the tab on screen that count as its ticket; opening a tab
    gives it the count if its ticket is behind. Each tab's views, and its requirement notices, hang off its
    ticket's change: the one event the server answers. Returns the hidden box naming the tab on screen.
    """
    tab_ids = [t.id for t in tab_blocks]
    visible = gr.Textbox(tab_ids[0], visible=False)  # the top-level tab on screen (outside gr.Tabs, like these)
    analysis = gr.Number(0, visible=False, precision=0)  # analyses so far (selection changes), counted in the browser
    tickets = [gr.Number(0, visible=False, precision=0) for _ in tab_ids]  # the analysis each tab's views show
    for tab_id, fn, inputs, outputs, api_name in shared._listeners:  # a named one is also an API endpoint
        tickets[tab_ids.index(tab_id)].change(fn, inputs, outputs, api_name=api_name)
    for tab, ticket in zip(tab_blocks, tickets):
        inside = set(map(id, descendants(tab)))
        results = [c for c in shared._results if id(c) in inside]
        if results:  # another analysis: what buttons made from the last one goes
            ticket.change(Emptied(len(results)), None, results, api_name=False, queue=False, show_progress="hidden")
        requirements = [r for r in shared._requirements if id(r[0]) in inside]
        if requirements:
            notices = [notice for notice, _ in requirements]
            ticket.change(bind(tab_notices, ctx, requirements), shared.state, notices, api_name=False, queue=False,
                          show_progress="hidden")  # fmt: skip
    shared.state.change(None, [visible, analysis, *tickets], [analysis, *tickets], js=route_after_analysis_js(tab_ids))
    for tab in tab_blocks:
        tab.select(None, [analysis, *tickets], [visible, *tickets], js=route_opened_js(tab_ids, tab.id))
    return visible


def failed(message: str, previous: Selection | None) -> str:
    """The status line after an analysis failed: why, and what the views below still show (their titles say it too)."""
    line = warning(message)
    if previous is not None:
        line += (
            f" The views below still show **{md_escape(previous.model)}** on “{md_escape(shorten(previous.text, 40))}”."
        )
    return line


def then_analyze(analyze, inputs: list, outputs: list, options: dict, event) -> None:
    event.then(analyze, inputs, outputs, api_name=False, **options)


def lesson_extras(shared: Shared, note: str, presets: dict[str, str]) -> None:
    """A tab's lesson note and its teaching presets, made when their accordion is opened."""
    gr.Markdown(note)
    with gr.Row():
        for label, preset_text in presets.items():
            shared.preset_button(label, preset_text)


def classroom_extras(tab: gr.Tab, shared: Shared) -> None:
    """Below a tab's own views: its lesson note with teaching presets, and the export of its figures. Both are
    made when opened (``gr.render``), not with the page: each component and event on the page costs the browser
    work for every other at page load, and these were a fifth of the page's components and events."""
    note, presets = lesson_note(tab.id), lesson_presets(tab.id)
    if note or presets:
        with gr.Accordion("Lesson notes and examples", open=False) as notes:
            gr.render(triggers=[notes.expand])(partial(lesson_extras, shared, note or "", presets))
    plots = [b for b in descendants(tab) if isinstance(b, gr.Plot)]
    export_panel(plots, tab.label or str(tab.id))


def check_tabs_hold_only_tabs(tabs: gr.Tabs, module) -> None:
    """Gradio numbers tabs by their place among a ``gr.Tabs``' children: anything else there (a ``gr.State``
    made after the ``with gr.Tab`` block) shifts the numbers, and the tab bar shows wrong, doubled labels."""
    strays = [type(b).__name__ for b in tabs.children if not isinstance(b, gr.Tab)]
    if strays:
        raise TypeError(f"{module.__name__}.build left {', '.join(strays)} beside its gr.Tab: create it inside the tab")


def build_tabs(ctx: AppContext, shared: Shared, tabs: gr.Tabs) -> list[gr.Tab]:
    """Every view in ``TABS``, each followed by its lesson notes and export; returns the tab blocks."""
    built = []
    for module in TABS:
        known = set(map(id, tabs.children))
        shared.building = module.__name__.rsplit(".", 1)[-1]
        module.build(ctx, shared)
        check_tabs_hold_only_tabs(tabs, module)
        for tab in [b for b in tabs.children if id(b) not in known and isinstance(b, gr.Tab)]:
            with tab:  # re-open the tab to append the classroom extras below its views
                classroom_extras(tab, shared)
            built.append(tab)
    return built


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    ctx = ctx or AppContext()
    # delete_cache: files handed to users (exports, adapters) leave gradio's cache after an hour, checked every 10 min
    with gr.Blocks(title="LLM Explorer", delete_cache=(600, 3600), analytics_enabled=analytics_enabled()) as demo:
        gr.Markdown(INTRO, elem_classes="explorer-intro")
        with gr.Row(equal_height=True, elem_classes="explorer-toolbar"):
            with gr.Column(scale=4):
                with gr.Accordion("Lesson path (for a class)", open=False):
                    gr.Markdown(lesson_path())
            make_link = share_button()
        link = share_link_box()
        with gr.Row(equal_height=True, elem_classes="explorer-inputs"):
            model = gr.Dropdown(
                ctx.model_choices(), value=ctx.default_model, label="Model (bundled, catalogue, hub id or folder)",
                allow_custom_value=not ctx.hosted, scale=2, min_width=150,
                elem_classes="explorer-model",
            )  # fmt: skip
            # no max_length: the browser would cut a long paste without a word; check_text says it instead
            text = gr.Textbox(ctx.default_text, label="Text", lines=2, scale=4, min_width=200)
            target = gr.Textbox(
                "", label="Target text (T5-style models; empty: the model's own output)", lines=2, scale=3,
                min_width=200,
            )  # fmt: skip
            button = gr.Button("Analyze", variant="primary", scale=1, min_width=100)
            with gr.Column(scale=1, min_width=150, elem_classes="explorer-toggles"):
                presenter = gr.Checkbox(False, label="Presenter mode", elem_classes="explorer-toggle")
                large = gr.Checkbox(False, label="Large fonts", elem_classes="explorer-toggle")
        presenter.change(None, presenter, None, js=PRESENTER_JS, api_name=False)
        large.change(None, large, None, js=LARGE_FONTS_JS, api_name=False)
        status = gr.Markdown(elem_classes="explorer-status")
        state = gr.State(None)
        shared = Shared(state, model, text, status)
        with gr.Tabs() as tabs:
            tab_blocks = build_tabs(ctx, shared, tabs)
        shell = {"model": model, "text": text, "target": target, "large": large, "presenter": presenter}
        visible = wire_views(ctx, shared, tab_blocks)
        restored = wire_share_link(demo, make_link, link, shell, tabs, tab_blocks, visible)
        demo.unload(stop_session)  # a tab closed or its connection lost: its long work stops as on Stop
        for block in demo.blocks.values():
            if isinstance(block, gr.Plot):  # every figure's own title names it; gradio's label would cover it
                block.show_label = False
                classes = [block.elem_classes] if isinstance(block.elem_classes, str) else block.elem_classes or []
                block.elem_classes = [*classes, "explorer-figure"]

        @on_gpu  # a GPU for the model run on a ZeroGPU Space; the function itself elsewhere
        def analyze(
            model_name: str,
            text_value: str,
            target_value: str,
            previous: Selection | None = None,
            request: gr.Request = None,
        ):
            try:
                ctx.reachable(model_name, request)  # a trained model: only in the session that opened it
                check_text(text_value)
                selection = Selection(model_name, text_value, target_value or None)
                ctx.trace(selection)  # loads the model and runs it once; later views read the cache
            except Exception as err:  # a sentence in the status line, and which model the views still show
                return gr.skip(), failed(user_message(err), previous)
            notes = [n for n in (binary_note(text_value), binary_note(target_value or "", "target text")) if n]
            return selection, summary(ctx, selection) + "".join(f" ℹ️ {md_escape(n)}" for n in notes)

        # An analysis is one forward pass, and a cache hit when the text was seen: its own queue, so it never
        # waits behind long decoding or attribution work ("model_run"); re-plots use the default limit.
        run_model = {"concurrency_limit": 4, "concurrency_id": "analysis"}

        def check_typed(text_value: str, target_value: str):
            """As soon as the text changes: a text too long, or binary data, is said in the status line."""
            try:
                check_text(text_value, allow_empty=True)
                check_text(target_value, "target text", allow_empty=True)
            except Exception as err:
                return warning(user_message(err))
            notes = [n for n in (binary_note(text_value), binary_note(target_value or "", "target text")) if n]
            return " ".join(f"ℹ️ {md_escape(n)}" for n in notes) if notes else gr.skip()

        for box in (text, target):  # change, not input: a paste and a link's text are checked too
            box.change(check_typed, [text, target], status, api_name=False, queue=False, trigger_mode="always_last")

        # model.input, not .change: a share link sets the model on load and analyzes once (below), not twice at once
        triggers = [button.click, text.submit, target.submit, model.input]
        inputs = [model, text, target, state]
        gr.on(triggers, analyze, inputs, [state, status], api_name="analyze", **run_model)
        analyze_after = partial(then_analyze, analyze, inputs, [state, status], run_model)
        analyze_after(restored)  # on page load: restore what a share link holds, then analyze
        restored.then(None, js=WARM_FIGURES_JS, api_name=False)
        # e.g. the presets, the Training tab opening its model: analyzed like a picked model
        shared.analysis_ready(analyze_after)
    return refuse_bad_inputs(demo)  # every event's inputs checked once, before any handler


def preload_figures() -> str:
    """A ``<link rel=modulepreload>`` for gradio's plotly bundle (4.6 MB of JavaScript): fetched and compiled while
    the page starts, not when the first figure mounts (that was ~1.5 s after the analysis). Empty if not found."""
    assets = Path(gr.__file__).parent / "templates" / "frontend" / "assets"
    return "".join(f'<link rel="modulepreload" href="assets/{p.name}">' for p in sorted(assets.glob("PlotlyPlot-*.js")))


def launch(demo: gr.Blocks, **kwargs) -> None:
    """Serve the app; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT decide where (default 127.0.0.1:7860)."""
    kwargs.setdefault("max_file_size", MAX_UPLOAD_BYTES)
    use_torch_threads(settings().torch_threads)  # each model run's intra-op threads (EXPLORER_TORCH_THREADS)
    demo.queue(default_concurrency_limit=8).launch(
        theme=THEME, css=CSS, js=EXACT_MODEL_JS, head=preload_figures(), **kwargs
    )
