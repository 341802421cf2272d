"""Attribution methods, registered by name: each turns an ``AttributionJob`` into per-token scores.

Adding a method is one decorated function (``@register``); ``attribution.attribute`` runs any of
them on the score function and embeddings it builds. Every method here goes through captum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients, Occlusion, Saliency

OCCLUSION_WINDOW = 3


@dataclass
class AttributionJob:
    """One attribution run: the score function, the input and baseline embeddings, and bounds."""

    forward: Callable[[torch.Tensor], torch.Tensor]  # (B, T, d) -> (B,)
    x: torch.Tensor  # (1, T, d) input embeddings
    baseline: torch.Tensor  # (1, T, d)
    steps: int
    batch: int  # rows per forward pass


@dataclass(frozen=True)
class Method:
    """An attribution method: ``run(job)`` -> (per-token scores (T,), convergence delta or None)."""

    key: str
    name: str
    description: str
    signed: bool  # scores can be negative (a token lowered the output)
    cost: Callable[[int, int], int]  # (steps, tokens) -> rows the model runs, for progress
    run: Callable[[AttributionJob], tuple[torch.Tensor, float | None]]


METHODS: dict[str, Method] = {}


def register(key: str, name: str, description: str, signed: bool = True, cost=lambda steps, tokens: 1):
    """Add a method to ``METHODS``: decorate a function ``job -> (scores (T,), delta or None)``."""

    def decorate(run):
        METHODS[key] = Method(key, name, description, signed, cost, run)
        return run

    return decorate


@register(
    "integrated_gradients", "Integrated gradients",
    "Gradients averaged along a straight path from the baseline to the input, times (input − baseline); "
    "the scores sum to f(input) − f(baseline), up to the convergence delta.",
    cost=lambda steps, tokens: steps + 2,
)  # fmt: skip
def _integrated_gradients(job: AttributionJob):
    attr, delta = IntegratedGradients(job.forward).attribute(
        job.x, job.baseline, n_steps=job.steps, internal_batch_size=job.batch, return_convergence_delta=True
    )
    return attr[0].sum(-1), float(delta[0])


@register(
    "saliency", "Saliency (gradient norm)",
    "The size of the gradient at each token's embedding: how sensitive the output is to it, without a sign.",
    signed=False,
)  # fmt: skip
def _saliency(job: AttributionJob):
    grad = Saliency(job.forward).attribute(job.x.clone().requires_grad_(), abs=False)
    return grad[0].norm(dim=-1), None


@register(
    "input_x_gradient", "Input × gradient",
    "The gradient times the embedding: a first-order guess of what removing the token would change.",
)  # fmt: skip
def _input_x_gradient(job: AttributionJob):
    return InputXGradient(job.forward).attribute(job.x.clone().requires_grad_())[0].sum(-1), None


@register(
    "ablation", "Ablation (one token at a time)",
    "f(input) − f(input with this token's embedding set to the baseline): no gradients, one run per token.",
    cost=lambda steps, tokens: tokens + 1,
)  # fmt: skip
def _ablation(job: AttributionJob):
    n_tokens, width = job.x.shape[1:]
    groups = torch.arange(n_tokens, device=job.x.device)[None, :, None].expand(1, n_tokens, width)
    attr = FeatureAblation(job.forward).attribute(
        job.x, job.baseline, feature_mask=groups, perturbations_per_eval=job.batch
    )
    return attr[0, :, 0], None


@register(
    "occlusion", f"Occlusion ({OCCLUSION_WINDOW}-token window)",
    f"Windows of {OCCLUSION_WINDOW} neighbouring tokens set to the baseline; each token gets the mean change of "
    "the windows that cover it. Slower to react to single tokens, kinder to words split into pieces.",
    cost=lambda steps, tokens: tokens + 1,
)  # fmt: skip
def _occlusion(job: AttributionJob):
    n_tokens, width = job.x.shape[1:]
    window = min(OCCLUSION_WINDOW, n_tokens)
    attr = Occlusion(job.forward).attribute(
        job.x, (window, width), strides=(1, width), baselines=job.baseline, perturbations_per_eval=job.batch
    )
    return attr[0, :, 0], None
