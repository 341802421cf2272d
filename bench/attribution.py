"""Integrated-gradients cost: our attribution path against baselines measured in the same run.

For the bundled decoder and a GPT-2-small-shaped random-weight model (with GPT-2's real tokenizer),
the next token after a 32-token text, 50 steps: ``attribute(..., "integrated_gradients")`` (our
path: captum's IntegratedGradients on the input embeddings, in batches of at most 2048 tokens, plus
the forwards for the convergence delta and the values shown) against

- one plain forward + backward to the embeddings (the unit of work IG repeats ``steps`` times), and
- captum's plain ``LayerIntegratedGradients`` call on the token-embedding layer, same input, steps
  and target (all steps in one batch).

Calls alternate (a busy host slows all alike); medians; the ratios say what our path costs per step and next to the textbook captum call.

    python bench/attribution.py [--repeats 3] [--tokens 32] [--steps 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from captum.attr import LayerIntegratedGradients  # noqa: E402
from timing import interleaved_medians  # noqa: E402
from trace_overhead import gpt2_small_random, text_of_length  # noqa: E402

from explorer.analysis.attribution.attribute import Prediction, attribute, input_embeddings  # noqa: E402
from explorer.core.loading import load  # noqa: E402


def forward_backward(lm, ids: list[int], token: int):
    """One forward and one backward to the input embeddings, the unit IG repeats."""

    def run():
        x = input_embeddings(lm, ids).requires_grad_()
        with torch.enable_grad():
            prob = lm.model(inputs_embeds=x).logits[0, -1].softmax(-1)[token]
            torch.autograd.grad(prob, x)

    return run


def captum_layer_ig(lm, ids: list[int], token: int, steps: int):
    """captum's plain call: LayerIntegratedGradients on the token-embedding layer, ids in, all steps in one batch."""
    x = torch.tensor([ids], device=lm.device)
    reference = torch.full_like(x, lm.tokenizer.eos_token_id)

    def forward(input_ids):
        return lm.model(input_ids=input_ids).logits[:, -1].softmax(-1)

    lig = LayerIntegratedGradients(forward, lm.model.get_input_embeddings())

    def run():
        with torch.enable_grad():
            lig.attribute(x, reference, target=token, n_steps=steps, return_convergence_delta=True)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    n, steps = args.tokens, args.steps
    print(f"IG over {n} tokens, {steps} steps, median of {args.repeats}, {torch.get_num_threads()} thread(s)")
    print(
        f"{'model':<20}{'fwd+bwd ms':>11}{'ours ms':>9}{'ours/fwd+bwd':>13}"
        f"{'captum LIG ms':>14}{'ours/LIG':>9}{'delta':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for label, name in [("tiny-gpt2", "tiny-gpt2"), ("gpt2-small-random", gpt2_small_random(Path(tmp) / "g"))]:
            lm = load(name)
            ids = lm.tokenizer(text_of_length(lm.tokenizer, n))["input_ids"]
            pred = Prediction(tuple(ids), len(ids) - 1, None, "next token")
            result = attribute(lm, pred, "integrated_gradients", steps)

            def ours(lm=lm, pred=pred):
                attribute(lm, pred, "integrated_gradients", steps)

            t_unit, t_ours, t_lig = interleaved_medians(
                [forward_backward(lm, ids, result.token_id), ours, captum_layer_ig(lm, ids, result.token_id, steps)],
                args.repeats,
            )
            print(
                f"{label:<20}{t_unit * 1e3:>11.1f}{t_ours * 1e3:>9.0f}{t_ours / t_unit:>13.1f}"
                f"{t_lig * 1e3:>14.0f}{t_ours / t_lig:>9.2f}{result.delta:>10.1e}"
            )
    print(f"ours/fwd+bwd: cost in single forward+backward passes ({steps} steps run in batches)")
    print(
        "ours/LIG: our path against captum's plain LayerIntegratedGradients call; <= 1.1 means no overhead worth a note"
    )


if __name__ == "__main__":
    main()
