"""What attention heads do, in numbers: per-head statistics, head averages and attention rollout.

Every function takes one attention kind's weights as a plain numpy array (``trace.attentions[kind]``),
shape (L, H, Q, K): L layers, H heads, Q query positions, K key positions; rows sum to 1.
"""

from __future__ import annotations

import numpy as np

# One line per statistic, shown beside the table and the layer × head heatmap.
STATISTICS = {
    "entropy": "Entropy of each row, in bits: low = focused on one token, high = spread out",
    "distance": "Mean distance, in positions, from each query to the keys it attends to: local vs long-range heads",
    "previous_token": "Weight on the token just before the query: high = a previous-token head",
    "first_token": "Weight on the first token: high = the head parks attention there (an 'attention sink')",
    "self": "Weight of each token on itself (the diagonal)",
}
STAT_COLUMNS = ["layer", "head", *STATISTICS]


def _check_weights(weights: np.ndarray, what: str = "attention weights") -> np.ndarray:
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 4 or 0 in weights.shape:
        raise ValueError(
            f"{what} must have shape (layers, heads, queries, keys) with no empty axis, got {weights.shape}"
        )
    return weights


def head_statistics(weights: np.ndarray, causal: bool, same_stream: bool = True) -> dict[str, np.ndarray]:
    """Summarise each head of one attention kind (L, H, Q, K) as (L, H) arrays, keyed as ``STATISTICS``.

    Every statistic is a mean over query rows. Masked (future) keys of a causal head carry weight 0,
    so they drop out of the sums by themselves; ``causal`` only asserts the attention is square.
    Position-based statistics (``distance``, ``previous_token``, ``self``) compare query and key
    positions, which means nothing when queries and keys come from different streams (cross
    attention): with ``same_stream=False`` they are NaN.
    """
    w = _check_weights(weights)  # (L, H, Q, K)
    n_layers, n_heads, n_q, n_k = w.shape
    if (causal or same_stream) and n_q != n_k:
        raise ValueError(
            f"{'causal' if causal else 'same-stream'} attention must be square (queries == keys), got {w.shape}; "
            "pass causal=False, same_stream=False for cross attention"
        )
    if causal and not same_stream:
        raise ValueError("causal attention relates one stream to itself: same_stream cannot be False")

    plogp = np.where(w > 0, w * np.log2(np.where(w > 0, w, 1.0)), 0.0)  # 0 log 0 = 0
    entropy = -plogp.sum(axis=-1).mean(axis=-1)  # (L, H)
    first_token = w[..., 0].mean(axis=-1)

    nan = np.full((n_layers, n_heads), np.nan)
    if not same_stream:
        return {"entropy": entropy, "distance": nan, "previous_token": nan, "first_token": first_token, "self": nan}

    q = np.arange(n_q)
    gap = np.abs(q[:, None] - q[None, :])  # (T, T): |q - k|
    distance = (w * gap).sum(axis=-1).mean(axis=-1)
    previous_token = w[..., q[1:], q[1:] - 1].mean(axis=-1) if n_q > 1 else nan
    self_weight = w[..., q, q].mean(axis=-1)
    return {
        "entropy": entropy,
        "distance": distance,
        "previous_token": previous_token,
        "first_token": first_token,
        "self": self_weight,
    }


def head_statistics_table(stats: dict[str, np.ndarray]) -> list[list]:
    """One row per head, ``[layer, head, *statistics]`` in ``STAT_COLUMNS`` order, rounded to 3 decimals.

    NaN (a statistic that does not apply) becomes None, which a table shows as an empty cell.
    """
    missing = [name for name in STATISTICS if name not in stats]
    if missing:
        raise ValueError(f"statistics {missing} are missing; expected all of {list(STATISTICS)}")
    arrays = [np.asarray(stats[name], dtype=float) for name in STATISTICS]
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        raise ValueError(
            f"every statistic must be a (layers, heads) array of one shape, got {[a.shape for a in arrays]}"
        )
    rows = []
    for layer in range(shape[0]):
        for head in range(shape[1]):
            values = [float(a[layer, head]) for a in arrays]
            rows.append([layer, head, *(round(v, 3) if np.isfinite(v) else None for v in values)])
    return rows


def attention_rollout(weights: np.ndarray, add_residual: bool = True) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020): how much each input token flows into each position.

    Heads are averaged per layer; with ``add_residual`` the residual stream is modelled as
    A = 0.5 W + 0.5 I; rows are renormalised; then the layers are multiplied from layer 0 upward:
    R_0 = A_0, R_l = A_l @ R_(l-1). Returns (L, T, T) where entry l is the rollout up to and
    including layer l; every row sums to 1.
    """
    w = _check_weights(weights)  # (L, H, T, T)
    n_layers, _, n_q, n_k = w.shape
    if n_q != n_k:
        raise ValueError(
            f"attention rollout needs square self-attention (queries == keys), got {w.shape}; "
            "cross attention relates two streams and cannot be rolled out"
        )
    a = w.mean(axis=1)  # (L, T, T)
    if add_residual:
        a = 0.5 * a + 0.5 * np.eye(n_q)
    row_sums = a.sum(axis=-1, keepdims=True)
    a = a / np.where(row_sums > 0, row_sums, 1.0)

    rollout = np.empty_like(a)
    rollout[0] = a[0]
    for layer in range(1, n_layers):
        rollout[layer] = a[layer] @ rollout[layer - 1]  # (T, T) @ (T, T)
    return rollout


def average_heads(weights_lh: np.ndarray, heads: list[int]) -> np.ndarray:
    """Average one layer's heads (H, Q, K) -> (Q, K) over the selected ``heads`` (all heads if empty)."""
    w = np.asarray(weights_lh, dtype=float)
    if w.ndim != 3 or 0 in w.shape:
        raise ValueError(f"one layer's weights must have shape (heads, queries, keys), got {w.shape}")
    n_heads = w.shape[0]
    bad = [h for h in heads if not 0 <= h < n_heads]
    if bad:
        raise ValueError(f"heads {bad} out of range: this layer has heads 0..{n_heads - 1}")
    chosen = sorted(set(heads)) or list(range(n_heads))
    return w[chosen].mean(axis=0)
