"""Live pre-training speed: the Training view's trainer against a plain PyTorch loop on the same model.

1. Step time: ``PretrainRun.advance`` (batches drawn from the stream, learning-rate schedule, loss history,
   and the held-out evaluation and checkpoint probes where due) against a plain loop (AdamW, forward,
   backward, clip, step) on a copy of the same model and a batch of the same shape. Blocks of steps
   alternate between the two so a busy machine slows both alike. Target: ratio ours / plain <= 1.1.
2. Tokens per second per parameter (the live run's throughput, comparable across sizes).

    python bench/training.py [--objective next_token] [--rounds 6] [--block 25] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from explorer.analysis.pretraining.configs import PretrainSettings  # noqa: E402
from explorer.analysis.pretraining.trainer import PretrainRun  # noqa: E402
from explorer.core import objectives  # noqa: E402


def plain_loop(run: PretrainRun):
    """The loop a PyTorch tutorial writes, on a copy of the run's model: returns ``step(n)``."""
    model = copy.deepcopy(run.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.settings.lr)
    batch = run.next_batch(np.random.default_rng(0))

    def step(n: int) -> None:
        for _ in range(n):
            loss = objectives.objective_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="next_token")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The view's default run (its evaluations and checkpoints as often as there), of which the blocks run a part.
    settings = PretrainSettings(objective=args.objective)
    settings = PretrainSettings(objective=args.objective, steps=max(settings.steps, args.rounds * args.block))
    run = PretrainRun(settings)
    plain = plain_loop(run)
    plain(2)
    ours_s, plain_s = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        run.advance(args.block)
        ours_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain(args.block)
        plain_s.append(time.perf_counter() - t0)
    ours, base = statistics.median(ours_s) / args.block, statistics.median(plain_s) / args.block
    record = run.record()
    tokens_per_s = settings.tokens_per_step / ours
    print(f"objective {args.objective}: {record.parameters:,} parameters ({record.non_embedding_parameters:,} "
          f"outside the embeddings), {settings.batch} x {settings.seq_len} tokens a step, {args.threads} threads")  # fmt: skip
    print(f"live trainer: {1 / ours:6.1f} steps/s   plain loop: {1 / base:6.1f} steps/s   "
          f"ratio ours/plain (time per step) {ours / base:.2f}  (target <= 1.1)")  # fmt: skip
    print(f"tokens per second {tokens_per_s:,.0f}; per parameter {tokens_per_s / record.parameters:.4f}")
    print(
        f"held-out evaluations {len(record.eval_steps)}, checkpoints {len(record.checkpoints)} in {len(record.train_loss)} steps"
    )


if __name__ == "__main__":
    main()
