"""Payloads at real size: what one interaction sends the browser on a GPT-2-small-shaped model at 512 tokens.

Builds (once, under ``build/real-size/``) a GPT-2-small-shaped checkpoint (12 layers, 12 heads, width 768,
50,257 tokens, random weights, saved with ``save_pretrained``, GPT-2's real tokenizer from ``models/gpt2-bpe``)
and a BERT-base-shaped one (12 x 12 x 768, 30,522 tokens; the bundled tiny-bert WordPiece tokenizer, as
BERT's own vocabulary is not available offline). Running a random model costs what the real one costs.

Then builds what the attention tab's handlers return, from the same analysis and plot functions, and
serializes it as gradio would (``fig.to_json()`` for figures, JSON for component values): the all-heads grid, the token links (every query of one head)
and the generation-attention view (32 tokens generated after a 480-token prompt). Goal: <= 1 MB each.
``--umap`` adds the whole-vocabulary map of a 50,257 x 768 matrix: the first map (PCA) and the full UMAP
computed in the background and cached (goal: first map <= 10 s).
Last, the trace itself at 512 tokens: its bytes whole (what the default ``EXPLORER_TRACE_MB`` keeps for this
size) and bounded under a smaller limit (top-k logits, a few layers; another layer computed again), and the
projected bytes of a Llama-3-8B-shaped trace whole and bounded under the default limit.

    python bench/payloads.py [--umap]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

REAL_SIZE = ROOT / "build" / "real-size"
GOAL = 2**20
TOKENS = 512
GENERATE = 32  # the attention tab's most tokens generated step by step


def real_size_checkpoint(kind: str) -> Path:
    """``build/real-size/<kind>`` (``gpt2-small`` or ``bert-base``): a random-weight checkpoint of that shape."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    from explorer.core.loading import load_tokenizer

    folder = REAL_SIZE / kind
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    if kind == "gpt2-small":
        tok = load_tokenizer("gpt2-bpe")
        model = GPT2LMHeadModel(GPT2Config(vocab_size=50_257, n_positions=1024, n_embd=768, n_layer=12, n_head=12))
    elif kind == "bert-base":
        tok = load_tokenizer("tiny-bert")
        model = BertForMaskedLM(BertConfig(vocab_size=30_522, hidden_size=768, num_hidden_layers=12,
                                           num_attention_heads=12, intermediate_size=3072))  # fmt: skip
    else:
        raise ValueError(f"unknown real-size model {kind!r}")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def long_text(tokenizer, tokens: int) -> str:
    """Sample text cut to about ``tokens`` tokens of ``tokenizer``."""
    from explorer.analysis.tokens.texts import sample_texts

    text = " ".join(sample_texts().values())
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: tokens - 2]
    return tokenizer.decode(ids)


def size_of(outputs) -> int:
    """Bytes of a handler's outputs as gradio sends them: figures as plotly JSON, the rest as JSON."""
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    total = 0
    for out in outputs:
        if hasattr(out, "to_json"):
            total += len(out.to_json().encode())
        else:
            total += len(json.dumps(out, default=str).encode())
    return total


def payloads(folder: Path) -> None:
    """What the attention tab's handlers return, rebuilt from the same analysis and plot functions they call."""
    from explorer.analysis.attention.views import all_heads, generation_step, one_head, token_links_of
    from explorer.core.pool import ModelPool
    from explorer.core.run import run
    from explorer.plots.attention import attention_grid, attention_heatmap, token_links

    lm = ModelPool().get(str(folder))
    text = long_text(lm.tokenizer, TOKENS)
    prompt = long_text(lm.tokenizer, TOKENS - GENERATE)
    t0 = time.perf_counter()
    trace = run(lm, text)
    run_s = time.perf_counter() - t0
    generating = run(lm, prompt, generate=GENERATE)
    n = len(trace.tokens["input"])
    print(f"{folder.name}: {n} tokens, trace {trace.nbytes / 2**20:.0f} MB in memory, model run {run_s:.1f} s")

    def head():
        v = one_head(trace, "self", 5, 3, "weights")
        return attention_heatmap(v.matrix, v.query_labels, v.key_labels, "one head", v.causal)

    def grid():
        g = all_heads(trace, "self")
        return attention_grid(g.weights, "all heads"), {"choices": g.names}  # the figure and the head picker

    def links(heads):
        def view():
            k = token_links_of(trace, "self", 5, 3, -1, heads)
            picker = {"choices": [(f"{i}: {label}", i) for i, label in enumerate(k.query_labels)]}
            return token_links(k.weights, k.query_labels, k.key_labels, k.selected, "links"), picker

        return view

    def step():
        g = generation_step(generating, 5, 3, GENERATE)
        seen = g.labels[: g.position + 1]
        return token_links(g.weights, seen, seen, g.position, "step"), " ".join(g.labels)

    views = {
        "one head (heatmap)": head,
        "all-heads grid": grid,
        "token links (one head, all queries)": links([]),
        "token links (mean of 12 heads)": links(list(range(12))),
        f"generation attention (step {GENERATE})": step,
    }
    print(f"{'view':<40}{'bytes':>12}{'MB':>8}{'<= 1 MB':>9}{'seconds':>9}")
    for name, view in views.items():
        t0 = time.perf_counter()
        out = view()
        seconds = time.perf_counter() - t0
        size = size_of(out)
        print(f"{name:<40}{size:>12,}{size / 2**20:>8.2f}{'yes' if size <= GOAL else 'NO':>9}{seconds:>9.2f}")
    trace_sizes(lm, text, trace)


BOUNDED_MB = 64  # a limit below GPT-2-small's 512-token trace, to measure the bounded form on it


def trace_sizes(lm, text: str, full) -> None:
    """A trace's bytes whole and bounded; the top-k probabilities of both; what a dropped layer costs."""
    import torch

    from explorer.core.run import run
    from explorer.core.settings import settings

    limit = settings().trace_bytes
    t0 = time.perf_counter()
    small = run(lm, text, keep_bytes=BOUNDED_MB * 2**20)
    bounded_s = time.perf_counter() - t0
    kept = small.meta["bounded"]["layers"]["self"]
    dropped = next(i for i in range(small.n_layers) if i not in kept)
    t0 = time.perf_counter()
    again = small.attn(dropped, 3)
    refetch_s = time.perf_counter() - t0
    probs = torch.softmax(torch.from_numpy(np.array(full.logits)), -1).numpy()
    error = np.abs(np.take_along_axis(probs, small.logits.ids, 1) - small.logits.probs()).max()
    print(f"trace at {len(full.tokens['input'])} tokens: whole {full.nbytes / 2**20:.0f} MB "
          f"(kept whole under the default EXPLORER_TRACE_MB={limit / 2**20:.0f}: {full.nbytes <= limit}); "
          f"bounded under {BOUNDED_MB} MB: {small.nbytes / 2**20:.1f} MB in {bounded_s:.1f} s "
          f"(top {small.logits.k} logits, attention layers {kept}; largest top-k probability error {error:.1e}); "
          f"layer {dropped} computed again in {refetch_s:.1f} s, equal: {np.allclose(again, full.attn(dropped, 3))}")  # fmt: skip
    layers, heads, width, vocab, tokens = 32, 32, 4096, 128_256, 512  # Llama-3-8B's shape
    per_layer = 4 * (heads * tokens**2 + tokens * width)
    whole = 4 * (layers * heads * tokens**2 + (layers + 1) * tokens * width + tokens * vocab)
    top = tokens * (8 * 50 + 8)
    slots = (limit - top) // per_layer
    print(f"Llama-3-8B-shaped trace at {tokens} tokens (projected): whole {whole / 2**20:,.0f} MB; bounded under "
          f"{limit / 2**20:.0f} MB: {(top + slots * per_layer) / 2**20:.0f} MB ({slots} of {layers} layers, top 50 logits)")  # fmt: skip


def vocabulary_map() -> None:
    """The whole-vocabulary UMAP of a 50,257 x 768 matrix: the first map at once, the full one in the background."""
    from explorer.analysis.embeddings.projections import ProjectionCache, warm_up
    from explorer.analysis.embeddings.staged import StagedProjections

    rng = np.random.default_rng(0)
    matrix = (rng.normal(size=(50_257, 64)) @ rng.normal(size=(64, 768)) + rng.normal(size=(50_257, 768))).astype(
        np.float32
    )
    ids = np.arange(len(matrix))
    warm_up()  # what the app's background thread does at start-up
    staged = StagedProjections(ProjectionCache())
    t0 = time.perf_counter()
    first = staged.get(matrix, ids, "umap", 2)
    print(f"whole-vocabulary UMAP of {matrix.shape[0]:,} x {matrix.shape[1]}: first map ({first.shown.method}) "
          f"in {time.perf_counter() - t0:.1f} s (goal <= 10 s), full UMAP pending: {first.pending}")  # fmt: skip
    staged.wait()
    done = staged.get(matrix, ids, "umap", 2)
    print(f"  full UMAP in the background: {time.perf_counter() - t0:.0f} s; then served {done.shown.source} "
          f"({done.shown.method}, {len(done.shown.coords):,} points)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--umap", action="store_true", help="also the whole-vocabulary map (minutes on 2 cores)")
    args = parser.parse_args()
    os.environ.setdefault("EXPLORER_WARMUP", "0")
    os.environ.setdefault("EXPLORER_CACHE_DIR", tempfile.mkdtemp(prefix="bench-payloads-"))  # a fresh cache
    print(f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    payloads(real_size_checkpoint("gpt2-small"))
    if args.umap:
        vocabulary_map()


if __name__ == "__main__":
    main()
