"""What a person sees of a figure, measured in the page: plot area, text inside its box, legend, title.

``figure_report(scope)`` returns one dict per drawn figure (visible, with data) inside ``scope``;
``problems(report, model)`` lists, in words, what a person would see wrong with it.
"""

from __future__ import annotations

REPORT_JS = """(scope) => [...scope.querySelectorAll('.js-plotly-plot')]
  .filter((el) => el.offsetParent && (el.data || []).length && el._fullLayout)
  .map((el) => {
    const r = (b) => ({left: b.left, top: b.top, right: b.right, bottom: b.bottom, width: b.width, height: b.height});
    const box = el.getBoundingClientRect();
    const areas = [...el.querySelectorAll('.nsewdrag'), ...el.querySelectorAll('.gl-container > div')]
      .map((a) => a.getBoundingClientRect()).filter((a) => a.width > 0 && a.height > 0);
    const union = areas.length ? {
      left: Math.min(...areas.map((a) => a.left)), top: Math.min(...areas.map((a) => a.top)),
      right: Math.max(...areas.map((a) => a.right)), bottom: Math.max(...areas.map((a) => a.bottom)),
    } : null;
    const texts = [...el.querySelectorAll('svg text')]
      .filter((t) => !t.closest('.hoverlayer') && t.textContent.trim() && t.getBoundingClientRect().width > 0)
      .map((t) => ({text: t.textContent.trim().slice(0, 60), box: r(t.getBoundingClientRect()),
                    title: !!t.closest('.g-gtitle'), legend: !!t.closest('.legend')}));
    const legend = el.querySelector('.legend');
    const series = (el._fullData || []).filter((t) => t.showlegend !== false && t.visible !== false).length;
    const label = el.closest('.block')?.querySelector('[data-testid=block-label]');
    return {
      box: r(box), plot: union, texts, series,
      legend: legend ? r(legend.getBoundingClientRect()) : null,
      label: label && label.offsetParent ? r(label.getBoundingClientRect()) : null,
      title: el.querySelector('.g-gtitle')?.textContent || '',
      tickSize: parseFloat(el.querySelector('.xtick text, .ytick text')?.style.fontSize || '0'),
    };
  })"""
TOLERANCE = 2  # px: anti-aliasing at the edges


def figure_report(scope) -> list[dict]:
    return scope.evaluate(REPORT_JS)


def _inside(inner: dict, outer: dict) -> bool:
    return (
        inner["left"] >= outer["left"] - TOLERANCE
        and inner["right"] <= outer["right"] + TOLERANCE
        and inner["top"] >= outer["top"] - TOLERANCE
        and inner["bottom"] <= outer["bottom"] + TOLERANCE
    )


def _overlap(a: dict, b: dict) -> bool:
    return (
        min(a["right"], b["right"]) - max(a["left"], b["left"]) > TOLERANCE
        and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > TOLERANCE
    )


def problems(figure: dict, model: str) -> list[str]:
    """What is wrong with one figure as a person sees it (an empty list: nothing)."""
    found = []
    box, plot = figure["box"], figure["plot"]
    if plot is None:
        found.append("no plot area")
    else:
        width, height = (plot["right"] - plot["left"]) / box["width"], (plot["bottom"] - plot["top"]) / box["height"]
        if width < 0.5 or height < 0.5:
            found.append(f"plot area only {width:.0%} wide and {height:.0%} high of its {box['width']:.0f} px box")
    for text in figure["texts"]:
        if not _inside(text["box"], box):
            found.append(f"text {text['text']!r} runs outside the figure")
    titles = [t for t in figure["texts"] if t["title"]]
    for title in titles:
        for other in figure["texts"]:
            if not other["title"] and _overlap(title["box"], other["box"]):
                found.append(f"title {title['text']!r} overlaps {other['text']!r}")
    if model not in figure["title"]:
        found.append(f"title {figure['title']!r} does not name {model}")
    if figure["series"] > 1:
        legend = figure["legend"]
        if legend is None:
            found.append(f"{figure['series']} series and no legend")
        elif not _inside(legend, box):
            found.append("the legend runs outside the figure")
        elif figure["label"] and _overlap(legend, figure["label"]):
            found.append("the legend is hidden under the figure's label")
    return found
