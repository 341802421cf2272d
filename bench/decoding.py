"""Generation speed: our decoding loops against plain ``model.generate`` (KV cache on, same settings).

For the bundled decoder and a GPT-2-small-shaped random-weight model, 32 new tokens greedily
from the same prompt: ``decoding.greedy`` (our loop, recording each token's log-probability) and
``StepHistory.advance`` one token at a time (the step-by-step view: full distribution and
candidates at every step), each as tokens per second and as a fraction of generate's speed.
Target: >= 0.85 of generate's speed.

    python bench/decoding.py [--repeats 3] [--tokens 32]
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
from timing import median_seconds  # noqa: E402
from trace_overhead import gpt2_small_random  # noqa: E402

from explorer.analysis.decoding import generate as decoding  # noqa: E402
from explorer.analysis.decoding.sampling import DecodingSettings  # noqa: E402
from explorer.analysis.decoding.stepwise import StepHistory  # noqa: E402
from explorer.core.loading import load  # noqa: E402

PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    n = args.tokens
    greedy_settings = DecodingSettings(greedy=True)
    print(f"{n} new tokens, greedy, median of {args.repeats}, {torch.get_num_threads()} thread(s)")
    print(f"{'model':<20}{'generate tok/s':>15}{'greedy tok/s':>14}{'ratio':>7}{'step-by-step tok/s':>20}{'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, name in [("tiny-gpt2", "tiny-gpt2"), ("gpt2-small-random", gpt2_small_random(Path(tmp) / "g"))]:
            lm = load(name)
            prompt = lm.tokenizer(PROMPT)["input_ids"]
            ids = torch.tensor([prompt])
            pad = lm.tokenizer.eos_token_id

            def plain(lm=lm, ids=ids, pad=pad):
                with torch.no_grad():
                    lm.model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad)

            def ours(lm=lm, prompt=prompt):
                decoding.greedy(lm, prompt, n)

            def stepwise(lm=lm):
                history = StepHistory.start(lm, PROMPT)
                for _ in range(n):
                    history = history.advance(lm, greedy_settings)

            t_plain, t_ours, t_steps = (median_seconds(f, args.repeats) for f in (plain, ours, stepwise))
            print(
                f"{label:<20}{n / t_plain:>15.1f}{n / t_ours:>14.1f}{t_plain / t_ours:>7.2f}"
                f"{n / t_steps:>20.1f}{t_plain / t_steps:>7.2f}"
            )
    print("ratio = our speed / generate's speed; target >= 0.85")


if __name__ == "__main__":
    main()
