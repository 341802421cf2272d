"""Every tab in a real browser: type a text, change a setting, wait for the figures, check what is shown."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import ANALYZED, APP_TEXT, DESKTOP, QUIET, STATUS

PLOT_TIMEOUT = 60_000
ACTION_TIMEOUT = 240_000  # a view drawn only on a button press (beam search, a benchmark, a fine-tune)
# What a tab shows of the text once analysed, where we know it (other tabs: figures with data, no warnings).
EXPECTED_TEXT = {"tokens": "tiger", "attention": "tiger", "decoding": "entropy"}


# Set before the click: window.analysisStarted turns true once the status line's block shows an analysis
# running. The previous analysis' status stays on screen meanwhile, and gradio marks the block around the status
# text (not something inside it) as pending, so neither the text nor '{STATUS} .pending' tells a new analysis.
WATCH_ANALYSIS = f"""() => {{
    const block = document.querySelector('{STATUS}').closest('.block');
    const running = () => block.matches('.pending') || block.querySelector('.pending') !== null;
    window.analysisStarted = false;
    new MutationObserver((_, observer) => {{
        if (running()) {{ window.analysisStarted = true; observer.disconnect(); }}
    }}).observe(block, {{subtree: true, attributes: true, attributeFilter: ['class']}});
}}"""


def analyze(page, text: str) -> None:
    """Analyse ``text`` and return once the analysis and the views it redraws are done: a button pressed before
    then had its result emptied by the analysis landing after it (the Interventions figure a CI run waited for)."""
    page.get_by_label("Text", exact=True).fill(text)
    page.evaluate(WATCH_ANALYSIS)
    page.get_by_role("button", name="Analyze").click()
    page.wait_for_function("() => window.analysisStarted", timeout=PLOT_TIMEOUT)
    page.locator(STATUS).get_by_text(ANALYZED).wait_for(timeout=PLOT_TIMEOUT)
    for _ in range(2):  # the analysis, then the views hanging off it: quiet twice, half a second apart
        page.wait_for_timeout(500)
        page.wait_for_function(QUIET, timeout=PLOT_TIMEOUT)


def panel_of(page, label: str):
    """The visible panel of the top-level tab ``label`` (after selecting it)."""
    page.get_by_role("tab", name=label, exact=True).first.click()
    return page.locator("[role=tabpanel]:visible").first


def drawn_plots(panel):
    return panel.locator(".js-plotly-plot:visible")


def scroll_to_figure(page, panel) -> None:
    """Bring the first figure on screen (it may be redrawn meanwhile: try again)."""
    for _ in range(5):
        try:
            drawn_plots(panel).first.scroll_into_view_if_needed(timeout=5_000)
            return
        except Exception:  # noqa: BLE001  (detached by a redraw)
            page.wait_for_timeout(300)


def trace_counts(panel) -> list[int]:
    return drawn_plots(panel).evaluate_all("(els) => els.map((el) => (el.data || []).length)")


def change_a_setting(panel) -> str | None:
    """Move the first visible slider of the tab one step (through its number box); returns its label."""
    number = panel.locator("input[type=number]:visible").first
    if number.count() == 0:
        return None
    value, step = float(number.input_value() or 0), float(number.get_attribute("step") or 1)
    high = number.get_attribute("max")
    new = value + step if high is None or value + step <= float(high) else value - step
    number.fill(f"{new:g}")
    number.press("Enter")
    return number.get_attribute("aria-label")


def cheapest_settings(panel) -> None:
    """Before running a view on request (a fine-tune, a benchmark): every visible slider at its minimum."""
    for number in panel.locator("input[type=number][min]:visible").all():
        number.fill(number.get_attribute("min"))
        number.press("Enter")


def wait_for_figure(page, panel) -> None:
    """Wait for a figure with data; a tab whose figures need a button press gets its first primary button."""
    try:
        page.wait_for_function(
            "(panel) => [...panel.querySelectorAll('.js-plotly-plot')].some((el) => el.offsetParent && (el.data || []).length)",
            arg=panel.element_handle(),
            timeout=8_000,  # views drawn on analysis are there by now; others wait for a button
        )
        return
    except Exception:  # noqa: BLE001  (no figure yet: this view draws on request)
        pass
    cheapest_settings(panel)
    panel.locator("button.primary:visible").first.click()
    page.wait_for_function(
        "(panel) => [...panel.querySelectorAll('.js-plotly-plot')].some((el) => el.offsetParent && (el.data || []).length)",
        arg=panel.element_handle(),
        timeout=ACTION_TIMEOUT,
    )


def assert_no_errors(page, panel) -> None:
    """No error or warning toast, no warning in the status line, no traceback or unexpected error anywhere."""
    toasts = page.locator("[data-testid=toast-body].error, [data-testid=toast-body].warning")
    assert toasts.count() == 0, toasts.all_inner_texts()
    status = page.locator(STATUS).inner_text()
    assert "⚠️" not in status, status
    shown = panel.inner_text()
    for unexpected in ("Traceback", "Something went wrong"):
        assert unexpected not in shown, shown[shown.index(unexpected) - 200 :][:500]


def shown_text(panel) -> str:
    """The tab's visible text, with the labels drawn inside its figures."""
    return panel.inner_text() + " ".join(panel.locator(".js-plotly-plot:visible text").all_text_contents())


def test_tab(open_page, artifacts, tab):
    tab_id, label, figures = tab
    page = open_page()
    analyze(page, APP_TEXT)
    panel = panel_of(page, label)
    if figures:
        wait_for_figure(page, panel)
    changed = change_a_setting(panel)
    page.wait_for_timeout(500)
    if figures:
        wait_for_figure(page, panel)
        counts = trace_counts(panel)
        assert counts and max(counts) > 0, f"no figure with data in {label} after changing {changed}"
        scroll_to_figure(page, panel)
    else:  # a view of tokens and tables: the text's tokens are on screen
        panel.get_by_text("tiger").first.wait_for()
    assert_no_errors(page, panel)
    if tab_id in EXPECTED_TEXT:
        assert EXPECTED_TEXT[tab_id] in shown_text(panel)
    page.screenshot(path=artifacts / f"{tab_id}.png")


def test_a_share_link_restores_model_text_tab_and_a_setting(open_page, artifacts):
    query = "?model=tiny-t5&text=Let+there+be+light.&tab=attention&attention.layer=2&large=1"
    page = open_page(query)
    status = page.locator(STATUS).inner_text()
    assert "tiny-t5" in status
    assert page.get_by_label("Text", exact=True).input_value() == "Let there be light."
    assert page.get_by_role("tab", name="Attention", exact=True).first.get_attribute("aria-selected") == "true"
    panel = page.locator("[role=tabpanel]:visible").first
    assert panel.get_by_label("number input for Layer", exact=True).first.input_value() == "2"
    page.wait_for_function("() => document.querySelector('.gradio-container.explorer-large')")
    page.get_by_role("button", name="Copy share link").click()
    link = page.locator(".explorer-share-link textarea, .explorer-share-link input").first
    page.wait_for_function("(el) => el.value.includes('model=')", arg=link.element_handle())
    url = link.input_value()
    assert re.search(r"model=tiny-t5", url) and "tab=attention" in url and "attention.layer=2" in url
    page.screenshot(path=artifacts / "share-link-large-fonts.png")


def test_large_fonts_scale_the_text(open_page):
    page = open_page()
    size = "() => parseFloat(getComputedStyle(document.querySelector('.explorer-status p')).fontSize)"
    normal = page.evaluate(size)
    page.get_by_label("Large fonts").check()
    page.wait_for_function(f"() => ({size})() > {normal}")


@pytest.mark.parametrize("viewport", [{"width": 390, "height": 844}], ids=["phone"])
def test_a_phone_width_needs_no_sideways_scrolling(open_page, artifacts, viewport):
    page = open_page(viewport=viewport)
    wide = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert wide <= 2, f"the page is {wide}px wider than a phone screen"
    page.screenshot(path=artifacts / "phone.png")


def test_export_the_attention_numbers_as_csv(open_page):
    page = open_page()
    panel = panel_of(page, "Attention")
    wait_for_figure(page, panel)
    panel.get_by_text("Export a figure (HTML) or its numbers (CSV, JSON)").click()
    panel.get_by_role("button", name="Numbers as CSV").click()
    link = panel.locator(".explorer-export-file a[href$='.csv']").first
    link.wait_for()
    body = page.request.get(link.get_attribute("href")).text()
    header, *rows = body.strip().splitlines()
    assert header.split(",")[:5] == ["trace", "name", "row", "column", "value"]
    tokens = int(len(rows) ** 0.5)
    assert len(rows) == tokens * tokens > 9, "one row per query and key of the one-head figure"
    assert rows[0].startswith("0,,The,The,")  # first query and key: the first token


def test_a_lesson_preset_puts_its_text_in_the_box_and_analyzes_it(open_page):
    """The lesson notes and their presets are made when their accordion is opened, not with the page."""
    page = open_page()
    panel = panel_of(page, "Attention")
    wait_for_figure(page, panel)
    assert panel.get_by_role("button", name="The trophy doesn't fit in the suitcase…").count() == 0  # not yet made
    panel.get_by_text("Lesson notes and examples").click()
    panel.get_by_text("Lesson: attention.").first.wait_for()  # the note, rendered on opening
    panel.get_by_role("button", name="The trophy doesn't fit in the suitcase…").click()
    page.wait_for_function(
        '() => [...document.querySelectorAll("textarea")].some((t) => t.value.includes("brown suitcase"))'
    )
    page.wait_for_function(
        """() => [...document.querySelectorAll('[role=tabpanel] .js-plotly-plot')].some((el) => el.offsetParent
            && (el.layout?.title?.text || '').includes('trophy'))""",
        timeout=PLOT_TIMEOUT,
    )


def test_opening_attention_after_an_analysis_draws_its_figure_once(open_page):
    """The sub-tab select gradio fires as the Attention tab mounts, and the tab's own drawing on opening, each
    drew the one-head figure: two model reads and two plotly renders for one click. The select is still sent
    (gradio sends it), but answers with no figure."""
    from tests.browser.conftest import app

    config = app()[0].get_config_file()
    (head_plot,) = [
        c["id"] for c in config["components"] if c["type"] == "plot" and c["props"].get("label") == "One head"
    ]
    draws = {d["id"]: d["queue"] for d in config["dependencies"] if head_plot in d["outputs"]}
    page = open_page()  # on Tokens, its analysis done
    sent, answered = [], []

    def seen(response):
        body = response.request.post_data_json if response.request.post_data else None
        if "/gradio_api/" in response.url and isinstance(body, dict) and body.get("fn_index") in draws:
            sent.append(body["fn_index"])
            if not draws[body["fn_index"]]:  # outside the queue: the answer is this response
                answered.append('"plot":' in response.text())

    page.on("response", seen)
    panel = panel_of(page, "Attention")
    page.wait_for_function(
        "(panel) => [...panel.querySelectorAll('.js-plotly-plot')].some((el) => el.offsetParent && (el.data || []).length)",
        arg=panel.element_handle(),
        timeout=PLOT_TIMEOUT,
    )
    page.wait_for_timeout(2_000)  # anything else the click set off
    queued = [f for f in sent if draws[f]]  # a queued draw streams its figure (the tab's drawing on opening)
    assert len(queued) + sum(answered) == 1, (sent, answered)
    assert "tiger" in shown_text(panel)


def test_results_a_button_made_go_when_another_text_is_analysed(open_page):
    """A table of one model's beams stayed on screen under another analysis' status line: results made from an
    analysis by a button are emptied when a new analysis replaces it."""
    page = open_page()
    panel = panel_of(page, "Next token")
    panel.get_by_role("tab", name="Strategies").click()
    panel.get_by_role("button", name="Compare greedy, sampling and beam search").click()
    greedy = panel.get_by_text("greedy", exact=True)  # the strategies table's first cell
    greedy.first.wait_for(timeout=ACTION_TIMEOUT)
    page.wait_for_function(
        "(panel) => [...panel.querySelectorAll('.js-plotly-plot')].some((el) => el.offsetParent && (el.data || []).length)",
        arg=panel.element_handle(),
        timeout=PLOT_TIMEOUT,
    )  # the beam tree
    analyze(page, "Once upon a time there was a king.")
    greedy.first.wait_for(state="detached", timeout=PLOT_TIMEOUT)
    assert max(trace_counts(panel) or [0]) == 0, "the beam tree of the last text is still drawn"


def test_analyze_returns_once_the_new_text_is_analysed_and_a_button_then_keeps_its_result(open_page):
    """The helper every browser test analyses with returned while the previous analysis' status was still on
    screen, so a button pressed next had its result emptied when the analysis landed (a CI run waited 180 s
    for an Interventions figure so). Each text here has its own token count, shown as soon as it returns, and
    a result made right after stays."""
    page = open_page()
    short, long = "A short text.", "A longer text, with a good many more words and tokens in it than the first."
    counts = []
    for text in (short, long, short):
        analyze(page, text)
        counts.append(re.search(r"(\d+) input tokens", page.locator(STATUS).inner_text())[1])
    assert counts[0] == counts[2] != counts[1], f"token counts on the status line after each analysis: {counts}"
    panel = panel_of(page, "Next token")
    panel.get_by_role("tab", name="Strategies").click()
    panel.get_by_role("button", name="Compare greedy, sampling and beam search").click()
    panel.get_by_text("greedy", exact=True).first.wait_for(timeout=ACTION_TIMEOUT)
    page.wait_for_timeout(2_000)
    assert panel.get_by_text("greedy", exact=True).first.is_visible()


def shown_kinds(page) -> list[str]:
    """The attention kinds a person sees offered (labels on screen), once the app has fitted them to the model."""
    page.wait_for_timeout(300)
    page.wait_for_function(QUIET, timeout=120_000)
    radio = page.locator("[role=tabpanel]:visible fieldset:has(input[value=cross])").first
    return [label.inner_text().strip() for label in radio.locator("label").all() if label.is_visible()]


def test_attention_offers_only_the_kinds_the_model_has(open_page, artifacts):
    from tests.browser.test_shell import status_changes, type_model
    from tests.browser.test_tab_bar import open_tab

    page = open_page("?model=tiny-t5")
    open_tab(page, "Attention")
    t5 = ["encoder self-attention", "decoder masked self-attention", "cross-attention (decoder → encoder)"]
    page.wait_for_function("() => document.querySelector('.explorer-kinds.explorer-has-cross')")
    assert shown_kinds(page) == t5
    page.locator("[role=tabpanel]:visible").first.get_by_label(t5[2], exact=True).check()
    before = page.locator(STATUS).inner_text()
    type_model(page, "tiny-gpt2")  # a model without cross-attention, while cross-attention is picked
    assert status_changes(page, before).startswith("tiny-gpt2")
    page.wait_for_function("() => document.querySelector('.explorer-kinds.explorer-has-self')")
    assert shown_kinds(page) == ["self-attention"]
    checked = page.locator("[role=tabpanel]:visible fieldset input[value=self]").first
    assert checked.is_checked(), "the one kind shown is the one drawn"
    page.screenshot(path=artifacts / "attention-kinds-gpt2.png")


def test_a_figure_takes_room_only_once_it_is_drawn(open_page, artifacts):
    """Retrieval opened with six empty frames (about 1,500 px) before its first button was pressed."""
    from tests.browser.test_tab_bar import open_tab

    page = open_page(viewport=DESKTOP)
    open_tab(page, "Retrieval")
    panel = page.locator("[role=tabpanel]:visible").first
    frames = "(p) => [...p.querySelectorAll('.explorer-figure')].map((el) => el.getBoundingClientRect().height)"
    page.wait_for_timeout(500)
    empty = panel.evaluate(frames)
    assert len(empty) >= 6 and max(empty) < 2, f"figure frames before any search: {empty}"
    panel.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=tabpanel] .js-plotly-plot')].filter((el) => el.offsetParent"
        " && (el.data || []).length).length >= 3",
        timeout=120_000,
    )
    drawn = sorted(panel.evaluate(frames), reverse=True)
    assert all(height > 250 for height in drawn[:3]), f"the search's three figures: {drawn[:3]} px high"
    page.screenshot(path=artifacts / "retrieval-after-search.png", full_page=True)
