"""Input checks: every refused text gets a sentence, every odd but valid text runs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.core.errors import InputError
from explorer.core.run import MAX_CHARS, binary_note, check_text, run


@pytest.mark.parametrize(
    "text, words",
    [("", "empty"), ("  \n\t", "empty"), (None, "empty"), (42, "string"), ("x" * (MAX_CHARS + 1), "at most"),
     ("ok \ud800", "lone surrogate")],
)  # fmt: skip
def test_refused_texts_say_why(text, words):
    with pytest.raises(InputError, match=words):
        check_text(text)


def test_long_inputs_are_cut_to_the_model_limit_and_say_so(tiny):
    trace = run(tiny["gpt2"], "word " * 400)
    assert trace.meta["truncated"] and len(trace.tokens["input"]) == trace.meta["max_tokens"] == 128


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=60).filter(str.strip))
def test_any_unicode_text_runs_on_every_family(tiny, text):
    for lm in tiny.values():
        trace = run(lm, text)
        assert all(len(v) > 0 for v in trace.tokens.values())


@pytest.mark.parametrize("text", ["PK\x03\x04\x00\x00 header", "\ufffd\ufffd\ufffd\x7f junk " + "x" * 20])
def test_binary_data_is_named_as_such(text):
    assert "binary data" in binary_note(text)


@pytest.mark.parametrize(
    "text", ["Tabs\tand\nnewlines\r\n are text.", "A form\x0cfeed in a long text." + " More words." * 20, ""]
)
def test_plain_text_with_a_stray_control_is_plain(text):
    assert binary_note(text) is None
