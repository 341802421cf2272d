"""Known answers for the attention statistics, rollout and figures, on made-up attention arrays."""

import math

import numpy as np
import plotly.graph_objects as go
import pytest

from explorer.analysis.attention.heads import (
    STAT_COLUMNS,
    STATISTICS,
    attention_rollout,
    average_heads,
    head_statistics,
    head_statistics_table,
)
from explorer.plots.attention import attention_grid, grid_block, statistic_heatmap, token_links

T = 5


def causal_uniform(t: int) -> np.ndarray:
    """(t, t): each query spreads evenly over itself and every earlier token."""
    w = np.tril(np.ones((t, t)))
    return w / w.sum(axis=1, keepdims=True)


def previous_token_head(t: int) -> np.ndarray:
    """(t, t): each query puts all its weight on the token before it; token 0 on itself."""
    w = np.zeros((t, t))
    w[0, 0] = 1
    w[np.arange(1, t), np.arange(t - 1)] = 1
    return w


def first_token_head(t: int) -> np.ndarray:
    w = np.zeros((t, t))
    w[:, 0] = 1
    return w


def stack(*heads: np.ndarray) -> np.ndarray:
    """One layer of the given heads: (1, H, Q, K)."""
    return np.stack(heads)[None]


def random_attention(shape, causal: bool = False, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.random(shape)
    if causal:
        w = w * np.tril(np.ones(shape[-2:]))
    return w / w.sum(axis=-1, keepdims=True)


# --- head_statistics ---------------------------------------------------------------------------


def test_uniform_causal_rows_have_entropy_log2_of_allowed_keys():
    stats = head_statistics(stack(causal_uniform(T)), causal=True)
    expected = np.mean([math.log2(n) for n in range(1, T + 1)])
    assert stats["entropy"][0, 0] == pytest.approx(expected)


def test_uniform_full_rows_have_entropy_log2_t():
    stats = head_statistics(stack(np.full((T, T), 1 / T)), causal=False)
    assert stats["entropy"][0, 0] == pytest.approx(math.log2(T))


def test_previous_token_head():
    stats = head_statistics(stack(previous_token_head(T)), causal=True)
    assert stats["previous_token"][0, 0] == pytest.approx(1.0)
    assert stats["distance"][0, 0] == pytest.approx((T - 1) / T)
    assert stats["entropy"][0, 0] == pytest.approx(0.0)
    assert stats["self"][0, 0] == pytest.approx(1 / T)  # only row 0 attends to itself


def test_identity_head_attends_to_itself():
    stats = head_statistics(stack(np.eye(T)), causal=True)
    assert stats["self"][0, 0] == pytest.approx(1.0)
    assert stats["entropy"][0, 0] == pytest.approx(0.0)
    assert stats["distance"][0, 0] == pytest.approx(0.0)
    assert stats["previous_token"][0, 0] == pytest.approx(0.0)


def test_first_token_head_is_an_attention_sink():
    stats = head_statistics(stack(first_token_head(T)), causal=True)
    assert stats["first_token"][0, 0] == pytest.approx(1.0)
    assert stats["distance"][0, 0] == pytest.approx(np.mean(np.arange(T)))


def test_statistics_are_per_head_and_keep_heads_apart():
    weights = np.stack([stack(np.eye(T), first_token_head(T))[0], stack(previous_token_head(T), np.eye(T))[0]])
    stats = head_statistics(weights, causal=True)  # (2 layers, 2 heads)
    assert set(stats) == set(STATISTICS)
    assert all(v.shape == (2, 2) for v in stats.values())
    np.testing.assert_allclose(stats["self"], [[1, 1 / T], [1 / T, 1]])
    np.testing.assert_allclose(stats["first_token"], [[1 / T, 1], [2 / T, 1 / T]])  # rows 0 and 1 of L1 H0


def test_cross_attention_has_no_positional_statistics():
    weights = random_attention((2, 3, 4, 6))  # 4 target queries over 6 source keys
    stats = head_statistics(weights, causal=False, same_stream=False)
    assert np.isnan(stats["distance"]).all() and np.isnan(stats["self"]).all()
    assert np.isfinite(stats["entropy"]).all()
    np.testing.assert_allclose(stats["first_token"], weights[..., 0].mean(axis=-1))


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((T, T), {"causal": True}),  # one head, not (L, H, Q, K)
        ((1, 1, 4, 6), {"causal": True}),  # causal but not square
        ((1, 1, 4, 6), {"causal": False}),  # same stream by default, not square
        ((1, 1, 4, 4), {"causal": True, "same_stream": False}),
    ],
)
def test_head_statistics_rejects_bad_shapes(shape, kwargs):
    with pytest.raises(ValueError):
        head_statistics(np.full(shape, 0.25), **kwargs)


def test_statistics_table_rows():
    weights = np.stack([stack(np.eye(T), first_token_head(T))[0]] * 3)  # (3, 2, T, T)
    rows = head_statistics_table(head_statistics(weights, causal=True))
    assert len(STAT_COLUMNS) == 7 and STAT_COLUMNS[:2] == ["layer", "head"]
    assert len(rows) == 6 and all(len(r) == len(STAT_COLUMNS) for r in rows)
    assert rows[3][:2] == [1, 1]
    assert rows[3][STAT_COLUMNS.index("first_token")] == 1.0
    assert rows[0][STAT_COLUMNS.index("first_token")] == round(1 / T, 3)


def test_statistics_table_rounds_and_blanks_nan():
    rows = head_statistics_table(head_statistics(random_attention((1, 1, 3, 7)), causal=False, same_stream=False))
    entropy = rows[0][STAT_COLUMNS.index("entropy")]
    assert entropy == round(entropy, 3)
    assert rows[0][STAT_COLUMNS.index("distance")] is None


def test_statistics_table_rejects_missing_or_mismatched_statistics():
    stats = head_statistics(random_attention((2, 2, 3, 3)), causal=False)
    with pytest.raises(ValueError):
        head_statistics_table({k: v for k, v in stats.items() if k != "self"})
    with pytest.raises(ValueError):
        head_statistics_table({**stats, "self": stats["self"][:1]})


# --- rollout and head averages -------------------------------------------------------------------


@pytest.mark.parametrize("add_residual", [True, False])
def test_rollout_of_identity_is_identity(add_residual):
    weights = np.broadcast_to(np.eye(T), (3, 2, T, T))
    rollout = attention_rollout(weights, add_residual=add_residual)
    assert rollout.shape == (3, T, T)
    np.testing.assert_allclose(rollout, np.broadcast_to(np.eye(T), (3, T, T)))


def test_rollout_rows_sum_to_one():
    rollout = attention_rollout(random_attention((4, 3, T, T), causal=True))
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0)


def test_rollout_of_one_layer_without_residual_is_the_head_average():
    weights = random_attention((1, 3, T, T), causal=True)
    np.testing.assert_allclose(attention_rollout(weights, add_residual=False)[0], weights[0].mean(axis=0))


def test_rollout_multiplies_layers_upward():
    weights = random_attention((2, 1, T, T), seed=1)
    a = 0.5 * weights[:, 0] + 0.5 * np.eye(T)
    rollout = attention_rollout(weights)
    np.testing.assert_allclose(rollout[1], a[1] @ a[0])


def test_rollout_rejects_cross_attention():
    with pytest.raises(ValueError, match="square"):
        attention_rollout(random_attention((2, 2, 3, 5)))


def test_average_heads():
    layer = np.stack([np.eye(T), first_token_head(T), previous_token_head(T)])
    np.testing.assert_allclose(average_heads(layer, [0, 1]), (np.eye(T) + first_token_head(T)) / 2)
    np.testing.assert_allclose(average_heads(layer, []), layer.mean(axis=0))
    with pytest.raises(ValueError):
        average_heads(layer, [3])
    with pytest.raises(ValueError):
        average_heads(layer[None], [0])


# --- figures ---------------------------------------------------------------------------------------


def heatmaps(fig: go.Figure) -> list:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def test_attention_grid_tiles_every_head_in_its_block():
    weights = random_attention((3, 4, T, T), causal=True)
    fig = attention_grid(weights, title="grid")
    assert len(heatmaps(fig)) == 1
    for layer, head in [(0, 0), (2, 1), (1, 3)]:
        np.testing.assert_allclose(grid_block(fig, layer, head, T, T), weights[layer, head], atol=5e-4)
    assert list(fig.layout.xaxis.ticktext) == ["H0", "H1", "H2", "H3"]
    assert list(fig.layout.yaxis.ticktext) == ["L0", "L1", "L2"]
    assert np.isnan(np.asarray(fig.data[0].z)[T, 0])  # the blank line between layer blocks
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0, 1)


def test_attention_grid_takes_the_first_64_tokens_and_says_so():
    weights = random_attention((1, 2, 80, 80))
    fig = attention_grid(weights, title="long")
    np.testing.assert_allclose(grid_block(fig, 0, 1, 64, 64), weights[0, 1, :64, :64], atol=5e-4)
    assert "64 of 80" in fig.layout.title.text


def test_attention_grid_rejects_one_head():
    with pytest.raises(ValueError):
        attention_grid(np.eye(T))


def line_traces(fig: go.Figure) -> list:
    return [t for t in fig.data if t.mode == "lines"]


def test_token_links_draws_every_weight_above_threshold():
    weights = causal_uniform(T)
    fig = token_links(weights, list("abcde"), list("abcde"))
    segments = [(y0, y1) for t in line_traces(fig) for y0, y1 in zip(t.y[0::3], t.y[1::3])]
    assert sorted(segments) == sorted(zip(*np.nonzero(weights)))
    assert all(t.x[0::3] == (0,) * len(t.x[0::3]) and set(t.x[1::3]) == {1} for t in line_traces(fig))


def test_token_links_heavier_lines_are_wider():
    weights = np.zeros((2, 2))
    weights[0] = [0.9, 0.1]
    weights[1] = [0.4, 0.6]
    fig = token_links(weights, ["a", "b"], ["a", "b"])
    width = {(t.y[0], t.y[1]): t.line.width for t in line_traces(fig)}
    assert width[(0, 0)] > width[(1, 1)] > width[(1, 0)] > width[(0, 1)]


def test_token_links_skips_tiny_weights():
    weights = np.array([[0.995, 0.005]])
    fig = token_links(weights, ["q"], ["a", "b"])
    ends = [y for t in line_traces(fig) for y in t.y[1::3]]
    assert ends == [0]


def test_token_links_selected_draws_only_that_query():
    weights = causal_uniform(T)
    fig = token_links(weights, list("abcde"), list("abcde"), selected=3)
    lines = line_traces(fig)
    assert lines and all(set(t.y[0::3]) == {3} for t in lines)
    assert sorted(y for t in lines for y in t.y[1::3]) == [0, 1, 2, 3]
    queries = next(t for t in fig.data if t.name == "query tokens")
    assert queries.marker.size[3] > queries.marker.size[0]


def test_token_links_rejects_mismatched_labels_and_bad_selection():
    with pytest.raises(ValueError):
        token_links(np.eye(3), list("ab"), list("abc"))
    with pytest.raises(ValueError):
        token_links(np.eye(3), list("abc"), list("abc"), selected=3)


def test_statistic_heatmap_shows_the_values():
    values = np.arange(6, dtype=float).reshape(2, 3)
    values[1, 2] = np.nan
    fig = statistic_heatmap(values, "entropy", STATISTICS["entropy"])
    np.testing.assert_array_equal(np.asarray(fig.data[0].z, dtype=float), values)
    assert fig.data[0].text[0][1] == "1.00" and fig.data[0].text[1][2] == ""
    assert fig.layout.yaxis.autorange == "reversed"
    assert "entropy" in fig.layout.title.text


def test_statistic_heatmap_rejects_non_2d():
    with pytest.raises(ValueError):
        statistic_heatmap(np.zeros((2, 3, 4)), "entropy")


def test_causal_heatmap_greys_the_future_with_one_shape_and_stays_small_at_256_tokens():
    from explorer.plots.attention import attention_heatmap

    n = 256
    weights = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    labels = [f"t{i}" for i in range(n)]
    fig = attention_heatmap(weights, labels, labels, causal=True)
    assert len(fig.layout.shapes) == 1 and len(fig.data) == 1
    assert np.isnan(fig.data[0].z[0, 1]) and fig.data[0].z[1, 0] == np.float32(0.5)
    assert len(fig.to_json()) < 1_000_000


def test_grid_of_a_12_by_12_head_model_at_256_tokens_stays_under_a_megabyte():
    from explorer.plots.attention import attention_grid

    weights = np.full((12, 12, 256, 256), 1 / 256)
    fig = attention_grid(weights)
    assert len(fig.to_json()) < 1_000_000
    assert "first 32 of 256" in fig.layout.title.text
