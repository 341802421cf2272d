"""Embeddings tab: where tokens live (a projection of the embedding table), neighbours and arithmetic,
how context moves a token's vector through the layers, and how position is encoded.

Projections are cached per model (memory and disk); a background thread compiles UMAP's numba code
when the tab is built, so the first UMAP a user asks for does not pay for compilation. The UMAP or t-SNE
of the whole vocabulary is staged: a first map (PCA) at once, the full one computed in the background for
every session; a timer re-polls (every few seconds, only while one is pending) and draws it when ready.
"""

from __future__ import annotations

from functools import cache

import gradio as gr

from explorer.analysis.embeddings.contextual import through_layers, word_in_two_texts
from explorer.analysis.embeddings.neighbours import nearest_tokens, token_analogy
from explorer.analysis.embeddings.projections import (
    MAX_POINTS,
    METHODS,
    ProjectionCache,
    is_warm,
    warm_up_in_background,
)
from explorer.analysis.embeddings.space import PositionView, position_view
from explorer.analysis.embeddings.staged import StagedProjections
from explorer.analysis.embeddings.token_map import TokenMap, token_map
from explorer.core.errors import InputError
from explorer.core.run import check_text
from explorer.plots import embeddings as plots
from explorer.plots.text import message_figure
from explorer.ui.context import AppContext, Selection, about, bind, guarded, md_escape, warning
from explorer.ui.stops import StopRequests, stopping

EXPLANATION = """Each token id picks one row of the **embedding matrix**: a vector of a few hundred numbers, \
learned so that tokens used alike end up pointing alike. Similar directions are measured by **cosine \
similarity** (1: same direction, 0: unrelated). To look at hundreds of dimensions we **project** them to 2 or 3: \
**PCA** keeps the directions of largest spread (exact, fast, linear); **UMAP** and **t-SNE** keep each token's \
near neighbours near (non-linear; distances between far clusters mean little). The embedding is only where a \
token *starts*: every layer mixes in context, so the same word drifts to different places in different \
sentences. The model also has to know *where* each token is — see **Position**."""
STOPS = StopRequests()  # no Stop button: a session that leaves stops its projection (``stop_session``)
SUBSETS = {
    "frequent": "the N most frequent tokens",
    "list": "a token list",
    "all": "the whole vocabulary",
}
FREQUENT_NOTE = (
    "“Most frequent” counts the model's own tokens in the bundled sample texts (Shakespeare, Genesis 1–10); "
    "if fewer tokens occur there, the lowest ids fill up the rest. Special tokens are left out."
)
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


SMALL_MODEL_ANALOGIES = (
    " A 5M-parameter model trained on two old books knows few such relations; try gpt2 where a network exists."
)
HOW = {
    "computed": "computed in {seconds:.1f} s",
    "memory": "from the memory cache",
    "disk": "from the disk cache",
    "shipped": "precomputed, shipped with the model",
}


@cache
def projection_cache() -> ProjectionCache:
    """The process's projections (memory, then disk): shared by every session, as they hold no user data.
    Made on first use, so the cache folder is read from the settings then, not at import."""
    return ProjectionCache()


@cache
def staged_projections() -> StagedProjections:
    """The process's background projections (the whole vocabulary's UMAP), one job per map for every session."""
    return StagedProjections(projection_cache())


POLL_S = 3  # seconds between checks of a whole-vocabulary map computed in the background


def model_of(ctx: AppContext, selection: Selection | None):
    if selection is None:
        raise InputError("Analyze a text first.")
    return ctx.model(selection)


def map_note(key: str, found: TokenMap, method: str) -> str:
    """The token map's caption: what was projected, from where, and how to read the marked tokens."""
    p, name = found.projection, METHODS.get(method, method)
    how = HOW[p.source].format(seconds=p.seconds)
    note = f"**{name}** of {found.subset.what} of **{md_escape(key)}** ({found.width} dimensions) · {how}."
    if p.explained is not None:
        note += " Variance kept by the axes: " + ", ".join(f"{v:.1%}" for v in p.explained) + "."
    if found.outside and method != "pca":
        note += f" {found.outside} of the text's tokens are not in the subset: each sits at the mean of its 5 nearest."
    if method == "umap" and p.source == "computed" and not is_warm():
        note += " (UMAP compiled its code during this call; later ones are faster.)"
    return note + staged_note(found)


def staged_note(found: TokenMap) -> str:
    """What a first map of the whole vocabulary says about the full one: coming (how far), failed, or not started."""
    if not found.first:
        return ""
    name = METHODS.get(found.method, found.method)
    if found.pending:
        doing = f", {md_escape(found.message)}" if found.message else ""
        return (
            f" This is a first map: the full **{name}** of {found.subset.what} is being computed in the background "
            f"({found.fraction:.0%} done{doing}) and replaces it here when ready (or press **Project** again)."
        )
    if found.error:
        return f" The full {name} failed ({md_escape(found.error)}); press **Project** to try again."
    return f" This is a first map: press **Project** to compute the full **{name}** in the background (minutes)."


@guarded(lambda msg: (warning(msg), message_figure(msg)))
def draw_map(  # gradio injects the progress tracker
    ctx: AppContext,
    selection,
    method_v,
    dims_v,
    subset_v,
    n_v,
    list_v,
    search_v,
    compute=True,
    request: gr.Request = None,
    progress=gr.Progress(),  # noqa: B008
):
    lm = model_of(ctx, selection)
    tokens = next(iter(ctx.trace(selection).tokens.values()))
    with STOPS.running(request) as should_stop:  # a closed browser tab ends a UMAP at its next epoch
        found = token_map(
            lm, tokens, projection_cache(), method_v, int(dims_v), subset_v, n_v, list_v, search_v,
            compute=compute, progress=stopping(progress, should_stop), staged=staged_projections(),
        )  # fmt: skip
    return map_outputs(lm.spec.key, selection, found, method_v, int(dims_v))


def map_outputs(key: str, selection: Selection, found: TokenMap, method: str, dims: int):
    """The map's note and figure (a prompt to press Project when nothing is computed yet)."""
    name = METHODS.get(method, method)
    if found.projection is None:
        what = found.subset.what
        return f"Press **Project** to compute the {name} of {what}.", message_figure(f"Press Project for {name}.")
    p = found.projection
    shown = METHODS.get(p.method, p.method) + (f" (first map; {name} to come)" if found.first else "")
    title = f"{shown} {dims}D · {found.subset.what} · red: the tokens of {about(selection)}"
    figure = plots.token_map(p.coords, found.labels, p.ids, title, found.marked, found.focus)
    return map_note(key, found, p.method), figure


def staged_map(ctx: AppContext, selection, method_v, dims_v, subset_v, n_v, list_v, search_v) -> TokenMap | None:
    """The whole vocabulary's staged map as it stands (nothing started), or None for any other map."""
    if selection is None or subset_v != "all" or method_v == "pca":
        return None
    lm = model_of(ctx, selection)
    tokens = next(iter(ctx.trace(selection).tokens.values()))
    return token_map(lm, tokens, projection_cache(), method_v, int(dims_v), subset_v, n_v, list_v, search_v,
                     compute=False, staged=staged_projections())  # fmt: skip


@guarded(lambda msg: gr.Timer(active=False))
def map_timer(ctx: AppContext, selection, method_v, dims_v, subset_v, n_v, list_v, search_v):
    """After Project: the timer runs while a whole-vocabulary map is computed in the background."""
    found = staged_map(ctx, selection, method_v, dims_v, subset_v, n_v, list_v, search_v)
    return gr.Timer(active=bool(found and found.pending))


@guarded(lambda msg: (warning(msg), gr.skip(), gr.Timer(active=False)))
def poll_map(ctx: AppContext, selection, method_v, dims_v, subset_v, n_v, list_v, search_v):
    """A timer tick: while the full map is pending only the note's progress changes; when it is ready it is
    drawn and the timer stops."""
    found = staged_map(ctx, selection, method_v, dims_v, subset_v, n_v, list_v, search_v)
    if found is None:
        return gr.skip(), gr.skip(), gr.Timer(active=False)
    note, figure = map_outputs(model_of(ctx, selection).spec.key, selection, found, method_v, int(dims_v))
    if found.pending:
        return note, gr.skip(), gr.Timer(active=True)
    return note, figure, gr.Timer(active=False)


@guarded(lambda msg: (warning(msg), []))
def show_neighbours(ctx: AppContext, selection, word_v, k_v):
    lm = model_of(ctx, selection)
    found = nearest_tokens(lm, word_v, k_v)
    (token,), (label,) = found.query_ids, found.query_labels
    note = f"Tokens nearest to **{md_escape(label)}** (id {token}) in {md_escape(lm.spec.key)}'s embedding table."
    return note, found.rows()


@guarded(lambda msg: (warning(msg), []))
def show_analogy(ctx: AppContext, selection, a_v, b_v, c_v, k_v):
    lm = model_of(ctx, selection)
    found = token_analogy(lm, a_v, b_v, c_v, k_v)
    a_l, b_l, c_l, best = (md_escape(label) for label in (*found.query_labels, found.labels[0]))
    note = f"**{a_l} − {b_l} + {c_l}** ≈ **{best}** (cosine {found.similarities[0]:.3f})."
    if lm.spec.bundled:
        note += SMALL_MODEL_ANALOGIES
    return note, found.rows()


@guarded(lambda msg: (message_figure(msg), message_figure(msg)))
def draw_layers(ctx: AppContext, selection, layer_v, dims_v):
    model_of(ctx, selection)
    found = through_layers(ctx.trace(selection), layer_v, int(dims_v))
    states = found.states
    where = f"{states.stream} stream · {about(selection)}"
    axes = ", ".join(f"{v:.0%}" for v in found.explained)
    title = f"{where} · layers 0–{states.n_states - 1} (PCA: {axes})"
    traj = plots.trajectories([found.path], [states.labels], ["text"], title)
    sims = plots.similarity_heatmap(found.similarity, states.labels, states.labels, f"{where} · layer {found.layer}")
    return traj, sims


@guarded(lambda msg: (warning(msg), message_figure(msg), message_figure(msg)))
def compare_texts(ctx: AppContext, selection, a_v, b_v, word_v, dims_v):
    lm = model_of(ctx, selection)
    target = "" if lm.spec.adapter.is_encoder_decoder else None  # the encoder's states; no generation
    trace_a, trace_b = (ctx.trace(Selection(selection.model, check_text(t), target)) for t in (a_v, b_v))
    drift = word_in_two_texts(trace_a, trace_b, word_v, int(dims_v))
    same, baseline = drift.same, drift.baseline
    note = (
        f"“{md_escape(word_v)}” in A and in B: cosine **{same[0]:.3f}** at layer 0, **{same[-1]:.3f}** at layer "
        f"{len(same) - 1} (baseline of all pairs: {baseline[0]:.3f} → {baseline[-1]:.3f})."
    )
    lines = plots.layer_lines(
        {f"“{word_v}” in A vs in B": same, "baseline: all token pairs": baseline},
        f"“{word_v}” in two texts, layer by layer · {lm.spec.key}",
    )
    title = f"A (blue) and B (red) · {lm.spec.key}"
    pair = plots.trajectories(drift.paths, drift.labels, ["A", "B"], title, drift.positions)
    return note, lines, pair


def position_figure(view: PositionView, key: str):
    """The model's own position encoding, drawn for its kind (the sinusoidal one is drawn beside it)."""
    enc = view.encoding
    if enc.kind == "learned":
        title = f"Position similarity · {key}'s {enc.where}"
        return plots.position_comparison(view.similarity, view.sinusoid_similarity, "learned table", title)
    if enc.kind == "relative_bias":
        title = f"{key}: {enc.num_buckets} buckets up to distance {enc.max_distance} (encoder)"
        return plots.relative_bias(view.distances, view.buckets, view.bias, title)
    if enc.kind == "rotary":
        title = f"{key}: base θ = {enc.theta:g}, {enc.dims} of {enc.head_dim} head dimensions rotated"
        return plots.rope(view.angles, view.distances, view.scores, title)
    return message_figure("No position encoding found.")


@guarded(lambda msg: (warning(msg), message_figure(msg), message_figure(msg)))
def draw_positions(ctx: AppContext, selection, n_v):
    lm = model_of(ctx, selection)
    view = position_view(lm.model, n_v)
    key = lm.spec.key
    title = f"sinusoidal encoding at {key}'s width · {view.n} positions × {view.width} dimensions"
    note = POSITION_NOTES[view.encoding.kind]
    if view.encoding.kind == "learned" and view.encoding.offset:
        note += f" (This model counts positions from row {view.encoding.offset} of its table, after the padding index.)"
    return note, position_figure(view, key), plots.encoding_heatmap(view.sinusoid, title)


def refresh(
    ctx: AppContext, selection, active_v, method_v, dims_v, subset_v, n_v, list_v, search_v, layer_v, layer_dims_v
):
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
        drawn_map = draw_map(ctx, selection, method_v, dims_v, subset_v, n_v, list_v, search_v, False)
    drawn_layers = draw_layers(ctx, selection, layer_v, layer_dims_v) if active_v == "layers" else (gr.skip(),) * 2
    return *drawn_map, gr.update(maximum=n_layers - 1, value=layer_v), *drawn_layers


def open_map(
    ctx: AppContext, selection, method_v, dims_v, subset_v, n_v, list_v, search_v, request: gr.Request = None,
    progress=gr.Progress(),  # noqa: B008
):  # fmt: skip
    """The token map sub-tab opened: draw it (PCA, or what is cached) and remember it is on screen."""
    drawn = draw_map(ctx, selection, method_v, dims_v, subset_v, n_v, list_v, search_v, request=request,
                     progress=progress)  # fmt: skip
    return *drawn, "map"


def showing(view: str, fn):
    """A sub-tab's select event: draw it and remember which view is on screen."""

    def select(*args):
        out = fn(*args)
        return (*out, view) if isinstance(out, tuple) else (out, view)

    return select


def build(ctx: AppContext, shared) -> None:
    """The tab's layout, and its events wired to the handlers above."""
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
                map_poll = gr.Timer(POLL_S, active=False)  # only while a whole-vocabulary map is pending
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

    drawn_map, nearest, layers_of, compare, positions = (
        bind(handler, ctx) for handler in (draw_map, show_neighbours, draw_layers, compare_texts, draw_positions)
    )
    map_in = [shared.state, method, dims, subset, n_tokens, token_list, search]
    map_out = [map_note, map_plot]
    layer_in = [shared.state, layer, layer_dims]
    layer_out = [trajectory_plot, similarity_plot]
    refreshed = [*map_out, layer, *layer_out]
    shared.on_analyzed(bind(refresh, ctx), [shared.state, active, *map_in[1:], layer, layer_dims], refreshed)
    projecting = {"concurrency_limit": 1, "concurrency_id": "projection"}
    project_button.click(drawn_map, map_in, map_out, api_name="embedding_map", **projecting).then(
        bind(map_timer, ctx), map_in, map_poll, api_name=False
    )
    map_poll.tick(bind(poll_map, ctx), map_in, [*map_out, map_poll], api_name=False, queue=False)
    search.submit(drawn_map, map_in, map_out, api_name=False, **projecting)
    map_tab.select(bind(open_map, ctx), map_in, [*map_out, active], api_name=False, **projecting)
    neighbours_in, neighbours_out = [shared.state, word, k], [neighbours_note, neighbours_table]
    find.click(nearest, neighbours_in, neighbours_out, api_name="neighbours")
    word.submit(nearest, neighbours_in, neighbours_out, api_name=False)
    neighbours_tab.select(showing("neighbours", nearest), neighbours_in, [*neighbours_out, active], api_name=False)
    analogy_in, analogy_out = [shared.state, a, b, c, k], [analogy_note, analogy_table]
    solve.click(bind(show_analogy, ctx), analogy_in, analogy_out, api_name="analogy")
    layers_tab.select(showing("layers", layers_of), layer_in, [*layer_out, active], api_name="contextual")
    for control in (layer, layer_dims):
        control.change(layers_of, layer_in, layer_out, api_name=False, trigger_mode="always_last")
    compare_in = [shared.state, text_a, text_b, follow, layer_dims]
    compare_out = [compare_note, drift_plot, pair_plot]
    model_run = {"concurrency_limit": ctx.settings.model_runs, "concurrency_id": "model_run"}
    compare_button.click(compare, compare_in, compare_out, api_name="compare_contexts", **model_run)
    compare_tab.select(showing("compare", compare), compare_in, [*compare_out, active], api_name=False, **model_run)
    position_in, position_out = [shared.state, n_positions], [position_note, position_plot, sinusoid_plot]
    position_tab.select(showing("position", positions), position_in, [*position_out, active], api_name="positions")
    n_positions.change(positions, position_in, position_out, api_name=False, trigger_mode="always_last")
