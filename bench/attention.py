"""Attention view cost: text -> finished figures in our path, beside bertviz's head_view.

For a GPT-2-small-shaped random-weight model (12 layers × 12 heads, GPT-2's real tokenizer) at
64 and 256 tokens. Our path: ``run`` (the instrumented forward) plus the figures one interaction
sends (one head; the all-heads grid), serialised as the browser receives them. bertviz:
a forward with ``output_attentions`` plus ``head_view(..., html_action="return")``, which ships
every layer and head to the browser at once. Prints median times and payload sizes.

    python bench/attention.py [--repeats 5]
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
from explorer.core.run import run  # noqa: E402
from explorer.plots.attention import attention_grid, attention_heatmap  # noqa: E402


def ours(lm, text: str) -> tuple[float, int, int]:
    """(seconds, head-view bytes, grid bytes) from text to serialised figures."""
    t0 = time.perf_counter()
    trace = run(lm, text)
    labels = trace.labels("input")
    head = attention_heatmap(trace.attn(5, 3), labels, labels, "layer 5 head 3", causal=True).to_json()
    grid = attention_grid(trace.attentions["self"], "all heads").to_json()
    return time.perf_counter() - t0, len(head.encode()), len(grid.encode())


def bertviz(lm, text: str) -> tuple[float, int]:
    from bertviz import head_view

    t0 = time.perf_counter()
    ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        attentions = lm.model(ids, output_attentions=True).attentions
    tokens = lm.tokenizer.convert_ids_to_tokens(ids[0])
    html = head_view(attentions, tokens, html_action="return")
    return time.perf_counter() - t0, len(html.data.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    try:
        import bertviz as _  # noqa: F401

        have_bertviz = True
    except ImportError:
        have_bertviz = False
        print("bertviz is not installed (pip install bertviz): printing our path only")
    with tempfile.TemporaryDirectory() as tmp:
        lm = load(gpt2_small_random(Path(tmp) / "gpt2-small"))
        print(f"GPT-2-small-shaped random model, {torch.get_num_threads()} thread(s), median of {args.repeats}")
        print(
            f"{'tokens':>6} {'ours s':>8} {'head kB':>8} {'grid kB':>8} {'bertviz s':>10} {'bertviz kB':>11} {'time ratio':>11}"
        )
        for n in (64, 256):
            text = text_of_length(lm.tokenizer, n)
            ours_runs = [ours(lm, text) for _ in range(args.repeats)]
            t_ours = statistics.median(r[0] for r in ours_runs)
            head_kb, grid_kb = ours_runs[0][1] / 1e3, ours_runs[0][2] / 1e3
            line = f"{n:>6} {t_ours:>8.3f} {head_kb:>8.0f} {grid_kb:>8.0f}"
            if have_bertviz:
                bv_runs = [bertviz(lm, text) for _ in range(args.repeats)]
                t_bv = statistics.median(r[0] for r in bv_runs)
                line += f" {t_bv:>10.3f} {bv_runs[0][1] / 1e3:>11.0f} {t_ours / t_bv:>11.2f}"
            print(line)
        print("payload target: one interaction <= 1000 kB at 256 tokens (the head view, or the grid)")


if __name__ == "__main__":
    main()
