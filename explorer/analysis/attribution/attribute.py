"""Attribution: which input tokens drove one prediction, through captum.

A prediction is one output token: the next token of a decoder (or any token of its greedy
continuation), the top prediction at a masked position of an encoder, or a generated token of an
encoder-decoder. Its score — the probability, log-probability or logit of that token — is written
as a function of the **input embeddings** (the output of the token-embedding layer, what
``inputs_embeds`` takes), and captum attributes it to them; each token's score is the sum (or, for
saliency, the norm) over its embedding dimensions.

For encoder-decoders the attributed embeddings are the *encoder's*: the decoder is fed its target
prefix as ids and held fixed, so the scores land on the source tokens. (captum's generic
``LLMAttribution`` wraps a single ``forward(input_ids)`` and, for T5, attributes to whatever that
call treats as its input, not to the source the decoder read through cross-attention.)

Baselines replace every token's embedding by the padding token's (``BASELINES["pad"]``; zeros
where the tokenizer has no padding token) or by zeros, except special tokens (``[CLS]``,
``[MASK]``, ``</s>``...), which keep their own embedding: the structure stays, the words go. (A
zero baseline suits models poorly whose first operation is an RMS norm of the embeddings, as in
T5: the norm makes the output jump near zero, and the path integral needs many more steps.)
Integrated gradients then satisfy completeness: the token scores sum to f(input) − f(baseline), up
to the convergence delta captum reports. The model is only read: gradients are taken with respect to the
embeddings alone, by ``torch.autograd.grad``, with no hooks and no change to any parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis.attribution.methods import METHODS, AttributionJob, Method
from explorer.analysis.decoding.generate import check_count, greedy
from explorer.core.errors import ExplorerError, InputError
from explorer.core.limits import MAX_EXPLAINED_TOKENS
from explorer.core.loading import LoadedModel
from explorer.core.run import check_text
from explorer.core.tokens import output_words, token_rows

MAX_INPUT_TOKENS = 64  # a prompt, source or masked text longer than this is refused
MAX_MATRIX_ROWS = 16  # explained outputs in one generation matrix
MAX_STEPS = 200  # integrated-gradients steps
MAX_BATCH_TOKENS = 2048  # embeddings per forward pass: rows of a batch × tokens

BASELINES = {
    "pad": "the padding token's embedding (zeros where there is none)",
    "zero": "a zero embedding",
}
# What is attributed: a function of the logits (B, V) at the explained position, per token id.
OUTPUTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "probability": lambda logits: torch.softmax(logits, dim=-1),
    "log-probability": lambda logits: torch.log_softmax(logits, dim=-1),
    "logit": lambda logits: logits,
}


class Stopped(ExplorerError):
    """The user stopped a running attribution."""


# ---------------------------------------------------------------- what is explained


@dataclass(frozen=True)
class Prediction:
    """One output to explain: token ``token_id`` at ``position`` of the output, given ``ids``.

    ``ids`` are the attributed input tokens (a decoder's prompt and the continuation so far, an
    encoder's text with one position masked, an encoder-decoder's source). Encoder-decoders also
    carry ``decoder_ids``: the decoder start token and the target so far, fed as they are.
    ``token_id`` None means the model's own top prediction there, found when attributing.
    """

    ids: tuple[int, ...]
    position: int
    token_id: int | None
    label: str
    decoder_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Task:
    """The outputs of one text that can be explained, and the tokens of the whole input stream."""

    masked: bool  # predictions at masked positions (an encoder's MLM head), not continuation tokens
    predictions: tuple[Prediction, ...]
    stream_labels: tuple[str, ...]  # columns of the generation matrix
    note: str


def _labels(lm: LoadedModel, ids) -> tuple[str, ...]:
    return tuple(t.display for t in token_rows(lm.tokenizer, list(ids), None))


def _encode(lm: LoadedModel, text: str) -> list[int]:
    ids = list(lm.tokenizer(check_text(text))["input_ids"])
    if not ids:
        raise InputError("The text produced no tokens.")
    if len(ids) > MAX_INPUT_TOKENS:
        raise InputError(
            f"The text has {len(ids)} tokens; attribution runs the model many times, so it takes at most "
            f"{MAX_INPUT_TOKENS}: shorten the text."
        )
    return ids


def _check_head(lm: LoadedModel) -> None:
    if lm.model.get_output_embeddings() is None:
        raise InputError(f"'{lm.spec.key}' has no language-model head, so it makes no token prediction to explain.")


def predictions_of(lm: LoadedModel, text: str, new_tokens: int = 8) -> Task:
    """What can be explained for ``text``, by family.

    Decoder: each token of the greedy continuation (the first is "the next token"), given the
    prompt and the tokens before it. Encoder: the top prediction at each ``[MASK]`` in the text,
    or, when there is none, at each word token masked in turn. Encoder-decoder: each token of the
    greedy output, attributed to the source.
    """
    _check_head(lm)
    ids = _encode(lm, text)
    family = lm.spec.adapter
    if family.masked_lm:
        return _masked_predictions(lm, ids)
    new_tokens = check_count(new_tokens, 1, MAX_EXPLAINED_TOKENS, "number of tokens to generate")
    out = greedy(lm, ids, new_tokens)
    new = list(out.new_ids)
    shown = _labels(lm, new)
    if family.continues_prompt:
        preds = tuple(
            Prediction(tuple(ids + new[:k]), len(ids) + k - 1, tok, _step_label(k, shown[k]))
            for k, tok in enumerate(new)
        )
        return Task(False, preds, _labels(lm, ids + new[:-1]), f"Greedy continuation: “{out.text}”.")
    start = list(out.ids[: len(out.ids) - len(new)])  # the decoder start token
    preds = tuple(
        Prediction(tuple(ids), len(start) + k - 1, tok, _step_label(k, shown[k]), tuple(start + new[:k]))
        for k, tok in enumerate(new)
    )
    return Task(
        False, preds, _labels(lm, ids), f"The model's greedy output: {output_words(lm.tokenizer, new, out.text)}."
    )


def _step_label(k: int, shown: str) -> str:
    return f"next token: {shown}" if k == 0 else f"generated token {k + 1}: {shown}"


def _masked_predictions(lm: LoadedModel, ids: list[int]) -> Task:
    mask = lm.tokenizer.mask_token_id
    if mask is None:
        raise InputError(f"'{lm.spec.key}' has no mask token, so there is no masked position to explain.")
    labels = _labels(lm, ids)
    masked = [i for i, t in enumerate(ids) if t == mask]
    if masked:
        preds = tuple(Prediction(tuple(ids), i, None, f"[MASK] at position {i}") for i in masked)
        return Task(True, preds, labels, "The top prediction at each [MASK] of the text.")
    special = set(lm.tokenizer.all_special_ids)
    preds = tuple(
        Prediction(tuple(ids[:i] + [mask] + ids[i + 1 :]), i, None, f"“{labels[i]}” masked (position {i})")
        for i, t in enumerate(ids)
        if t not in special
    )
    if not preds:
        raise InputError("The text holds only special tokens: type a few words.")
    return Task(True, preds, labels, "Each word token masked in turn; the model's top prediction there.")


# ---------------------------------------------------------------- the score as a function of embeddings


class _Meter:
    """Counts the rows the model has run, reports the fraction done, and stops when asked."""

    def __init__(self, total: int, progress=None, should_stop=None):
        self.total, self.done = max(1, total), 0
        self.progress, self.should_stop = progress, should_stop

    def tick(self, rows: int) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Stopped("Stopped before the attribution finished.")
        self.done += rows
        if self.progress is not None:
            self.progress(min(1.0, self.done / self.total))


def input_embeddings(lm: LoadedModel, ids) -> torch.Tensor:
    """The token-embedding layer's output for ``ids``: (1, T, d), what ``inputs_embeds`` takes."""
    with torch.no_grad():
        return lm.model.get_input_embeddings()(torch.tensor([list(ids)], device=lm.device)).float()


def baseline_embeddings(lm: LoadedModel, ids, x: torch.Tensor, baseline: str = "pad") -> torch.Tensor:
    """``x`` (1, T, d) with every token but the special ones replaced by the ``baseline`` embedding."""
    pad = lm.tokenizer.pad_token_id
    if baseline == "pad" and pad is not None:
        fill = input_embeddings(lm, [pad]).expand_as(x)
    else:
        fill = torch.zeros_like(x)
    specials = set(lm.tokenizer.all_special_ids)
    special = torch.tensor([[i in specials for i in ids]], device=x.device)
    return torch.where(special[..., None], x, fill)


def score_function(lm: LoadedModel, pred: Prediction, token_id: int, output: str):
    """f(embeddings (B, T, d)) -> (B,): the ``output`` of ``token_id`` at the prediction's position."""
    model, transform = lm.model, OUTPUTS[output]
    dtype = next(model.parameters()).dtype
    decoder = None if pred.decoder_ids is None else torch.tensor([list(pred.decoder_ids)], device=lm.device)

    def forward(embeds: torch.Tensor) -> torch.Tensor:
        embeds = embeds.to(dtype)
        if decoder is None:
            logits = model(inputs_embeds=embeds).logits  # (B, T, V)
        else:
            logits = model(inputs_embeds=embeds, decoder_input_ids=decoder.expand(embeds.shape[0], -1)).logits
        return transform(logits[:, pred.position].float())[:, token_id]  # (B,)

    return forward


def _top_token(lm: LoadedModel, pred: Prediction, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(score_function(lm, pred, slice(None), "logit")(x)[0].argmax())


# ---------------------------------------------------------------- running a method


@dataclass(frozen=True)
class Attribution:
    """One method's scores for one prediction, over ``labels`` (the attributed tokens)."""

    method: str
    scores: np.ndarray  # (T,)
    labels: tuple[str, ...]
    token_id: int
    token: str
    output: str
    value: float  # f(input)
    baseline_value: float  # f(baseline)
    delta: float | None  # integrated gradients: sum(scores) − (value − baseline_value)


def check_method(method: str) -> Method:
    if method not in METHODS:
        raise InputError(f"Unknown attribution method '{method}'; pick one of: {', '.join(METHODS)}.")
    return METHODS[method]


def _check_settings(method: str, output: str, steps, baseline: str) -> tuple[Method, int]:
    if output not in OUTPUTS:
        raise InputError(f"Unknown output '{output}'; pick one of: {', '.join(OUTPUTS)}.")
    if baseline not in BASELINES:
        raise InputError(f"Unknown baseline '{baseline}'; pick one of: {', '.join(BASELINES)}.")
    return check_method(method), check_count(steps, 2, MAX_STEPS, "number of integrated-gradients steps")


def attribute(
    lm: LoadedModel,
    pred: Prediction,
    method: str = "integrated_gradients",
    steps: int = 50,
    output: str = "probability",
    progress=None,
    should_stop=None,
    baseline: str = "pad",
) -> Attribution:
    """Scores over ``pred.ids`` for one method; ``progress(fraction)`` is called as the model runs,
    and ``should_stop()`` returning True ends the run with ``Stopped``."""
    chosen, steps = _check_settings(method, output, steps, baseline)
    _check_head(lm)
    x = input_embeddings(lm, pred.ids)
    token_id = _top_token(lm, pred, x) if pred.token_id is None else int(pred.token_id)
    reference = baseline_embeddings(lm, pred.ids, x, baseline)
    score = score_function(lm, pred, token_id, output)
    meter = _Meter(chosen.cost(steps, len(pred.ids)), progress, should_stop)

    def forward(embeds: torch.Tensor) -> torch.Tensor:
        meter.tick(embeds.shape[0])
        return score(embeds)

    job = AttributionJob(forward, x, reference, steps, max(1, MAX_BATCH_TOKENS // len(pred.ids)))
    with torch.enable_grad():
        scores, delta = chosen.run(job)
    with torch.no_grad():
        value, base_value = score(torch.cat([x, reference])).tolist()
    return Attribution(
        method, scores.detach().float().cpu().numpy(), _labels(lm, pred.ids), token_id, _labels(lm, [token_id])[0],
        output, value, base_value, delta,
    )  # fmt: skip


@dataclass(frozen=True)
class AttributionMatrix:
    """Rows: the explained outputs; columns: the input stream. NaN where a row's input has no such token
    (a decoder's later tokens, written after the row's prediction)."""

    scores: np.ndarray  # (rows, columns)
    row_labels: tuple[str, ...]
    column_labels: tuple[str, ...]
    deltas: tuple[float | None, ...]


def attribution_rows(
    lm: LoadedModel,
    task: Task,
    method: str = "integrated_gradients",
    steps: int = 20,
    output: str = "probability",
    progress=None,
    should_stop=None,
    baseline: str = "pad",
) -> Iterator[Attribution]:
    """Attribute the predictions of ``task`` (a generated continuation, each masked position), the first
    ``MAX_MATRIX_ROWS`` of them, one row at a time: a caller that stops iterating stops the work."""
    check_method(method)
    predictions = task.predictions[:MAX_MATRIX_ROWS]
    n = len(predictions)
    for r, pred in enumerate(predictions):

        def row_progress(fraction, r=r):
            if progress is not None:
                progress((r + fraction) / n)

        yield attribute(lm, pred, method, steps, output, row_progress, should_stop, baseline)


def matrix_of(task: Task, rows: list[Attribution]) -> AttributionMatrix:
    """The rows of ``attribution_rows`` as one target × source matrix (NaN where a row has no score)."""
    scores = np.full((len(rows), len(task.stream_labels)), np.nan)
    labels = []
    for r, (pred, result) in enumerate(zip(task.predictions, rows)):
        scores[r, : len(result.scores)] = result.scores
        labels.append(f"{pred.position}→{result.token}" if task.masked else f"{r}: {result.token}")
    return AttributionMatrix(scores, tuple(labels), task.stream_labels, tuple(r.delta for r in rows))


def attribution_matrix(
    lm: LoadedModel,
    task: Task,
    method: str = "integrated_gradients",
    steps: int = 20,
    output: str = "probability",
    progress=None,
    should_stop=None,
    baseline: str = "pad",
) -> AttributionMatrix:
    """All rows of ``attribution_rows`` at once."""
    rows = list(attribution_rows(lm, task, method, steps, output, progress, should_stop, baseline))
    return matrix_of(task, rows)
