"""Tokens per word of each bundled tokenizer on the project's modern-English held-out sample
(assets/heldout/modern.txt), as a ratio to GPT-2's own 50k BPE (models/gpt2-bpe) measured in the
same run. The goal for tiny-gpt2 is a ratio of at most 1.15; bert-base-uncased's WordPiece and
t5-small's SentencePiece are not bundled, so the encoder's and the encoder-decoder's are reported
against GPT-2's BPE too.

    python bench/tokens_per_word.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.core.loading import load_tokenizer  # noqa: E402
from explorer.core.tokenizer_training import tokens_per_word  # noqa: E402
from explorer.training.corpus import MODERN_SAMPLE  # noqa: E402


def main() -> None:
    text = MODERN_SAMPLE.read_text(encoding="utf-8")
    baseline = tokens_per_word(load_tokenizer("gpt2-bpe"), text)
    print(f"{len(text.split())} words in {MODERN_SAMPLE.name}")
    print(f"{'tokenizer':<12}{'vocabulary':>12}{'tokens/word':>13}{'vs GPT-2':>10}")
    for name in ("gpt2-bpe", "tiny-gpt2", "tiny-bert", "tiny-t5"):
        tokenizer = load_tokenizer(name)
        tpw = tokens_per_word(tokenizer, text)
        print(f"{name:<12}{len(tokenizer):>12,}{tpw:>13.3f}{tpw / baseline:>10.2f}")


if __name__ == "__main__":
    main()
