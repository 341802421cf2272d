"""Helpers every tab shares, now below the tabs: the token label (core) and the message figure (plots)."""

import pytest

from explorer.core.loading import load_tokenizer
from explorer.core.tokens import token_label
from explorer.plots.text import message_figure


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2-bpe")


def test_token_label_shows_whitespace_and_bytes_and_keeps_special_tokens(gpt2):
    world, eot = gpt2.convert_tokens_to_ids(["Ġworld", "<|endoftext|>"])
    assert token_label(gpt2, world) == "␣world"
    assert token_label(gpt2, eot) == "<|endoftext|>"  # special: shown as written, never as bytes
    assert [token_label(gpt2, i) for i in gpt2.encode("é😀", add_special_tokens=False)] == [
        "é",  # one piece holding both UTF-8 bytes of é
        "<f0 9f 98>",  # 😀 is four bytes cut over two pieces: each shows its bytes
        "<80>",
    ]


def test_token_label_of_wordpiece_and_sentencepiece_vocabularies():
    bert, t5 = load_tokenizer("tiny-bert"), load_tokenizer("tiny-t5")
    assert token_label(bert, bert.cls_token_id) == "[CLS]"
    assert token_label(bert, bert.convert_tokens_to_ids("the")) == "the"
    spaced = [i for i in t5.encode("the cat", add_special_tokens=False) if t5.convert_ids_to_tokens(i).startswith("▁")]
    assert spaced and all(token_label(t5, i).startswith("␣") for i in spaced)


def test_message_figure_says_the_text_on_a_blank_figure():
    fig = message_figure("Analyze a text first.")
    assert [a.text for a in fig.layout.annotations] == ["Analyze a text first."]
    assert fig.data == () and fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
    assert fig.layout.height == 300


def test_bind_hides_the_context_from_gradio_and_keeps_streaming():
    """Gradio injects ``gr.Request``/``gr.Progress`` by signature position and type hints: ``bind`` keeps both."""
    import inspect

    import gradio as gr

    from explorer.ui.context import bind

    def handler(ctx, a, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        return ctx, a

    def streamed(ctx, a):
        yield ctx + a

    bound = bind(handler, "ctx")
    assert list(inspect.signature(bound).parameters) == ["a", "request", "progress"]
    assert bound("x", None) == ("ctx", "x") and bound.__name__ == "handler"
    assert inspect.isgeneratorfunction(bind(streamed, "c")) and list(bind(streamed, "c")("d")) == ["cd"]


def test_bind_takes_the_context_and_more_leading_arguments_and_gradio_still_finds_the_request():
    import gradio as gr
    from gradio.helpers import special_args

    from explorer.ui.context import bind

    def handler(ctx, registry, a, request: gr.Request | None = None):
        return ctx, registry, a, request

    bound = bind(handler, "ctx", "registry")
    assert bound("x", "r") == ("ctx", "registry", "x", "r")
    assert special_args(bound, ["x"], request="the request")[0] == ["x", "the request"]  # injected after the inputs


@pytest.mark.parametrize(
    "highest, value, expected",
    [(12, None, (12, 12)), (11, 6, (11, 6)), (0, None, (1, 0)), (0, 1, (1, 1)), (3, 9, (3, 3))],
)
def test_a_layer_slider_fits_the_model_and_never_collapses(highest, value, expected):
    from explorer.ui.context import layer_slider

    update = layer_slider(highest, value)
    assert (update["maximum"], update["value"]) == expected
