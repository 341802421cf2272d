"""Every view of every family, at a projector's 1280×720 and a phone's 390×844, as a person sees it:
each figure's plot area at least half its box, no text outside it, no title over the ticks, a legend
wherever more than one series is drawn, and the model named in every title. Screenshots of each view
go to ``tests/browser/artifacts/<model>-<size>-<view>.png``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import DESKTOP, PHONE
from tests.browser.figures import figure_report, problems
from tests.browser.test_tab_bar import open_tab
from tests.browser.test_tabs import analyze

FAMILIES = {"decoder": "tiny-gpt2", "encoder": "tiny-bert", "encoder_decoder": "tiny-t5"}
SIZES = {"desktop": DESKTOP, "phone": PHONE}
KINDS = {"decoder": ["self-attention"], "encoder": ["self-attention"],
         "encoder_decoder": ["encoder self-attention", "decoder masked self-attention", "cross-attention (decoder → encoder)"]}  # fmt: skip
DRAW_TIMEOUT = 180_000
ARTIFACTS = Path(__file__).parent / "artifacts"


def panel(page):
    """The innermost visible tab panel (a sub-tab's, where the tab has sub-tabs)."""
    return page.locator("[role=tabpanel]:visible").last


def open_subtab(page, label: str) -> None:
    open_tab(page, label, page.locator("[role=tabpanel]:visible").first.locator(".tab-wrapper").first)


def wait_for_title(page, *parts: str) -> None:
    """Wait until a figure on screen has a title holding every part (so it is the newly drawn one)."""
    try:
        page.wait_for_function(
            """(parts) => [...document.querySelectorAll('[role=tabpanel] .js-plotly-plot')].some((el) => el.offsetParent
                && (el.data || []).length && parts.every((p) => (el.querySelector('.g-gtitle')?.textContent || '').includes(p)))""",
            arg=list(parts),
            timeout=DRAW_TIMEOUT,
        )
    except Exception as error:  # what the page showed instead (a warning, a stale figure) is the first clue
        page.screenshot(path=ARTIFACTS / f"timeout-{'-'.join(parts)[:60].replace('/', '_')}.png")
        raise AssertionError(f"no figure titled with {parts}; the page showed: {on_screen(page)}") from error
    page.wait_for_timeout(400)  # let plotly finish its layout pass


def on_screen(page) -> dict:
    """What a timed-out wait saw instead (CI keeps only the log): every figure's title and whether it is shown,
    the warnings and toasts, and the elements gradio still marks as pending."""
    return page.evaluate(
        """() => ({
            figures: [...document.querySelectorAll('.js-plotly-plot')].map((el) =>
                `${el.offsetParent ? 'shown' : 'hidden'}: ${el.querySelector('.g-gtitle')?.textContent || '(no title)'}`),
            toasts: [...document.querySelectorAll('[data-testid=toast-body]')].map((el) => el.innerText),
            pending: document.querySelectorAll('.pending').length,
        })"""
    )


def press(page, name: str) -> None:
    """Every slider of the visible panel at its minimum (the cheapest run), then the button."""
    scope = page.locator("[role=tabpanel]:visible").first
    for number in scope.locator("input[type=number][min]:visible").all():
        number.fill(number.get_attribute("min"))
        number.press("Enter")
    scope.get_by_role("button", name=name, exact=True).first.click()


def check(page, model: str, size: str, view: str, artifacts, seen: dict) -> None:
    scope = page.locator("[role=tabpanel]:visible").first
    toasts = page.locator("[data-testid=toast-body].error, [data-testid=toast-body].warning")
    if toasts.count():
        seen[f"{view} toast"] = toasts.all_inner_texts()
    figures = figure_report(scope)
    assert figures, f"{view}: no figure drawn"
    for i, figure in enumerate(figures):
        found = problems(figure, model)
        if found:
            seen[f"{view} figure {i + 1}"] = found
    first = scope.locator(".js-plotly-plot:visible").first
    first.scroll_into_view_if_needed()
    name = "-".join(part for part in (model, size, view) if part)  # the training views have no model
    page.screenshot(path=artifacts / f"{name}.png")


# A text whose answer an encoder reads at its mask, and the same text with two words swapped (same tokens).
MASKED = "The tiger jumped out of a [MASK] to get a drink because it was thirsty."
SWAPPED = {"encoder": "The tiger jumped out of a [MASK] to get a thirsty because it was drink.",  # mask stays put
           "other": "The tree jumped out of a tiger to get a drink because it was thirsty."}  # fmt: skip


def check_interventions(page, family: str, model: str, size: str, artifacts, seen: dict) -> None:
    open_tab(page, "Interventions")
    if family == "encoder":  # its answer is its fill-in: the text needs a mask
        analyze(page, MASKED)
    press(page, "Ablate")
    wait_for_title(page, model, "Answer distribution, clean vs")
    wait_for_title(page, model, "ablated:")
    check(page, model, size, "interventions-ablate", artifacts, seen)
    open_subtab(page, "Head importance")
    press(page, "Ablate every head")
    wait_for_title(page, model, "Head importance")
    check(page, model, size, "interventions-heads", artifacts, seen)
    open_subtab(page, "Patching")
    scope = page.locator("[role=tabpanel]:visible").first
    scope.get_by_label("Corrupted text (same number of tokens as the text)").fill(SWAPPED.get(family, SWAPPED["other"]))
    scope.get_by_role("button", name="Patch every layer and position").click()
    wait_for_title(page, model, "Patching the")
    check(page, model, size, "interventions-patching", artifacts, seen)
    open_subtab(page, "Steering")
    scope.get_by_role("button", name="Steer", exact=True).click()
    wait_for_title(page, model, "Answer distribution", "×")
    check(page, model, size, "interventions-steering", artifacts, seen)


def check_inference(page, model: str, size: str, artifacts, seen: dict) -> None:
    open_tab(page, "Quantize & speculate")
    scope = page.locator("[role=tabpanel]:visible").first
    scope.get_by_role("button", name="Quantize and measure").click()
    wait_for_title(page, model, "Size of the weights")
    wait_for_title(page, model, "Next token, float32 vs")
    check(page, model, size, "inference-quantization", artifacts, seen)
    open_subtab(page, "Speculative decoding")
    scope.get_by_role("button", name="Generate speculatively").click()
    wait_for_title(page, model, "Proposals kept")
    check(page, model, size, "inference-speculative", artifacts, seen)
    if model == "tiny-gpt2":  # the bundled draft model shares its tokenizer
        scope = page.locator("[role=tabpanel]:visible").first
        scope.get_by_label("a small draft model: tiny-gpt2-draft").check()
        scope.get_by_role("button", name="Generate speculatively").click()
        wait_for_title(page, model, "Proposals kept", "tiny-gpt2-draft")
        check(page, model, size, "inference-draft-model", artifacts, seen)


def check_training(page, model: str, size: str, artifacts, seen: dict) -> None:
    open_tab(page, "Training")
    scope = page.locator("[role=tabpanel]:visible").first
    scope.get_by_label("number input for Steps", exact=True).first.fill("40")
    scope.get_by_label("number input for Steps", exact=True).first.press("Enter")
    scope.get_by_role("button", name="Train from scratch").click()
    wait_for_title(page, "Loss while training")
    scope.get_by_text("Step **40 of 40**".replace("**", "")).first.wait_for(timeout=DRAW_TIMEOUT)
    page.wait_for_timeout(600)
    check(page, "", size, "training-pretrain", artifacts, seen)
    open_subtab(page, "Scaling")
    scope.get_by_role("button", name="Fit the power law").click()
    wait_for_title(page, "Held-out loss against")
    check(page, "", size, "training-scaling", artifacts, seen)
    open_subtab(page, "Pre-train")
    page.locator("[role=tabpanel]:visible").first.get_by_role(
        "button", name="Open this model in the other tabs"
    ).click()
    open_tab(page, "Attention")  # the trained model is now every tab's: the attention map names it
    wait_for_title(page, "your trained decoder (40 steps)")
    check(page, "your trained decoder (40 steps)", size, "training-opened-attention", artifacts, seen)


def check_retrieval(page, family: str, model: str, size: str, artifacts, seen: dict) -> None:
    open_tab(page, "Retrieval")
    scope = page.locator("[role=tabpanel]:visible").first
    scope.get_by_role("button", name="Search", exact=True).click()
    wait_for_title(page, model, "Fused ranking")
    check(page, model, size, "retrieval-search", artifacts, seen)
    if family != "encoder":
        scope.get_by_role("button", name="Answer with and without the passages").click()
        wait_for_title(page, model, "Where the written tokens look")
        check(page, model, size, "retrieval-answer", artifacts, seen)
        scope.get_by_role("button", name="Attribute the answer to the prompt").click()
        wait_for_title(page, model, "owes each")
        check(page, model, size, "retrieval-attribution", artifacts, seen)


@pytest.mark.parametrize("size", SIZES, ids=list(SIZES))
@pytest.mark.parametrize("family", FAMILIES, ids=list(FAMILIES))
def test_every_figure_is_readable(open_page, artifacts, family, size):
    model = FAMILIES[family]
    page = open_page(f"?model={model}", viewport=SIZES[size])
    seen: dict[str, list[str]] = {}

    open_tab(page, "Attention")
    for kind in KINDS[family]:
        page.locator("[role=tabpanel]:visible").first.get_by_label(kind, exact=True).check()
        wait_for_title(page, model, kind)
        check(page, model, size, f"attention-{kind.split()[0]}", artifacts, seen)
    for sub, what in (("All heads", "All heads"), ("Token links", "layer"), ("Head statistics", "previous_token")):
        open_subtab(page, sub)
        wait_for_title(page, model, what)
        check(page, model, size, f"attention-{sub.split()[0].lower()}", artifacts, seen)

    open_tab(page, "Embeddings")
    for sub, what in (("Token map", "PCA"), ("Through the layers", "stream"), ("Position", "Position")):
        open_subtab(page, sub)
        wait_for_title(page, model, what) if sub != "Position" or family != "encoder_decoder" else wait_for_title(
            page, model
        )
        check(page, model, size, f"embeddings-{sub.split()[0].lower()}", artifacts, seen)

    if family != "encoder":
        open_tab(page, "Next token")
        wait_for_title(page, model, "Next token after")
        check(page, model, size, "next-token", artifacts, seen)
        scope = page.locator("[role=tabpanel]:visible").first
        for knob, value in (("Temperature", "0.7"), ("Top-k (0 = off)", "10")):  # a series per decoding stage
            number = scope.get_by_label(f"number input for {knob}", exact=True).first
            number.fill(value)
            number.press("Enter")
        page.wait_for_function(
            "() => [...document.querySelectorAll('[role=tabpanel] .js-plotly-plot')].some((el) => el.offsetParent"
            " && (el.data || []).length >= 3)",
            timeout=DRAW_TIMEOUT,
        )
        page.wait_for_timeout(400)
        check(page, model, size, "next-token-stages", artifacts, seen)
        open_tab(page, "KV cache")
        press(page, "Run the experiment")
        wait_for_title(page, model, "Time for each new token")
        wait_for_title(page, model, "Cached keys")
        check(page, model, size, "kv-cache", artifacts, seen)
        scope = page.locator("[role=tabpanel]:visible").first
        scope.get_by_text("Attention variants: multi-head, grouped-query, multi-query").click()
        scope.get_by_role("button", name="Compare the variants").click()
        wait_for_title(page, model, "by attention variant")
        check(page, model, size, "kv-cache-variants", artifacts, seen)

    if family == "decoder":
        open_tab(page, "LoRA")
        press(page, "Train a new adapter")
        wait_for_title(page, model, "LoRA training loss")
        page.locator("[role=tabpanel]:visible").first.get_by_text("done.").first.wait_for(timeout=DRAW_TIMEOUT)
        check(page, model, size, "lora", artifacts, seen)

    open_tab(page, "Attribution")
    press(page, "Attribute")
    wait_for_title(page, model, "Why")
    check(page, model, size, "attribution", artifacts, seen)
    if family != "encoder":
        open_subtab(page, "Whole generation")
        page.locator("[role=tabpanel]:visible").first.get_by_role(
            "button", name="Attribute the whole generation"
        ).click()
        wait_for_title(page, model, "of each explained token")
        check(page, model, size, "attribution-matrix", artifacts, seen)

    check_interventions(page, family, model, size, artifacts, seen)
    check_retrieval(page, family, model, size, artifacts, seen)
    if family != "encoder":
        check_inference(page, model, size, artifacts, seen)
    if family == "decoder":  # last: it opens the model it trained in every tab
        check_training(page, model, size, artifacts, seen)
    assert not seen, "\n".join(f"{view}: {'; '.join(found)}" for view, found in seen.items())
