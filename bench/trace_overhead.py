"""What instrumentation costs: ``run(...) -> Trace`` against a plain forward of the same model.

For the bundled decoder and a GPT-2-small-shaped random-weight model (with GPT-2's real
tokenizer), at 16, 64 and 256 tokens. Plain and instrumented calls alternate so that a noisy
host slows both alike; medians and their ratio are printed. Target: ratio <= 1.15 at 64 tokens.

    python bench/trace_overhead.py [--repeats 30]
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
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see explorer/__init__.py)

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from explorer.core.catalogue import models_dir  # noqa: E402
from explorer.core.loading import load, load_tokenizer  # noqa: E402
from explorer.core.run import run  # noqa: E402

PASSAGE = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered "
    "the rightful property of some one or other of their daughters. "
) * 20


def text_of_length(tokenizer, n: int) -> str:
    """A text that tokenizes to exactly ``n`` tokens (cut, decoded, re-checked)."""
    ids = tokenizer(PASSAGE, add_special_tokens=False)["input_ids"]
    for cut in range(n, n + 8):
        text = tokenizer.decode(ids[:cut])
        if len(tokenizer(text)["input_ids"]) == n:
            return text
    raise RuntimeError(f"no text of exactly {n} tokens")


def gpt2_small_random(folder: Path) -> str:
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)  # 12 layers, 12 heads, d=768, 50257 tokens
    load_tokenizer("gpt2-bpe").save_pretrained(folder)
    return str(folder)


def measure(lm, n_tokens: int, repeats: int) -> tuple[float, float]:
    text = text_of_length(lm.tokenizer, n_tokens)
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]], device=lm.device)
    plain_times, run_times = [], []
    with torch.no_grad():
        for _ in range(3):  # warm-up
            lm.model(ids)
            run(lm, text)
        for _ in range(repeats):
            t0 = time.perf_counter()
            lm.model(ids)
            t1 = time.perf_counter()
            run(lm, text)
            t2 = time.perf_counter()
            plain_times.append(t1 - t0)
            run_times.append(t2 - t1)
    return statistics.median(plain_times), statistics.median(run_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        models = {"gpt2-small-random": gpt2_small_random(Path(tmp) / "gpt2-small")}
        if (models_dir() / "tiny-gpt2" / "model.safetensors").exists():
            models = {"tiny-gpt2 (bundled)": "tiny-gpt2", **models}
        print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} repeats, medians")
        print(f"{'model':<22}{'tokens':>7}{'plain ms':>10}{'run ms':>9}{'ratio':>7}")
        for label, name in models.items():
            lm = load(name)
            for n in (16, 64, 256):
                plain, instrumented = measure(lm, n, args.repeats)
                flag = "  (target <= 1.15)" if n == 64 else ""
                print(
                    f"{label:<22}{n:>7}{plain * 1e3:>10.2f}{instrumented * 1e3:>9.2f}{instrumented / plain:>7.2f}{flag}"
                )


if __name__ == "__main__":
    main()
