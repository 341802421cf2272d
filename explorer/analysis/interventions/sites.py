"""Where an intervention acts, and the hooks that act there.

Every layer of every stack offers four *sites*, named as the views name them:

=========  ================================================  ====================================
site       the tensor                                        shape (batch, positions, width)
=========  ================================================  ====================================
``resid``  the residual stream after the layer (its output)  ``(B, T, d_model)``
``attn``   the attention's contribution (output projection)  ``(B, T, d_model)``, one per kind
``head``   one head's output, before the output projection   ``(B, T, head_dim)``, one per kind
``mlp``    the MLP's contribution                            ``(B, T, d_model)``
=========  ================================================  ====================================

A stack is named by its token stream (``input``; T5: ``source`` for the encoder, ``target`` for the
decoder), an attention by its kind (``self``; T5: ``encoder_self``, ``decoder_self``, ``cross``), as in
a ``Trace``. The heads sit side by side in the output projection's input (GPT-2's ``c_proj``, Llama's
``o_proj``, BERT's ``attention.output.dense``, T5's ``o``), which is why a head is cut there.

Hooks live only inside ``intervene``: they are removed in a ``finally``, and while they exist they act
only on the thread that registered them, so another user's forward pass through the same shared model
is never touched.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel

SITES = ("resid", "attn", "head", "mlp")
SITE_NAMES = {
    "resid": "residual stream",
    "attn": "attention output",
    "head": "head output",
    "mlp": "MLP output",
}
# Output projections of attention, by the path inside one block (first match wins), per kind of block.
_ATTN_OUT = ("attn.c_proj", "self_attn.o_proj", "attention.output.dense", "attention.dense", "self_attn.out_proj")
_T5_ATTN = {"self": "layer.0.SelfAttention.o", "cross": "layer.1.EncDecAttention.o"}
_MLP = ("mlp", "output.dense", "layer.2.DenseReluDense", "layer.1.DenseReluDense")


@dataclass(frozen=True)
class LayerSites:
    block: torch.nn.Module  # its output is the residual stream after the layer
    attn_out: dict[str, torch.nn.Module]  # attention kind -> its output projection
    mlp: torch.nn.Module


@dataclass(frozen=True)
class Sites:
    """The blocks of a model by stream, and its head layout."""

    layers: dict[str, tuple[LayerSites, ...]]
    n_heads: int
    head_dim: int

    def kinds(self, stream: str) -> tuple[str, ...]:
        return tuple(self.layers[stream][0].attn_out)

    def stream_of(self, kind: str) -> str:
        return next(s for s, layers in self.layers.items() if kind in layers[0].attn_out)


def _sub(module: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def _block_lists(model: torch.nn.Module) -> dict[str, torch.nn.ModuleList]:
    """The ModuleLists of transformer blocks: their items have an attention output projection."""
    found = {}
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and len(module)
            and any(_sub(module[0], p) is not None for p in (*_ATTN_OUT, _T5_ATTN["self"]))
        ):
            found[name] = module
    return found


def _width(linear: torch.nn.Module) -> int:
    """Input width of a projection (``nn.Linear``, or GPT-2's ``Conv1D`` whose weight is (in, out))."""
    return linear.in_features if isinstance(linear, torch.nn.Linear) else linear.weight.shape[0]


def find_sites(lm: LoadedModel) -> Sites:
    """Locate every site of ``lm``, or say in a sentence that its layout is unknown."""
    adapter, config = lm.spec.adapter, lm.model.config
    unknown = InputError(
        f"Interventions need each layer's attention output and MLP, and '{lm.spec.key}' has a layout this "
        "view does not know: it works for GPT-2, Llama-style, BERT/RoBERTa and T5 models."
    )
    lists = _block_lists(lm.model)
    if adapter.is_encoder_decoder:
        named = {
            "source": next((m for n, m in lists.items() if n.split(".")[-2:-1] == ["encoder"]), None),
            "target": next((m for n, m in lists.items() if n.split(".")[-2:-1] == ["decoder"]), None),
        }
        kinds = {"source": {"encoder_self": _T5_ATTN["self"]}, "target": {"decoder_self": _T5_ATTN["self"],
                                                                         "cross": _T5_ATTN["cross"]}}  # fmt: skip
    else:
        blocks = next(iter(lists.values())) if len(lists) == 1 else None
        named = {"input": blocks}
        path = next((p for p in _ATTN_OUT if blocks is not None and _sub(blocks[0], p) is not None), "")
        kinds = {"input": {"self": path}}
    layers = {}
    for stream, blocks in named.items():
        if blocks is None:
            raise unknown
        rows = []
        for block in blocks:
            attn = {kind: _sub(block, path) for kind, path in kinds[stream].items()}
            mlp = next((m for m in (_sub(block, p) for p in _MLP) if m is not None), None)
            if mlp is None or any(m is None for m in attn.values()):
                raise unknown
            rows.append(LayerSites(block, attn, mlp))
        layers[stream] = tuple(rows)
    n_heads = next(getattr(config, k) for k in ("num_attention_heads", "n_head", "num_heads") if hasattr(config, k))
    width = _width(next(iter(layers[adapter.primary_stream][0].attn_out.values())))
    if width % n_heads:
        raise unknown
    return Sites(layers, int(n_heads), width // int(n_heads))


@dataclass(frozen=True)
class Edit:
    """Replace (or add to) one site's activation, for some batch rows and positions.

    ``value`` broadcasts to ``(len(positions), width)``: a number (0 for a zero-ablation), a ``(width,)``
    vector (a mean, a steering direction) or a ``(len(positions), width)`` slice of another run.
    """

    stream: str
    layer: int
    site: str  # resid | attn | head | mlp
    kind: str | None = None  # attention kind, for attn and head
    head: int | None = None
    rows: tuple[int, ...] | None = None  # batch rows (None: every row)
    positions: tuple[int, ...] | None = None  # positions (None: every position)
    value: torch.Tensor | float = 0.0
    add: bool = False  # steering adds ``value``; everything else replaces


@dataclass
class Capture:
    """Activations seen during a run: (stream, layer, site, kind) -> (batch, positions, width), detached."""

    wanted: set = field(default_factory=set)
    seen: dict = field(default_factory=dict)


def _apply(x: torch.Tensor, edits: list[Edit], head_dim: int) -> torch.Tensor:
    x = x.clone()
    for e in edits:
        rows = torch.arange(x.shape[0]) if e.rows is None else torch.tensor(e.rows)
        pos = torch.arange(x.shape[1]) if e.positions is None else torch.tensor(e.positions)
        cols = slice(None) if e.head is None else slice(e.head * head_dim, (e.head + 1) * head_dim)
        index = (rows[:, None].to(x.device), pos[None, :].to(x.device), cols)
        value = torch.as_tensor(e.value, dtype=x.dtype, device=x.device)
        x[index] = x[index] + value if e.add else value.expand_as(x[index])
    return x


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _replace_first(out, x):
    return (x, *out[1:]) if isinstance(out, tuple) else x


@contextmanager
def intervene(lm: LoadedModel, sites: Sites, edits: list[Edit] = (), capture: Capture | None = None):
    """Apply ``edits`` (and record ``capture.wanted``) in every forward pass of ``lm`` this thread makes
    inside the ``with``; nothing is left on the model afterwards, whatever happens."""
    owner = threading.get_ident()
    by_site = defaultdict(list)
    for e in edits:
        by_site[(e.stream, e.layer, e.site, e.kind if e.site in ("attn", "head") else None)].append(e)
    wanted = capture.wanted if capture else set()
    handles = []

    def post(key):
        def hook(module, args, out):
            if threading.get_ident() != owner:
                return None
            x = _first(out)
            if key in wanted:
                capture.seen[key] = x.detach().clone()
            return _replace_first(out, _apply(x, by_site[key], sites.head_dim)) if key in by_site else None

        return hook

    def pre(key):
        def hook(module, args):
            if threading.get_ident() != owner:
                return None
            if key in wanted:
                capture.seen[key] = args[0].detach().clone()
            return (_apply(args[0], by_site[key], sites.head_dim), *args[1:]) if key in by_site else None

        return hook

    try:
        for stream, layers in sites.layers.items():
            for i, layer in enumerate(layers):
                for key, module, kind in (
                    ((stream, i, "resid", None), layer.block, post),
                    ((stream, i, "mlp", None), layer.mlp, post),
                    *[((stream, i, "attn", k), m, post) for k, m in layer.attn_out.items()],
                    *[((stream, i, "head", k), m, pre) for k, m in layer.attn_out.items()],
                ):
                    if key in by_site or key in wanted:
                        register = module.register_forward_hook if kind is post else module.register_forward_pre_hook
                        handles.append(register(kind(key)))
        yield
    finally:
        for handle in handles:
            handle.remove()
