"""The whole-vocabulary map: a first map (PCA) at once, the full UMAP computed once in the background and cached."""

import numpy as np
import pytest

from explorer.analysis.embeddings.projections import ProjectionCache
from explorer.analysis.embeddings.space import embedding_table
from explorer.analysis.embeddings.staged import StagedProjections
from explorer.core.errors import InputError


def test_pca_first_then_the_umap_from_the_cache(tiny, tmp_path):
    table = embedding_table(tiny["gpt2"])
    ids = np.arange(len(table.matrix))
    cache = ProjectionCache(tmp_path)
    staged = StagedProjections(cache)
    first = staged.get(table.matrix, ids, "umap", 2, table.matrix_id)
    assert first.shown.method == "pca" and first.shown.coords.shape == (len(ids), 2)
    assert first.pending or first.shown.method == "umap"
    again = staged.get(table.matrix, ids, "umap", 2, table.matrix_id)  # a second session: no second job
    staged.wait()
    done = staged.get(table.matrix, ids, "umap", 2, table.matrix_id)
    assert again.shown.method in ("pca", "umap") and not done.pending
    assert done.shown.method == "umap" and done.shown.source == "memory" and done.shown.coords.shape == (len(ids), 2)
    assert cache.computed == 2 and staged.running == 0  # one PCA, one UMAP
    fresh = StagedProjections(ProjectionCache(tmp_path)).get(table.matrix, ids, "umap", 2)  # another process
    assert fresh.shown.method == "umap" and fresh.shown.source == "disk" and not fresh.pending


def test_pca_asked_for_is_the_map_itself(tiny, tmp_path):
    table = embedding_table(tiny["gpt2"])
    view = StagedProjections(ProjectionCache(tmp_path)).get(table.matrix, np.arange(50), "pca", 3)
    assert view.shown.method == "pca" and not view.pending and view.shown.coords.shape == (50, 3)


def test_without_start_nothing_runs_and_a_bad_request_is_a_sentence(tiny, tmp_path):
    table = embedding_table(tiny["gpt2"])
    staged = StagedProjections(ProjectionCache(tmp_path))
    view = staged.get(table.matrix, np.arange(60), "umap", 2, start=False)
    assert view.shown.method == "pca" and not view.pending and staged.running == 0
    with pytest.raises(InputError):
        staged.get(table.matrix, np.arange(60), "umap", 4)


def test_stop_ends_a_running_background_map_and_the_next_request_hears_why(tmp_path):
    x = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
    ids = np.arange(len(x))
    staged = StagedProjections(ProjectionCache(tmp_path))
    assert staged.get(x, ids, "umap", 2).pending
    staged.stop(timeout=120)
    assert staged.running == 0
    after = staged.get(x, ids, "umap", 2, start=False)
    assert after.shown.method == "pca" and not after.pending and "stopped" in after.error
