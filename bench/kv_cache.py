"""KV cache: what the app's experiment reports, checked against an independent measurement in the same run.

For the bundled decoder and a GPT-2-small-shaped random-weight model, at 128 and 256 new tokens:
the app's ``KVCacheExperiment`` (greedy, cache on and off, interleaved) gives a speed-up; plain
``model.generate(use_cache=True / False)`` on the same prompt, also interleaved, gives another.
Prints both and their agreement (target: within 15%), with the per-position latency slopes.

    python bench/kv_cache.py [--repeats 2] [--tokens 128 256] [--models tiny-gpt2 gpt2-small-random]
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
from trace_overhead import gpt2_small_random  # noqa: E402

from explorer.analysis.inference.kv_cache import run_experiment  # noqa: E402
from explorer.core.loading import load  # noqa: E402

PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def generate_speedup(lm, prompt_ids: list[int], n: int, repeats: int) -> tuple[float, float, float]:
    """Seconds with and without the cache (medians) and their ratio, from ``model.generate``."""
    ids = torch.tensor([prompt_ids], device=lm.device)
    pad = lm.tokenizer.eos_token_id

    def once(use_cache: bool) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            lm.model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=use_cache,
                              pad_token_id=pad)  # fmt: skip
        return time.perf_counter() - start

    once(True)  # warm-up
    on, off = [], []
    for _ in range(repeats):
        on.append(once(True))
        off.append(once(False))
    return statistics.median(on), statistics.median(off), statistics.median(b / a for a, b in zip(on, off))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2", "gpt2-small-random"])
    args = parser.parse_args()
    print(f"greedy, {args.repeats} runs each way (interleaved), {torch.get_num_threads()} thread(s)")
    header = (f"{'model':<20}{'tokens':>7}{'app on s':>10}{'app off s':>10}{'app x':>7}{'generate on s':>14}"
              f"{'generate off s':>15}{'generate x':>11}{'agree':>7}{'ms/pos on':>10}{'ms/pos off':>11}")  # fmt: skip
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.models:
            lm = load(gpt2_small_random(Path(tmp) / "g") if label == "gpt2-small-random" else label)
            prompt = lm.tokenizer(PROMPT)["input_ids"]
            for n in args.tokens:
                result = run_experiment(lm, prompt, n, args.repeats)
                app_on, app_off = statistics.median(result.totals(True)), statistics.median(result.totals(False))
                app_x = float(statistics.median(result.speedups))
                gen_on, gen_off, gen_x = generate_speedup(lm, prompt, n, args.repeats)
                agree = app_x / gen_x
                print(
                    f"{label:<20}{n:>7}{app_on:>10.2f}{app_off:>10.2f}{app_x:>7.2f}{gen_on:>14.2f}{gen_off:>15.2f}"
                    f"{gen_x:>11.2f}{agree:>7.2f}{result.slope(True) * 1e3:>10.3f}{result.slope(False) * 1e3:>11.3f}"
                )
    print("app x = the speed-up the KV cache tab reports; generate x = the same from model.generate;")
    print("agree = app x / generate x, target within 0.85-1.15. ms/pos: latency added per position (fitted).")


if __name__ == "__main__":
    main()
