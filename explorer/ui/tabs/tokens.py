"""Tokens tab: the token table of the current analysis."""

from __future__ import annotations

import gradio as gr

from explorer.analysis.tokens import TOKEN_COLUMNS, token_table
from explorer.ui.context import AppContext, Selection, guarded

EXPLANATION = (
    "A model never sees letters: the tokenizer cuts the text into **tokens** from a fixed vocabulary and "
    "each becomes an **id**. `␣` marks a space that belongs to the token, `↵` a newline; "
    "byte-level pieces that hold part of a character are shown as bytes like `<e2 80>`."
)


def build(ctx: AppContext, shared) -> None:
    with gr.Tab("Tokens", id="tokens"):
        gr.Markdown(EXPLANATION)
        stream = gr.Radio(["input"], value="input", label="Token stream", visible=False)
        table = gr.Dataframe(headers=TOKEN_COLUMNS, interactive=False, wrap=True, label="Tokens")

    @guarded(lambda msg: (gr.skip(), [[None, msg, "", None, "", ""]]))
    def show(selection: Selection | None, chosen: str):
        if selection is None:
            return gr.update(), []
        trace = ctx.trace(selection)
        streams = list(trace.tokens)
        chosen = chosen if chosen in streams else streams[0]
        radio = gr.update(choices=streams, value=chosen, visible=len(streams) > 1)
        return radio, token_table(trace, chosen)

    shared.on_analyzed(show, [shared.state, stream], [stream, table], api_name="tokens")
    stream.change(show, [shared.state, stream], [stream, table], api_name=False)
