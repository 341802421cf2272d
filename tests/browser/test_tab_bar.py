"""The tab bar a person clicks through: after every click in lesson order it still shows each tab once, in order.

On a phone gradio folds the tabs that do not fit into a "More tabs" menu; the bar and the menu together
must still hold every label once. (A component created between ``gr.Tabs`` and a ``gr.Tab`` once shifted
gradio's tab indices: labels doubled and Attention and Attribution became unreachable.)
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import DESKTOP, PHONE, app

LESSON = [label for _, label, _ in app()[1]]  # the top-level tabs, in the order the lesson path walks them
VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}
TOP_BAR = "document.querySelector('[role=tablist] [data-tab-id=tokens]').closest('.tab-wrapper')"


def tab_bar(page) -> list[str]:
    """The top-level bar's labels as a person sees them: the visible tabs, then the "More tabs" menu's entries."""
    return page.evaluate(
        f"""() => {{
        const bar = {TOP_BAR};
        const shown = [...bar.querySelectorAll('[role=tablist] [role=tab]')].filter((el) => el.offsetParent);
        const more = [...bar.querySelectorAll('.overflow-dropdown button')];
        return [...shown, ...more].map((el) => el.innerText.trim());
    }}"""
    )


def selected_tab(page) -> str:
    return page.evaluate(f"() => {TOP_BAR}.querySelector('[role=tab][aria-selected=true]')?.innerText.trim()")


def open_tab(page, label: str, bar=None) -> None:
    """Click a tab the way a person reaches it: in its bar, or through the bar's "More tabs" menu.

    ``bar``: the ``.tab-wrapper`` holding the tab; by default the top-level one."""
    bar = bar or page.locator(".tab-wrapper").filter(has=page.locator("[data-tab-id=tokens]")).first
    tab = bar.locator("[role=tablist] [role=tab]:visible").filter(has_text=label)
    if tab.count() == 0 or tab.first.inner_text().strip() != label:
        bar.get_by_role("button", name="More tabs").click()
        bar.locator(".overflow-dropdown button", has_text=label).first.click()
    else:
        tab.first.click()
    page.wait_for_timeout(300)


def assert_every_label_once(page, after: str) -> None:
    """Each tab once. Where all fit (desktop) in lesson order; on a phone gradio brings the selected tab
    from the "More tabs" menu into the bar, so only the set is fixed there, with the selected tab in view."""
    bar = tab_bar(page)
    assert sorted(bar) == sorted(LESSON), f"after {after}: the bar and its menu hold {bar}"
    visible = page.evaluate(
        f"() => [...{TOP_BAR}.querySelectorAll('[role=tablist] [role=tab]')].filter((el) => el.offsetParent).length"
    )
    if visible == len(LESSON):
        assert bar == LESSON, f"after {after}"
    assert selected_tab(page) in bar[:visible], f"after {after}: the selected tab is not in the bar"


def walk_the_lesson(page) -> None:
    assert_every_label_once(page, "loading")
    for label in LESSON[1:] + LESSON[:1]:
        open_tab(page, label)
        assert_every_label_once(page, f"clicking {label}")
        assert selected_tab(page) == label, f"after clicking {label}"
        panel = page.locator("[role=tabpanel]:visible").first
        assert panel.is_visible()


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=list(VIEWPORTS))
def test_every_tab_click_keeps_the_bar(open_page, viewport):
    page = open_page(viewport=VIEWPORTS[viewport])
    walk_the_lesson(page)


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=list(VIEWPORTS))
def test_a_share_link_opening_a_tab_keeps_the_bar(open_page, viewport):
    page = open_page("?tab=attribution", viewport=VIEWPORTS[viewport])
    assert selected_tab(page) == "Attribution"
    walk_the_lesson(page)
