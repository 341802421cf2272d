"""Text that must fit its box: token strips wrap on a phone, the two attribution strips never overlap, and a
result table shows every column header without sideways scrolling at 1280 px, and on a phone the retrieval
passages keep readable columns. Screenshots are saved."""

from __future__ import annotations

import pytest

from tests.browser.conftest import DESKTOP, PHONE
from tests.browser.test_tab_bar import open_tab

ACTION_TIMEOUT = 180_000  # a view drawn on a button press, on a busy machine
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


# Each visible table's header cells, the lines each header's text takes, and the box the table is seen through
# (the element that scrolls it sideways).
HEADERS = f"""() => [...document.querySelectorAll('{IN_PANELS} table')].filter((t) => t.offsetParent).map((t) => {{
    let view = t.parentElement;
    while (view && !['auto', 'scroll', 'hidden'].includes(getComputedStyle(view).overflowX)) view = view.parentElement;
    const box = (view || t).getBoundingClientRect();
    const headers = [...t.querySelectorAll('thead th')].filter((h) => h.offsetParent).map((h) => {{
        const b = h.getBoundingClientRect(), label = h.querySelector('span.header') || h;
        const lines = label.getBoundingClientRect().height / parseFloat(getComputedStyle(label).lineHeight);
        return {{text: h.innerText.trim(), left: b.left, right: b.right, lines: Math.round(lines)}}; }});
    return {{left: box.left, right: box.right, headers}}; }})"""


def assert_headers_fit(page, where: str, max_lines: int = 2) -> None:
    """Every header of the tables on screen inside the table's visible box, on at most ``max_lines`` lines."""
    tables = page.evaluate(HEADERS)
    assert tables, f"{where}: no table on screen"
    for table in tables:
        assert table["headers"], f"{where}: a table with no header"
        hidden = [
            h["text"] for h in table["headers"] if h["right"] > table["right"] + 1 or h["left"] < table["left"] - 1
        ]
        assert not hidden, f"{where}: headers past the table's visible edge ({table['right']:.0f} px): {hidden}"
        squeezed = [(h["text"], h["lines"]) for h in table["headers"] if h["lines"] > max_lines]
        assert not squeezed, f"{where}: headers squeezed onto more than {max_lines} lines: {squeezed}"


def show_the_last_table(page) -> None:
    page.evaluate(
        f"() => [...document.querySelectorAll('{IN_PANELS} .table-wrap')].filter((t) => t.offsetParent).pop()"
        ".scrollIntoView({block: 'center'})"
    )


def wait_for_rows(page, at_least: int) -> None:
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('{IN_PANELS} .table-wrap')].some((b) => b.offsetParent
            && b.querySelectorAll('.virtual-row').length >= {at_least} && !b.innerText.includes('⚠️'))""",
        timeout=ACTION_TIMEOUT,
    )
    page.wait_for_timeout(500)  # the columns are sized once the rows are in


@pytest.mark.parametrize(
    "label, button, name",
    [("Retrieval", "Search", "Retrieval"), ("Quantize & speculate", "Quantize and measure", "Quantization")],
)
def test_a_results_table_shows_every_column_at_1280(open_page, artifacts, label, button, name):
    """Retrieval's ranks and the quantization table's numbers: every header inside the table's visible box."""
    page = open_page(viewport=DESKTOP)
    open_tab(page, label)
    page.locator(PANEL).first.get_by_role("button", name=button, exact=True).click()
    wait_for_rows(page, 5)
    show_the_last_table(page)
    page.screenshot(path=artifacts / f"{name.lower()}-table-desktop.png")
    assert_headers_fit(page, name)


def test_the_lora_comparison_tables_show_every_column_at_1280(open_page, artifacts):
    page = open_page(viewport=DESKTOP)
    open_tab(page, "LoRA")
    panel = page.locator(PANEL).first
    steps = panel.get_by_label("number input for Steps", exact=True)
    steps.fill("10")
    steps.press("Enter")
    panel.get_by_role("button", name="Train a new adapter").click()
    panel.get_by_text("· done").first.wait_for(timeout=ACTION_TIMEOUT)
    panel.get_by_role("button", name="Compare base and adapted").click()
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('{IN_PANELS} .table-wrap')].filter((b) => b.offsetParent
            && b.querySelectorAll('.virtual-row').length >= 4).length >= 2""",
        timeout=ACTION_TIMEOUT,
    )
    page.wait_for_timeout(500)
    show_the_last_table(page)
    page.screenshot(path=artifacts / "lora-tables-desktop.png")
    assert_headers_fit(page, "LoRA, before vs after")


def test_the_retrieval_passages_stay_readable_on_a_phone(open_page, artifacts):
    """At 390 px the rank columns kept their fixed widths (308 px of a 325 px box) and squeezed the document to
    65 px and the passage to 168 px, in rows ~170 px tall. On a phone the table now scrolls sideways inside its box
    and both columns keep readable widths (headers and cells); its headers still take at most two lines."""
    page = open_page(viewport=PHONE)
    open_tab(page, "Retrieval")
    page.locator(PANEL).first.get_by_role("button", name="Search", exact=True).click()
    wait_for_rows(page, 5)
    show_the_last_table(page)
    page.screenshot(path=artifacts / "retrieval-table-phone.png")
    (table,) = [t for t in page.evaluate(HEADERS) if t["headers"][0]["text"] == "fused rank"]
    cells = page.evaluate(
        "() => [...document.querySelectorAll('.explorer-ranks .virtual-row')].filter((r) => r.offsetParent)[0]"
        ".querySelectorAll('[role=gridcell]').values().map((c) => c.getBoundingClientRect().width).toArray()"
    )
    for where, widths in (("header", [h["right"] - h["left"] for h in table["headers"]]), ("first row", cells)):
        assert widths[4] >= 200, f"the passage column's {where} is {widths[4]:.0f} px wide: {widths}"
        assert widths[3] >= 90, f"the document column's {where} is {widths[3]:.0f} px wide: {widths}"
    squeezed = [(h["text"], h["lines"]) for h in table["headers"] if h["lines"] > 2]
    assert not squeezed, f"headers squeezed onto more than two lines: {squeezed}"
