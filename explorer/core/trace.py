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
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import numpy as np

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
                arrays[k] = _freeze(v)
        if self.logits is not None:
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
