"""Text that must fit its box: token strips wrap on a phone, the two attribution strips never overlap, and a
result table shows every column header without sideways scrolling at 1280 px. Screenshots are saved."""

from __future__ import annotations

import pytest

from tests.browser.conftest import DESKTOP, PHONE
from tests.browser.test_tab_bar import open_tab

ACTION_TIMEOUT = 240_000  # a view drawn on a button press, on a busy machine
VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}
PANEL = "[role=tabpanel]:visible"  # for Playwright's locators
IN_PANELS = "[role=tabpanel]"  # for the page's own querySelectorAll: shown ones are kept by offsetParent

# Each token strip on screen: its tokens' boxes (the box a person sees of each token, after wrapping).
TOKEN_BOXES = """(selector) => [...document.querySelectorAll(selector)].filter((el) => el.offsetParent).map((strip) =>
    [...strip.querySelectorAll('.tok')].map((t) => { const b = t.getBoundingClientRect();
        return {text: t.innerText, special: t.classList.contains('tok-special'), left: b.left, right: b.right}; }))"""


def strips(page, selector: str) -> list[list[dict]]:
    return page.evaluate(TOKEN_BOXES, selector)


def assert_inside_the_screen(strip: list[dict], width: int, where: str) -> None:
    words = [t for t in strip if not t["special"]]
    assert words, f"{where}: no tokens shown"
    last = words[-1]
    assert last["right"] <= width, f"{where}: the last token {last['text']!r} ends at {last['right']:.0f} px"
    outside = [t["text"] for t in strip if t["right"] > width or t["left"] < 0]
    assert not outside, f"{where}: tokens outside the {width} px screen: {outside}"


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-bert", "tiny-t5"])
def test_live_tokens_wrap_inside_a_phone_screen(open_page, artifacts, model):
    page = open_page(f"?model={model}", viewport=PHONE)
    page.locator(f"{PANEL} .token-spans .tok").first.wait_for()
    (live,) = strips(page, f"{IN_PANELS} .token-spans")
    assert_inside_the_screen(live, PHONE["width"], f"{model}, Live")
    page.locator(f"{PANEL} .token-spans").first.scroll_into_view_if_needed()
    page.screenshot(path=artifacts / f"tokens-live-phone-{model}.png")


def test_compared_tokenizers_wrap_inside_a_phone_screen(open_page, artifacts):
    page = open_page(viewport=PHONE)
    page.get_by_role("tab", name="Compare tokenizers").click()
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{IN_PANELS} .token-spans')].filter((el) => el.offsetParent).length >= 4",
        timeout=ACTION_TIMEOUT,
    )
    shown = strips(page, f"{IN_PANELS} .token-spans")
    for i, strip in enumerate(shown):
        assert_inside_the_screen(strip, PHONE["width"], f"compared tokenizer {i + 1}")
    page.locator(f"{PANEL} .token-spans").last.scroll_into_view_if_needed()
    page.screenshot(path=artifacts / "tokens-compare-phone.png")


# The attribution strips: every element holding scored token spans, and each span's boxes (one per line).
ATTRIBUTION_BOXES = f"""() => [...document.querySelectorAll('{IN_PANELS} div')].filter((el) => el.offsetParent
    && el.querySelector(':scope > span[title]')).map((strip) => [...strip.querySelectorAll(':scope > span[title]')]
    .flatMap((s) => [...s.getClientRects()].map((b) => ({{text: s.innerText, left: b.left, right: b.right,
        top: b.top, bottom: b.bottom}}))))"""


def intersect(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=list(VIEWPORTS))
def test_the_two_attribution_strips_do_not_overlap(open_page, artifacts, viewport):
    width = VIEWPORTS[viewport]["width"]
    page = open_page(viewport=VIEWPORTS[viewport])
    open_tab(page, "Attribution")
    panel = page.locator(PANEL).first
    panel.get_by_role("button", name="Attribute", exact=True).click()
    page.wait_for_function(f"() => ({ATTRIBUTION_BOXES})().length == 2", timeout=ACTION_TIMEOUT)
    first, second = page.evaluate(ATTRIBUTION_BOXES)
    assert first and second
    crossing = [(a["text"], b["text"]) for a in first for b in second if intersect(a, b)]
    assert not crossing, f"the strips overlap at {len(crossing)} token pairs, first {crossing[:3]}"
    outside = [s["text"] for s in first + second if s["right"] > width]
    assert not outside, f"tokens beyond the {width} px screen: {outside}"
    page.locator(PANEL).last.locator("span[title]").first.scroll_into_view_if_needed()
    page.screenshot(path=artifacts / f"attribution-strips-{viewport}.png")
