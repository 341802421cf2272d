"""How the page's events are wired: what the server answers after a page load, an analysis and a tab opened.

Every event the server answers costs the browser work across the whole page (gradio updates the loading status
of every component any such event has touched), so the routing between them runs in the browser. These tests
read the app's config (no server); tests/browser/test_routing.py runs the routing functions in Chromium.
"""

from __future__ import annotations

from functools import cache

import gradio as gr


@cache
def app() -> gr.Blocks:
    from explorer.ui.app import build_app
    from explorer.ui.context import AppContext

    return build_app(AppContext())


@cache
def config() -> dict:
    return app().get_config_file()


def deps_on(event: str, component_type: str) -> list[dict]:
    types = {c["id"]: c["type"] for c in config()["components"]}
    return [d for d in config()["dependencies"] if any(types.get(t) == component_type and e == event
                                                      for t, e in d["targets"])]  # fmt: skip


def tickets() -> set[int]:
    """The hidden numbers each tab's views hang off (the state's change writes the count of analyses, then them)."""
    (route,) = deps_on("change", "state")
    return set(route["outputs"][1:])


def test_an_analysis_is_followed_by_no_server_event_but_the_views_of_the_tab_on_screen():
    deps = config()["dependencies"]
    analyses = {d["id"] for d in deps if app().fns[d["id"]].name == "analyze"}
    assert len(analyses) >= 3  # the button and boxes, a link's load, the presets and the Training tab's opener
    assert not [d for d in deps if d["trigger_after"] in analyses]  # was: a routing event the server answered
    (route,) = deps_on("change", "state")  # a changed selection: counted, and the tab on screen given the count
    assert not route["backend_fn"] and route["js"] and len(tickets()) == 11
    opened = deps_on("select", "tabitem")
    top_level = [d for d in opened if tickets() <= set(d["outputs"])]
    assert len(top_level) == 11 and not any(d["backend_fn"] for d in top_level)  # opening a tab: in the browser
    drawing = [d for d in deps if any(t in tickets() for t, _ in d["targets"])]
    assert drawing and all(e == "change" and d["backend_fn"] for d in drawing for _, e in d["targets"])


def test_a_link_is_restored_by_one_small_server_event_and_its_settings_in_the_browser():
    from explorer.ui.share import tab_settings

    deps = config()["dependencies"]
    (load,) = [d for d in deps if ("load" in [e for _, e in d["targets"]])]
    assert load["backend_fn"] and len(load["outputs"]) <= 10  # was every setting of every tab (108)
    (put,) = [d for d in deps if d["trigger_after"] == load["id"]]
    assert not put["backend_fn"] and len(put["outputs"]) > 50  # the settings: set by the browser from one value
    analyze = [d for d in deps if d["trigger_after"] == put["id"] and d["backend_fn"]]
    assert len(analyze) == 1 and app().fns[analyze[0]["id"]].name == "analyze"  # it reads the restored settings
    (top,) = [b for b in app().blocks.values() if isinstance(b, gr.Tabs) and isinstance(b.parent, gr.Blocks)]
    settings = {k: v._id for t in top.children for k, v in tab_settings(t).items()}
    assert set(put["outputs"]) == set(settings.values())


def test_each_tabs_notices_follow_its_own_views():
    """A tab's "cannot serve" notices are decided when its views are drawn, not for every tab after each analysis."""
    types = {c["id"]: c for c in config()["components"]}
    notices = {i for i, c in types.items() if "explorer-requires" in (c["props"].get("elem_classes") or [])}
    updated = [d for d in config()["dependencies"] if set(d["outputs"]) & notices]
    assert {n for d in updated for n in d["outputs"]} == notices
    assert all(len(d["targets"]) == 1 and d["targets"][0][0] in tickets() for d in updated)


def test_the_settings_checked_against_the_model_are_keys_a_link_carries():
    """``fits_model`` checks a link's attention kind and layer against the model it opens; a label change that
    renames their keys would silently turn the check off (it did: the kind's key was its long label's slug)."""
    from explorer.ui.share import MODEL_SETTINGS, tab_settings

    (top,) = [b for b in app().blocks.values() if isinstance(b, gr.Tabs) and isinstance(b.parent, gr.Blocks)]
    keys = {k for t in top.children for k in tab_settings(t)}
    assert set(MODEL_SETTINGS) <= keys


def test_the_figure_bundle_is_evaluated_in_the_browser_while_a_links_first_analysis_runs():
    """Plotly's bundle (half a second of script) is imported, in the browser, as the first analysis is sent,
    when the tab on screen has a figure: every figure carries the class the script looks for."""
    from explorer.ui.app import WARM_FIGURES_JS

    deps = config()["dependencies"]
    (load,) = [d for d in deps if ("load" in [e for _, e in d["targets"]])]
    (put,) = [d for d in deps if d["trigger_after"] == load["id"]]
    (warm,) = [d for d in deps if d["trigger_after"] == put["id"] and d["js"] == WARM_FIGURES_JS]
    assert not warm["backend_fn"] and "PlotlyPlot-" in warm["js"] and ".explorer-figure" in warm["js"]
    plots = [c for c in config()["components"] if c["type"] == "plot"]
    assert plots and all("explorer-figure" in c["props"]["elem_classes"] for c in plots)
