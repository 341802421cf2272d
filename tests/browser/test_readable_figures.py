"""Figure text a person can read: the logit lens's cells (at least 10 px or none, never overlapping; Large fonts
makes them larger, not smaller), the Ablate view's two lenses full width, and a long text's figures (no axis
labels printed over each other, token links starting at the top)."""

from __future__ import annotations

import math

import pytest

from tests.browser.conftest import DESKTOP, PHONE
from tests.browser.test_tab_bar import open_tab
from tests.browser.test_tabs import analyze

LONG = ("The quick brown fox jumps over the lazy dog. " * 120)[:5000]
FIGURES = "[role=tabpanel] .js-plotly-plot"
# Each drawn figure whose title contains ``word``: its box, plot area, and its cells' text as shown (font size
# times the zoom of Large fonts), tick labels' boxes, and the top of its first point.
MEASURE_JS = """([selector, word]) => [...document.querySelectorAll(selector)]
  .filter((el) => el.offsetParent && el._fullLayout && (el._fullLayout.title.text || '').includes(word))
  .map((el) => {
    const r = (b) => ({left: b.left, top: b.top, right: b.right, bottom: b.bottom});
    const zoom = parseFloat(getComputedStyle(el).zoom) || 1;
    const shown = (t) => getComputedStyle(t).display !== 'none' && t.getBoundingClientRect().width > 0;
    const cells = [...el.querySelectorAll('text.bartext, g.heatmap-label text')].filter(shown);
    const plot = el.querySelector('.nsewdrag').getBoundingClientRect();
    const points = [...el.querySelectorAll('.scatterlayer .point')].map((p) => p.getBoundingClientRect().top);
    return {
      box: r(el.getBoundingClientRect()), plot: r(plot), parent: el.parentElement.getBoundingClientRect().width,
      cells: cells.map((t) => ({size: parseFloat(t.style.fontSize) * zoom, box: r(t.getBoundingClientRect())})),
      count: el.querySelectorAll('text.bartext').length,
      xticks: [...el.querySelectorAll('.xtick text')].filter(shown).map((t) => r(t.getBoundingClientRect())),
      yticks: [...el.querySelectorAll('.ytick text')].filter(shown).map((t) => r(t.getBoundingClientRect())),
      firstPoint: points.length ? Math.min(...points) : null,
    };
  })"""


def measure(page, word: str, count: int = 1) -> list[dict]:
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('{FIGURES}')].filter((el) => el.offsetParent && el._fullLayout
               && (el._fullLayout.title.text || '').includes({word!r})).length >= {count}""",
        timeout=120_000,
    )
    page.wait_for_timeout(800)  # plotly's last resize
    return page.evaluate(MEASURE_JS, [FIGURES, word])


def overlapping(boxes: list[dict], slack: float = 1.0) -> int:
    return sum(
        min(a["right"], b["right"]) - max(a["left"], b["left"]) > slack
        and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > slack
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
    )


def slanted_gap(boxes: list[dict], angle: float) -> float:
    """The room between neighbouring tick labels slanted by ``angle`` degrees, across their lines of text (their
    boxes overlap long before the letters do): at least the font's height, or they print over each other."""
    rights = sorted(b["right"] for b in boxes)
    return min(b - a for a, b in zip(rights, rights[1:])) * math.sin(math.radians(angle))


def assert_readable_cells(lens: dict, where: str) -> None:
    small = [c["size"] for c in lens["cells"] if c["size"] < 10]
    assert not small, f"{where}: cell text at {small[:3]} px"
    assert overlapping([c["box"] for c in lens["cells"]]) == 0, f"{where}: cell texts overlap"


def open_lens(page) -> dict:
    open_tab(page, "Next token")
    open_tab(page, "Logit lens", bar=page.locator("[role=tabpanel]:visible .tab-wrapper").first)
    return measure(page, "Logit lens")[0]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_logit_lens_cells_are_readable_or_empty_and_large_fonts_grow_them(open_page, artifacts, viewport):
    page = open_page(viewport=viewport)
    lens = open_lens(page)
    assert_readable_cells(lens, "normal")
    if viewport is DESKTOP:  # a 1280 px screen has room for every cell's token
        assert len(lens["cells"]) == lens["count"] > 0, f"{len(lens['cells'])} of {lens['count']} cells show text"
    page.locator(FIGURES).filter(has_text="Logit lens").first.screenshot(
        path=artifacts / f"readable-lens-{viewport['width']}.png"
    )
    page.get_by_label("Large fonts").check()
    page.wait_for_function("() => document.querySelector('.gradio-container.explorer-large')")
    large = measure(page, "Logit lens")[0]
    assert_readable_cells(large, "large fonts")
    if lens["cells"] and large["cells"]:
        assert min(c["size"] for c in large["cells"]) >= max(c["size"] for c in lens["cells"]), "Large fonts shrank"
    box, plot = large["box"], large["plot"]
    width = box["right"] - box["left"]
    assert width >= 0.98 * large["parent"], f"with Large fonts the figure is {width:.0f} px of {large['parent']:.0f}"
    assert (plot["right"] - plot["left"]) >= 0.5 * width, "with Large fonts the plot fills half its figure or less"
    page.locator(FIGURES).filter(has_text="Logit lens").first.screenshot(
        path=artifacts / f"readable-lens-{viewport['width']}-large.png"
    )


def test_the_ablate_lenses_are_full_width_one_above_the_other(open_page, artifacts):
    page = open_page(viewport=DESKTOP)
    open_tab(page, "Interventions")
    page.get_by_role("button", name="Ablate", exact=True).click()
    clean, ablated = measure(page, "Logit lens, ", count=2)
    panel = page.locator("[role=tabpanel]:visible").first.bounding_box()
    for lens in (clean, ablated):
        assert lens["box"]["right"] - lens["box"]["left"] >= 0.9 * panel["width"], "a lens is not full width"
        assert_readable_cells(lens, "ablate")
        assert len(lens["cells"]) == lens["count"] > 0, f"{len(lens['cells'])} of {lens['count']} cells show text"
    assert ablated["box"]["top"] >= clean["box"]["bottom"] - 1, "the lenses are side by side"
    page.locator(FIGURES).filter(has_text="Logit lens, clean").first.scroll_into_view_if_needed()
    page.screenshot(path=artifacts / "readable-ablate-lenses.png")


def test_a_long_texts_figures_label_tokens_without_overprinting(open_page, artifacts):
    page = open_page(viewport=DESKTOP)
    analyze(page, LONG)
    open_tab(page, "Attention")
    head = measure(page, "head 0")[0]
    for axis in ("xticks", "yticks"):
        assert 10 <= len(head[axis]) <= 40, f"{len(head[axis])} {axis}"
    assert overlapping(head["yticks"]) == 0 and slanted_gap(head["xticks"], 60) >= 10, "tick labels overprint"
    page.locator(FIGURES).first.screenshot(path=artifacts / "readable-long-attention.png")
    open_tab(page, "Token links", bar=page.locator("[role=tabpanel]:visible .tab-wrapper").first)
    links = measure(page, "of 512")[0]
    assert links["box"]["bottom"] - links["box"]["top"] <= 1300, "token links taller than a readable page"
    assert links["firstPoint"] - links["plot"]["top"] <= 30, "a blank band above the first token"
    page.locator(FIGURES).filter(has_text="of 512").first.screenshot(path=artifacts / "readable-long-links.png")
    open_tab(page, "Next token")
    open_tab(page, "Logit lens", bar=page.locator("[role=tabpanel]:visible .tab-wrapper").first)
    lens = measure(page, "Logit lens")[0]
    page.locator(FIGURES).filter(has_text="Logit lens").first.screenshot(path=artifacts / "readable-long-lens.png")
    assert 10 <= len(lens["xticks"]) <= 40 and slanted_gap(lens["xticks"], 45) >= 10, "tick labels overprint"
