"""At a projector: presenter mode fits the header on one line and a figure above the fold at 1280×720;
"Large fonts" scales the figures' text too, and they still fit their boxes."""

from __future__ import annotations

from tests.browser.conftest import DESKTOP
from tests.browser.figures import figure_report, problems
from tests.browser.test_tab_bar import open_tab

FIGURE = "[role=tabpanel]:visible .js-plotly-plot"


def first_figure(page) -> dict:
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{FIGURE.replace(':visible', '')}')].some((el) => el.offsetParent && (el.data || []).length)"
    )
    page.wait_for_timeout(600)
    return page.evaluate(
        f"""() => {{ const el = [...document.querySelectorAll('{FIGURE.replace(":visible", "")}')]
            .find((el) => el.offsetParent && (el.data || []).length);
          const box = el.getBoundingClientRect();
          const tick = el.querySelector('.ytick text').getBoundingClientRect();
          return {{top: box.top + window.scrollY, height: box.height, tick: tick.height}}; }}"""
    )


def test_presenter_mode_shows_a_figure_above_the_fold(open_page, artifacts):
    page = open_page(viewport=DESKTOP)
    open_tab(page, "Attention")
    before = first_figure(page)
    page.get_by_label("Presenter mode").check()
    page.wait_for_function("() => document.querySelector('.gradio-container.explorer-presenter')")
    page.evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_timeout(500)
    after = first_figure(page)
    header = page.evaluate("() => document.querySelector('.explorer-inputs').getBoundingClientRect().height")
    assert header <= 90, f"the presenter header is {header:.0f} px high: more than one line"
    visible = DESKTOP["height"] - after["top"]
    assert visible >= 320, (  # almost half the screen: the plot itself, not just its title (it was 260)
        f"only {visible:.0f} px of the first figure show above the fold (it starts at {after['top']:.0f})"
    )
    assert after["top"] < before["top"]
    page.screenshot(path=artifacts / "presenter.png")


def test_large_fonts_scale_the_figures_text_and_they_still_fit(open_page, artifacts):
    page = open_page(viewport=DESKTOP)
    open_tab(page, "Attention")
    before = first_figure(page)
    page.get_by_label("Large fonts").check()
    page.wait_for_function("() => document.querySelector('.gradio-container.explorer-large')")
    page.wait_for_timeout(800)
    after = first_figure(page)
    assert after["tick"] >= 1.2 * before["tick"], f"tick labels {before['tick']:.1f} px -> {after['tick']:.1f} px"
    panel = page.locator("[role=tabpanel]:visible").first
    for figure in figure_report(panel):
        assert not problems(figure, "tiny-gpt2")
    page.screenshot(path=artifacts / "large-fonts.png")
