"""Pre-softmax attention scores (Q·Kᵀ/√d plus any mask or position bias), captured without touching the model.

Every eager attention ends in ``softmax(scores)``. A ``TorchFunctionMode`` — thread-local, so other
users' forwards on the same shared model are not seen — records the input of each 4-D softmax
during one forward pass. The model is never patched and nothing is left behind after the ``with``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from explorer.core.loading import LoadedModel
from explorer.core.memory import to_host
from explorer.core.trace import Trace

SOFTMAX_FUNCTIONS = {torch.nn.functional.softmax, torch.softmax, torch.Tensor.softmax}
MASKED_BELOW = -1e30  # additive masks use the dtype's minimum (about -3.4e38 for float32)


class SoftmaxInputs(TorchFunctionMode):
    """Inside ``with SoftmaxInputs() as seen:``, ``seen.captured`` collects every (B, H, Q, K) softmax input."""

    def __init__(self):
        super().__init__()
        self.captured: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SOFTMAX_FUNCTIONS and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            self.captured.append(args[0].detach().float().cpu())
        return func(*args, **kwargs)


def _ids(trace: Trace, stream: str, device) -> torch.Tensor:
    return torch.tensor([[t.id for t in trace.tokens[stream]]], device=device)


@torch.no_grad()
def attention_scores(lm: LoadedModel, trace: Trace) -> dict[str, np.ndarray]:
    """The scores behind each of the trace's attention maps: kind -> (L, H, Q, K), masked cells ``-inf``.

    For T5 the scores include its learned relative-position bias and are not scaled by 1/√d
    (T5 folds the scale into its weights).
    """
    family = trace.adapter
    with SoftmaxInputs() as seen:
        if family.is_encoder_decoder:
            lm.model(
                input_ids=_ids(trace, family.primary_stream, lm.device),
                decoder_input_ids=_ids(trace, family.target_stream, lm.device),
            )
        else:
            lm.model(input_ids=_ids(trace, family.primary_stream, lm.device))
    maps = [to_host(s[0]) for s in seen.captured]  # each (H, Q, K), in call order
    n = trace.n_layers
    if family.is_encoder_decoder:
        n_dec = trace.attentions["decoder_self"].shape[0]
        encoder, decoder = maps[:n], maps[n:]
        kinds = {
            "encoder_self": encoder,
            "decoder_self": decoder[0 : 2 * n_dec : 2],
            "cross": decoder[1 : 2 * n_dec : 2],
        }
    else:
        kinds = {"self": maps}
    out = {}
    for kind, layers in kinds.items():
        stacked = np.stack(layers)
        if stacked.shape != trace.attentions[kind].shape:
            raise RuntimeError(
                f"captured {kind} scores of shape {stacked.shape}, expected {trace.attentions[kind].shape}"
            )
        out[kind] = np.where(stacked < MASKED_BELOW, -np.inf, stacked)
    return out
