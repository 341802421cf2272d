"""Server time of the live tokenization view for 1 kB and 10 kB of text (target <= 50 ms at 10 kB).

The live view is what runs on every edit: tokenize with offsets, build token rows, the coloured
spans HTML, the counts and the token table. Baseline in the same run: the tokenizer call alone.

    python bench/tokenize.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_seconds  # noqa: E402

from explorer.analysis.tokens.counts import token_counts  # noqa: E402
from explorer.analysis.tokens.table import token_rows_table  # noqa: E402
from explorer.analysis.tokens.texts import sample_texts  # noqa: E402
from explorer.core.loading import load_tokenizer  # noqa: E402
from explorer.core.tokens import is_byte_level, tokenize  # noqa: E402
from explorer.plots.tokens import token_spans_html  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    return median_seconds(fn, repeats) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    source = next(iter(sample_texts().values()))
    print(f"median of {args.repeats}; live view = tokenize + rows + spans HTML + counts + table")
    print(f"{'tokenizer':<12}{'text':>7}{'tokens':>8}{'tokenizer ms':>14}{'live view ms':>14}{'ratio':>7}")
    for name in ("gpt2-bpe", "tiny-gpt2", "tiny-bert", "tiny-t5"):
        tokenizer = load_tokenizer(name)
        for size in (1_000, 10_000):
            text = source[:size]
            n = len(tokenizer(text)["input_ids"])
            plain = median_ms(lambda tok=tokenizer, t=text: tok(t, return_offsets_mapping=True), args.repeats)

            def live(tok=tokenizer, t=text):  # what the tokens tab does on every edit
                tokens = tokenize(tok, t)
                token_counts(t, tokens)
                token_spans_html(tokens, t, byte_level=is_byte_level(tok))
                token_rows_table(tokens, t)

            full = median_ms(live, args.repeats)
            print(f"{name:<12}{size // 1000:>5}kB{n:>8}{plain:>14.2f}{full:>14.2f}{full / plain:>7.1f}")
    print("target: live view <= 50 ms at 10 kB")


if __name__ == "__main__":
    main()
