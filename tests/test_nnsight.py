"""The nnsight backend: locally, the same Trace as the plain path, for every bundled model."""

import numpy as np
import pytest

from explorer.core.loading import load
from explorer.core.run import run

nnsight = pytest.importorskip("nnsight", reason="the optional 'ndif' extra (nnsight) is not installed")

from explorer.core.nnsight_backend import run_nnsight  # noqa: E402

TEXT = "The tiger jumped out of a tree to get a drink because it was thirsty."


def assert_same(a, b):
    assert (a.model_key, a.family, a.texts, a.tokens, a.meta) == (b.model_key, b.family, b.texts, b.tokens, b.meta)
    for mine, theirs in ((a.attentions, b.attentions), (a.hidden, b.hidden)):
        assert list(mine) == list(theirs)
        for key in mine:
            assert mine[key].shape == theirs[key].shape and np.array_equal(mine[key], theirs[key]), key
    assert np.array_equal(a.logits, b.logits)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert", "tiny-t5"])
def test_a_trace_through_nnsight_equals_the_plain_one(name):
    lm = load(name)
    assert_same(run_nnsight(lm, TEXT), run(lm, TEXT))


def test_generation_and_a_given_target_go_through_nnsight_alike():
    gpt, t5 = load("tiny-gpt2"), load("tiny-t5")
    assert_same(run_nnsight(gpt, "In the beginning", generate=5), run(gpt, "In the beginning", generate=5))
    assert_same(run_nnsight(t5, TEXT, target="a tiger"), run(t5, TEXT, target="a tiger"))


def test_the_remote_path_needs_the_users_key():
    from explorer.core.errors import ModelLoadError
    from explorer.core.nnsight_backend import nnsight_forward

    with pytest.raises(ModelLoadError, match="API key"):
        nnsight_forward(load("tiny-gpt2"), remote=True)
