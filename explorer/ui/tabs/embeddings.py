"""Embeddings tab: where tokens live (a projection of the embedding table), neighbours and arithmetic,
how context moves a token's vector through the layers, and how position is encoded.

Projections are cached per model (memory and disk); a background thread compiles UMAP's numba code
when the tab is built, so the first UMAP a user asks for does not pay for compilation.
"""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import numpy as np

from explorer.analysis.embeddings import space as emb
from explorer.analysis.embeddings.projections import (
    MAX_POINTS,
    METHODS,
    ProjectionCache,
    is_warm,
    warm_up_in_background,
)
from explorer.core.errors import InputError
from explorer.core.run import check_text
from explorer.plots import embeddings as plots
from explorer.plots.text import message_figure
from explorer.ui.assets import sample_texts
from explorer.ui.context import AppContext, Selection, about, guarded, md_escape, warning

EXPLANATION = """Each token id picks one row of the **embedding matrix**: a vector of a few hundred numbers, \
learned so that tokens used alike end up pointing alike. Similar directions are measured by **cosine \
similarity** (1: same direction, 0: unrelated). To look at hundreds of dimensions we **project** them to 2 or 3: \
**PCA** keeps the directions of largest spread (exact, fast, linear); **UMAP** and **t-SNE** keep each token's \
near neighbours near (non-linear; distances between far clusters mean little). The embedding is only where a \
token *starts*: every layer mixes in context, so the same word drifts to different places in different \
sentences. The model also has to know *where* each token is — see **Position**."""
SUBSETS = {
    "frequent": "the N most frequent tokens",
    "list": "a token list",
    "all": "the whole vocabulary",
}
FREQUENT_NOTE = (
    "“Most frequent” counts the model's own tokens in the bundled sample texts (Shakespeare, Genesis 1–10); "
    "if fewer tokens occur there, the lowest ids fill up the rest. Special tokens are left out."
)
MAX_CONTEXT_TOKENS = 64
MAX_INDEX = 63
BANK_A = "We sat on the bank of the river and watched the water flow."
BANK_B = "She went to the bank to put her money in her account."
POSITION_NOTES = {
    "learned": """**Learned absolute positions** (GPT-2, BERT): one trained vector per position, added to the token \
embedding. Nothing forces any structure, yet training usually makes neighbouring positions similar — the bright \
band along the diagonal. On the right, the original Transformer's **sinusoidal** encoding: fixed sines and \
cosines of geometrically spaced wavelengths, whose similarity depends only on the distance between positions.""",
    "relative_bias": """**Relative position bias** (T5): no position vectors at all. Each attention score gets a \
learned bias that depends only on the distance between query and key, shared by all layers. Distances are \
grouped into **buckets**: one per distance nearby, then logarithmically wider ones, and everything beyond the \
maximum distance shares the last bucket. Below: the bucket of each distance, and each head's bias (some heads \
prefer the left, some the right, some nearby tokens).""",
    "rotary": """**Rotary positions (RoPE)** (Llama, SmolLM, Pythia): queries and keys are cut into pairs of \
dimensions and each pair is **rotated** by an angle proportional to the position, fast for the first pairs and \
slower and slower for later ones (θᵢ = base^(−2i/d)). A dot product of two rotated vectors depends only on the \
*difference* of their angles: attention sees relative distance, without any position vector added. Right: \
the score of a query and a key that are the same vector falls off and wobbles with their distance.""",
    "none": "This model has no position encoding we recognise (no `wpe`, `position_embeddings`, "
    "relative bias or rotary settings).",
}


def build(ctx: AppContext, shared) -> None:  # noqa: C901  (one tab, four small views)
    projections = ProjectionCache()
    rankings: dict[tuple, np.ndarray] = {}
    rankings_lock = threading.Lock()
    with gr.Tab("Embeddings", id="embeddings") as tab:
        # UMAP's code compiles in the background once someone opens this tab, not while the first page loads
        tab.select(lambda: warm_up_in_background() and None, None, None, api_name=False, queue=False)
        gr.Markdown(EXPLANATION, elem_classes="explorer-explain")
        with gr.Tabs():
            with gr.Tab("Token map") as map_tab:
                with gr.Row():
                    method = gr.Radio([(v, k) for k, v in METHODS.items()], value="pca", label="Projection")
                    dims = gr.Radio([2, 3], value=2, label="Dimensions")
                    subset = gr.Radio([(v, k) for k, v in SUBSETS.items()], value="frequent", label="Tokens")
                    n_tokens = gr.Slider(10, MAX_POINTS["umap"], value=2000, step=10, label="N (most frequent)")
                with gr.Row():
                    token_list = gr.Textbox(
                        "king, queen, man, woman, lord, god, heaven, earth, day, night, water, light, one, two, three",
                        label="Token list (comma-separated words)", scale=3,
                    )  # fmt: skip
                    search = gr.Textbox("", label="Find a token", placeholder="e.g. king", scale=1)
                    project_button = gr.Button("Project", variant="primary", scale=1)
                gr.Markdown(FREQUENT_NOTE)
                map_note = gr.Markdown()
                map_plot = gr.Plot(label="Token embeddings, projected")
            with gr.Tab("Neighbours & arithmetic") as neighbours_tab:
                with gr.Row():
                    word = gr.Textbox("king", label="Token", scale=2)
                    k = gr.Slider(1, 50, value=10, step=1, label="How many", scale=1)
                    find = gr.Button("Nearest tokens", scale=1)
                neighbours_note = gr.Markdown()
                neighbours_table = gr.Dataframe(headers=["rank", "token", "id", "cosine"], interactive=False)
                gr.Markdown("**Arithmetic**: the tokens nearest to a − b + c (a, b and c themselves left out).")
                with gr.Row():
                    a = gr.Textbox("king", label="a")
                    b = gr.Textbox("man", label="− b")
                    c = gr.Textbox("woman", label="+ c")
                    solve = gr.Button("a − b + c")
                analogy_note = gr.Markdown()
                analogy_table = gr.Dataframe(headers=["rank", "token", "id", "cosine"], interactive=False)
            with gr.Tab("Through the layers") as layers_tab:
                gr.Markdown(
                    "The hidden state of every token of the text, from the embedding (layer 0, small dot) to the "
                    "last layer (labelled), on shared PCA axes; and how similar the tokens are at one layer. "
                    "Each state is scaled to length 1 first, so the picture shows direction, as cosine does."
                )
                with gr.Row():
                    layer = gr.Slider(0, MAX_INDEX, value=0, step=1, label="Layer of the similarity matrix")
                    layer_dims = gr.Radio([2, 3], value=2, label="Dimensions")
                trajectory_plot = gr.Plot(label="Trajectories")
                similarity_plot = gr.Plot(label="Token × token cosine similarity")
            with gr.Tab("Compare two texts") as compare_tab:
                gr.Markdown(
                    "The same word in two contexts: at layer 0 it is (almost) the same vector; watch the two "
                    "copies drift apart with depth. The baseline is the mean similarity of all token pairs across "
                    "the two texts: many models make every state alike in later layers, so compare against it."
                )
                with gr.Row():
                    text_a = gr.Textbox(BANK_A, label="Text A", max_length=2000)
                    text_b = gr.Textbox(BANK_B, label="Text B", max_length=2000)
                    follow = gr.Textbox("bank", label="Word to follow")
                compare_button = gr.Button("Compare", variant="primary")
                compare_note = gr.Markdown()
                drift_plot = gr.Plot(label="Similarity of the word's two states, per layer")
                pair_plot = gr.Plot(label="Both texts through the layers")
            with gr.Tab("Position") as position_tab:
                n_positions = gr.Slider(8, 512, value=128, step=8, label="Positions shown")
                position_note = gr.Markdown()
                position_plot = gr.Plot(label="This model")
                sinusoid_plot = gr.Plot(label="The original Transformer's sinusoidal encoding")
        active = gr.State(None)  # the sub-tab on screen: only it is redrawn after a new analysis

    def model_of(selection: Selection | None):
        if selection is None:
            raise InputError("Analyze a text first.")
        return ctx.model(selection)

    def ranking(lm, table: emb.EmbeddingTable) -> np.ndarray:
        key = (lm.spec.key, lm.spec.source, table.matrix_id)
        with rankings_lock:
            if key in rankings:
                return rankings[key]
        ranked = emb.frequent_ids(lm.tokenizer, list(sample_texts().values()), len(table), len(table), table.special)
        with rankings_lock:
            rankings[key] = ranked
        return ranked

    def chosen_ids(lm, table, subset_v, n_v, list_v) -> tuple[np.ndarray, str]:
        if subset_v == "all":
            return np.arange(len(table)), f"all {len(table):,} tokens"
        if subset_v == "list":
            ids = np.array(emb.listed_ids(lm.tokenizer, list_v), np.int64)
            return ids, f"{len(ids)} listed tokens"
        n = int(min(max(10, n_v or 10), len(table)))
        return ranking(lm, table)[:n], f"the {n:,} most frequent tokens"

    def place(table, projection, ids: list[int]) -> np.ndarray:
        """Coordinates for any tokens: their own point if projected, else PCA's axes or their neighbours' mean."""
        where = {int(t): i for i, t in enumerate(projection.ids)}
        out = np.zeros((len(ids), projection.coords.shape[1]), np.float32)
        missing = [j for j, t in enumerate(ids) if t not in where]
        for j, t in enumerate(ids):
            if t in where:
                out[j] = projection.coords[where[t]]
        if missing:
            rows = table.matrix[[ids[j] for j in missing]]
            if projection.method == "pca":
                out[missing] = projection.transform(rows)
            else:
                out[missing] = emb.place_by_neighbours(table.unit[projection.ids], projection.coords, rows)
        return out

    @guarded(lambda msg: (warning(msg), message_figure(msg)))
    def draw_map(  # gradio injects the progress tracker
        selection,
        method_v,
        dims_v,
        subset_v,
        n_v,
        list_v,
        search_v,
        compute=True,
        progress=gr.Progress(),  # noqa: B008
    ):
        lm = model_of(selection)
        table = emb.embedding_table(lm)
        ids, what = chosen_ids(lm, table, subset_v, n_v, list_v)
        shipped = [Path(lm.spec.source) / "projections"] if lm.spec.bundled else []
        name = METHODS.get(method_v, method_v)
        projection = projections.get(
            table.matrix, ids, method_v, int(dims_v), table.matrix_id, shipped,
            lambda f, m: progress(f, desc=m), compute=compute or method_v == "pca",
        )  # fmt: skip
        if projection is None:
            return f"Press **Project** to compute the {name} of {what}.", message_figure(f"Press Project for {name}.")
        trace = ctx.trace(selection)
        tokens = [t for t in next(iter(trace.tokens.values())) if not t.special][:MAX_CONTEXT_TOKENS]
        marked = (place(table, projection, [t.id for t in tokens]), [t.display for t in tokens])
        focus = None
        if search_v and search_v.strip():
            found = emb.token_id_of(lm.tokenizer, search_v)
            focus = (place(table, projection, [found])[0], table.labels[found])
        labels = [table.labels[i] for i in projection.ids]
        how = {"computed": f"computed in {projection.seconds:.1f} s", "memory": "from the memory cache",
               "disk": "from the disk cache", "shipped": "precomputed, shipped with the model"}[projection.source]  # fmt: skip
        note = f"**{name}** of {what} of **{md_escape(lm.spec.key)}** ({table.matrix.shape[1]} dimensions) · {how}."
        if projection.explained is not None:
            note += " Variance kept by the axes: " + ", ".join(f"{v:.1%}" for v in projection.explained) + "."
        projected = set(projection.ids.tolist())
        outside = sum(t.id not in projected for t in tokens)
        if outside and method_v != "pca":
            note += f" {outside} of the text's tokens are not in the subset: each sits at the mean of its 5 nearest."
        if method_v == "umap" and projection.source == "computed" and not is_warm():
            note += " (UMAP compiled its code during this call; later ones are faster.)"
        title = f"{name} {int(dims_v)}D · {what} · red: the tokens of {about(selection)}"
        return note, plots.token_map(projection.coords, labels, projection.ids, title, marked, focus)

    def rows_of(table, ids, sims) -> list[list]:
        return [[r + 1, table.labels[i], int(i), round(float(s), 4)] for r, (i, s) in enumerate(zip(ids, sims))]

    @guarded(lambda msg: (warning(msg), []))
    def show_neighbours(selection, word_v, k_v):
        lm = model_of(selection)
        table = emb.embedding_table(lm)
        token = emb.token_id_of(lm.tokenizer, word_v)
        ids, sims = emb.neighbours(table.unit, token, int(k_v) + 1)
        note = f"Tokens nearest to **{md_escape(table.labels[token])}** (id {token}) in {md_escape(lm.spec.key)}'s embedding table."
        return note, rows_of(table, ids, sims)

    @guarded(lambda msg: (warning(msg), []))
    def show_analogy(selection, a_v, b_v, c_v, k_v):
        lm = model_of(selection)
        table = emb.embedding_table(lm)
        a_id, b_id, c_id = (emb.token_id_of(lm.tokenizer, w) for w in (a_v, b_v, c_v))
        ids, sims = emb.analogy(table.unit, a_id, b_id, c_id, int(k_v))
        labels = [table.labels[i] for i in (a_id, b_id, c_id)]
        a_l, b_l, c_l, best = (md_escape(label) for label in (*labels, table.labels[ids[0]]))
        note = f"**{a_l} − {b_l} + {c_l}** ≈ **{best}** (cosine {sims[0]:.3f})."
        if lm.spec.bundled:
            note += " A 5M-parameter model trained on two old books knows few such relations; try gpt2 where a network exists."
        return note, rows_of(table, ids, sims)

    def stream_states(trace):
        stream = next(iter(trace.hidden))
        tokens = trace.tokens[stream][:MAX_CONTEXT_TOKENS]
        return stream, trace.hidden[stream][:, : len(tokens)], [t.display for t in tokens]

    @guarded(lambda msg: (message_figure(msg), message_figure(msg)))
    def draw_layers(selection, layer_v, dims_v):
        model_of(selection)
        trace = ctx.trace(selection)
        stream, hidden, labels = stream_states(trace)
        layer_v = int(min(max(0, layer_v or 0), hidden.shape[0] - 1))
        (path,), explained = emb.shared_trajectories([hidden], int(dims_v))
        where = f"{stream} stream · {about(selection)}"
        axes = ", ".join(f"{v:.0%}" for v in explained)
        traj = plots.trajectories([path], [labels], ["text"], f"{where} · layers 0–{hidden.shape[0] - 1} (PCA: {axes})")
        sims = emb.layer_similarities(hidden[layer_v : layer_v + 1])[0]
        return traj, plots.similarity_heatmap(sims, labels, labels, f"{where} · layer {layer_v}")

    @guarded(lambda msg: (warning(msg), message_figure(msg), message_figure(msg)))
    def compare_texts(selection, a_v, b_v, word_v, dims_v):
        lm = model_of(selection)
        target = "" if lm.spec.adapter.is_encoder_decoder else None  # the encoder's states; no generation
        states = []
        for text in (a_v, b_v):
            trace = ctx.trace(Selection(selection.model, check_text(text), target))
            stream, hidden, labels = stream_states(trace)
            tokens = trace.tokens[stream][: len(labels)]
            states.append((hidden, labels, emb.word_positions(tokens, trace.texts[stream], word_v)))
        (ha, la, pa), (hb, lb, pb) = states
        same, baseline = emb.word_drift(ha, pa, hb, pb)
        paths, _ = emb.shared_trajectories([ha, hb], int(dims_v))
        note = (
            f"“{md_escape(word_v)}” in A and in B: cosine **{same[0]:.3f}** at layer 0, **{same[-1]:.3f}** at layer "
            f"{len(same) - 1} (baseline of all pairs: {baseline[0]:.3f} → {baseline[-1]:.3f})."
        )
        lines = plots.layer_lines(
            {f"“{word_v}” in A vs in B": same, "baseline: all token pairs": baseline},
            f"“{word_v}” in two texts, layer by layer · {lm.spec.key}",
        )
        pair = plots.trajectories(paths, [la, lb], ["A", "B"], f"A (blue) and B (red) · {lm.spec.key}", [pa, pb])
        return note, lines, pair

    @guarded(lambda msg: (warning(msg), message_figure(msg), message_figure(msg)))
    def draw_positions(selection, n_v):
        lm = model_of(selection)
        enc = emb.position_encoding(lm.model)
        n = int(min(max(8, n_v or 8), 512))
        d = lm.model.get_input_embeddings().weight.shape[1]
        sinusoid = emb.sinusoidal(n, d)
        sin_sims = emb.cosine_matrix(sinusoid, sinusoid)
        encoding = plots.encoding_heatmap(
            sinusoid, f"sinusoidal encoding at {lm.spec.key}'s width · {n} positions × {d} dimensions"
        )
        note = POSITION_NOTES[enc.kind]
        if enc.kind == "learned":
            table = enc.table[:n]
            figure = plots.position_comparison(
                emb.cosine_matrix(table, table),
                sin_sims[: len(table), : len(table)],
                "learned table",
                f"Position similarity · {lm.spec.key}'s {enc.where}",
            )
            if enc.offset:
                note += f" (This model counts positions from row {enc.offset} of its table, after the padding index.)"
            return note, figure, encoding
        if enc.kind == "relative_bias":
            distances, buckets = emb.relative_buckets(enc.num_buckets, enc.max_distance, min(n, enc.max_distance + 16))
            bias = enc.table[buckets].T  # (heads, distances)
            title = f"{lm.spec.key}: {enc.num_buckets} buckets up to distance {enc.max_distance} (encoder)"
            return note, plots.relative_bias(distances, buckets, bias, title), encoding
        if enc.kind == "rotary":
            freqs = emb.rope_frequencies(enc.theta, enc.dims)
            positions = np.arange(n)
            scores = emb.rope_relative_score(freqs, positions)
            title = f"{lm.spec.key}: base θ = {enc.theta:g}, {enc.dims} of {enc.head_dim} head dimensions rotated"
            return note, plots.rope(np.outer(positions, freqs), positions, scores, title), encoding
        return note, message_figure("No position encoding found."), encoding

    def refresh(selection, active_v, method_v, dims_v, subset_v, n_v, list_v, search_v, layer_v, layer_dims_v):
        """After a new analysis: fit the layer slider; redraw the view on screen (the map only if cached or PCA)."""
        if selection is None:
            return (gr.skip(),) * 5
        try:
            trace = ctx.trace(selection)
        except Exception:  # the analysis reported it already
            return (gr.skip(),) * 5
        n_layers = next(iter(trace.hidden.values())).shape[0]
        layer_v = int(min(layer_v or 0, n_layers - 1))
        drawn_map = (gr.skip(), gr.skip())
        if active_v == "map":
            drawn_map = draw_map(selection, method_v, dims_v, subset_v, n_v, list_v, search_v, False)
        drawn_layers = draw_layers(selection, layer_v, layer_dims_v) if active_v == "layers" else (gr.skip(),) * 2
        return *drawn_map, gr.update(maximum=n_layers - 1, value=layer_v), *drawn_layers

    def open_map(selection, method_v, dims_v, subset_v, n_v, list_v, search_v, progress=gr.Progress()):  # noqa: B008
        return *draw_map(selection, method_v, dims_v, subset_v, n_v, list_v, search_v, progress=progress), "map"

    def showing(view: str, fn):
        """A sub-tab's select event: draw it and remember which view is on screen."""

        def select(*args):
            out = fn(*args)
            return (*out, view) if isinstance(out, tuple) else (out, view)

        return select

    map_in = [shared.state, method, dims, subset, n_tokens, token_list, search]
    map_out = [map_note, map_plot]
    layer_in = [shared.state, layer, layer_dims]
    layer_out = [trajectory_plot, similarity_plot]
    shared.on_analyzed(refresh, [shared.state, active, *map_in[1:], layer, layer_dims], [*map_out, layer, *layer_out])
    projecting = {"concurrency_limit": 1, "concurrency_id": "projection"}
    project_button.click(draw_map, map_in, map_out, api_name="embedding_map", **projecting)
    search.submit(draw_map, map_in, map_out, api_name=False, **projecting)
    map_tab.select(open_map, map_in, [*map_out, active], api_name=False, **projecting)
    neighbours_in, neighbours_out = [shared.state, word, k], [neighbours_note, neighbours_table]
    find.click(show_neighbours, neighbours_in, neighbours_out, api_name="neighbours")
    word.submit(show_neighbours, neighbours_in, neighbours_out, api_name=False)
    neighbours_tab.select(
        showing("neighbours", show_neighbours), neighbours_in, [*neighbours_out, active], api_name=False
    )
    solve.click(show_analogy, [shared.state, a, b, c, k], [analogy_note, analogy_table], api_name="analogy")
    layers_tab.select(showing("layers", draw_layers), layer_in, [*layer_out, active], api_name="contextual")
    for control in (layer, layer_dims):
        control.change(draw_layers, layer_in, layer_out, api_name=False, trigger_mode="always_last")
    compare_in = [shared.state, text_a, text_b, follow, layer_dims]
    compare_out = [compare_note, drift_plot, pair_plot]
    model_run = {"concurrency_limit": 2, "concurrency_id": "model_run"}
    compare_button.click(compare_texts, compare_in, compare_out, api_name="compare_contexts", **model_run)
    compare_tab.select(
        showing("compare", compare_texts), compare_in, [*compare_out, active], api_name=False, **model_run
    )
    position_in, position_out = [shared.state, n_positions], [position_note, position_plot, sinusoid_plot]
    position_tab.select(showing("position", draw_positions), position_in, [*position_out, active], api_name="positions")
    n_positions.change(draw_positions, position_in, position_out, api_name=False, trigger_mode="always_last")
