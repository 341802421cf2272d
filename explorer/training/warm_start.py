"""Start a new model from a trained one of the same shape whose tokenizer differs.

Every weight whose name and shape match is copied. Weights with one row per vocabulary entry (token
embeddings, a tied or separate output layer, an output bias) are rebuilt row by row: a token the old
vocabulary also has keeps its row; a new token gets the mean of the rows of the pieces the old
tokenizer cuts its text into ("tiger" -> t·ig·er); a token with no pieces gets the mean row. This is
the simplest form of vocabulary transfer (compare WECHSEL, Minixhofer et al. 2022, and FOCUS, Dobler
and de Melo 2023): the layers keep what they learned and the new vocabulary starts close to it.
"""

from __future__ import annotations

import torch


def piece_ids(new_tokenizer, old_tokenizer) -> list[list[int]]:
    """For each new token id, the old token ids that stand for the same text."""
    old_vocab = old_tokenizer.get_vocab()
    new_vocab = new_tokenizer.get_vocab()
    mapping: list[list[int]] = [[] for _ in range(len(new_tokenizer))]
    for token, new_id in new_vocab.items():
        if new_id >= len(mapping):
            continue
        if token in old_vocab:
            mapping[new_id] = [old_vocab[token]]
            continue
        text = new_tokenizer.convert_tokens_to_string([token])
        mapping[new_id] = old_tokenizer(text, add_special_tokens=False)["input_ids"] if text.strip() else []
    return mapping


@torch.no_grad()
def transfer(new_model, new_tokenizer, old_model, old_tokenizer) -> dict[str, int]:
    """Copy ``old_model``'s weights into ``new_model`` (in place); returns counts for the log."""
    mapping = piece_ids(new_tokenizer, old_tokenizer)
    old_state = old_model.state_dict()
    n_old, n_new = len(old_tokenizer), len(new_tokenizer)
    copied = rebuilt = 0
    for name, param in new_model.state_dict().items():
        old = old_state.get(name)
        if old is None:
            continue
        vocab_rows = param.shape[:1] == (n_new,) and old.shape[:1] == (n_old,) and old.shape[1:] == param.shape[1:]
        if vocab_rows:  # ids differ even where the sizes agree
            mean = old.float().mean(0)
            for new_id, ids in enumerate(mapping):
                param[new_id] = old[ids].float().mean(0) if ids else mean
            rebuilt += 1
        elif old.shape == param.shape:
            param.copy_(old)
            copied += 1
    shared = sum(1 for token in new_tokenizer.get_vocab() if token in old_tokenizer.get_vocab())
    return {"copied": copied, "rebuilt": rebuilt, "shared_tokens": shared, "new_tokens": n_new - shared}
