"""Browser tier: the app on loopback with the bundled models, driven by Playwright through Debian's Chromium.

One app and one browser per session; each test opens its own page. Screenshots go to
``tests/browser/artifacts/`` (git-ignored); ``make test`` installs Chromium with apt when it is missing.
"""

from __future__ import annotations

import shutil
import socket
from functools import cache
from pathlib import Path

import gradio as gr
import pytest

from tests.serving import close_app

ARTIFACTS = Path(__file__).parent / "artifacts"
APP_TEXT = "The tiger jumped out of a tree because it was thirsty."
DESKTOP = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}
STATUS = ".prose.explorer-status"  # the status line under the text box
ANALYZED = "layers ×"  # the status line after an analysis: "**tiny-gpt2** · decoder · 4 layers × 4 heads ..."
QUIET = "() => !document.querySelector('.pending, .generating')"  # no event of the page is running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_plots(block) -> bool:
    return any(isinstance(c, gr.Plot) or has_plots(c) for c in getattr(block, "children", []))


@cache
def app() -> tuple[gr.Blocks, list[tuple[str, str, bool]]]:
    """The app with its default context (bundled models), and (id, label, has figures) of every top-level tab."""
    from explorer.ui.app import build_app

    demo = build_app()
    tabs = [b for b in demo.blocks.values() if isinstance(b, gr.Tabs) and isinstance(b.parent, gr.Blocks)]
    return demo, [(t.id, t.label, has_plots(t)) for t in tabs[0].children if isinstance(t, gr.Tab)]


def pytest_generate_tests(metafunc):
    if "tab" in metafunc.fixturenames:
        tabs = app()[1]
        metafunc.parametrize("tab", tabs, ids=[str(tab[0]) for tab in tabs])


@pytest.fixture(scope="session")
def app_url():
    from explorer.ui.app import launch

    demo, _ = app()
    launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        yield demo.local_url
    finally:
        close_app(demo)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not on PATH: `make browser` installs it (apt-get install chromium).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, app_url):
    """``open_page(query="", viewport=DESKTOP)``: a fresh page on the app, after its first analysis."""
    contexts = []

    def open_(query: str = "", viewport: dict = DESKTOP):
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{app_url}{query}")
        page.locator(STATUS).get_by_text(ANALYZED).wait_for()
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
