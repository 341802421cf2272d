"""The shell a teacher types into: the model box takes exactly what was typed, a failed load says what the
views still show, hub models are marked when there is no network, and a text that cannot be analysed (or is
binary data) is said in the status line at once."""

from __future__ import annotations

from explorer.core.loading import hub_reachable
from tests.browser.conftest import STATUS

MODEL_INPUT = ".explorer-model input"


def type_model(page, name: str) -> None:
    box = page.locator(MODEL_INPUT)
    box.click()
    box.fill(name)
    box.press("Enter")


def status_changes(page, before: str) -> str:
    page.wait_for_function(
        "([sel, before]) => { const t = document.querySelector(sel)?.innerText || ''; return t && t !== before && !t.includes('⏳'); }",
        arg=[STATUS, before],
    )
    return page.locator(STATUS).inner_text()


def test_typing_gpt2_and_enter_means_gpt2_not_tiny_gpt2(open_page):
    page = open_page()
    before = page.locator(STATUS).inner_text()
    type_model(page, "gpt2")
    status = status_changes(page, before)
    assert page.locator(MODEL_INPUT).input_value() in ("gpt2", "gpt2 (needs a network)")  # gpt2's own label
    assert "gpt2" in status and not status.startswith("tiny-gpt2"), status


def test_a_failed_load_says_which_model_the_views_still_show(open_page):
    page = open_page()
    before = page.locator(STATUS).inner_text()
    type_model(page, "foo/bar")
    status = status_changes(page, before)
    assert "foo/bar" in status and "⚠️" in status
    assert "The views below still show tiny-gpt2" in status, status


def test_hub_models_are_marked_when_there_is_no_network(open_page):
    page = open_page()
    page.locator(MODEL_INPUT).click()
    options = page.locator("[role=listbox] [role=option]").all_inner_texts()
    marked = [o for o in options if "(needs a network)" in o]
    if hub_reachable():
        assert not marked, options
    else:
        assert any(o.startswith("gpt2 ") for o in marked), options
        assert any(o.split()[-1] == "tiny-gpt2" for o in options), options  # bundled: no mark (✓ when selected)


def paste(page, text: str) -> None:
    """Replace the text box's content the way a paste does (one insertion, as the browser reports it)."""
    page.get_by_label("Text", exact=True).click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(text)


def test_a_long_paste_is_kept_whole_and_refused_in_the_status_at_once(open_page):
    page = open_page()
    paste(page, "word " * 6000)
    page.locator(STATUS).get_by_text("30,000 characters").wait_for(timeout=5_000)
    assert len(page.get_by_label("Text", exact=True).input_value()) == 30_000


def test_binary_junk_is_named_in_the_status_at_once(open_page):
    page = open_page()
    paste(page, "PK\x03\x04\x14\x00\x06\x00 \ufffd\ufffd")
    page.locator(STATUS).get_by_text("binary data").wait_for(timeout=5_000)
