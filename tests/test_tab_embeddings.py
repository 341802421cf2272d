"""The Embeddings tab's handlers called directly (no server) on the bundled models, and the analysis
they call: token subsets, placing tokens on a projection, nearest tokens, states through the layers,
one word in two texts and the position view."""

import numpy as np
import pytest

from explorer.analysis.embeddings import space as emb
from explorer.analysis.embeddings.contextual import stream_states, through_layers, word_in_two_texts
from explorer.analysis.embeddings.neighbours import Nearest, nearest_tokens, token_analogy
from explorer.analysis.embeddings.projections import Projection, pca
from explorer.analysis.embeddings.token_map import frequency_ranking, place_tokens, token_subset
from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import embeddings as tab
from tests.plotly_json import message, title

TEXT = "The king and the queen sat by the water."


@pytest.fixture(scope="module")
def app():
    return AppContext()


@pytest.fixture(scope="module")
def gpt2(app):
    return Selection(model="tiny-gpt2", text=TEXT)


# ------------------------------------------------------------------------------------------------ handlers


def test_the_map_marks_the_texts_tokens_and_the_searched_one_and_is_remembered(app, gpt2):
    note, fig = tab.draw_map(app, gpt2, "pca", 2, "frequent", 200, "", "king")
    assert note.startswith("**PCA** of the 200 most frequent tokens of **tiny\\-gpt2** (256 dimensions)")
    assert "Variance kept by the axes" in note
    points, marked, focus, near = fig.data
    assert len(points.x) == 200
    lm = app.model(gpt2)
    text_tokens = [t for t in app.trace(gpt2).tokens["input"] if not t.special]
    assert list(marked.text) == [t.display for t in text_tokens]
    assert focus.name == "“␣king”" and len(near.x) == 12
    assert "tiny-gpt2" in title(fig) and "200 most frequent" in title(fig)
    note, _ = tab.draw_map(app, gpt2, "pca", 2, "frequent", 200, "", "king")
    assert "from the memory cache" in note
    assert lm is app.model(gpt2)


def test_a_umap_not_computed_yet_waits_for_the_project_button(app, gpt2):
    words = "king, queen, water, light, day, night, one, two, three, god, man, woman"
    note, fig = tab.draw_map(app, gpt2, "umap", 2, "list", 200, words, "", compute=False)
    assert note == "Press **Project** to compute the UMAP of 12 listed tokens."
    assert message(fig) == "Press Project for UMAP."


def test_the_whole_vocabulary_umap_is_a_first_map_at_once_then_the_full_one(app, gpt2, monkeypatch):
    from explorer.analysis.embeddings import projections

    monkeypatch.setattr(projections, "UMAP_EPOCHS", 5)  # the layout's epochs only: a test-sized UMAP
    args = (gpt2, "umap", 3, "all", 200, "", "")
    vocabulary = len(emb.embedding_table(app.model(gpt2)).matrix)
    note, fig = tab.draw_map(app, *args, compute=False)  # on a new analysis: the first map, nothing started
    assert note.startswith("**PCA** of all") and "press **Project** to compute the full **UMAP**" in note
    assert tab.staged_projections().running == 0
    note, fig = tab.draw_map(app, *args)  # Project: the first map now, the UMAP in the background
    assert note.startswith(f"**PCA** of all {vocabulary:,} tokens") and "being computed in the background" in note
    assert "% done" in note and len(fig.data[0].x) == vocabulary and "first map; UMAP to come" in title(fig)
    timer = tab.map_timer(app, *args)
    polled = tab.poll_map(app, *args)
    assert timer.active or not polled[2].active  # the timer runs while the map is pending
    if polled[2].active:
        assert "being computed" in polled[0] and polled[1] is not None and not hasattr(polled[1], "data")
    tab.staged_projections().wait()
    note, fig, timer = tab.poll_map(app, *args)  # the next tick draws the full map and stops the timer
    assert not timer.active and note.startswith(f"**UMAP** of all {vocabulary:,} tokens") and "first map" not in note
    assert len(fig.data[0].x) == vocabulary and fig.data[0].z is not None and "UMAP 3D" in title(fig)
    note, _ = tab.draw_map(app, *args)
    assert note.startswith("**UMAP**") and "from the memory cache" in note
    assert tab.poll_map(app, gpt2, "pca", 3, "all", 200, "", "")[2].active is False  # nothing to wait for


def test_the_map_refuses_bad_inputs_with_a_sentence(app, gpt2):
    note, fig = tab.draw_map(app, None, "pca", 2, "frequent", 200, "", "")
    assert note == "⚠️ Analyze a text first\\." and message(fig) == "Analyze a text first."
    note, fig = tab.draw_map(app, gpt2, "umap", 2, "list", 200, "the", "")
    assert note.startswith("⚠️") and "at least" in note and "at least" in message(fig)
    note, _ = tab.draw_map(app, gpt2, "pca", 2, "frequent", 200, "", "Pneumonoultramicroscopic")
    assert note.startswith("⚠️") and "splits into" in note


def test_neighbours_start_with_the_token_itself_and_the_note_is_escaped(app, gpt2):
    note, rows = tab.show_neighbours(app, gpt2, "(", 3)
    assert note.startswith("Tokens nearest to **␣\\(** (id ") and "tiny\\-gpt2's embedding table" in note
    assert len(rows) == 4 and rows[0][1] == "␣(" and rows[0][3] == pytest.approx(1.0, abs=1e-4)
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert rows[1][3] >= rows[2][3] >= rows[3][3]
    note, rows = tab.show_neighbours(app, gpt2, "", 3)
    assert note == "⚠️ Type a token or a word\\." and rows == []


def test_analogy_leaves_out_its_words_and_warns_about_a_small_model(app, gpt2):
    note, rows = tab.show_analogy(app, gpt2, "king", "man", "woman", 5)
    assert note.startswith("**␣king − ␣man + ␣woman** ≈ **") and "5M-parameter" in note
    assert len(rows) == 5 and not {"␣king", "␣man", "␣woman"} & {r[1] for r in rows}
    assert f"**{rows[0][1]}**" in note


def test_layers_clamp_the_layer_and_show_one_line_per_token(app, gpt2):
    trajectories, similarity = tab.draw_layers(app, gpt2, 99, 2)
    n_tokens = len(app.trace(gpt2).tokens["input"])
    last = app.model(gpt2).spec.n_layers
    assert len(trajectories.data) == n_tokens
    assert title(similarity).endswith(f"layer {last}")
    np.testing.assert_allclose(np.diagonal(np.asarray(similarity.data[0].z)), 1.0, atol=1e-4)


def test_compare_follows_a_word_through_two_texts(app):
    bert = Selection(model="tiny-bert", text=TEXT)
    note, lines, pair = tab.compare_texts(app, bert, tab.BANK_A, tab.BANK_B, "bank", 2)
    assert note.startswith("“bank” in A and in B: cosine **") and "at layer 0" in note
    same, baseline = lines.data
    assert len(same.y) == app.model(bert).spec.n_layers + 1 == len(baseline.y)
    assert "tiny-bert" in title(lines) and "tiny-bert" in title(pair)
    note, lines, pair = tab.compare_texts(app, bert, tab.BANK_A, "No such word here.", "bank", 2)
    assert note.startswith("⚠️") and "does not occur" in note and "does not occur" in message(lines)


@pytest.mark.parametrize(
    "model, kind, figure_title",
    [("tiny-gpt2", "Learned absolute", "Position similarity"), ("tiny-t5", "Relative position bias", "buckets")],
)
def test_positions_of_each_kind_next_to_the_sinusoid(app, model, kind, figure_title):
    note, own, sinusoid = tab.draw_positions(app, Selection(model=model, text=TEXT), 1000)
    assert note.startswith(f"**{kind}")
    assert own.data and figure_title in title(own) and model in title(own)
    assert "512 positions" in title(sinusoid)  # asked for 1000: at most 512
    assert np.asarray(sinusoid.data[0].z).shape[0] == 512


def test_refresh_redraws_only_the_view_on_screen_and_fits_the_layer_slider(app, gpt2):
    args = ("pca", 2, "frequent", 200, "", "", 99, 2)
    out = tab.refresh(app, gpt2, "layers", *args)
    skip = {"__type__": "update"}
    assert out[:2] == (skip, skip)  # the map is not on screen
    last = app.model(gpt2).spec.n_layers
    assert out[2] == {"maximum": last, "value": last, "__type__": "update"}
    assert title(out[4]).endswith(f"layer {last}")
    out = tab.refresh(app, gpt2, "position", *args)
    assert out[3:] == (skip, skip)
    assert tab.refresh(app, None, "layers", *args) == (skip,) * 5


# ------------------------------------------------------------------------------------------------ analysis


def test_token_subsets_all_list_and_frequent(app, gpt2):
    lm = app.model(gpt2)
    vocab = len(emb.embedding_table(lm))
    everything = token_subset(lm, "all", 0, "")
    assert everything.what == f"all {vocab:,} tokens" and len(everything.ids) == vocab
    listed = token_subset(lm, "list", 0, "king, queen")
    assert listed.what == "2 listed tokens"
    assert list(listed.ids) == [emb.token_id_of(lm.tokenizer, w) for w in ("king", "queen")]
    few = token_subset(lm, "frequent", 3, "")  # at least 10
    assert few.what == "the 10 most frequent tokens" and list(few.ids) == list(frequency_ranking(lm)[:10])
    assert frequency_ranking(lm) is frequency_ranking(lm)  # counted once per model
    assert emb.token_id_of(lm.tokenizer, "the") in frequency_ranking(lm)[:5]


def test_placing_tokens_on_a_projection():
    """Projected tokens keep their point; others get PCA's axes, or the mean of their nearest projected rows."""
    matrix = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [2, 0, 0.1]], np.float32)
    labels = tuple("abcde")
    table = emb.EmbeddingTable(matrix, labels, frozenset(), "made-up")
    ids = np.array([0, 1, 2, 3])
    coords, explained, mean, components = pca(matrix[ids], 2)
    projection = Projection("pca", coords, ids, 0.0, explained, mean, components)
    placed = place_tokens(table, projection, [2, 4])
    np.testing.assert_allclose(placed[0], coords[2])
    np.testing.assert_allclose(placed[1], (matrix[4] - mean) @ components.T, rtol=1e-5)
    layout = Projection("umap", np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32), ids, 0.0)
    # row 4 points almost along row 0; with k = 5 > 4 rows, every projected row counts: the mean of all
    np.testing.assert_allclose(place_tokens(table, layout, [4])[0], [5, 5])
    np.testing.assert_allclose(place_tokens(table, layout, [1])[0], [10, 0])


def test_nearest_rows_are_ranked_and_rounded():
    found = Nearest((7,), ("x",), np.array([7, 3]), ["x", "y"], np.array([1.0, 0.123456]))
    assert found.rows() == [[1, "x", 7, 1.0], [2, "y", 3, 0.1235]]


def test_nearest_tokens_and_analogy_on_the_bundled_model(app, gpt2):
    lm = app.model(gpt2)
    found = nearest_tokens(lm, "king", 4)
    assert found.query_labels == ("␣king",) and found.ids[0] == found.query_ids[0] and len(found.ids) == 5
    solved = token_analogy(lm, "king", "man", "woman", 3)
    assert solved.query_labels == ("␣king", "␣man", "␣woman") and not set(solved.query_ids) & set(solved.ids)
    table = emb.embedding_table(lm)
    target = table.unit[solved.query_ids[0]] - table.unit[solved.query_ids[1]] + table.unit[solved.query_ids[2]]
    expected = table.unit[solved.ids[0]] @ target / np.linalg.norm(target)
    assert solved.similarities[0] == pytest.approx(expected, abs=1e-5)


def test_states_through_the_layers_and_one_word_in_the_same_text_twice(app, gpt2):
    trace = app.trace(gpt2)
    states = stream_states(trace)
    assert states.stream == "input" and states.hidden.shape[:2] == (app.model(gpt2).spec.n_layers + 1, 10)
    found = through_layers(trace, -3, 3)
    assert found.layer == 0 and found.path.shape == (*states.hidden.shape[:2], 3)
    np.testing.assert_allclose(found.similarity, emb.layer_similarities(states.hidden)[0], atol=1e-6)
    same_text = word_in_two_texts(trace, trace, "queen", 2)
    np.testing.assert_allclose(same_text.same, 1.0, atol=1e-5)  # the same text: the same states at every layer
    assert same_text.positions[0] == same_text.positions[1] == [4]
    np.testing.assert_allclose(same_text.paths[0], same_text.paths[1], atol=1e-5)


@pytest.mark.parametrize(
    "model, kind", [("tiny-gpt2", "learned"), ("tiny-bert", "learned"), ("tiny-t5", "relative_bias")]
)
def test_position_view_of_each_bundled_family(app, model, kind):
    lm = app.model(Selection(model=model, text=TEXT))
    view = emb.position_view(lm.model, 3)  # at least 8 positions
    assert view.encoding.kind == kind and view.n == 8 and view.sinusoid.shape == (8, view.width)
    if kind == "learned":
        np.testing.assert_allclose(np.diagonal(view.similarity), 1.0, atol=1e-5)
        assert view.similarity.shape == view.sinusoid_similarity.shape == (8, 8)
    else:
        assert view.bias.shape == (lm.spec.n_heads, len(view.distances)) and view.buckets[len(view.distances) // 2] == 0
