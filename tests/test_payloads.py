"""Attention figures at real size (12 layers x 12 heads x 512 tokens) stay under 1 MB of JSON each."""

import numpy as np
import pytest

from explorer.plots.attention import HEATMAP_MAX_TOKENS, attention_grid, attention_heatmap, pool_blocks, token_links

MB = 2**20
T = 512


def causal_weights(rng, *lead) -> np.ndarray:
    """Random causal attention weights: rows of the lower triangle sum to 1."""
    x = rng.random((*lead, T, T)) * np.tril(np.ones((T, T)))
    return x / x.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def labels():
    return [f"tok{i}" for i in range(T)]


def test_one_head_at_512_tokens_is_pooled_into_blocks_under_1_mb(labels):
    weights = causal_weights(np.random.default_rng(0))
    fig = attention_heatmap(weights, labels, labels, "head", causal=True)
    assert len(fig.to_json()) <= MB
    z = np.asarray(fig.data[0].z, dtype=float)
    step = -(-T // HEATMAP_MAX_TOKENS)
    assert z.shape == (-(-T // step),) * 2 and "2×2-token blocks" in fig.layout.title.text
    assert z[3, 1] == pytest.approx(weights[3 * step : 4 * step, step : 2 * step].max(), rel=1e-6)
    assert np.isnan(z[1, 3]) and not np.isnan(z[3, 3])  # above the diagonal masked, the diagonal not
    assert list(fig.data[0].x[:3]) == ["0 tok0", f"{step} tok{step}", f"{2 * step} tok{2 * step}"]  # block: 1st token
    every = -(-z.shape[1] // 40)  # at most 40 tick labels: every n-th block
    assert list(fig.layout.xaxis.ticktext[:2]) == ["tok0", f"tok{every * step}"]


def test_a_short_text_keeps_one_cell_per_token(labels):
    weights = causal_weights(np.random.default_rng(1))[:40, :40]
    weights /= weights.sum(axis=-1, keepdims=True)
    fig = attention_heatmap(weights, labels[:40], labels[:40], "head", causal=True)
    assert np.asarray(fig.data[0].z).shape == (40, 40) and "blocks" not in fig.layout.title.text


def test_pooled_blocks_ignore_masked_cells():
    values = np.arange(9.0).reshape(3, 3)
    masked = np.triu(np.ones((3, 3), bool), k=1)
    pooled, empty = pool_blocks(values, masked, 2, "mean")
    assert pooled[0, 0] == pytest.approx((0 + 3 + 4) / 3)  # cell (0, 1) is masked
    assert empty.tolist() == [[False, True], [False, False]] and pooled[1, 1] == 8.0


def test_the_grid_and_the_links_of_a_gpt2_small_shaped_model_stay_under_1_mb(labels):
    rng = np.random.default_rng(2)
    grid = causal_weights(rng, 12, 12)
    assert len(attention_grid(grid, "all heads").to_json()) <= MB
    assert len(token_links(grid[5, 3], labels, labels, None, "links").to_json()) <= MB
    assert len(token_links(grid[5, 3, :33, :33], labels[:33], labels[:33], 32, "step").to_json()) <= MB
