"""How many torch threads a forward pass should use on this machine.

Times a plain forward of the bundled decoder and a GPT-2-small-shaped model at 16 and 64 tokens
with 1 and 2 intra-op threads (alternating, same process), and prints medians and the ratio
2 threads / 1 thread. OpenMP waits passively (OMP_WAIT_POLICY=PASSIVE), as in the app.

    python bench/threads.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from trace_overhead import gpt2_small_random, text_of_length  # noqa: E402

from explorer.core.loading import load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, {os.cpu_count()} CPUs, median of {args.repeats}")
    print(f"{'model':<20}{'tokens':>7}{'1 thread ms':>13}{'2 threads ms':>14}{'ratio 2/1':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, name in [("tiny-gpt2", "tiny-gpt2"), ("gpt2-small-random", gpt2_small_random(Path(tmp) / "g"))]:
            lm = load(name)
            for n in (16, 64):
                ids = torch.tensor([lm.tokenizer(text_of_length(lm.tokenizer, n))["input_ids"]])
                times = {1: [], 2: []}
                with torch.no_grad():
                    for _ in range(args.repeats):
                        for threads in (1, 2):
                            torch.set_num_threads(threads)
                            lm.model(ids)  # one warm call after switching
                            t0 = time.perf_counter()
                            lm.model(ids)
                            times[threads].append(time.perf_counter() - t0)
                one, two = (statistics.median(times[t]) * 1e3 for t in (1, 2))
                print(f"{label:<20}{n:>7}{one:>13.2f}{two:>14.2f}{two / one:>11.2f}")


if __name__ == "__main__":
    main()
