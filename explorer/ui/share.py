"""Share links: a URL whose query restores the model, the text, the tab on screen and its settings.

``?model=tiny-t5&text=...&tab=attention&attention.layer=2&large=1``: the shell keys are ``model``,
``text``, ``target``, ``tab``, ``large`` (presenter fonts) and ``presenter`` (the one-line header); every other key is ``<tab id>.<label>``
of a slider, radio, checkbox, number or fixed-choice dropdown inside that tab. The link only holds
settings that differ from their defaults. Unknown keys and values that do not fit are ignored.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode

import gradio as gr

from explorer.core.catalogue import catalogue
from explorer.core.run import MAX_CHARS

SETTING_TYPES = (gr.Slider, gr.Radio, gr.Checkbox, gr.Number, gr.Dropdown)
TRUE = ("1", "true", "yes", "on")
NOT_SHARED = "explorer-not-shared"  # a setting's elem_classes entry that keeps it out of share links


def slug(label) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(label or "").lower()).strip("_")


def descendants(block):
    """Every block inside ``block``, depth first."""
    for child in getattr(block, "children", []):
        yield child
        yield from descendants(child)


def tab_settings(tab: gr.Tab) -> dict[str, gr.components.Component]:
    """``<tab id>.<label slug>`` -> the settings inside a tab a link can restore (first of a label wins)."""
    found = {}
    for block in descendants(tab):
        if not isinstance(block, SETTING_TYPES) or not block.label or block.interactive is False:
            continue
        if NOT_SHARED in (block.elem_classes or []):  # filled from the model, not chosen by the user
            continue
        if isinstance(block, gr.Dropdown) and (block.allow_custom_value or not block.choices or block.multiselect):
            continue  # choices filled per model: a stale value would not fit
        found.setdefault(f"{tab.id}.{slug(block.label)}", block)
    return found


def _choice_values(component) -> list:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in component.choices]


def parse_setting(component, raw: str):
    """The value a query string gives a component, or ``gr.skip()`` when it does not fit."""
    try:
        if isinstance(component, gr.Checkbox):
            return raw.lower() in TRUE
        if isinstance(component, (gr.Slider, gr.Number)):
            value = float(raw)
            low, high = getattr(component, "minimum", None), getattr(component, "maximum", None)
            if value != value or (low is not None and value < low) or (high is not None and value > high):
                return gr.skip()
            return int(value) if value.is_integer() else value
        for choice in _choice_values(component):
            if str(choice) == raw:
                return choice
    except (TypeError, ValueError):
        pass
    return gr.skip()


def tab_names(tab_blocks: list) -> dict[str, str]:
    """What a link may call each tab -> its id: the id itself, or its label as a slug (``next_token`` for "Next
    token", whose id is ``decoding``), any case."""
    names = {}
    for tab in tab_blocks:
        if tab.id is not None:
            names[slug(tab.label)] = names[slug(tab.id)] = tab.id
    return names


def restore(query: dict, shell: dict, settings: dict, tab_ids: dict[str, str]) -> list:
    """Values for ``[*shell components, tabs, *settings]`` from a page's query parameters; ``tab_ids`` are the
    tabs by the names a link may use (``tab_names``)."""
    out = []
    for key, component in shell.items():
        raw = query.get(key)
        if raw is None or (key in ("text", "target") and len(raw) > MAX_CHARS):
            out.append(gr.skip())
        elif isinstance(component, (gr.Checkbox, gr.Dropdown)) and not getattr(component, "allow_custom_value", False):
            out.append(parse_setting(component, raw))  # e.g. hosted mode: only catalogue models
        else:
            out.append(raw)
    tab = tab_ids.get(slug(query.get("tab")))
    out.append(gr.Tabs(selected=tab) if tab is not None else gr.skip())
    for key, component in settings.items():
        out.append(parse_setting(component, query[key]) if key in query else gr.skip())
    return out


# Settings whose valid values depend on the model: checked against the catalogue entry of the model the
# link opens, and left out where the model is not in the catalogue (its shape is known only once loaded).
MODEL_KINDS = {"decoder": {"self"}, "encoder": {"self"}, "encoder_decoder": {"encoder_self", "decoder_self", "cross"}}
MODEL_SETTINGS = ("attention.attention_kind", "attention.layer")  # the share keys checked against the model


def fits_model(key: str, value, model) -> bool:
    """Whether a restored setting makes sense for ``model`` (settings that do not depend on it always do)."""
    if key not in MODEL_SETTINGS:
        return True
    entry = catalogue().get(str(model)) if model is not None else None
    if entry is None:
        return False
    if key == "attention.attention_kind":
        return value in MODEL_KINDS.get(entry.family, set())
    return isinstance(value, (int, float)) and 0 <= value < entry.layers


MAX_LINK_TEXT = 2000  # characters of text a link carries


def share_url(base: str, shell_values: dict, tab: str | None, settings: dict, values: list) -> str:
    """The link for the current state: shell values, the tab, and settings that differ from their defaults."""
    query = {k: v for k, v in shell_values.items() if v not in (None, "", False)}
    for long in [k for k in ("text", "target") if len(str(query.get(k, ""))) > MAX_LINK_TEXT]:
        del query[long]  # servers refuse very long addresses: the link then opens on the default text
    for flag in ("large", "presenter"):
        if query.get(flag) is True:
            query[flag] = 1
    if tab:
        query["tab"] = tab
    for (key, component), value in zip(settings.items(), values):
        if value is not None and value != component.value:
            query[key] = int(value) if isinstance(value, bool) else value
    return f"{(base or '').split('?')[0]}?{urlencode(query)}"


def share_button() -> gr.Button:
    return gr.Button("Copy share link", size="sm", scale=1, min_width=140)


def share_link_box() -> gr.Textbox:
    """Where the link appears (hidden until the first press of the button)."""
    return gr.Textbox(
        label="Share link (model, text, tab and settings; texts over 2,000 characters are left out)", buttons=["copy"], interactive=False, visible=False,
        elem_classes="explorer-share-link",
    )  # fmt: skip


def wire_share_link(
    demo, make_link: gr.Button, link: gr.Textbox, shell: dict, tabs: gr.Tabs, tab_blocks: list, current: gr.State
):
    """The share button's event and the restore-on-load event; returns the latter (to chain the analysis).

    ``current`` holds the id of the tab on screen (kept by the app): the link names it, and a link's tab is
    opened and put there on load."""
    tab_ids = tab_names(tab_blocks)
    settings = {k: v for t in tab_blocks if t.id is not None for k, v in tab_settings(t).items()}
    base = gr.Textbox(visible=False)

    def build_link(base_v, tab_v, *values):
        shell_values = dict(zip(shell, values[: len(shell)]))
        url = share_url(base_v, shell_values, tab_v, settings, list(values[len(shell) :]))
        return gr.Textbox(url, visible=True)

    copy_js = """(base, ...rest) => {
        const url = window.location.origin + window.location.pathname;
        return [url, ...rest];
    }"""
    make_link.click(
        build_link, [base, current, *shell.values(), *settings.values()], link, js=copy_js, api_name=False
    ).then(None, link, None, js="(url) => { navigator.clipboard?.writeText(url).catch(() => {}); }")

    payload = gr.Textbox(visible=False)  # the link's settings as JSON, handed to the browser (below)

    def on_load(request: gr.Request):
        query = dict(request.query_params) if request is not None else {}
        restored = restore(query, shell, settings, tab_ids)
        model = restored[list(shell).index("model")] if "model" in shell else None
        model = shell["model"].value if model is None or isinstance(model, dict) else model
        offset = len(shell) + 1
        chosen = {}
        for i, key in enumerate(settings):
            value = restored[offset + i]
            if not isinstance(value, dict) and fits_model(key, value, model):  # else the view's own default
                chosen[key] = value
        selected = tab_ids.get(slug(query.get("tab")), gr.skip())
        return [*restored[:offset], selected, json.dumps(chosen)]

    # Gradio updates the loading status of every component a server event has touched, on every later event:
    # the settings (a hundred) are set in the browser from one JSON value, not as outputs of the server's event.
    keys = json.dumps(list(settings))
    put_settings = f"(chosen) => {{ const got = JSON.parse(chosen || '{{}}'); return {keys}.map((k) => got[k]); }}"
    loaded = demo.load(on_load, None, [*shell.values(), tabs, current, payload], api_name=False)
    return loaded.then(None, payload, list(settings.values()), js=put_settings, api_name=False)
