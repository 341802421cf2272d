"""Switch parts of a model off and measure what its answer loses.

*Zero* ablation removes a part's output; *mean* ablation replaces it by its average over every position
of a reference text, so the layers above still see a typical input of the right size (a removed part
also removes its average, which zero-ablation confounds with what it computes for this text).

``head_importance`` ablates every head in turn, batched: one forward pass carries ``rows`` ablations, one
per batch row, so a 12 × 12-head model needs a few passes, not 144.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis.interventions.prompt import Prompt, answer_id, chunks_by_layer, label, logits_at, prompt_of
from explorer.analysis.interventions.sites import Capture, Edit, Sites, find_sites, intervene
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.memory import to_host
from explorer.core.run import run
from explorer.core.trace import Trace

MODES = {"zero": "zero", "mean": "mean over a reference text"}
PARTS = ("head", "attn", "mlp")  # one head; a layer's whole attention; a layer's MLP
MAX_BATCH = 64  # ablations per forward pass in the sweep


def batch_rows(rows: int | None, per_layer: int) -> int:
    """Interventions per forward pass: as asked, else one layer's worth (at least 16, at most ``MAX_BATCH``)."""
    return max(1, int(rows)) if rows else min(MAX_BATCH, max(per_layer, 16))


DEFAULT_REFERENCE = (
    "The sun rose over the quiet town. People walked to work, children ran to school, and the baker "
    "opened his shop. It was an ordinary day, and nobody expected anything to happen."
)


class Stopped(Exception):
    """The sweep was stopped (Stop pressed or the client left); ``partial`` holds what was measured."""

    def __init__(self, partial):
        super().__init__("stopped")
        self.partial = partial


@dataclass(frozen=True)
class Ablation:
    """One part to switch off: ``part`` is head/attn/mlp; ``kind`` the attention kind (head, attn)."""

    stream: str
    layer: int
    part: str
    kind: str | None = None
    head: int | None = None

    @property
    def name(self) -> str:
        if self.part == "head":
            return f"L{self.layer} H{self.head}" + (f" ({self.kind})" if self.kind not in (None, "self") else "")
        what = (
            "attention" + (f" ({self.kind})" if self.kind not in (None, "self") else "")
            if self.part == "attn"
            else "MLP"
        )
        return f"L{self.layer} {what}"


def check_ablation(sites: Sites, a: Ablation) -> Ablation:
    layers = sites.layers.get(a.stream)
    if layers is None:
        raise InputError(f"This model has no '{a.stream}' stack; it has {', '.join(sites.layers)}.")
    if a.part not in PARTS:
        raise InputError(f"Ablate a head, a layer's attention or a layer's MLP, not '{a.part}'.")
    if not 0 <= a.layer < len(layers):
        raise InputError(f"Layer {a.layer} does not exist: this stack has layers 0–{len(layers) - 1}.")
    if a.part in ("head", "attn") and a.kind not in layers[0].attn_out:
        raise InputError(f"The {a.stream} stack has no '{a.kind}' attention; it has {', '.join(layers[0].attn_out)}.")
    if a.part == "head" and not (a.head is not None and 0 <= a.head < sites.n_heads):
        raise InputError(f"Head {a.head} does not exist: each layer has heads 0–{sites.n_heads - 1}.")
    return a


def reference_means(lm: LoadedModel, sites: Sites, reference: str, target: str | None = None) -> dict:
    """Each site's mean output over every position of ``reference``: key -> (width,) tensor."""
    prompt = _reference_prompt(lm, reference, target)
    keys = {
        (stream, i, site, kind)
        for stream, layers in sites.layers.items()
        for i, layer in enumerate(layers)
        for site, kind in [("mlp", None), *[(s, k) for k in layer.attn_out for s in ("attn", "head")]]
    }
    capture = Capture(wanted=keys)
    with torch.no_grad(), intervene(lm, sites, capture=capture):
        lm.model(**prompt.batch(1))
    return {key: x[0].mean(dim=0) for key, x in capture.seen.items()}


def _reference_prompt(lm: LoadedModel, reference: str, target: str | None) -> Prompt:
    if lm.spec.adapter.masked_lm and lm.tokenizer.mask_token and lm.tokenizer.mask_token not in reference:
        reference = f"{reference} {lm.tokenizer.mask_token}"  # the prompt needs an answer position; its value is unused
    return prompt_of(lm, reference, target if lm.spec.adapter.is_encoder_decoder else None)


def edits_of(
    ablations: list[Ablation], mode: str, means: dict | None, sites: Sites, row: int | None = None
) -> list[Edit]:
    """The edits that switch ``ablations`` off (in batch row ``row``, or every row)."""
    if mode not in MODES:
        raise InputError(f"Ablate by {' or '.join(MODES)}, not '{mode}'.")
    edits = []
    for a in ablations:
        site = a.part
        key = (a.stream, a.layer, site, a.kind if site != "mlp" else None)
        value = 0.0
        if mode == "mean":
            value = means[key]
            if site == "head":
                value = value[a.head * sites.head_dim : (a.head + 1) * sites.head_dim]
        rows = None if row is None else (row,)
        edits.append(Edit(a.stream, a.layer, site, key[3], a.head, rows=rows, value=value))
    return edits


@dataclass(frozen=True)
class Distribution:
    ids: list[int]
    labels: list[str]
    probs: list[float]


@dataclass(frozen=True)
class AblationResult:
    prompt: Prompt
    answer: int
    answer_label: str
    clean: Distribution
    ablated: Distribution
    clean_logprob: float
    ablated_logprob: float
    kl: float  # KL(clean ‖ ablated) at the answer position, nats
    clean_trace: Trace
    ablated_trace: Trace
    names: list[str]
    target_logprobs: tuple[float, float] | None = None  # encoder-decoders: the whole target, clean and ablated

    @property
    def change(self) -> float:
        return self.ablated_logprob - self.clean_logprob


def _top(lm: LoadedModel, logprobs: torch.Tensor, k: int) -> Distribution:
    top = logprobs.exp().topk(k)
    ids = top.indices.tolist()
    return Distribution(ids, [label(lm, i) for i in ids], top.values.tolist())


def kl_divergence(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(clean ‖ other) over the last axis, from log-probabilities (nats)."""
    return (clean.exp() * (clean - other)).sum(-1).clamp_min(0.0)


def ablate(
    lm: LoadedModel, text: str, ablations: list[Ablation], mode: str = "zero", answer: str | None = None,
    reference: str = DEFAULT_REFERENCE, target: str | None = None, top_k: int = 10,
) -> AblationResult:  # fmt: skip
    """Run ``text`` clean and with ``ablations`` switched off: the answer's distribution, log-probability
    and KL divergence, and a full trace of each run (attention, hidden states) for the views."""
    if not ablations:
        raise InputError("Pick at least one head, attention layer or MLP to switch off.")
    sites = find_sites(lm)
    ablations = [check_ablation(sites, a) for a in ablations]
    prompt = prompt_of(lm, text, target)
    means = reference_means(lm, sites, reference, prompt.target) if mode == "mean" else None
    edits = edits_of(ablations, mode, means, sites)
    clean_trace = run(lm, text, target=prompt.target)
    with intervene(lm, sites, edits):
        ablated_trace = run(lm, text, target=prompt.target)
    stream = lm.spec.adapter.logits_stream
    if clean_trace.logits is None or len(clean_trace.tokens[stream]) <= prompt.point:
        raise InputError("This model makes no token predictions (it has no language-model head).")
    clean = torch.log_softmax(torch.from_numpy(np.array(clean_trace.logits[prompt.point])), -1)
    ablated = torch.log_softmax(torch.from_numpy(np.array(ablated_trace.logits[prompt.point])), -1)
    chosen = answer_id(lm, answer, clean)
    k = min(top_k, clean.numel())
    whole = None
    if lm.spec.adapter.is_encoder_decoder and len(clean_trace.tokens[stream]) > 2:  # more than start + one token
        whole = (target_logprob(clean_trace), target_logprob(ablated_trace))
    return AblationResult(
        prompt, chosen, label(lm, chosen), _top(lm, clean, k), _top(lm, ablated, k),
        float(clean[chosen]), float(ablated[chosen]), float(kl_divergence(clean, ablated)),
        clean_trace, ablated_trace, [a.name for a in ablations], whole,
    )  # fmt: skip


def target_logprob(trace: Trace) -> float:
    """Log-probability of an encoder-decoder's whole target stream (each token given the ones before it)."""
    stream = trace.adapter.logits_stream
    ids = [t.id for t in trace.tokens[stream]]
    logp = torch.log_softmax(torch.from_numpy(np.array(trace.logits[:-1])), -1)
    return float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())


@dataclass(frozen=True)
class Importance:
    """Per (layer, head) of one attention kind: what ablating that head alone does to the answer."""

    kind: str
    stream: str
    answer: int
    answer_label: str
    clean_logprob: float
    change: np.ndarray  # (layers, heads): ablated − clean log-probability of the answer
    kl: np.ndarray  # (layers, heads): KL(clean ‖ ablated), nats
    passes: int  # forward passes the sweep took


def head_importance(
    lm: LoadedModel, text: str, kind: str | None = None, mode: str = "zero", answer: str | None = None,
    reference: str = DEFAULT_REFERENCE, target: str | None = None, rows: int | None = None,
    progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None,
) -> Importance:  # fmt: skip
    """Ablate each head of one attention kind in turn, ``rows`` ablations per forward pass (default: a layer's
    heads, at least 16); each pass runs the layers below its first ablation once (``logits_at``'s fan-out)."""
    sites = find_sites(lm)
    adapter = lm.spec.adapter
    kind = kind or adapter.attention_kinds[0]
    if kind not in adapter.attention_kinds:
        raise InputError(f"This model's attention kinds are {', '.join(adapter.attention_kinds)}, not '{kind}'.")
    stream = sites.stream_of(kind)
    prompt = prompt_of(lm, text, target)
    means = reference_means(lm, sites, reference, prompt.target) if mode == "mean" else None
    clean = torch.log_softmax(logits_at(lm, sites, prompt)[0], -1)
    chosen = answer_id(lm, answer, clean)
    n_layers, n_heads = len(sites.layers[stream]), sites.n_heads
    todo = [Ablation(stream, layer, "head", kind, head) for layer in range(n_layers) for head in range(n_heads)]
    rows = batch_rows(rows, n_heads)
    change = np.full(len(todo), np.nan)
    kl = np.full(len(todo), np.nan)
    passes = 0
    for part in chunks_by_layer([a.layer for a in todo], rows):
        if should_stop and should_stop():
            raise Stopped(Importance(kind, stream, chosen, label(lm, chosen), float(clean[chosen]),
                                     change.reshape(n_layers, n_heads), kl.reshape(n_layers, n_heads), passes))  # fmt: skip
        chunk = todo[part]
        edits = [e for r, a in enumerate(chunk) for e in edits_of([a], mode, means, sites, row=r)]
        logits = logits_at(lm, sites, prompt, edits, rows=len(chunk), fan_out=(stream, chunk[0].layer))
        logp = torch.log_softmax(logits, -1)
        passes += 1
        change[part] = to_host(logp[:, chosen] - clean[chosen])
        kl[part] = to_host(kl_divergence(clean[None], logp))
        if progress:
            progress(min(1.0, part.stop / len(todo)))
    return Importance(
        kind, stream, chosen, label(lm, chosen), float(clean[chosen]),
        change.reshape(n_layers, n_heads), kl.reshape(n_layers, n_heads), passes,
    )  # fmt: skip


KIND_NAMES = {"self": "", "encoder_self": "encoder ", "decoder_self": "decoder ", "cross": "cross "}


def ablation_key(a: Ablation) -> str:
    """A stable text for a dropdown's value: ``input|2|head|self|3``."""
    return "|".join(str(x) for x in (a.stream, a.layer, a.part, a.kind or "", "" if a.head is None else a.head))


def parse_ablation(key: str) -> Ablation:
    try:
        stream, layer, part, kind, head = str(key).split("|")
        return Ablation(stream, int(layer), part, kind or None, int(head) if head else None)
    except ValueError:
        raise InputError(f"“{key}” names no head, attention layer or MLP: pick one from the list.") from None


def ablation_options(lm: LoadedModel) -> list[tuple[str, str]]:
    """(label, key) of every part of ``lm`` that can be switched off: each head, each attention, each MLP."""
    sites = find_sites(lm)
    options = []
    for stream, layers in sites.layers.items():
        side = {"source": "encoder ", "target": "decoder "}.get(stream, "")
        for i, layer in enumerate(layers):
            for kind in layer.attn_out:
                prefix = KIND_NAMES.get(kind, f"{kind} ")
                options += [
                    (f"{prefix}L{i} H{h}", ablation_key(Ablation(stream, i, "head", kind, h)))
                    for h in range(sites.n_heads)
                ]
                options.append((f"{prefix}L{i} attention (all heads)", ablation_key(Ablation(stream, i, "attn", kind))))
            options.append((f"{side}L{i} MLP", ablation_key(Ablation(stream, i, "mlp"))))
    return options
