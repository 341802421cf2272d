"""Fill-mask and span infilling, on tiny models and known strings."""

import pytest

from explorer.analysis.decoding.fill_mask import fill_mask, infill_spans, mask_token_at, masked_positions
from explorer.core.errors import InputError
from explorer.core.run import run


def test_mask_token_at_replaces_one_span():
    assert mask_token_at("the cat sat", 4, 7, "[MASK]") == "the [MASK] sat"
    with pytest.raises(InputError):
        mask_token_at("abc", 2, 9, "[MASK]")


def test_fill_mask_ranks_the_masked_position(tiny):
    lm = tiny["bert"]
    trace = run(lm, f"the tiger {lm.tokenizer.mask_token} out of a tree.")
    (position,) = masked_positions(trace, lm.tokenizer.mask_token_id)
    ids, probs = fill_mask(trace, position, top_n=5)
    assert len(ids) == 5 and probs == sorted(probs, reverse=True)
    assert ids[0] == int(trace.logits[position].argmax())
    with pytest.raises(InputError):
        fill_mask(trace, 999)


def test_infill_spans_reads_sentinels():
    spans, filled = infill_spans(
        "Let there be <extra_id_0>: and there was <extra_id_1>.",
        "<pad><extra_id_0> light<extra_id_1> light<extra_id_2></s>",
    )
    assert spans == {0: "light", 1: "light"}  # <extra_id_2> is not in the text: what follows it is not a span
    assert filled == "Let there be [light]: and there was [light]."
