"""Embedding space: projections on data of known structure, the projection cache, neighbours and
analogies, contextual states, position encodings of every family, and the tab's endpoints."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.analysis.embeddings import projections
from explorer.analysis.embeddings import space as emb
from explorer.analysis.embeddings.projections import ProjectionCache, cache_dir, fingerprint, pca, project
from explorer.core.errors import InputError, Stopped
from explorer.core.settings import overridden
from tests.plotly_json import array, figure


@pytest.fixture(autouse=True)
def _private_cache(tmp_path):
    with overridden(cache_dir=tmp_path / "cache", warmup=False):
        yield


def clusters(n_per: int = 60, d: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 10
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(3), n_per)


def nearest_label_purity(coords: np.ndarray, labels: np.ndarray) -> float:
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(axis=1)] == labels).mean())


# ---------------------------------------------------------------------------------------------- projections


def test_pca_of_points_on_a_line_is_a_line():
    rng = np.random.default_rng(1)
    t = rng.uniform(-5, 5, size=200)
    direction = rng.normal(size=20)
    x = (np.outer(t, direction) + rng.normal(size=20)).astype(np.float32)
    coords, explained, _, _ = pca(x, 2)
    assert explained[0] > 0.999
    np.testing.assert_allclose(coords[:, 1], 0, atol=1e-3 * np.abs(coords[:, 0]).max())
    assert abs(np.corrcoef(coords[:, 0], t)[0, 1]) > 0.9999


def test_pca_agrees_with_scikit_learn():
    from sklearn.decomposition import PCA

    x, _ = clusters()
    ours = pca(x, 3)[0]
    theirs = PCA(3, svd_solver="full").fit_transform(x)
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method", ["pca", "umap", "tsne"])
def test_separated_clusters_stay_separated(method):
    x, labels = clusters()
    p = project(x, np.arange(len(x)), method, 2)
    assert p.coords.shape == (len(x), 2) and np.isfinite(p.coords).all()
    assert nearest_label_purity(p.coords, labels) == 1.0


def test_umap_reports_its_epochs_and_stops_at_the_next_one():
    x = np.random.default_rng(0).normal(size=(600, 20)).astype(np.float32)
    heard = []
    projections.umap_layout(x, 2, progress=lambda f, m: heard.append((f, m)))
    epochs = [f for f, m in heard if m.startswith("UMAP layout: epoch")]
    assert len(epochs) >= 2 and epochs == sorted(epochs) and heard[-1][1] == "UMAP layout: epoch 200 of 200"

    def stop_after_ten(f, message):
        if message.startswith("UMAP layout: epoch") and int(message.split()[3]) >= 10:
            raise Stopped("stopped")

    with pytest.raises(Stopped):
        projections.umap_layout(x, 2, progress=stop_after_ten)


def test_a_umap_stopped_in_one_thread_leaves_the_next_one_free_to_run():
    """A UMAP stopped from a request thread used to leave tqdm's process-wide lock held (tqdm does not release it
    when its bar's write raises, and the Stop was raised there). The thread went back to the server's pool, and
    the next UMAP from any other thread waited for that lock forever: a test worker hung so in CI."""
    import threading

    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)

    def stop_at_an_epoch(f, message):
        if message.startswith("UMAP layout: epoch"):
            raise Stopped("stopped")

    def in_a_thread(job):
        outcome = []
        thread = threading.Thread(target=lambda: outcome.append(job()), daemon=True)
        thread.start()
        thread.join(timeout=120)
        assert not thread.is_alive(), "the UMAP after a stopped one did not finish in 2 minutes"
        return outcome[0]

    def stopped():
        try:
            projections.umap_layout(x, 2, progress=stop_at_an_epoch)
        except Stopped:
            return "stopped"

    heard = []
    assert in_a_thread(stopped) == "stopped"
    coords = in_a_thread(lambda: projections.umap_layout(x, 2, progress=lambda f, m: heard.append(m)))
    assert coords.shape == (300, 2) and np.isfinite(coords).all()
    assert heard[-1] == "UMAP layout: epoch 200 of 200"


def test_two_umaps_at_once_run_one_after_the_other_and_a_waiting_one_can_stop():
    """A background map and a request (or the warm-up) ran UMAP in two threads at once: importing and compiling
    numba code together, they could deadlock (a CI run hung there). They now take turns; the one waiting says so
    and can be stopped while it waits.

    Run in a fresh interpreter: in a test worker that earlier tests had filled with threads (app servers, warm-ups,
    background maps) the worker hung here in two make-test runs even with those maps stopped first (most likely
    tqdm's lock left held by a stopped map: see the test above), and a hung worker takes its report with it.
    Alone, a hang fails this test with its own message."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = "from tests.test_embeddings import two_umaps_take_turns; two_umaps_take_turns()"
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=400)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"two UMAPs did not finish in 400 s: {e.stderr}")
    assert done.returncode == 0, done.stderr[-3000:]


def two_umaps_take_turns():
    import threading

    x = np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32)
    heard = {0: [], 1: []}
    start = threading.Barrier(2)

    def run(i):
        start.wait()
        projections.umap_layout(x, 2, progress=lambda f, m: heard[i].append((time.perf_counter(), m)))

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    spans = {i: [when for when, m in heard[i] if not m.startswith("waiting")] for i in heard}
    first, second = sorted(heard, key=lambda i: spans[i][0])
    assert spans[first][-1] <= spans[second][0]  # one layout ended before the other began
    assert any(m.startswith("waiting for another UMAP") for _, m in heard[second])

    def stop_while_waiting(f, message):
        if message.startswith("waiting"):
            raise Stopped("stopped")

    with projections._UMAP_LOCK:  # another UMAP is running
        with pytest.raises(Stopped):
            projections.umap_layout(x, 2, progress=stop_while_waiting)


def test_a_umap_waits_while_another_process_holds_the_compiled_code_folder():
    """numba's compiled-code folder is not safe for two processes compiling into it at once (numba issues 4807
    and 10128), and the two test workers share one. While another process holds the folder's lock, a UMAP here
    waits, says why, and can be stopped while it waits, leaving this process's own lock free."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
         "lock.acquire(); print('held', flush=True); sys.stdin.read()", str(projections.NUMBA_LOCK_FILE)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    heard = []

    def stop_after_three_reports(f, message):
        heard.append(message)
        if len(heard) == 3:
            raise Stopped("stopped")

    try:
        assert holder.stdout.readline().strip() == "held"
        x = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
        with pytest.raises(Stopped):
            projections.umap_layout(x, 2, progress=stop_after_three_reports)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert heard == ["waiting for another UMAP on this machine to finish (they share compiled code)"] * 3
    assert projections._UMAP_LOCK.acquire(blocking=False)
    projections._UMAP_LOCK.release()


def test_tsne_is_sklearns_own_reports_its_iterations_and_stops_at_the_next_report():
    from sklearn.manifold import TSNE

    x = np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32)
    heard = []
    start = time.perf_counter()
    ours = projections.tsne_layout(x, 2, progress=lambda f, m: heard.append((f, m)))
    whole = time.perf_counter() - start
    theirs = TSNE(n_components=2, perplexity=30.0, init="pca", random_state=0, metric="cosine").fit_transform(x)
    np.testing.assert_array_equal(ours, theirs.astype(np.float32))  # one optimisation, sklearn's, unchanged
    iterations = [f for f, m in heard if m.startswith("t-SNE: iteration")]
    assert len(iterations) >= 10 and iterations == sorted(set(iterations)) and iterations[-1] < 1
    assert heard[-1][1] == "t-SNE: iteration 1000 of 1000"

    def stop_at_fifty(f, message):
        if message == "t-SNE: iteration 50 of 1000":
            raise Stopped("stopped")

    start = time.perf_counter()
    with pytest.raises(Stopped):
        projections.tsne_layout(x, 2, progress=stop_at_fifty)
    assert time.perf_counter() - start < whole / 3  # 50 of 1,000 iterations, and the neighbours


def test_exact_knn_lists_each_point_first():
    x, _ = clusters()
    idx, dist = projections.cosine_knn(x, 5)
    assert (idx[:, 0] == np.arange(len(x))).all() and np.allclose(dist[:, 0], 0, atol=1e-5)
    assert (np.diff(dist, axis=1) >= -1e-6).all()


def test_projection_bounds_are_clear_sentences():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(InputError, match="at least"):
        project(x, np.arange(3), "umap", 2)
    with pytest.raises(InputError, match="2 or 3"):
        project(x, np.arange(3), "pca", 5)
    with pytest.raises(InputError, match="at most 5,000"):
        projections.check_size("tsne", 50_000, 2)


def test_cache_hits_skip_computation_in_memory_and_on_disk(tmp_path, monkeypatch):
    calls = []
    real = projections.project
    monkeypatch.setattr(projections, "project", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, _ = clusters()
    ids = np.arange(0, len(x), 2)
    cache = ProjectionCache(tmp_path / "p")
    first = cache.get(x, ids, "pca", 2)
    second = cache.get(x, ids, "pca", 2)
    assert len(calls) == 1 and (first.source, second.source) == ("computed", "memory")
    again = ProjectionCache(tmp_path / "p").get(x, ids, "pca", 2)  # a new process, the same disk
    assert len(calls) == 1 and again.source == "disk"
    np.testing.assert_array_equal(again.coords, first.coords)
    np.testing.assert_array_equal(again.ids, ids)
    np.testing.assert_allclose(again.transform(x[ids]), first.coords, atol=1e-4)
    assert cache.get(x, ids, "pca", 3).coords.shape[1] == 3 and len(calls) == 2  # another key computes
    assert ProjectionCache(tmp_path / "empty").get(x, ids, "pca", 2, compute=False) is None


def test_the_disk_cache_keeps_within_its_budget_dropping_the_oldest(tmp_path):
    x, _ = clusters()
    cache = ProjectionCache(tmp_path / "p")
    cache.get(x, np.arange(0, len(x), 2), "pca", 2)
    one_file = sum(f.stat().st_size for f in (tmp_path / "p").glob("*.npz"))
    with overridden(cache_mb=2.5 * one_file / 2**20):  # room for two such files
        for start in (1, 3, 5):
            cache.get(x, np.arange(start, len(x), 2), "pca", 2)
    kept = sorted((tmp_path / "p").glob("*.npz"), key=lambda f: f.stat().st_mtime)
    assert len(kept) == 2 and sum(f.stat().st_size for f in kept) <= 2.5 * one_file


def test_shipped_projections_are_used_only_for_the_same_weights(tmp_path):
    x, _ = clusters()
    ids = np.arange(len(x))
    made = ProjectionCache(tmp_path / "made")
    made.get(x, ids, "pca", 2)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for f in (tmp_path / "made").iterdir():
        (shipped / f.name).write_bytes(f.read_bytes())
    fresh = ProjectionCache(tmp_path / "fresh")
    assert fresh.get(x, ids, "pca", 2, shipped=[shipped]).source == "shipped"
    changed = x.copy()
    changed[7, 3] += 1.0  # retrained weights: a different fingerprint
    assert fingerprint(changed) != fingerprint(x)
    assert ProjectionCache(tmp_path / "other").get(changed, ids, "pca", 2, shipped=[shipped]).source == "computed"


def test_cache_directory_follows_the_settings(tmp_path):
    with overridden(cache_dir=tmp_path / "here"):
        assert cache_dir() == tmp_path / "here"
        assert ProjectionCache().directory == tmp_path / "here" / "projections"
    assert os.environ["NUMBA_CACHE_DIR"]  # numba's compiled code is kept between runs


def test_warm_up_can_be_switched_off_and_compiles_umap():
    assert projections.warm_up_in_background() is None  # EXPLORER_WARMUP=0 (fixture)
    assert projections.warm_up(n=60, dims=(2,)) > 0 and projections.is_warm()


# ----------------------------------------------------------------------------------- neighbours, arithmetic


def test_neighbours_of_a_token_start_with_itself(tiny):
    table = emb.embedding_table(tiny["gpt2"])
    assert table.matrix.shape == (len(tiny["gpt2"].tokenizer), 32) and not table.matrix.flags.writeable
    for token in (5, 100, len(table) - 1):
        ids, sims = emb.neighbours(table.unit, token, 6)
        assert ids[0] == token and sims[0] == pytest.approx(1.0, abs=1e-5)
        assert (np.diff(sims) <= 1e-6).all() and len(set(ids.tolist())) == 6


def test_analogy_returns_the_planted_answer():
    rng = np.random.default_rng(3)
    d = 64
    royal, male, female, person = rng.normal(size=(4, d))
    planted = {"king": royal + male, "queen": royal + female, "man": person + male, "woman": person + female}
    rows = np.concatenate([np.stack(list(planted.values())), rng.normal(size=(300, d)) * 1.5]).astype(np.float32)
    unit = emb.unit_rows(rows)
    ids, sims = emb.analogy(unit, 0, 2, 3, 5)  # king − man + woman
    assert ids[0] == 1  # queen
    assert not {0, 2, 3} & set(ids.tolist())  # the three inputs are left out


def test_a_word_maps_to_its_mid_sentence_token(tiny):
    tok = tiny["gpt2"].tokenizer
    the = emb.token_id_of(tok, "the")
    assert tok.convert_ids_to_tokens(the) == "Ġthe"
    with pytest.raises(InputError, match="splits into"):
        emb.token_id_of(tok, "Pneumonoultramicroscopic")
    with pytest.raises(InputError):
        emb.token_id_of(tok, "   ")


def test_most_frequent_tokens_counted_in_the_texts(tiny):
    tok = tiny["gpt2"].tokenizer
    ranked = emb.frequent_ids(tok, ["x to to the the the\nthe"], 5, len(tok), frozenset(tok.all_special_ids))
    space_the, space_to = (tok(" the")["input_ids"][0], tok(" to")["input_ids"][0])
    assert list(ranked[:2]) == [space_the, space_to]
    assert len(ranked) == 5 and len(set(ranked.tolist())) == 5


def test_listed_words_give_their_tokens(tiny):
    tok = tiny["gpt2"].tokenizer
    ids = emb.listed_ids(tok, "the, tiger tree")
    assert ids[0] == tok(" the")["input_ids"][0] and len(ids) >= 3


# --------------------------------------------------------------------------------------- contextual states


def test_layer_similarities_and_shared_trajectories(tiny):
    from explorer.core.run import run

    hidden = run(tiny["bert"], "The tiger jumped out of a tree.").hidden["input"]
    sims = emb.layer_similarities(hidden)
    assert sims.shape == (hidden.shape[0], hidden.shape[1], hidden.shape[1])
    np.testing.assert_allclose(np.diagonal(sims, axis1=1, axis2=2), 1.0, atol=1e-5)
    np.testing.assert_allclose(sims, sims.transpose(0, 2, 1), atol=1e-6)
    (a, b), explained = emb.shared_trajectories([hidden, hidden[:, :3]], 2)
    assert a.shape == (hidden.shape[0], hidden.shape[1], 2) and b.shape == (hidden.shape[0], 3, 2)
    np.testing.assert_allclose(a[:, :3], b, atol=1e-5)  # the same states land on the same points
    assert 0 < explained.sum() <= 1


def test_the_same_word_drifts_apart_with_context():
    from explorer.core.loading import load
    from explorer.core.run import run

    lm = load("tiny-gpt2")
    a, b = "We sat on the bank of the river.", "She went to the bank with money."
    ta, tb = run(lm, a), run(lm, b)
    pa = emb.word_positions(ta.tokens["input"], a, "bank")
    pb = emb.word_positions(tb.tokens["input"], b, "BANK")
    assert "".join(ta.tokens["input"][i].display for i in pa).strip("␣") == "bank"
    same, baseline = emb.word_drift(ta.hidden["input"], pa, tb.hidden["input"], pb)
    assert same[0] == pytest.approx(1.0, abs=1e-5)  # same token, same position: same embedding + position
    assert same[-1] < 0.99 and baseline.shape == same.shape
    with pytest.raises(InputError, match="does not occur"):
        emb.word_positions(ta.tokens["input"], a, "money")


# ------------------------------------------------------------------------------------------------ position


def test_position_encoding_of_each_family(tiny):
    gpt2 = emb.position_encoding(tiny["gpt2"].model)
    assert gpt2.kind == "learned" and gpt2.table.shape == (128, 32) and gpt2.where.endswith("wpe")
    bert = emb.position_encoding(tiny["bert"].model)
    assert bert.kind == "learned" and bert.offset == 0 and bert.table.shape == (128, 32)
    t5 = emb.position_encoding(tiny["t5"].model)
    assert t5.kind == "relative_bias" and t5.table.shape == (32, 4) and t5.where.startswith("encoder.block.0")
    llama = emb.position_encoding(tiny["llama"].model)
    assert (llama.kind, llama.theta, llama.head_dim, llama.dims) == ("rotary", 10000.0, 8, 8)
    inv_freq = tiny["llama"].model.model.rotary_emb.inv_freq.numpy()
    np.testing.assert_allclose(emb.rope_frequencies(llama.theta, llama.dims), inv_freq, rtol=1e-5)


def test_roberta_style_positions_skip_the_padding_rows():
    from explorer.core.loading import load

    enc = emb.position_encoding(load("tiny-bert").model)
    config = load("tiny-bert").model.config
    assert enc.offset == config.pad_token_id + 1 and len(enc.table) == config.max_position_embeddings - enc.offset


def test_sinusoidal_encoding_known_values_and_distance_only_similarity():
    pe = emb.sinusoidal(64, 16)
    np.testing.assert_allclose(pe[0], np.tile([0.0, 1.0], 8), atol=1e-7)
    np.testing.assert_allclose(pe[:, 0], np.sin(np.arange(64)), atol=1e-6)
    dots = pe @ pe.T
    for k in (1, 5, 17):
        np.testing.assert_allclose(np.diagonal(dots, k), dots[0, k], atol=1e-4)


def test_t5_buckets_grow_with_distance_and_saturate():
    distances, buckets = emb.relative_buckets(32, 128, 200)
    assert buckets[distances == 0][0] == 0
    right, left = buckets[distances > 0], buckets[distances < 0][::-1]
    assert (np.diff(right) >= 0).all() and (np.diff(left) >= 0).all()
    assert right.min() >= 16 > left.max()  # the two directions use separate halves
    assert len(set(right[distances[distances > 0] >= 128])) == 1


def test_rope_score_depends_only_on_distance():
    freqs = emb.rope_frequencies(10000.0, 8)
    q = torch.ones(8)

    def rotate(v, m):  # pairs (2i, 2i+1) rotated by m·θ_i, written out independently of the code under test
        out = v.clone()
        for i, f in enumerate(freqs):
            c, s = np.cos(m * f), np.sin(m * f)
            out[2 * i], out[2 * i + 1] = c * v[2 * i] - s * v[2 * i + 1], s * v[2 * i] + c * v[2 * i + 1]
        return out

    scores = emb.rope_relative_score(freqs, np.arange(20))
    for m, n in [(3, 3), (10, 4), (19, 2), (7, 0)]:
        assert float(rotate(q, m) @ rotate(q, n)) / float(q @ q) == pytest.approx(scores[abs(m - n)], abs=1e-5)


# ----------------------------------------------------------------------------------------------------- app


def analyze(client, folder, text="The tiger jumped out of a tree to get a drink."):
    status = client.predict(str(folder), text, "", api_name="/analyze")
    assert "⚠️" not in status


def test_embedding_map_marks_the_text_and_is_cached(client, tiny_dir):
    analyze(client, tiny_dir["gpt2"])
    args = ("pca", 2, "frequent", 100, "", "tiger")
    note, fig = client.predict(*args, api_name="/embedding_map")
    traces = figure(fig)["data"]
    assert "PCA" in note and "computed" in note
    assert len(array(traces[0]["x"])) == 100 and "tiger" in "".join(traces[2]["text"])
    assert any("tiger" in t for t in traces[1]["text"])  # the text's tokens are labelled
    note, _ = client.predict(*args, api_name="/embedding_map")
    assert "memory cache" in note
    note, fig = client.predict(
        "umap", 2, "list", 100, "the, a, tree, tiger, of, to, out, drink, get", "", api_name="/embedding_map"
    )
    assert "UMAP" in note and len(array(figure(fig)["data"][0]["x"])) >= 9
    note, _ = client.predict("umap", 2, "list", 100, "the", "", api_name="/embedding_map")
    assert note.startswith("⚠️") and "at least" in note


def test_neighbours_and_analogy_endpoints(client, tiny_dir):
    analyze(client, tiny_dir["gpt2"])
    note, table = client.predict("the", 5, api_name="/neighbours")
    rows = table["data"]
    assert rows[0][1] == "␣the" and float(rows[0][3]) == pytest.approx(1.0, abs=1e-3) and len(rows) == 6
    note, table = client.predict("the", "a", "tree", 5, api_name="/analogy")
    assert "≈" in note and len(table["data"]) == 5
    assert not {"␣the", "␣a", "␣tree"} & {r[1] for r in table["data"]}
    note, _ = client.predict("Pneumonoultramicroscopic", 5, api_name="/neighbours")
    assert note.startswith("⚠️") and "splits into" in note


def test_contextual_and_compare_endpoints(client, tiny_dir):
    analyze(client, tiny_dir["bert"], "the tiger jumped out of a tree")
    trajectories, similarity = client.predict(1, 2, api_name="/contextual")
    sims = array(figure(similarity)["data"][0]["z"])
    np.testing.assert_allclose(np.diagonal(sims), 1.0, atol=1e-3)
    assert len(figure(trajectories)["data"]) == sims.shape[0]  # one line per token
    note, lines, pair = client.predict(
        "the tiger jumped", "a tiger of the tree", "tiger", 2, api_name="/compare_contexts"
    )
    assert "cosine" in note
    assert len(array(figure(lines)["data"][0]["y"])) == 3  # layers 0..2 of the tiny model
    note, _, _ = client.predict("the tiger jumped", "a tree", "tiger", 2, api_name="/compare_contexts")
    assert note.startswith("⚠️") and "does not occur" in note


@pytest.mark.parametrize("name, expected", [("gpt2", "Learned"), ("t5", "Relative"), ("llama", "Rotary")])
def test_position_view_for_each_family(client, tiny_dir, name, expected):
    analyze(client, tiny_dir[name])
    note, model_fig, sinusoid = client.predict(64, api_name="/positions")
    assert expected in note and figure(model_fig)["data"] and figure(sinusoid)["data"]


def test_an_embedding_table_is_freed_with_its_model(tiny_dir):
    import gc
    import weakref

    from explorer.core.loading import load

    lm = load(str(tiny_dir["gpt2"]))
    table = weakref.ref(emb.embedding_table(lm))
    assert emb.embedding_table(lm) is table()  # built once per model
    del lm
    gc.collect()
    assert table() is None  # with its matrix (which shares the model's weights) and labels
