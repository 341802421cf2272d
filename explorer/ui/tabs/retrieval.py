"""Retrieval tab: embed passages and a question with the loaded model, rank them by cosine similarity and by
BM25, and let the model answer with and without the passages it found, watching where its attention goes."""

from __future__ import annotations

import gradio as gr

from explorer.analysis.attribution.methods import METHODS
from explorer.analysis.retrieval import documents, generation, search
from explorer.analysis.retrieval.attribution import MAX_ANSWER_TOKENS, attribute_answer
from explorer.analysis.retrieval.embedding import POOLING
from explorer.analysis.retrieval.index import IndexCache
from explorer.core.errors import InputError
from explorer.core.family import GENERATE
from explorer.plots.retrieval import (
    attribution_bars,
    next_token_pair,
    passage_map,
    rank_comparison,
    score_bars,
    share_heatmap,
    share_lines,
)
from explorer.plots.text import message_figure, shorten
from explorer.ui.context import AppContext, bind, guarded, layer_slider, md_escape, shown_name, warning
from explorer.ui.stops import StopRequests

EXPLANATION = """**Retrieval-augmented generation**: embed every passage and the question, find the nearest \
passages by **cosine similarity**, put them in the prompt, and let the model answer. Here the embeddings come from \
the loaded model (the mean of one layer's hidden states); beside them ranks **BM25**, the classic word-matching \
score, and their **fusion** (reciprocal ranks). Then the model continues the question *without* and *with* the \
passages: does its answer change, and does its attention go to the passages? The bundled facts are about an \
invented town, so the model cannot know them: only a passage can tell it."""
STOPS = StopRequests()
INDEXES = IndexCache()  # built indexes of every session, by model, documents, chunking and layer (bounded by bytes)
TABLE_COLUMNS = ["fused rank", "embedding rank", "BM25 rank", "document", "passage"]
# The ranks keep room for their headers; the passages wrap in what is left (sized by their text, a passage
# took the whole width at 1280 px and squeezed the rank headers to a letter or two per line).
TABLE_WIDTHS = ["96px", "116px", "96px", "20%", "52%"]  # on a phone, explorer/ui/app.py's CSS widens the last two
SET_CHOICES = [("the invented town's facts", "facts"), ("public-domain passages", "public domain"),
               ("both", "both"), ("only my text", "none")]  # fmt: skip


def _paths(uploads) -> list[str]:
    if uploads in (None, ""):
        return []
    items = uploads if isinstance(uploads, list) else [uploads]
    return [getattr(item, "name", item) for item in items]


def _retrieve(ctx: AppContext, selection, set_name, pasted, uploads, size, overlap, unit, layer, question, k,
              request=None, progress=None):  # fmt: skip
    if selection is None:
        raise InputError("Analyze a text first: the model it uses embeds the passages.")
    lm = ctx.model(selection)
    docs = documents.document_set(set_name, pasted or "", _paths(uploads))
    chunking = documents.Chunking(int(size), int(overlap), unit)
    report = (lambda f: progress(f, desc="embedding the passages")) if progress is not None else None
    with STOPS.running(request) as should_stop:
        built = INDEXES.get(lm, docs, chunking, int(layer), report, should_stop)
    result = search.search(lm, built.index, question, int(k))
    return lm, built, result


@guarded(lambda msg: (warning(msg), [], *(message_figure(msg),) * 3))
def search_view(
    ctx: AppContext, selection, set_name, pasted, uploads, size, overlap, unit, layer, question, k,
    request: gr.Request, progress=gr.Progress(),  # noqa: B008 (gradio idiom)
):  # fmt: skip
    lm, built, result = _retrieve(ctx, selection, set_name, pasted, uploads, size, overlap, unit, layer, question, k,
                                  request, progress)  # fmt: skip
    index = built.index
    where = "found built" if built.cached else f"built in {index.build_seconds:.1f} s"
    stopped = "" if index.complete else " ⚠️ Stopped while embedding: only the passages embedded so far are searched."
    note = (
        f"{len(index.chunks)} passages ({index.chunking.size} {index.chunking.unit}, overlap "
        f"{index.chunking.overlap}); index {where}; question searched in {1000 * result.seconds:.0f} ms. "
        f"Embedding: {POOLING}, layer {index.layer} of **{md_escape(lm.spec.key)}**. BM25 searched for: "
        f"{md_escape(', '.join(result.question_terms)) or '—'}. The two rankers share "
        f"{result.overlap:.0%} of their top {result.k}.{stopped} {md_escape(result.note)}"
    )
    disagree = search.disagreements(result)
    if disagree:
        found = "; ".join(
            f"“{md_escape(shorten(d.chunk.text, 50))}” (embedding rank {d.dense_rank}, BM25 "
            f"{d.lexical_rank or 'no shared word'})" for d in disagree[:4]
        )  # fmt: skip
        note += f"\n\nWhere they disagree: {found}."
    rows = [
        [h.rank, int(result.dense_ranks[h.chunk.index]), int(result.lexical_ranks[h.chunk.index]) or "—",
         h.chunk.document, h.chunk.text]
        for h in result.fused
    ]  # fmt: skip
    asked = f"{selection.model} · “{shorten(result.question, 32)}”"
    labels = [shorten(h.chunk.document, 16) for h in result.fused]  # the passage itself is in the table above
    bars = score_bars(labels, [h.score for h in result.fused], f"Fused ranking · {asked}", "fused score")
    chosen = list(result.fused)
    ranks = rank_comparison(
        [shorten(h.chunk.text, 30) for h in chosen], [int(result.dense_ranks[h.chunk.index]) for h in chosen],
        [int(result.lexical_ranks[h.chunk.index]) for h in chosen], f"Embedding rank vs BM25 rank · {asked}",
        result.k,
    )  # fmt: skip
    layout = search.retrieval_map(index, result)
    shown = passage_map(layout.coords, list(layout.labels), layout.retrieved, result.question,
                        f"The question among the passages (PCA) · {asked}")  # fmt: skip
    return note, rows, bars, ranks, shown


@guarded(lambda msg: (warning(msg), *(message_figure(msg),) * 3))
def answer_view(
    ctx: AppContext, selection, set_name, pasted, uploads, size, overlap, unit, layer, question, k, passages_n,
    new_tokens, request: gr.Request, progress=gr.Progress(),  # noqa: B008 (gradio idiom)
):  # fmt: skip
    lm, _, result = _retrieve(ctx, selection, set_name, pasted, uploads, size, overlap, unit, layer, question, k,
                              request, progress)  # fmt: skip
    lm.spec.require(GENERATE)
    passages = [h.chunk.text for h in result.fused[: int(passages_n)]]
    both = generation.compare_generation(lm, result.question, passages, int(new_tokens))
    closed, open_ = both.closed_book, both.open_book
    asked = f"{shown_name(selection.model)} · “{shorten(result.question, 32)}”"
    copied = sum(open_.copied)
    note = (
        f"- without the passages: “{md_escape(closed.continuation)}”\n"
        f"- **with** the top {len(passages)} passages ({open_.prompt_tokens} prompt tokens): "
        f"“{md_escape(open_.continuation)}” — {copied} of {len(open_.copied)} written tokens occur in a passage "
        f"and not in the question."
    )
    pair = next_token_pair(closed.next_distribution(), open_.next_distribution(),
                           f"Next token without and with the passages · {asked}")  # fmt: skip
    lines = share_lines(open_.passage_share, open_.question_share,
                        f"Where the written tokens look, by layer · {asked}", open_.attention)  # fmt: skip
    heat = share_heatmap(open_.passage_share, list(open_.generated),
                         f"Each written token's attention on the passages · {asked}")  # fmt: skip
    return note, pair, lines, heat


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def attribution_view(
    ctx: AppContext, selection, set_name, pasted, uploads, size, overlap, unit, layer, question, k, passages_n,
    method, answer_n, request: gr.Request, progress=gr.Progress(),  # noqa: B008 (gradio idiom)
):  # fmt: skip
    """The answer's first tokens attributed to the prompt with the passages, summed per segment."""
    lm, _, result = _retrieve(ctx, selection, set_name, pasted, uploads, size, overlap, unit, layer, question, k,
                              request, progress)  # fmt: skip
    lm.spec.require(GENERATE)
    prompt = generation.build_prompt(result.question, [h.chunk.text for h in result.fused[: int(passages_n)]])
    with STOPS.running(request) as should_stop:
        done = attribute_answer(lm, prompt, method, int(answer_n), progress=lambda f: progress(f, desc="attributing"),
                                should_stop=should_stop)  # fmt: skip
    sums, shares = done.segment_sums(), done.passage_share()
    lines = "\n".join(
        f"- “{md_escape(tok)}”: passages **{sums['passage'][j]:+.3g}**, question {sums['question'][j]:+.3g}, "
        f"other {sums['other'][j]:+.3g} — the passages hold **{shares[j]:.0%}** of the attribution's size"
        + (f" (sum {sum(v[j] for v in sums.values()):+.3g} = f(input) − f(baseline) "
           f"{done.value[j] - done.baseline_value[j]:+.3g}, delta {done.delta[j]:+.1e})" if method == "integrated_gradients" else "")
        for j, tok in enumerate(done.answer)
    )  # fmt: skip
    note = f"{METHODS[method].name}, {done.output} of each answer token:\n{lines}" + (
        f"\n\n{md_escape(done.note)}" if done.note else ""
    )
    asked = f"{shown_name(selection.model)} · “{shorten(result.question, 32)}”"
    first = done.scores[0]
    figure = attribution_bars(first, list(done.labels), list(done.segments),
                              f"What “{shorten(done.answer[0], 12)}” owes each prompt token · {asked}")  # fmt: skip
    return note, figure


@guarded(lambda msg: gr.update())
def layer_range(ctx: AppContext, selection):
    """The embedding layer's slider spans the model's layers, starting at its last."""
    if selection is None:
        return gr.update()
    return layer_slider(ctx.model(selection).spec.n_layers)  # 0 is the token embeddings


def build(ctx: AppContext, shared) -> None:
    with gr.Tab("Retrieval", id="retrieval"):
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        with gr.Row():
            set_name = gr.Radio(SET_CHOICES, value="facts", label="Documents", scale=2)
            pasted = gr.Textbox("", label="Your own text (optional; blank lines separate passages)", lines=2, scale=3)
            uploads = gr.File(label="…or upload .txt files", file_count="multiple", file_types=[".txt"], scale=2)
        with gr.Row():
            size = gr.Slider(documents.MIN_SIZE, documents.MAX_SIZE, value=60, step=1, label="Chunk size")
            overlap = gr.Slider(0, documents.MAX_SIZE - 1, value=10, step=1, label="Overlap")
            unit = gr.Radio(list(documents.UNITS), value="words", label="Measured in")
            layer = gr.Slider(0, 48, value=4, step=1, label="Embedding layer (0 = token embeddings)")
        with gr.Row():
            question = gr.Textbox(generation.PRESETS[0][0], label="Question (the start of a sentence to continue)",
                                  scale=4)  # fmt: skip
            k = gr.Slider(1, search.MAX_K, value=5, step=1, label="Passages retrieved (k)", scale=1)
            run_search = gr.Button("Search", variant="primary", scale=1)
            stop = gr.Button("Stop", variant="stop", scale=1)
        note = gr.Markdown()
        table = gr.Dataframe(headers=TABLE_COLUMNS, interactive=False, wrap=True, column_widths=TABLE_WIDTHS,
                             elem_classes="explorer-ranks")  # fmt: skip
        bars = gr.Plot(label="Fused ranking")
        with gr.Row():
            ranks, passage_plot = gr.Plot(label="Rank comparison"), gr.Plot(label="Passage map")
        gr.Markdown("### Answer with and without the passages")
        shared.requires(GENERATE)
        with gr.Row():
            passages_n = gr.Slider(1, generation.MAX_PASSAGES, value=2, step=1, label="Passages in the prompt")
            new_tokens = gr.Slider(1, generation.MAX_GENERATED, value=8, step=1, label="Tokens to write")
            run_answer = gr.Button("Answer with and without the passages", variant="primary")
        answer_note = gr.Markdown()
        pair_plot = gr.Plot(label="Next token")
        with gr.Row():
            lines_plot, heat_plot = gr.Plot(label="Attention by layer"), gr.Plot(label="Attention per token")
        with gr.Row():
            method = gr.Dropdown([(m.name, key) for key, m in METHODS.items()], value="input_x_gradient",
                                 label="Attribution method")  # fmt: skip
            answer_n = gr.Slider(1, MAX_ANSWER_TOKENS, value=1, step=1, label="Answer tokens explained")
            run_attribution = gr.Button("Attribute the answer to the prompt", variant="primary")
        attribution_note = gr.Markdown()
        attribution_plot = gr.Plot(label="Attribution per prompt token")

    shared.on_analyzed(bind(layer_range, ctx), [shared.state], [layer], api_name=False)
    shared.results_of_analysis(note, table, bars, ranks, passage_plot, answer_note, pair_plot, lines_plot, heat_plot,
                               attribution_note, attribution_plot)  # fmt: skip
    inputs = [shared.state, set_name, pasted, uploads, size, overlap, unit, layer, question, k]
    heavy = {"concurrency_limit": ctx.settings.model_runs, "concurrency_id": "model_run"}
    searched = run_search.click(bind(search_view, ctx), inputs, [note, table, bars, ranks, passage_plot],
                                api_name="retrieval_search", **heavy)  # fmt: skip
    asked = question.submit(bind(search_view, ctx), inputs, [note, table, bars, ranks, passage_plot],
                            api_name=False, **heavy)  # fmt: skip
    answered = run_answer.click(bind(answer_view, ctx), [*inputs, passages_n, new_tokens],
                                [answer_note, pair_plot, lines_plot, heat_plot], api_name="retrieval_answer", **heavy)  # fmt: skip
    attributed = run_attribution.click(bind(attribution_view, ctx), [*inputs, passages_n, method, answer_n],
                                       [attribution_note, attribution_plot], api_name="retrieval_attribution", **heavy)  # fmt: skip
    stop.click(STOPS.stop, None, None, cancels=[searched, asked, answered, attributed], api_name="retrieval_stop")
