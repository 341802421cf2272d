"""LoRA memory: what the budget counts per fine-tune against what a process really grows by.

Builds N sessions on the bundled tiny-gpt2 with the tab's defaults (attention projections, r = 8,
batch 4 × 64 tokens), trains each a few steps (so optimizer state, gradients and the allocator's
activations exist), and prints the resident memory each session added against ``session.nbytes``
(``explorer.analysis.lora.finetune.session_bytes``). Target: counted / measured >= 1 once the first
session's one-off allocations are left out.

    python bench/lora_memory.py [--sessions 12] [--steps 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import psutil  # noqa: E402

from explorer.analysis.lora.data import bundled_datasets, training_data  # noqa: E402
from explorer.analysis.lora.finetune import LoraSession, LoraSettings, default_targets  # noqa: E402
from explorer.core.loading import load  # noqa: E402


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    lm = load("tiny-gpt2")
    data = training_data(lm.tokenizer, bundled_datasets()["Pirate voice"].text)
    settings = LoraSettings(tuple(default_targets(lm.model)), r=8, batch_size=4, steps=100)
    sessions, sizes = [], []
    before = rss()
    for _ in range(args.sessions):
        session = LoraSession(lm, settings, data)
        session.train(args.steps)
        sessions.append(session)
        after = rss()
        sizes.append(after - before)
        before = after
    counted = sessions[0].nbytes
    later = sizes[1:] or sizes
    print(f"model copy (lm.nbytes): {lm.nbytes / 2**20:.1f} MB; counted per session: {counted / 2**20:.1f} MB")
    print(f"measured growth per session: first {sizes[0] / 2**20:.1f} MB, then mean "
          f"{sum(later) / len(later) / 2**20:.1f} MB, max {max(later) / 2**20:.1f} MB")  # fmt: skip
    print(f"counted / measured (mean of later sessions): {counted / (sum(later) / len(later)):.2f}")


if __name__ == "__main__":
    main()
