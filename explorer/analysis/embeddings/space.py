"""Embedding space: the input embedding table, token subsets, neighbours and analogies, contextual
states through the layers, and how each model family encodes position.

Vectors are compared by **cosine similarity** (the angle between them), which ignores length.
Shapes: V vocabulary rows, d model width, L layers, T positions.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from explorer.analysis.embeddings.projections import fingerprint, pca
from explorer.core.cache import PerObject
from explorer.core.errors import InputError
from explorer.core.memory import to_host
from explorer.core.tokens import display_piece, is_byte_level

MAX_LIST_WORDS = 2000
MAX_WORD_CHARS = 100
MAX_CONTEXT_TOKENS = 64  # a text's tokens shown: marked on the token map, followed through the layers


# ----------------------------------------------------------------------------------------------------------
# The input embedding table


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


@dataclass(frozen=True)
class EmbeddingTable:
    """A model's input embedding matrix (V, d) as a read-only array, with a display label per row."""

    matrix: np.ndarray
    labels: tuple[str, ...]
    special: frozenset[int]
    matrix_id: str  # fingerprint of the matrix, the projection cache key

    @cached_property
    def unit(self) -> np.ndarray:
        return unit_rows(self.matrix)

    def __len__(self) -> int:
        return len(self.labels)


def input_embeddings(lm) -> np.ndarray:
    """The model's input embedding matrix as a read-only numpy view (no copy on CPU), rows cut to the tokenizer."""
    weight = lm.model.get_input_embeddings().weight.detach()
    rows = min(weight.shape[0], len(lm.tokenizer))
    matrix = weight[:rows].float().cpu().numpy().view()
    matrix.flags.writeable = False
    return matrix


def _build_table(lm) -> EmbeddingTable:
    matrix = input_embeddings(lm)
    special = frozenset(int(i) for i in lm.tokenizer.all_special_ids)
    byte_level = is_byte_level(lm.tokenizer)
    pieces = lm.tokenizer.convert_ids_to_tokens(list(range(len(matrix))))
    labels = tuple(display_piece(str(p), byte_level, i in special) for i, p in enumerate(pieces))
    return EmbeddingTable(matrix, labels, special, fingerprint(matrix))


# The table of a loaded model, built once per model (labels and fingerprint included) and kept as long as the
# model is (the pool decides), so it never holds on to a model the pool has dropped.
embedding_table: PerObject[EmbeddingTable] = PerObject(_build_table)


# ----------------------------------------------------------------------------------------------------------
# Which tokens to show


def _single_token(tokenizer, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else None


def token_id_of(tokenizer, word: str) -> int:
    """The one token a user means by ``word``: the word as it appears mid-sentence (``Ġking``, ``▁king``),
    else a vocabulary piece spelt exactly so (``##ing``), else the bare word; otherwise an ``InputError``."""
    word = (word or "").strip()
    if not word:
        raise InputError("Type a token or a word.")
    if len(word) > MAX_WORD_CHARS:
        raise InputError(f"A token has at most {MAX_WORD_CHARS} characters.")
    mid_sentence = _single_token(tokenizer, " " + word)
    if mid_sentence is not None:
        return mid_sentence
    exact = tokenizer.convert_tokens_to_ids(word)
    if isinstance(exact, int) and exact != tokenizer.unk_token_id and exact < len(tokenizer):
        return exact
    bare = _single_token(tokenizer, word)
    if bare is not None:
        return bare
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(" " + word, add_special_tokens=False)["input_ids"])
    raise InputError(f"“{word}” is not one token in this vocabulary: it splits into {' + '.join(pieces)}.")


def listed_ids(tokenizer, text: str) -> list[int]:
    """Token ids for a comma- or space-separated list of words; a word of several tokens gives all its pieces."""
    words = [w for w in re.split(r"[,\s]+", text or "") if w]
    if not words:
        raise InputError("Type a few words, separated by commas or spaces.")
    if len(words) > MAX_LIST_WORDS:
        raise InputError(f"List at most {MAX_LIST_WORDS:,} words.")
    ids: list[int] = []
    for word in words:
        try:
            ids.append(token_id_of(tokenizer, word))
        except InputError:
            ids.extend(int(i) for i in tokenizer(" " + word[:MAX_WORD_CHARS], add_special_tokens=False)["input_ids"])
    return list(dict.fromkeys(ids))


def frequent_ids(tokenizer, texts: list[str], n: int, vocab_size: int, special=frozenset()) -> np.ndarray:
    """The ``n`` tokens most frequent in ``texts`` (ties by id), then, if those run out, the lowest ids.

    Special tokens are left out. (Ids alone are a poor guide to frequency: WordPiece sorts its
    vocabulary alphabetically, and BPE ids follow merge order, not counts.)
    """
    counts: Counter[int] = Counter()
    for text in texts:
        for line in text.splitlines():
            counts.update(tokenizer(line, add_special_tokens=False)["input_ids"])
    ranked = sorted((i for i in counts if i < vocab_size and i not in special), key=lambda i: (-counts[i], i))
    if len(ranked) < n:
        seen = set(ranked)
        ranked += [i for i in range(vocab_size) if i not in seen and i not in special][: n - len(ranked)]
    return np.array(ranked[:n], dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------
# Neighbours and arithmetic


def nearest(unit: np.ndarray, vector: np.ndarray, k: int, exclude=()) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``unit`` (unit-length rows) most cosine-similar to ``vector``: (ids, similarities)."""
    v = np.asarray(vector, np.float32)
    norm = np.linalg.norm(v)
    sims = unit @ (v / norm if norm > 0 else v)
    if len(exclude):
        sims = sims.copy()
        sims[list(exclude)] = -np.inf
    k = int(min(k, len(sims)))
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.argsort(-sims[top], kind="stable")]
    return top, sims[top]


def neighbours(unit: np.ndarray, token_id: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest tokens to one token, itself included (first, similarity 1)."""
    return nearest(unit, unit[token_id], k)


def analogy(unit: np.ndarray, a: int, b: int, c: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens nearest to a − b + c (king − man + woman ≈ queen), on unit vectors, leaving out a, b and c."""
    return nearest(unit, unit[a] - unit[b] + unit[c], k, exclude=(a, b, c))


def place_by_neighbours(unit_subset: np.ndarray, coords: np.ndarray, rows: np.ndarray, k: int = 5) -> np.ndarray:
    """Coordinates for rows outside a projected subset: the mean position of their k most similar subset rows."""
    sims = unit_rows(rows) @ unit_subset.T  # (m, n)
    k = int(min(k, unit_subset.shape[0]))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return coords[top].mean(axis=1)


# ----------------------------------------------------------------------------------------------------------
# Contextual embeddings: the hidden states of a text's tokens through the layers


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) cosine similarities between the rows of a (n, d) and b (m, d)."""
    return unit_rows(a) @ unit_rows(b).T


def layer_similarities(hidden: np.ndarray) -> np.ndarray:
    """(L + 1, T, T): token × token cosine similarity at every layer of one stream's states (L + 1, T, d)."""
    unit = unit_rows(hidden)
    return np.einsum("ltd,lsd->lts", unit, unit)


def shared_trajectories(hiddens: list[np.ndarray], dims: int = 2, unit: bool = True):
    """Project the states of one or more texts, all layers, onto the same PCA axes.

    ``hiddens``: arrays (L + 1, T_i, d). Returns ([(L + 1, T_i, dims)], explained variance fractions).
    With ``unit`` each state is first scaled to length 1 (the picture then shows direction, as cosine
    similarity does; later layers of many models have much larger norms).
    """
    flat = np.concatenate([h.reshape(-1, h.shape[-1]) for h in hiddens])
    flat = unit_rows(flat) if unit else np.asarray(flat, np.float32)
    if len(flat) < dims + 1:
        raise InputError("Too few token states to project; type a longer text.")
    coords, explained, _, _ = pca(flat, dims)
    out, start = [], 0
    for h in hiddens:
        size = h.shape[0] * h.shape[1]
        out.append(coords[start : start + size].reshape(h.shape[0], h.shape[1], dims))
        start += size
    return out, explained


def word_positions(tokens, text: str, word: str) -> list[int]:
    """Positions of the tokens that cover the first whole-word occurrence of ``word`` (any case) in ``text``."""
    word = (word or "").strip()
    if not word:
        raise InputError("Type the word to follow.")
    match = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE)
    if match is None:
        raise InputError(f"“{word}” does not occur in “{text[:60]}”.")
    s, e = match.span()
    found = [i for i, t in enumerate(tokens) if not t.special and t.start < e and t.end > s]
    if not found:
        raise InputError(f"No token covers “{word}” (was the text cut to the model's length?).")
    return found


def word_drift(hidden_a: np.ndarray, positions_a: list[int], hidden_b: np.ndarray, positions_b: list[int]):
    """Per layer: cosine similarity of one word's state in text A and in text B (mean over its tokens),
    and, as a baseline, the mean similarity of all pairs of tokens across the two texts: (L + 1,) each."""
    word_a = hidden_a[:, positions_a].mean(axis=1)
    word_b = hidden_b[:, positions_b].mean(axis=1)
    same_word = np.sum(unit_rows(word_a) * unit_rows(word_b), axis=-1)
    baseline = np.array([cosine_matrix(a, b).mean() for a, b in zip(hidden_a, hidden_b)])
    return same_word, baseline


# ----------------------------------------------------------------------------------------------------------
# Position


@dataclass(frozen=True)
class PositionEncoding:
    """How a model tells positions apart.

    kind ``learned``: ``table`` (P, d), one trained vector per position (``offset`` rows skipped:
    RoBERTa-style models count positions from padding_idx + 1). ``relative_bias``: ``table``
    (buckets, heads) of T5's learned per-bucket biases. ``rotary``: ``theta`` and the rotated ``dims``
    of each head. ``none``: nothing found.
    """

    kind: str
    table: np.ndarray | None = None
    offset: int = 0
    theta: float = 0.0
    dims: int = 0
    head_dim: int = 0
    num_buckets: int = 0
    max_distance: int = 0
    where: str = ""


def _rope_settings(config) -> tuple[float, int, int] | None:
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    theta = theta or getattr(config, "rope_theta", None)
    if not theta:
        return None
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    factor = (params.get("partial_rotary_factor") if isinstance(params, dict) else None) or getattr(
        config, "partial_rotary_factor", None
    )
    factor = factor or getattr(config, "rotary_pct", None) or 1.0
    rotated = int(head_dim * factor) // 2 * 2
    return float(theta), int(head_dim), rotated


def position_encoding(model) -> PositionEncoding:
    """Find a model's position encoding by module name (``wpe``, ``position_embeddings``,
    ``relative_attention_bias``) or, for rotary models, from the config."""
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Embedding) and leaf in ("wpe", "position_embeddings"):
            offset = module.padding_idx + 1 if module.padding_idx is not None else 0
            table = module.weight.detach().float().cpu().numpy()[offset:]
            return PositionEncoding("learned", table, offset=offset, where=name)
        if isinstance(module, torch.nn.Embedding) and leaf == "relative_attention_bias":
            config = model.config
            return PositionEncoding(
                "relative_bias", module.weight.detach().float().cpu().numpy(), where=name,
                num_buckets=config.relative_attention_num_buckets, max_distance=config.relative_attention_max_distance,
            )  # fmt: skip
    rope = _rope_settings(model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config)
    if rope is not None:
        theta, head_dim, rotated = rope
        return PositionEncoding("rotary", theta=theta, dims=rotated, head_dim=head_dim, where="config")
    return PositionEncoding("none")


def sinusoidal(n_positions: int, d: int) -> np.ndarray:
    """The original Transformer's encoding (P, d): PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)."""
    positions = np.arange(n_positions)[:, None]
    rates = 1.0 / 10000 ** (np.arange(0, d, 2) / d)
    pe = np.zeros((n_positions, d), np.float32)
    pe[:, 0::2] = np.sin(positions * rates)
    pe[:, 1::2] = np.cos(positions * rates)[:, : d // 2]
    return pe


def relative_buckets(num_buckets: int, max_distance: int, span: int, bidirectional: bool = True):
    """(distances key − query in [−span, span], T5's bucket of each), from transformers' own bucketing."""
    from transformers.models.t5.modeling_t5 import T5Attention

    distances = torch.arange(-span, span + 1)
    buckets = T5Attention._relative_position_bucket(distances, bidirectional, num_buckets, max_distance)
    return to_host(distances), to_host(buckets)


def rope_frequencies(theta: float, rotated_dims: int) -> np.ndarray:
    """Rotation speed of each pair of dimensions: θ_i = theta^(−2i/dims), i = 0 .. dims/2 − 1 (radians per position)."""
    return theta ** (-np.arange(0, rotated_dims, 2) / rotated_dims)


def rope_relative_score(freqs: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """q · R(m) k / (q · k) for q = k = all ones, as a function of distance m: mean_i cos(m θ_i).

    It depends only on the distance, not on where the two tokens are: the point of rotary positions.
    """
    return np.cos(np.outer(distances, freqs)).mean(axis=1)


@dataclass(frozen=True)
class PositionView:
    """What the Position view shows of one model at ``n`` positions, beside the original sinusoidal encoding.

    Always: ``encoding`` (what the model uses), ``width`` d, ``sinusoid`` (n, d) at that width. By kind:
    ``learned``: ``similarity`` (P, P), cosine of the model's position vectors (P = min(n, table rows)), and
    ``sinusoid_similarity`` (P, P) for comparison. ``relative_bias``: ``distances`` key − query, their
    ``buckets`` and ``bias`` (heads, distances). ``rotary``: ``angles`` (n, dims/2) each pair turns by at
    each position, and ``scores`` (n,), the relative score of a vector with itself at each distance.
    """

    encoding: PositionEncoding
    n: int
    width: int
    sinusoid: np.ndarray
    similarity: np.ndarray | None = None
    sinusoid_similarity: np.ndarray | None = None
    distances: np.ndarray | None = None
    buckets: np.ndarray | None = None
    bias: np.ndarray | None = None
    angles: np.ndarray | None = None
    scores: np.ndarray | None = None


def position_view(model, n_positions) -> PositionView:
    """The Position view of a model for ``n_positions`` (clamped to 8..512)."""
    enc = position_encoding(model)
    n = int(min(max(8, n_positions or 8), 512))
    width = model.get_input_embeddings().weight.shape[1]
    sinusoid = sinusoidal(n, width)
    view = PositionView(enc, n, width, sinusoid)
    if enc.kind == "learned":
        table = enc.table[:n]
        sims = cosine_matrix(sinusoid[: len(table)], sinusoid[: len(table)])
        return dataclasses.replace(view, similarity=cosine_matrix(table, table), sinusoid_similarity=sims)
    if enc.kind == "relative_bias":
        distances, buckets = relative_buckets(enc.num_buckets, enc.max_distance, min(n, enc.max_distance + 16))
        return dataclasses.replace(view, distances=distances, buckets=buckets, bias=enc.table[buckets].T)
    if enc.kind == "rotary":
        freqs = rope_frequencies(enc.theta, enc.dims)
        positions = np.arange(n)
        scores = rope_relative_score(freqs, positions)
        return dataclasses.replace(view, distances=positions, angles=np.outer(positions, freqs), scores=scores)
    return view
