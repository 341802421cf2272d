"""``Trace``: everything one instrumented forward pass saw, frozen, as CPU numpy arrays.

Shapes (batch dimension removed; L layers, H heads, T positions, d model width, V vocabulary):

=============================  ==========================  =========================================
field                          shape                       notes
=============================  ==========================  =========================================
``tokens[stream]``             T tokens                    ``Token``: id, piece, display, start, end
``attentions["self"]``         (L, H, T, T)                decoder (causal) or encoder self-attention
``attentions["encoder_self"]`` (L, H, Ts, Ts)              encoder-decoder: over the source stream
``attentions["decoder_self"]`` (L, H, Tt, Tt)              encoder-decoder: causal, over the target
``attentions["cross"]``        (L, H, Tt, Ts)              target queries attending to source keys
``hidden[stream]``             (L + 1, T, d)               index 0 is the embedding output
``logits``                     (T, V) or None              for encoder-decoders: per target position
=============================  ==========================  =========================================

Streams are ``input`` for decoders and encoders, ``source`` and ``target`` for encoder-decoders.

A *bounded* trace (a large model, see ``explorer.core.run.bounded``) has the same fields and shapes but keeps
less: ``logits`` is a ``TopLogits`` (the top-k logits per position and the log-sum-exp of the whole row, so
the probabilities of those k tokens are exact) and each attention kind and hidden stream is a ``KeptLayers``
(a few evenly spaced layers; another layer is computed again when a view asks for it). Both answer
``shape``, ``[i]`` and ``np.asarray`` like arrays; ``meta["bounded"]`` says what was kept.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import numpy as np

from explorer.core.errors import InputError
from explorer.core.family import FamilyAdapter, adapter

# Which token streams each attention kind relates: (query stream, key stream).
KIND_STREAMS = {
    "self": ("input", "input"),
    "encoder_self": ("source", "source"),
    "decoder_self": ("target", "target"),
    "cross": ("target", "source"),
}
KIND_NAMES = {
    "self": "self-attention",
    "encoder_self": "encoder self-attention",
    "decoder_self": "decoder masked self-attention",
    "cross": "cross-attention (decoder → encoder)",
}

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(text: str) -> str:
    """Make whitespace and control characters visible: ``"a b\\n"`` -> ``"a␣b↵"``, NUL -> ``"\\x00"``."""
    out = []
    for ch in text:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or ch.isspace():
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class Token:
    """One token as the views show it.

    ``piece`` is the tokenizer's own string (``Ġworld``, ``##ing``, ``▁the``); ``display`` is the
    text it stands for with whitespace made visible (``␣world``); ``start``/``end`` are character
    offsets into the text the stream came from (equal for special tokens).
    """

    id: int
    piece: str
    display: str
    start: int
    end: int
    special: bool = False


def _freeze(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


class LayerNotKept(InputError):
    """A view asked a bounded trace for every layer at once, which a model this large does not keep."""


class TopLogits:
    """The logits a bounded trace keeps: per position the ``k`` largest and the log-sum-exp of the whole row.

    ``probs()`` / ``log_probs()`` of the kept tokens are exact. Read like the (T, V) array it stands for
    (``row = logits[t]``, ``np.asarray(logits)``), every token outside the top k gets the same logit, chosen
    so the row's softmax gives the kept tokens their exact probabilities and spreads what is left evenly over
    the others: top-k lists, argmax and "the rest" stay exact; entropies and divergences over the whole
    vocabulary become estimates (``meta["bounded"]`` says so).
    """

    def __init__(self, ids: np.ndarray, values: np.ndarray, lse: np.ndarray, vocab: int):
        self.ids = _freeze(np.asarray(ids, dtype=np.int32))  # (T, k), largest first
        self.values = _freeze(np.asarray(values, dtype=np.float32))  # (T, k)
        self.lse = _freeze(np.asarray(lse, dtype=np.float32))  # (T,)
        self.vocab = int(vocab)
        rest = 1.0 - np.exp(self.values.astype(np.float64) - self.lse[:, None]).sum(axis=1)
        others = max(self.vocab - self.ids.shape[1], 1)
        fill = self.lse + np.log(np.clip(rest, 1e-30, None) / others)
        self.fill = _freeze(np.minimum(fill, self.values[:, -1]).astype(np.float32))  # (T,)

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ids.shape[0], self.vocab)

    ndim = 2
    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.values.nbytes + self.lse.nbytes + self.fill.nbytes

    def log_probs(self) -> np.ndarray:
        """(T, k) exact log-probabilities of the kept tokens (``ids``)."""
        return self.values - self.lse[:, None]

    def probs(self) -> np.ndarray:
        """(T, k) exact probabilities of the kept tokens (``ids``)."""
        return np.exp(self.log_probs())

    def _rows(self, positions) -> np.ndarray:
        rows = np.arange(len(self))[positions]
        dense = np.repeat(self.fill[rows][..., None], self.vocab, axis=-1)
        np.put_along_axis(dense, self.ids[rows], self.values[rows], axis=-1)
        return dense

    def __getitem__(self, index):
        if not isinstance(index, tuple):
            return self._rows(index)
        rows = self._rows(index[0])
        return rows[index[1:]] if rows.ndim == 1 else rows[(slice(None), *index[1:])]

    def __array__(self, dtype=None, copy=None):
        dense = self._rows(slice(None))
        return dense if dtype is None else dense.astype(dtype)


class KeptLayers:
    """One attention kind's or hidden stream's layers in a bounded trace: ``kept`` ones held, others fetched.

    ``layers[i]`` (and ``layers[i, h]``...) is layer ``i`` whether it was kept or not (a missing one runs the
    model again through ``refetch(name, i)``, ``explorer.core.run.Refetch``); ``shape`` is the full (L, ...) shape. Asking for every layer at once
    (``np.asarray``, ``layers[:, ...]``, ``layers.mean(...)``) raises ``LayerNotKept`` with a sentence.
    """

    def __init__(self, name: str, shape: tuple, kept: dict[int, np.ndarray], refetch=None):
        self.name = name
        self.shape = tuple(shape)
        self.kept = {int(i): _freeze(a) for i, a in kept.items()}
        self.refetch = refetch

    ndim = property(lambda self: len(self.shape))
    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.kept.values())

    def layer(self, index: int) -> np.ndarray:
        index = int(index)
        if not -self.shape[0] <= index < self.shape[0]:
            raise IndexError(f"layer {index} out of range for {self.shape[0]} layers")
        index %= self.shape[0]
        if index in self.kept:
            return self.kept[index]
        if self.refetch is None:
            raise LayerNotKept(f"Layer {index} is not kept for this large model; pick one of {self._kept_list()}.")
        return _freeze(self.refetch(self.name, index))  # read-only like every array of a trace

    def _kept_list(self) -> str:
        return ", ".join(str(i) for i in sorted(self.kept)) or "none"

    def _all(self) -> np.ndarray:
        if len(self.kept) == self.shape[0]:
            return np.stack([self.kept[i] for i in range(self.shape[0])])
        raise LayerNotKept(
            f"This view needs all {self.shape[0]} layers at once, and a model this large keeps only layers "
            f"{self._kept_list()} (EXPLORER_TRACE_MB bounds a trace); pick a view of one layer."
        )

    def __getitem__(self, index):
        if isinstance(index, tuple) and index and isinstance(index[0], (int, np.integer)):
            return self.layer(index[0])[index[1:]]
        if isinstance(index, (int, np.integer)):
            return self.layer(index)
        return self._all()[index]

    def __array__(self, dtype=None, copy=None):
        whole = self._all()
        return whole if dtype is None else whole.astype(dtype)

    def __getattr__(self, name):  # array methods (mean, max, ...) need every layer
        if name.startswith("_") or name in ("name", "shape", "kept", "refetch"):
            raise AttributeError(name)
        return getattr(self._all(), name)


@dataclass(frozen=True)
class Trace:
    """The frozen result of one instrumented run (see the module docstring for every shape)."""

    model_key: str
    family: str
    texts: dict[str, str]
    tokens: dict[str, tuple[Token, ...]]
    attentions: dict[str, np.ndarray]
    hidden: dict[str, np.ndarray]
    logits: np.ndarray | None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        for arrays in (self.attentions, self.hidden):
            for k, v in arrays.items():
                if isinstance(v, np.ndarray):
                    arrays[k] = _freeze(v)
        if isinstance(self.logits, np.ndarray):
            object.__setattr__(self, "logits", _freeze(self.logits))

    @property
    def adapter(self) -> FamilyAdapter:
        """What the model's family is and can do (streams, causal kinds, ...)."""
        return adapter(self.family)

    @property
    def kinds(self) -> list[str]:
        return list(self.attentions)

    @property
    def n_layers(self) -> int:
        return next(iter(self.attentions.values())).shape[0]

    @property
    def n_heads(self) -> int:
        return next(iter(self.attentions.values())).shape[1]

    @property
    def bounded(self) -> bool:
        """Whether this trace keeps only some layers and the top-k logits (a large model; see the docstring)."""
        return bool(self.meta.get("bounded"))

    def attn(self, layer: int, head: int, kind: str | None = None) -> np.ndarray:
        """Attention weights of one head: (queries, keys); rows sum to 1."""
        return self.attentions[kind or self.kinds[0]][layer, head]

    def streams_of(self, kind: str) -> tuple[str, str]:
        return KIND_STREAMS[kind]

    def labels(self, stream: str) -> list[str]:
        return [t.display for t in self.tokens[stream]]

    @property
    def nbytes(self) -> int:
        arrays = [*self.attentions.values(), *self.hidden.values()]
        if self.logits is not None:
            arrays.append(self.logits)
        return sum(a.nbytes for a in arrays) + 200 * sum(len(t) for t in self.tokens.values())
