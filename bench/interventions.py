"""Intervention sweeps: our batched passes against a plain loop of one forward pass per intervention.

For the bundled decoder and a GPT-2-small-shaped random-weight model (12 layers × 12 heads, GPT-2's
real tokenizer) at 32 tokens:

- head importance: every head zero-ablated in turn. Ours: ``head_importance``: one forward pass per layer,
  one batch row per head, the layers below run once before the pass widens into rows, the output layer
  only at the last position. Loop: one hooked forward pass per head, the textbook way.
- activation patching of the residual stream at every (layer, position). Ours: ``patch_sweep``. Loop:
  one hooked forward pass per (layer, position).

Both paths measure the same numbers (the script checks they agree). Calls alternate; medians.

    python bench/interventions.py [--repeats 3] [--tokens 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from timing import interleaved_medians  # noqa: E402
from trace_overhead import gpt2_small_random, text_of_length  # noqa: E402

from explorer.analysis.interventions.ablation import Ablation, edits_of, head_importance  # noqa: E402
from explorer.analysis.interventions.patching import patch_sweep  # noqa: E402
from explorer.analysis.interventions.prompt import logits_at, prompt_of  # noqa: E402
from explorer.analysis.interventions.sites import Capture, Edit, find_sites, intervene  # noqa: E402
from explorer.core.loading import load  # noqa: E402


def head_loop(lm, text: str) -> np.ndarray:
    sites = find_sites(lm)
    prompt = prompt_of(lm, text)
    clean = torch.log_softmax(logits_at(lm, sites, prompt)[0], -1)
    answer = int(clean.argmax())
    layers = len(sites.layers["input"])
    out = np.zeros((layers, sites.n_heads))
    for layer in range(layers):
        for head in range(sites.n_heads):
            edits = edits_of([Ablation("input", layer, "head", "self", head)], "zero", None, sites)
            out[layer, head] = float(
                torch.log_softmax(logits_at(lm, sites, prompt, edits)[0], -1)[answer] - clean[answer]
            )
    return out


def patch_loop(lm, clean_text: str, corrupted_text: str) -> np.ndarray:
    sites = find_sites(lm)
    clean, corrupted = prompt_of(lm, clean_text), prompt_of(lm, corrupted_text)
    layers = len(sites.layers["input"])
    capture = Capture(wanted={("input", i, "resid", None) for i in range(layers)})
    with torch.no_grad(), intervene(lm, sites, capture=capture):
        clean_logits = lm.model(**clean.batch(1)).logits[0, clean.point].float()
    bad = logits_at(lm, sites, corrupted)[0]
    a, b = int(clean_logits.argmax()), int(bad.argmax())
    if a == b:
        b = int(clean_logits.topk(2).indices[1])
    span = float((clean_logits[a] - clean_logits[b]) - (bad[a] - bad[b]))
    n = clean.length("input")
    out = np.zeros((layers, n))
    for i in range(layers):
        for p in range(n):
            value = capture.seen[("input", i, "resid", None)][0, p : p + 1]
            logits = logits_at(lm, sites, corrupted, [Edit("input", i, "resid", positions=(p,), value=value)])[0]
            out[i, p] = (float(logits[a] - logits[b]) - float(bad[a] - bad[b])) / span
    return out


def swapped(text: str) -> str:
    """The corrupted text: the first two words of more than three letters swapped (same tokens, new order)."""
    words = text.split(" ")
    picks = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha()][:2]
    i, j = picks
    words[i], words[j] = words[j], words[i]
    return " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"{args.tokens} tokens, median of {args.repeats}, {torch.get_num_threads()} thread(s)")
    print(f"{'model':<22} {'sweep':<26} {'loop s':>8} {'ours s':>8} {'loop/ours':>10}  passes")
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in [("tiny-gpt2", "tiny-gpt2"), ("gpt2-small (random)", None)]:
            lm = load(source or gpt2_small_random(Path(tmp) / "gpt2-small"))
            text = text_of_length(lm.tokenizer, args.tokens)
            corrupted = swapped(text)
            sites = find_sites(lm)
            heads = head_importance(lm, text)
            assert np.allclose(heads.change, head_loop(lm, text), atol=1e-3), "head sweep disagrees with the loop"
            t_loop, t_ours = interleaved_medians(
                [partial(head_loop, lm, text), partial(head_importance, lm, text)], args.repeats
            )
            n_heads = len(sites.layers["input"]) * sites.n_heads
            print(
                f"{name:<22} {f'heads ({n_heads} ablations)':<26} {t_loop:8.2f} {t_ours:8.2f} {t_loop / t_ours:9.1f}x  {heads.passes} vs {n_heads}"
            )
            patch = patch_sweep(lm, text, corrupted)
            assert np.allclose(patch.restored, patch_loop(lm, text, corrupted), atol=1e-3), "patching disagrees"
            t_loop, t_ours = interleaved_medians(
                [partial(patch_loop, lm, text, corrupted), partial(patch_sweep, lm, text, corrupted)], args.repeats
            )
            cells = patch.restored.size
            print(
                f"{name:<22} {f'residual patching ({cells})':<26} {t_loop:8.2f} {t_ours:8.2f} {t_loop / t_ours:9.1f}x  {patch.passes} vs {cells}"
            )
    print("loop/ours > 1: the batched sweep is faster than one forward pass per intervention (goal: at least 2x)")


if __name__ == "__main__":
    main()
