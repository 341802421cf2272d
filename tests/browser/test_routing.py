"""The page's routing functions (which tab's views draw after an analysis or when a tab opens) run in the
browser: here they are run in Chromium on a blank page, with the arguments gradio hands them."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def run_js(browser):
    context = browser.new_context()
    page = context.new_page()

    def run(js: str, *args) -> list:
        result = page.evaluate(f"JSON.stringify(({js})(...{json.dumps(args)}), (k, v) => v === undefined ? null : v)")
        return json.loads(result)

    yield run
    context.close()


def test_the_tab_on_screen_draws_after_an_analysis_and_another_when_opened_behind_it(run_js):
    from explorer.ui.app import route_after_analysis_js, route_opened_js

    tabs = ["tokens", "attention", "lora"]
    after, open_attention = route_after_analysis_js(tabs), route_opened_js(tabs, "attention")
    assert run_js(open_attention, 0, 0, 0, 0) == ["attention", None, None, None]  # nothing analysed: no drawing
    count, *drawn = run_js(after, "attention", 0, 0, 0, 0)  # a link's tab, opened before its analysis ended
    assert count == 1 and drawn == [None, 1, None]  # ... draws once the analysis is in
    assert run_js(open_attention, 1, 0, 1, 0) == ["attention", None, None, None]  # already drawn: not twice
    count, *drawn = run_js(after, "tokens", 1, 0, 1, 0)  # a new analysis while Tokens is on screen
    assert count == 2 and drawn == [2, None, None]
    assert run_js(open_attention, 2, 2, 1, 0) == ["attention", None, 2, None]  # Attention is behind: it draws
