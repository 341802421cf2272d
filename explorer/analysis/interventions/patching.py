"""Activation patching: which (layer, position) carries the information that decides the answer?

Two texts of the same length: a *clean* one (“When Mary and John went to the store, John gave a drink
to” → Mary) and a *corrupted* one that changes the answer (the names swapped → John). The corrupted
text is run again and again, each time with one activation copied in from the clean run; where the
copy brings the clean answer back, that activation carried what mattered. The measure is the *logit
difference* between the clean answer and the corrupted one, reported as the share restored:

    restored = (patched − corrupted) / (clean − corrupted)      1 = fully restored, 0 = no effect

Each forward pass carries up to ``rows`` patches, one per batch row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis.interventions.ablation import Stopped, batch_rows
from explorer.analysis.interventions.prompt import Prompt, answer_id, chunks_by_layer, label, logits_at, prompt_of
from explorer.analysis.interventions.sites import SITE_NAMES, Capture, Edit, find_sites, intervene
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.memory import to_host

PATCH_SITES = ("resid", "attn", "mlp")
MIN_SPAN = 0.25  # logit-difference gap below which the share restored is noise divided by noise


@dataclass(frozen=True)
class Patching:
    """Restored share of the logit difference per (row, position): rows are layers, or heads of one layer."""

    site: str
    stream: str
    kind: str | None
    layer: int | None  # per-head patching: the layer
    answer: int
    alternative: int
    labels: tuple[str, str]
    clean_diff: float
    corrupted_diff: float
    restored: np.ndarray  # (layers or heads, positions)
    patched: np.ndarray  # the same cells' logit difference itself
    tokens: list[str]  # the corrupted text's token labels on the patched stream
    clean_tokens: list[str]
    passes: int

    @property
    def comparable(self) -> bool:
        """Whether the two texts' logit differences are far enough apart for a share restored to mean something."""
        return abs(self.clean_diff - self.corrupted_diff) >= MIN_SPAN


def _diff(logits: torch.Tensor, a: int, b: int) -> torch.Tensor:
    return logits[..., a] - logits[..., b]


def check_pair(lm: LoadedModel, clean: Prompt, corrupted: Prompt) -> None:
    for stream in clean.tokens:
        n, m = clean.length(stream), corrupted.length(stream)
        if n != m:
            raise InputError(
                f"The clean and corrupted texts must have the same number of tokens ({n} and {m} on the {stream} "
                "side), so that positions match: change words for words of the same token count."
            )
    if clean.point != corrupted.point:
        raise InputError("The answer must be read at the same position in both texts (put the mask in the same place).")


def patch_sweep(
    lm: LoadedModel, clean_text: str, corrupted_text: str, site: str = "resid", stream: str | None = None,
    answer: str | None = None, alternative: str | None = None, target: str | None = None,
    head_layer: int | None = None, kind: str | None = None, rows: int | None = None,
    progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None,
) -> Patching:  # fmt: skip
    """Patch each (layer, position) of ``site`` on one stack from the clean run into the corrupted one.

    With ``head_layer`` set (site ``head``), patch each (head, position) of that layer's attention of ``kind``.
    """
    sites = find_sites(lm)
    adapter = lm.spec.adapter
    per_head = head_layer is not None
    if per_head:
        kind = kind or adapter.attention_kinds[0]
        if kind not in adapter.attention_kinds:
            raise InputError(f"This model's attention kinds are {', '.join(adapter.attention_kinds)}, not '{kind}'.")
        stream, site = sites.stream_of(kind), "head"
    else:
        stream = stream or adapter.primary_stream
        if site not in PATCH_SITES:
            raise InputError(f"Patch the {', the '.join(SITE_NAMES[s] for s in PATCH_SITES)}, not '{site}'.")
        if stream not in sites.layers:
            raise InputError(f"This model's stacks are {', '.join(sites.layers)}, not '{stream}'.")
        kind = next(iter(sites.layers[stream][0].attn_out)) if site == "attn" else None
    layers = sites.layers[stream]
    if per_head and not 0 <= head_layer < len(layers):
        raise InputError(f"Layer {head_layer} does not exist: this stack has layers 0–{len(layers) - 1}.")
    clean, corrupted = prompt_of(lm, clean_text, target), prompt_of(lm, corrupted_text, target)
    check_pair(lm, clean, corrupted)
    n_pos = clean.length(stream)
    wanted = {(stream, head_layer, "head", kind)} if per_head else {(stream, i, site, kind) for i in range(len(layers))}
    capture = Capture(wanted=wanted)
    with torch.no_grad(), intervene(lm, sites, capture=capture):
        clean_logits = lm.model(**clean.batch(1)).logits[0, clean.point].float()
    corrupted_logits = logits_at(lm, sites, corrupted)[0]
    a = answer_id(lm, answer, clean_logits)
    b = answer_id(lm, alternative, corrupted_logits)
    if a == b:
        b = int(clean_logits.topk(2).indices[1]) if int(clean_logits.argmax()) == a else int(clean_logits.argmax())
    clean_diff, corrupted_diff = float(_diff(clean_logits, a, b)), float(_diff(corrupted_logits, a, b))
    if per_head:
        todo = [(h, p) for h in range(sites.n_heads) for p in range(n_pos)]
    else:
        todo = [(i, p) for i in range(len(layers)) for p in range(n_pos)]
    n_rows = sites.n_heads if per_head else len(layers)
    restored = np.full(len(todo), np.nan)
    span = clean_diff - corrupted_diff
    patched_diff = np.full(len(todo), np.nan)
    passes = 0

    def result():
        return Patching(
            site, stream, kind, head_layer, a, b, (label(lm, a), label(lm, b)), clean_diff, corrupted_diff,
            restored.reshape(n_rows, n_pos), patched_diff.reshape(n_rows, n_pos), [t.display for t in corrupted.tokens[stream]],
            [t.display for t in clean.tokens[stream]], passes,
        )  # fmt: skip

    for part in chunks_by_layer([0 if per_head else i for i, _ in todo], batch_rows(rows, n_pos)):
        if should_stop and should_stop():
            raise Stopped(result())
        chunk = todo[part]
        edits = []
        for r, (i, p) in enumerate(chunk):
            if per_head:
                source = capture.seen[(stream, head_layer, "head", kind)][0]
                cols = slice(i * sites.head_dim, (i + 1) * sites.head_dim)
                edits.append(Edit(stream, head_layer, "head", kind, i, (r,), (p,), source[p : p + 1, cols]))
            else:
                source = capture.seen[(stream, i, site, kind)][0]
                edits.append(Edit(stream, i, site, kind, None, (r,), (p,), source[p : p + 1]))
        fan_out = (stream, head_layer if per_head else chunk[0][0])
        patched = _diff(logits_at(lm, sites, corrupted, edits, rows=len(chunk), fan_out=fan_out), a, b)
        passes += 1
        patched_diff[part] = to_host(patched)
        restored[part] = to_host((patched - corrupted_diff) / span) if span else np.nan
        if progress:
            progress(min(1.0, part.stop / len(todo)))
    return result()
