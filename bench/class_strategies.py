"""A class's decoding comparisons: each part kept per model against every request computing its own.

Thirty students compare decoding strategies (``compare_strategies``: greedy, two samples, beam search of
width 3, 8 new tokens, as ``bench/load.py``'s sessions do) on five classroom texts, each with a seed of
their own. Two copies of the GPT-2-small-shaped checkpoint (``build/real-size``, built by
``bench/payloads.py``) answer the same requests in turn: one with its kept results dropped before every
request (each request computes everything, as before the parts were kept), one keeping them. Prints the
model seconds of each and their ratio; the machine is shared, so both run interleaved in the same loop.

    python bench/class_strategies.py [--students 30] [--model gpt2-small|tiny-gpt2]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from load import TEXTS  # noqa: E402
from payloads import real_size_checkpoint  # noqa: E402

from explorer.analysis.decoding import strategies  # noqa: E402
from explorer.analysis.decoding.sampling import DecodingSettings  # noqa: E402
from explorer.core.loading import load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--model", default="gpt2-small", help="gpt2-small (real size) or a bundled model's key")
    args = parser.parse_args()
    name = str(real_size_checkpoint("gpt2-small")) if args.model == "gpt2-small" else args.model
    fresh, keeping = load(name), load(name)
    assert fresh is not keeping or args.model != "gpt2-small", "the pool handed out one model twice"
    rng = random.Random(0)
    requests = [(rng.choice(TEXTS), rng.randrange(100)) for _ in range(args.students)]
    spent = {"each computes its own": 0.0, "parts kept": 0.0}
    for text, seed in requests:
        for label, lm in (("each computes its own", fresh), ("parts kept", keeping)):
            if lm is fresh:
                strategies._results.pop(lm, None)
            start = time.perf_counter()
            strategies.compare_strategies(lm, text, DecodingSettings(), 8, 2, 3, 1.0, seed)
            spent[label] += time.perf_counter() - start
    base, kept = spent.values()
    print(f"{args.students} comparisons on {len({t for t, _ in requests})} texts, {args.model}:")
    for label, seconds in spent.items():
        print(f"  {label:22s} {seconds:7.1f} s  ({seconds / args.students * 1000:5.0f} ms a request)")
    print(f"  ratio kept / each its own: {kept / base:.2f} (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
