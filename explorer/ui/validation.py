"""One check of every value an event receives, before gradio's own and before any handler runs.

Gradio checks a slider's range and a radio's choices, but NaN passes a range check (every comparison
with NaN is false), ``None`` reaches handlers for radios, and a lone surrogate or a list arrives where
a text was expected. ``refuse_bad_inputs(demo)`` puts one gate in front of every event of an app: a
value that does not fit its component is refused with one sentence naming the control, and the
server log gets one line per refusal (no traceback; gradio's own refusals are shortened the same way).
"""

from __future__ import annotations

import logging
import math
from functools import wraps

import gradio as gr

log = logging.getLogger("explorer.inputs")
TEXT_TYPES = (gr.Textbox,)
NUMBER_TYPES = (gr.Slider, gr.Number)
CHOICE_TYPES = (gr.Radio, gr.Dropdown)


def _name(component) -> str:
    return f"“{component.label}”" if getattr(component, "label", None) else "a setting"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_text(value, what: str) -> None:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise gr.Error(f"{what} takes a text, not {type(value).__name__}.", print_exception=False)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise gr.Error(
                f"{what} holds half of a character (a lone surrogate); paste the text again.", print_exception=False
            ) from None


def problem(component, value):
    """The value as the handler should get it, or ``gr.Error`` with one sentence when it does not fit."""
    what = _name(component)
    if isinstance(component, TEXT_TYPES):
        if value is None:
            return ""
        _check_text(value, what)
        return value
    if isinstance(component, NUMBER_TYPES):
        if value is None and isinstance(component, gr.Number):
            return None  # an emptied number box: handlers use their default
        low, high = getattr(component, "minimum", None), getattr(component, "maximum", None)
        span = f" from {low:g} to {high:g}" if low is not None and high is not None else ""
        if not _is_number(value) or not math.isfinite(value):
            raise gr.Error(f"{what} takes a number{span}, not {value!r:.40}.", print_exception=False)
        if (low is not None and value < low) or (high is not None and value > high):
            raise gr.Error(f"{what} takes a number{span}, not {value:g}.", print_exception=False)
        return value
    if isinstance(component, gr.Checkbox):
        if not isinstance(value, bool):
            raise gr.Error(f"{what} is on or off (true or false), not {value!r:.40}.", print_exception=False)
        return value
    if isinstance(component, gr.CheckboxGroup):
        if value is None:
            return []
        if not isinstance(value, list):
            raise gr.Error(f"{what} takes a list of its choices.", print_exception=False)
        return value
    if isinstance(component, gr.File):
        if value is not None and not (isinstance(value, dict) and isinstance(value.get("path"), str)):
            raise gr.Error(f"{what} takes an uploaded file.", print_exception=False)
        return value
    if isinstance(component, CHOICE_TYPES):
        multiselect = getattr(component, "multiselect", False)
        if value is None:
            if isinstance(component, gr.Radio) or component.value is not None and not multiselect:
                raise gr.Error(f"Pick one of the choices of {what}.", print_exception=False)
            return value
        if multiselect and isinstance(value, list):
            for item in value:
                _check_choice(item, what)
            return value
        _check_choice(value, what)
    return value


def _check_choice(value, what: str) -> None:
    if isinstance(value, bool) or value is not None and not isinstance(value, (str, int, float, list, dict)):
        raise gr.Error(f"{what} takes one of its choices, not {value!r:.40}.", print_exception=False)
    if isinstance(value, float) and not math.isfinite(value):
        raise gr.Error(f"Pick one of the choices of {what}.", print_exception=False)
    if isinstance(value, (list, dict)):
        raise gr.Error(f"{what} takes one choice, not {type(value).__name__}.", print_exception=False)
    if isinstance(value, str):
        _check_text(value, what)


def _event_name(block_fn) -> str:
    return str(getattr(block_fn, "api_name", None) or getattr(block_fn, "name", None) or "an event")


def refuse_bad_inputs(demo: gr.Blocks) -> gr.Blocks:
    """Check every event's inputs against their components before gradio preprocesses them."""
    preprocess = demo.preprocess_data

    @wraps(preprocess)
    async def checked(block_fn, inputs, state, *args, **kwargs):
        try:
            inputs = list(inputs)
            for i, component in enumerate(block_fn.inputs):
                if i < len(inputs) and not getattr(component, "stateful", False):
                    if i in getattr(block_fn, "component_prop_inputs", ()):
                        continue  # a component's properties, not its value: gradio checks them
                    inputs[i] = problem(component, inputs[i])
            return await preprocess(block_fn, inputs, state, *args, **kwargs)
        except gr.Error as err:  # ours, or gradio's own range and choice checks
            message = _sentence(err)
            log.warning("refused input for %s: %s", _event_name(block_fn), message)
            raise gr.Error(message, print_exception=False) from None
        except Exception as err:  # gradio could not read a value at all (a malformed file description...)
            log.warning("refused input for %s: %s: %.200s", _event_name(block_fn), type(err).__name__, err)
            raise gr.Error(
                "One of the values sent could not be read; reload the page.", print_exception=False
            ) from None

    demo.preprocess_data = checked
    return demo


def _sentence(err: gr.Error) -> str:
    """Gradio's refusals name the value and every choice; ours are already one sentence."""
    message = str(err.message if hasattr(err, "message") else err)
    if "is not in the list of choices" in message:
        return "That value is not one of the choices offered; pick one from the list."
    if message.startswith("Value ") and ("less than minimum" in message or "greater than maximum" in message):
        return message.replace("Value ", "The value ", 1)
    return message
