"""LoRA training speed: our session's training steps against a plain peft loop, and 100 steps on the bundled decoder.

1. Step time: ``LoraSession.train`` (the tab's loop: random windows, the session lock, loss history) against
   a plain peft loop (``get_peft_model`` on a copy, AdamW, forward with labels, backward, step) on the same
   model, the same settings and a batch of the same shape. Blocks of steps alternate between the two so a
   busy machine slows both alike. Target: ratio ours / plain <= 1.1.
2. The tab's defaults (attention projections, r = 8, batch 4 × 64 tokens): 100 steps on the bundled
   tiny-gpt2, wall time and steps per second. Target: within 60 s.

    python bench/lora.py [--rounds 8] [--block 5]
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

import torch  # noqa: E402
from peft import get_peft_model  # noqa: E402

from explorer.analysis.lora.data import bundled_datasets, training_data  # noqa: E402
from explorer.analysis.lora.finetune import LoraSession, LoraSettings, default_targets, lora_config  # noqa: E402
from explorer.core.loading import load  # noqa: E402


def plain_peft_loop(lm, settings: LoraSettings, batch: torch.Tensor):
    """The loop a peft tutorial writes: returns ``run(n)`` doing n steps on ``batch``."""
    model = get_peft_model(copy.deepcopy(lm.model), lora_config(lm.model, settings))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr)

    def run(n: int) -> None:
        for _ in range(n):
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss.item()

    return run


def per_step(fn, steps: int) -> float:
    t0 = time.perf_counter()
    fn(steps)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--block", type=int, default=5, help="steps per timed block")
    args = parser.parse_args()
    lm = load("tiny-gpt2")
    text = bundled_datasets()["Pirate voice"].text
    data = training_data(lm.tokenizer, text)
    settings = LoraSettings(tuple(default_targets(lm.model)), r=8, alpha=16, lr=3e-3, batch_size=4, steps=500)
    print(f"tiny-gpt2, LoRA r=8 on {', '.join(settings.targets)}, batch {settings.batch_size} x {data.block} tokens, "
          f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip

    session = LoraSession(lm, settings, data)
    plain = plain_peft_loop(lm, settings, data.batch(settings.batch_size, torch.Generator().manual_seed(0)))
    ours_times, plain_times = [], []
    per_step(plain, 2)  # warm-up
    session.train(2)
    for _ in range(args.rounds):
        ours_times.append(per_step(session.train, args.block))
        plain_times.append(per_step(plain, args.block))
    for name, pick in (("median", statistics.median), ("fastest", min)):  # fastest: least disturbed by other load
        ours, base = pick(ours_times), pick(plain_times)
        print(f"step time ({name} of {args.rounds} blocks of {args.block} steps): ours {ours * 1000:.1f} ms, "
              f"plain peft loop {base * 1000:.1f} ms, ratio {ours / base:.3f} (target <= 1.1)")  # fmt: skip

    fresh = LoraSession(lm, LoraSettings(settings.targets, steps=100), data)
    t0 = time.perf_counter()
    fresh.train(100)
    seconds = time.perf_counter() - t0
    print(f"100 steps with the tab's defaults: {seconds:.1f} s, {100 / seconds:.2f} steps/s (target: within 60 s); "
          f"loss {fresh.losses[0]:.2f} -> {fresh.losses[-1]:.2f}, held-out {fresh.heldout_before:.2f} -> "
          f"{fresh.finish():.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
