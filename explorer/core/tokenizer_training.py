"""Train a tokenizer of each kind with the ``tokenizers`` library: shared by the bundled models' training
recipes (``explorer.training``), the tokens view's toy BPE (``explorer.analysis.tokens.bpe``) and the tests.

Each is trained with the same pre-tokenization its transformers class uses, then handed to
that class as a vocabulary (and merges), so the saved tokenizer is the standard one:
- byte-level BPE for the GPT-2-style decoder (``GPT2Tokenizer``),
- WordPiece, lower-cased, for the BERT-style encoder (``BertTokenizer``),
- Unigram with sentinel tokens for the T5-style encoder-decoder (``T5Tokenizer``).

The same texts give the same vocabulary in every process. The library's WordPiece and Unigram trainers
keep words in Rust hash maps seeded afresh each time: WordPiece numbers the ``##`` continuation pieces in
that order and breaks ties between equally frequent merges by those numbers (different pieces), and
Unigram lists equally scored pieces in that order (different ids). So WordPiece is handed every
continuation piece up front, sorted, and the Unigram pieces are numbered in the order of their text. The
Unigram scores still differ in the third decimal between processes (the trainer's sums run in hash order),
so a text can, rarely, split differently: the live trainer loads committed tokenizers for the bundled
texts instead (``explorer.analysis.pretraining.configs``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizer, GPT2Tokenizer, T5Tokenizer

T5_EXTRA_IDS = 100


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int) -> GPT2Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return GPT2Tokenizer(vocab=model["vocab"], merges=merges)


def continuation_pieces(tok: Tokenizer, texts: list[str]) -> list[str]:
    """``##c`` for every character ``c`` that follows another inside a word of ``texts``, sorted: e.g. the
    words ``hat`` and ``ah`` give ``["##a", "##h", "##t"]``."""
    inner = set()
    for text in texts:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            inner.update(word[1:])
    return [f"##{c}" for c in sorted(inner)]


def train_wordpiece(texts: Iterable[str], vocab_size: int) -> BertTokenizer:
    texts = list(texts)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        # the continuation pieces numbered in sorted order, not the trainer's hash order (see the module's note)
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *continuation_pieces(tok, texts)],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return BertTokenizer(vocab=tok.get_vocab(), do_lower_case=True)


def train_unigram(texts: Iterable[str], vocab_size: int) -> T5Tokenizer:
    """A SentencePiece-style Unigram vocabulary: <pad>=0, </s>=1, <unk>=2, pieces, sentinels."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - T5_EXTRA_IDS,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    pieces = [tuple(p) for p in json.loads(tok.to_str())["model"]["vocab"]]
    special, learned = pieces[:3], pieces[3:]  # the special tokens first, as given
    vocab = special + sorted(learned)  # numbered by text: ties in score come out in hash order
    vocab += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(T5_EXTRA_IDS))]
    return T5Tokenizer(vocab=vocab, extra_ids=T5_EXTRA_IDS)


def tokens_per_word(tokenizer, text: str) -> float:
    """Tokens the tokenizer makes of ``text`` (no special tokens) per whitespace-separated word."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) / len(text.split())
