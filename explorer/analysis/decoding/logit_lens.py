"""The logit lens: what each layer of a decoder would predict if it were the last."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis.decoding.generate import check_count
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.tokens import token_label
from explorer.core.trace import Trace

# Where the final normalisation sits, for the architectures we know (attribute path, stream).
FINAL_NORMS = {
    "transformer.ln_f": "input",  # GPT-2, GPT-J, ...
    "model.norm": "input",  # Llama, Mistral, Qwen, SmolLM, ...
    "gpt_neox.final_layer_norm": "input",  # Pythia
    "model.decoder.final_layer_norm": "input",  # OPT
    "decoder.final_layer_norm": "target",  # T5's decoder
}


@dataclass(frozen=True)
class LogitLens:
    """What each layer would predict if it were the last (nostalgebraist's logit lens).

    ``ids`` and ``probs`` are (L + 1, T, k): the k most probable next tokens at every layer and
    position (row 0 reads the embeddings). ``final_token_probs`` (L + 1, T) is the probability each
    layer gives the token the whole model ranks first. The last row equals the model's own output.
    """

    ids: np.ndarray
    probs: np.ndarray
    final_token_probs: np.ndarray
    stream: str


def _find_final_norm(lm: LoadedModel):
    for path, stream in FINAL_NORMS.items():
        module = lm.model
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, torch.nn.Module):
            return module, stream
    return None, None


@torch.no_grad()
def logit_lens(lm: LoadedModel, trace: Trace, top_k: int = 5) -> LogitLens:
    """Apply the final norm and the LM head to every layer's hidden state of ``trace``.

    transformers usually stores the last hidden state *after* the final norm (GPT-2's ``ln_f``,
    Llama's ``model.norm``); we test which holds by reproducing ``trace.logits`` from it, so the
    lens at the last layer is exactly the model's output and no layer is normalised twice.
    """
    head = lm.model.get_output_embeddings() if hasattr(lm.model, "get_output_embeddings") else None
    norm, stream = _find_final_norm(lm)
    if lm.spec.adapter.masked_lm or head is None or norm is None or trace.logits is None:
        raise InputError(
            f"The logit lens needs a decoder's final norm and language-model head, and '{lm.spec.key}' "
            f"({lm.spec.family_name}) has no such pair we know: it works for GPT-2, Llama-style, Pythia, OPT "
            "and T5 models."
        )
    top_k = check_count(top_k, 1, 50, "number of tokens per layer")
    scale = lm.model.config.d_model**-0.5 if getattr(lm.model.config, "scale_decoder_outputs", False) else 1.0
    hidden = torch.from_numpy(np.array(trace.hidden[stream])).to(lm.device)  # (L + 1, T, d)
    target = torch.from_numpy(np.array(trace.logits)).to(lm.device)  # (T, V)

    def read(h: torch.Tensor, normed: bool) -> torch.Tensor:  # (T, d) -> (T, V)
        h = h.to(next(head.parameters()).dtype)
        return head((h if normed else norm(h)) * scale).float()

    def close(logits: torch.Tensor) -> bool:
        return logits.shape == target.shape and torch.allclose(logits, target, atol=1e-4, rtol=1e-4)

    last = hidden.shape[0] - 1
    if close(read(hidden[last], normed=True)):
        last_normed = True
    elif close(read(hidden[last], normed=False)):
        last_normed = False
    else:
        raise InputError(
            f"The logit lens could not reproduce the output of '{lm.spec.key}' from its last hidden state "
            "(this architecture transforms it in a way we do not know), so its layers cannot be read this way."
        )
    final_token = target.argmax(dim=-1)  # (T,)
    ids, probs, final_probs = [], [], []
    for layer in range(last + 1):
        logits = read(hidden[layer], normed=last_normed and layer == last)  # (T, V)
        p = torch.softmax(logits, dim=-1)
        top = torch.topk(p, min(top_k, p.shape[-1]), dim=-1)
        ids.append(top.indices.cpu().numpy())
        probs.append(top.values.cpu().numpy())
        final_probs.append(p.gather(1, final_token[:, None])[:, 0].cpu().numpy())
    return LogitLens(np.stack(ids), np.stack(probs), np.stack(final_probs), stream)


@dataclass(frozen=True)
class LensGrid:
    """The logit lens as a grid to read: ``labels`` and ``probs`` (L + 1, T) are each layer's most probable
    next token at each position and its probability; ``positions`` (T,) label the positions."""

    labels: np.ndarray
    probs: np.ndarray
    positions: list[str]


def top_token_grid(lm: LoadedModel, trace: Trace) -> LensGrid:
    """Each layer's single most probable next token at every position of ``trace`` (see ``logit_lens``)."""
    lens = logit_lens(lm, trace, top_k=1)
    labels = np.vectorize(lambda i: token_label(lm.tokenizer, int(i)))(lens.ids[..., 0])
    return LensGrid(labels, lens.probs[..., 0], trace.labels(lens.stream))
