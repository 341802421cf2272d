"""The three pre-training objectives: batches for causal LM, masked LM and T5 span corruption, and their loss.

Shared by the bundled models' recipe (``explorer.training.recipes``) and the live trainer of the
Training view (``explorer.analysis.pretraining``), so both train on exactly the same objectives.
Every batch maker draws from a ``numpy.random.Generator``: the same seed gives the same batches.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from transformers import BertForMaskedLM, RobertaPreLayerNormForMaskedLM

from explorer.core.tokenizer_training import T5_EXTRA_IDS


def token_stream(tokenizer, docs: list[str], separator_id: int) -> np.ndarray:
    """All documents tokenized (no special tokens) and joined by ``separator_id``: shape (N,)."""
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        ids.append(separator_id)
    return np.asarray(ids, dtype=np.int64)


def random_windows(stream: np.ndarray, batch: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``batch`` random windows of ``length`` tokens: shape (batch, length)."""
    starts = rng.integers(0, len(stream) - length, size=batch)
    return np.stack([stream[s : s + length] for s in starts])


def document_openings(
    stream: np.ndarray, separator_id: int, batch: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """The first ``length`` tokens of ``batch`` random documents of the stream (the stream's start, or just after a
    separator): shape (batch, length)."""
    starts = np.concatenate([[0], np.flatnonzero(stream == separator_id) + 1])
    starts = starts[starts <= len(stream) - length]
    return np.stack([stream[s : s + length] for s in rng.choice(starts, size=batch)])


def causal_lm_batch(
    stream, batch, length, rng, repeat_share: float = 0.0, copy_share: float = 0.0
) -> dict[str, torch.Tensor]:
    """``batch`` random windows of ``length`` tokens, the labels their own ids (the model shifts them).

    ``repeat_share`` of the windows end by repeating a stretch of their own text (``repeated_window``);
    the next ``copy_share`` of them are a short stretch said over and over (``copy_window``).
    """
    windows = random_windows(stream, batch, length, rng)
    labels = windows.copy()
    n_repeat, n_copy = round(batch * repeat_share), round(batch * copy_share)
    for row in range(n_repeat):  # no repeats asked for: the very draws of every run before them
        windows[row] = labels[row] = repeated_window(windows[row], rng)
    for i, row in enumerate(range(n_repeat, min(batch, n_repeat + n_copy))):
        windows[row], labels[row] = copy_window(stream, length, rng, shuffled=bool(i % 2))
    return {"input_ids": torch.from_numpy(windows), "labels": torch.from_numpy(labels)}


COPY_SPAN = (8, 40)  # tokens in the stretch a copy window repeats


def copy_window(stream: np.ndarray, length: int, rng: np.random.Generator, shuffled: bool = False):
    """(ids, labels): a stretch of the corpus said again and again to fill ``length`` tokens, the first saying
    unlabelled (-100) so every labelled token can be read off the text before it. With ``shuffled`` the
    stretch is tokens drawn at random from the corpus, which only copying predicts: the purest lesson in
    the in-context copying that ``repeated_window`` teaches too slowly for a model of a few million weights."""
    span = int(rng.integers(COPY_SPAN[0], COPY_SPAN[1] + 1))
    if shuffled:
        stretch = stream[rng.integers(0, len(stream), size=span)]
    else:
        start = int(rng.integers(0, len(stream) - span))
        stretch = stream[start : start + span]
    ids = np.resize(stretch, length)
    labels = ids.copy()
    labels[:span] = -100
    return ids, labels


def repeated_ngrams(tokens: torch.Tensor, n: int = 4) -> torch.Tensor:
    """(B, T) bool: the tokens of every n-gram that already appeared earlier in its row."""
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    for row, ids in enumerate(tokens.tolist()):
        seen = set()
        for i in range(len(ids) - n + 1):
            gram = tuple(ids[i : i + n])
            if gram in seen:
                mask[row, i : i + n] = True
            seen.add(gram)
    return mask


@torch.no_grad()
def greedy_continuations(model, prefixes: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """(B, P + new_tokens): every prefix continued greedily for exactly ``new_tokens`` tokens (end of text
    held back, so the rows stay one length), in eval mode; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    full = model.generate(
        prefixes, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
        pad_token_id=model.config.eos_token_id, attention_mask=torch.ones_like(prefixes),
    )  # fmt: skip
    model.train(was_training)
    return full


class LoopPenalty(NamedTuple):
    unlikelihood: torch.Tensor  # -log(1 - p) on the looped tokens, averaged over all continuation tokens
    anchor: torch.Tensor  # KL(reference without the looped tokens || model), same average; 0 without a reference
    looped: float  # the share of continuation tokens inside a loop


def loop_unlikelihood(model, prefixes: torch.Tensor, new_tokens: int = 64, n: int = 4, reference=None) -> LoopPenalty:
    """Sequence-level unlikelihood (Welleck et al. 2019, "Neural text generation with unlikelihood training"):
    the model continues each prefix greedily, and every continuation token inside an n-gram the continuation
    already said is made less likely, -log(1 - p). Copying from the prefix is left alone: only the model's
    own loops are penalised.

    With ``reference`` (a frozen copy of the model from before the stage), the anchor pulls every continuation
    token's distribution towards the reference's, with the looped token taken out of the reference's and the rest
    scaled up (a KL). Against the model itself that is the unlikelihood term again, -log(1 - p), but where the
    penalty alone lets a loop's probability go wherever it drifts (rare tokens: "Lucius Lucius Lausey"), the
    anchor hands it to the reference's own next choices, and holds the tokens outside loops where they were."""
    full = greedy_continuations(model, prefixes, new_tokens)
    start = prefixes.shape[1]
    said = full[:, start:, None]
    looped = repeated_ngrams(said[..., 0].cpu(), n).to(full.device)  # (B, new_tokens)
    logp = model(input_ids=full).logits[:, start - 1 : -1].float().log_softmax(-1)  # predicting the continuation
    p = logp.gather(-1, said)[..., 0].exp()  # only the said tokens, not the whole vocabulary
    unlikelihood = -(torch.log((1 - p).clamp_min(1e-5)) * looped).sum() / looped.numel()
    anchor = torch.zeros((), device=full.device)
    if reference is not None:
        with torch.no_grad():
            q = reference(input_ids=full).logits[:, start - 1 : -1].float().softmax(-1)
            q = q.scatter(-1, said, q.gather(-1, said) * ~looped[..., None])  # the looped token taken out
            q = q / q.sum(-1, keepdim=True)
        anchor = (torch.xlogy(q, q) - q * logp).sum() / looped.numel()
    return LoopPenalty(unlikelihood, anchor, looped.float().mean().item())


REPEAT_SPAN = (8, 32)  # tokens repeated at the end of a window (a name and the words around it, a sentence)


def repeated_window(window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The window's text cut short and ended by a copy of a stretch of it: "... A B C D ... A B C". A model
    that reads the first copy predicts the second; text of a few million tokens has too few such repeats
    in 128 tokens for a small model to learn it (in-context copying, induction heads: Olsson et al. 2022),
    and copying is what retrieval-augmented answers and the indirect-object preset ask of it."""
    length = len(window)
    span = int(rng.integers(REPEAT_SPAN[0], min(REPEAT_SPAN[1], length // 3) + 1))
    body = window[: length - span]
    start = int(rng.integers(0, len(body) - span + 1))
    return np.concatenate([body, body[start : start + span]])


def mask_tokens(
    ids: np.ndarray, tokenizer, rng: np.random.Generator, rate: float = 0.15, keep_special: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masking: pick ``rate`` of the tokens; of those 80% -> [MASK], 10% random, 10% kept.

    Returns (inputs, labels) with labels -100 where nothing is predicted.
    """
    special = np.isin(ids, tokenizer.all_special_ids) if keep_special else np.zeros_like(ids, bool)
    picked = (rng.random(ids.shape) < rate) & ~special
    labels = np.where(picked, ids, -100)
    inputs = ids.copy()
    roll = rng.random(ids.shape)
    inputs[picked & (roll < 0.8)] = tokenizer.mask_token_id
    random_ids = rng.integers(len(tokenizer.all_special_ids), len(tokenizer), size=ids.shape)
    swap = picked & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_ids[swap]
    return inputs, labels


def masked_lm_batch(
    stream, batch, length, rng, tokenizer, long_every: int = 5, rate: float = 0.15
) -> dict[str, torch.Tensor]:
    """Masked-LM windows of ``length`` tokens; one batch in ``long_every`` has half as many windows of
    twice the length, so positions up to ``2 * length`` are trained too at the same cost per step."""
    if long_every and rng.integers(long_every) == 0:
        batch, length = max(1, batch // 2), 2 * length
    body = random_windows(stream, batch, length - 2, rng)
    cls = np.full((batch, 1), tokenizer.cls_token_id)
    sep = np.full((batch, 1), tokenizer.sep_token_id)
    ids = np.concatenate([cls, body, sep], axis=1)
    inputs, labels = mask_tokens(ids, tokenizer, rng, rate=rate)
    return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}


def span_corrupt(
    ids: np.ndarray, sentinel_ids: list[int], rng: np.random.Generator, density: float = 0.15, mean_span: float = 3.0
) -> tuple[list[int], list[int]]:
    """T5's span corruption of one sequence.

    Example: ids "a b c d e f" with span "c d" -> input "a b <X0> e f", target "<X0> c d <X1>".
    Returns (input ids, target ids) without the final </s>.
    """
    n = len(ids)
    n_noise = max(1, round(n * density))
    n_spans = max(1, round(n_noise / mean_span))
    # Split noise and non-noise lengths into n_spans random positive parts each (T5's recipe).
    noise_lengths = _random_partition(n_noise, n_spans, rng)
    keep_lengths = _random_partition(n - n_noise, n_spans, rng)
    inputs, targets, pos = [], [], 0
    for k in range(n_spans):
        inputs.extend(ids[pos : pos + keep_lengths[k]])
        pos += keep_lengths[k]
        inputs.append(sentinel_ids[k])
        targets.append(sentinel_ids[k])
        targets.extend(ids[pos : pos + noise_lengths[k]])
        pos += noise_lengths[k]
    targets.append(sentinel_ids[n_spans])
    return [int(i) for i in inputs], [int(t) for t in targets]


def _random_partition(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    if parts >= total:
        return [1] * total + [0] * (parts - total)
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    return list(np.diff(np.concatenate([[0], cuts, [total]])))


SHORT_WINDOW = (8, 32)  # tokens: a sentence or two, which corrupted gives one or two spans


def span_corruption_batch(stream, batch, length, rng, tokenizer, short_share: float = 0.0) -> dict[str, torch.Tensor]:
    """``batch`` random windows of ``length - 1`` tokens, span-corrupted (``span_corrupt_windows``).

    ``short_share`` of them are instead 8 to 32 tokens long: a sentence with one blank, as the app's texts
    are. Long windows alone (about seven spans each) never show the model an input whose one span is its last.
    """
    n_short = round(batch * short_share)
    if not n_short:  # the draws of every run before short windows existed, kept
        return span_corrupt_windows(random_windows(stream, batch, length - 1, rng), rng, tokenizer)
    windows = list(random_windows(stream, batch - n_short, length - 1, rng)) if batch > n_short else []
    for size in rng.integers(SHORT_WINDOW[0], SHORT_WINDOW[1] + 1, size=n_short):
        windows.append(random_windows(stream, 1, int(size), rng)[0])
    return span_corrupt_windows(windows, rng, tokenizer)


def span_corrupt_windows(windows, rng, tokenizer) -> dict[str, torch.Tensor]:
    """Each window (rows of token ids, any lengths) span-corrupted and ended by </s>, padded into one batch."""
    sentinels = sentinel_ids(tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pairs = [span_corrupt(w, sentinels, rng) for w in windows]
    batch = len(pairs)
    src_len = max(len(s) for s, _ in pairs) + 1
    tgt_len = max(len(t) for _, t in pairs) + 1
    src = torch.full((batch, src_len), pad)
    mask = torch.zeros((batch, src_len), dtype=torch.long)
    labels = torch.full((batch, tgt_len), -100)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s) + 1] = torch.tensor(s + [eos])
        mask[i, : len(s) + 1] = 1
        labels[i, : len(t) + 1] = torch.tensor(t + [eos])
    return {"input_ids": src, "attention_mask": mask, "labels": labels}


def sentinel_ids(tokenizer) -> list[int]:
    """The ids of ``<extra_id_0>`` ... ``<extra_id_99>``, in that order."""
    return tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(T5_EXTRA_IDS)])


def span_ends(tokenizer) -> torch.Tensor:
    """A span-corruption target's marks: its sentinels and </s> (``<X0> a b <X1> c <X2> </s>``). Each mark after the
    first ends the answer before it; </s> ends the output."""
    return torch.tensor(sentinel_ids(tokenizer) + [tokenizer.eos_token_id])


def marked_loss(logits: torch.Tensor, labels: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
    """The cross-entropy of the target tokens that are ``marks`` (``span_ends``), summed and divided by all the
    target tokens: added to the mean loss with weight w, it counts those tokens 1 + w times."""
    kept = labels != -100
    ce = torch.nn.functional.cross_entropy(logits[kept].float(), labels[kept], reduction="none")
    return (ce * torch.isin(labels[kept], marks)).sum() / kept.sum()


def objective_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss, except for masked LM: there the vocabulary projection runs only at
    the masked positions, which makes a step of a small BERT about a third cheaper."""
    if isinstance(model, BertForMaskedLM | RobertaPreLayerNormForMaskedLM):
        hidden = model.base_model(input_ids=batch["input_ids"]).last_hidden_state  # (B, T, d)
        picked = batch["labels"] != -100  # (B, T)
        head = model.cls if isinstance(model, BertForMaskedLM) else model.lm_head
        logits = head(hidden[picked])  # (n_masked, vocab)
        return torch.nn.functional.cross_entropy(logits, batch["labels"][picked])
    return model(**batch).loss
