"""A small scaling study: the live trainer's recipe at several model sizes and token budgets.

``python -m explorer.training.scaling`` (``--out assets/scaling/next_token.json``) trains the
next-token objective of ``explorer.analysis.pretraining`` (the Training view's own recipe, so a live
run lands on the same axes) at ``SIZES`` × ``BUDGETS`` on one CPU thread, each run from seed 0 with its
learning-rate schedule fitted to its own budget, and writes every run's final held-out loss, its
held-out curve and the recipe to a small JSON file. Only the numbers are kept, never checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from explorer.analysis.pretraining.configs import PretrainSettings  # noqa: E402
from explorer.analysis.pretraining.corpus import TEXT_FILES, bundled_split  # noqa: E402
from explorer.analysis.pretraining.trainer import PretrainRun  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "assets" / "scaling" / "next_token.json"
SIZES = ((16, 1, 1), (32, 2, 2), (64, 2, 2), (96, 3, 3), (128, 4, 4))  # (width, layers, heads)
BUDGETS = (50, 100, 200)  # steps of batch × seq_len tokens


def study(sizes=SIZES, budgets=BUDGETS, log=print) -> dict:
    base = PretrainSettings(objective="next_token", checkpoints=1)
    split = bundled_split()
    runs = []
    for width, layers, heads in sizes:
        for steps in budgets:
            settings = dataclasses.replace(
                base, width=width, layers=layers, heads=heads, steps=steps, warmup=max(1, steps // 10),
                eval_every=max(1, steps // 10),
            )  # fmt: skip
            record = PretrainRun(settings, split).train()
            runs.append(
                {
                    "width": width, "layers": layers, "heads": heads, "steps": steps,
                    "parameters": record.parameters, "non_embedding_parameters": record.non_embedding_parameters,
                    "tokens": int(record.tokens_seen[-1]), "compute": record.compute,
                    "held_out_loss": float(record.held_out_loss[-1]), "held_out_bpb": float(record.held_out_bpb[-1]),
                    "train_loss_last10": float(record.train_loss[-10:].mean()),
                    "curve": {"tokens": record.eval_tokens.tolist(), "held_out_loss": record.held_out_loss.tolist()},
                    "seconds": round(record.seconds, 2),
                }
            )  # fmt: skip
            log(f"d={width} L={layers} steps={steps}: held-out {runs[-1]['held_out_loss']:.3f}, {record.seconds:.0f} s")
    return {
        "about": "Final held-out loss (nats per token) of the next-token recipe at several sizes and token budgets.",
        "recipe": {k: v for k, v in base.to_dict().items() if k not in ("width", "layers", "heads", "steps")},
        "recipe_notes": "warmup and eval_every are a tenth of each run's steps; seed 0; one CPU thread.",
        "corpus": {"files": list(TEXT_FILES), "train_chars": split.train_chars, "held_out_documents": len(split.held_out)},
        "made_with": {"torch": torch.__version__, "python": platform.python_version()},
        "runs": runs,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    result = study()
    result["seconds"] = round(time.time() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
