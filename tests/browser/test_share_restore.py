"""Share links restore settings checked against the model they apply to: no error toast on load."""

from __future__ import annotations

import pytest

from tests.browser.conftest import QUIET, STATUS

TOASTS = "[data-testid=toast-body]"


def settled(page) -> None:
    page.wait_for_timeout(1_500)  # every event the load starts has been sent
    page.wait_for_function(QUIET, timeout=120_000)


@pytest.mark.parametrize(
    "query",
    [
        "?model=tiny-t5",
        "?model=tiny-t5&tab=attention",
        "?model=tiny-t5&tab=attention&attention.attention_kind=self&attention.layer=3",
        "?model=tiny-bert&tab=attention&attention.attention_kind=cross",
        "?model=tiny-gpt2&tab=attention&attention.attention_kind=decoder_self",
    ],
)
def test_a_link_opens_on_its_model_without_an_error(open_page, query):
    page = open_page(query)
    settled(page)
    toasts = page.locator(TOASTS)
    assert toasts.count() == 0, toasts.all_inner_texts()
    assert "⚠️" not in page.locator(STATUS).inner_text()
