"""Attribution of a retrieved answer to its prompt: how much of the answer's first tokens comes from the
passages' tokens and how much from the question's, with the Attribution view's methods.

The Attribution view refuses texts over 64 tokens (``attribution.attribute.MAX_INPUT_TOKENS``), because
ablation runs the model once per token; a prompt with passages is longer. Here the bound is on the work
instead: one explained token may run the model on at most ``MAX_WORK`` token positions (rows × prompt
tokens). Gradient methods (input × gradient, saliency) take one forward and backward pass whatever the
length; integrated gradients with n steps takes n + 2 rows, so its steps are lowered to fit, with a
sentence; ablation and occlusion take one row per token and are refused, with a sentence, when they do
not fit.

Each explained token's scores cover the whole input (the prompt, and for a decoder the answer tokens
written before it); they are summed per segment: the passages, the question, and the rest (the
template's separators, special tokens, earlier answer tokens). For integrated gradients the segment
sums add up to f(input) − f(baseline), up to the convergence delta (completeness).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explorer.analysis.attribution.attribute import OUTPUTS, Prediction, Stopped, attribute, check_method
from explorer.analysis.decoding.generate import check_count, greedy
from explorer.analysis.retrieval.generation import RagPrompt
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.spec import GENERATE
from explorer.core.tokens import token_rows

MAX_WORK = 32_768  # token positions run per explained token: 128 prompt tokens × 256 rows
MAX_ANSWER_TOKENS = 4
SEGMENTS = ("passage", "question", "other")


@dataclass(frozen=True)
class AnswerAttribution:
    """Scores of k answer tokens over the input's T tokens (NaN where a row's input has no such token: a
    decoder's later answer tokens). Sums per segment are (k,)."""

    method: str
    output: str
    labels: tuple[str, ...]  # (T,) the input tokens, displayed
    segments: tuple[str, ...]  # (T,) "passage", "question" or "other"
    answer: tuple[str, ...]  # (k,) the explained answer tokens
    scores: np.ndarray  # (k, T)
    value: np.ndarray  # (k,) f(input)
    baseline_value: np.ndarray  # (k,) f(baseline)
    delta: np.ndarray  # (k,) integrated gradients' convergence delta (NaN for other methods)
    steps: int  # integrated-gradients steps run
    note: str  # what was cut or stopped, as a sentence ("" when nothing was)

    def segment_sums(self) -> dict[str, np.ndarray]:
        """Segment -> (k,) the sum of its tokens' scores."""
        seg = np.array(self.segments)
        return {s: np.nansum(np.where(seg == s, self.scores, 0.0), axis=1) for s in SEGMENTS}

    def passage_share(self) -> np.ndarray:
        """(k,) the passages' share of the attribution's size: Σ|scores| on the passages / Σ|scores|."""
        size = np.abs(np.nan_to_num(self.scores))
        total = size.sum(axis=1)
        on_passages = size[:, np.array(self.segments) == "passage"].sum(axis=1)
        return np.divide(on_passages, total, out=np.zeros_like(total), where=total > 0)


def _segments(prompt: RagPrompt, offsets, special) -> list[str]:
    def inside(start, end, spans):
        return end > start and any(start < b and a < end for a, b in spans)

    return [
        "other" if sp else "passage" if inside(a, b, prompt.passage_spans) else
        "question" if inside(a, b, [prompt.question_span]) else "other"
        for (a, b), sp in zip(offsets, special)
    ]  # fmt: skip


def _fit_steps(method: str, steps: int, tokens: int) -> tuple[int, str]:
    """Integrated-gradients steps that fit ``MAX_WORK`` for ``tokens`` input tokens, and a sentence when lowered;
    a method that cannot fit is refused."""
    chosen = check_method(method)
    if chosen.cost(steps, tokens) * tokens <= MAX_WORK:
        return steps, ""
    if method == "integrated_gradients":
        fitted = MAX_WORK // tokens - 2
        if fitted >= 2:
            return fitted, (
                f"Integrated gradients ran {fitted} steps, not {steps}: each step runs the model on all {tokens} "
                "prompt tokens, and one answer token may cost at most "
                f"{MAX_WORK:,} token runs; the convergence delta says how far that is from exact."
            )
    raise InputError(
        f"{chosen.name} runs the model about once per token, too often for a {tokens}-token prompt; pick input × "
        "gradient or saliency (one backward pass at any length), or put fewer passages in the prompt."
    )


def attribute_answer(
    lm: LoadedModel, prompt: RagPrompt, method: str = "input_x_gradient", answer_tokens: int = 1, steps: int = 32,
    output: str = "probability", progress=None, should_stop=None,
) -> AnswerAttribution:  # fmt: skip
    """Attribute the first ``answer_tokens`` tokens of the greedy answer to ``prompt`` to the prompt's tokens.

    ``progress(fraction)`` as the model runs; ``should_stop()`` ends early and the answer tokens already
    explained are returned (none: ``Stopped``)."""
    lm.spec.require(GENERATE)
    answer_tokens = check_count(answer_tokens, 1, MAX_ANSWER_TOKENS, "number of answer tokens explained")
    if output not in OUTPUTS:
        raise InputError(f"Unknown output '{output}'; pick one of: {', '.join(OUTPUTS)}.")
    encoded = lm.tokenizer(prompt.text, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    rows = token_rows(lm.tokenizer, ids, offsets)
    segments = _segments(prompt, offsets, [t.special for t in rows])
    out = greedy(lm, ids, answer_tokens)
    new = list(out.new_ids)
    if not new:
        raise InputError(
            "The model wrote nothing after the prompt (it ended at once), so there is no answer to explain."
        )
    shown = tuple(t.display for t in token_rows(lm.tokenizer, new, None))
    if lm.spec.adapter.continues_prompt:
        preds = [Prediction(tuple(ids + new[:k]), len(ids) + k - 1, tok, shown[k]) for k, tok in enumerate(new)]
        labels = tuple(t.display for t in rows) + shown[:-1]
        segments += ["other"] * (len(new) - 1)  # earlier answer tokens
    else:
        start = list(out.ids[: len(out.ids) - len(new)])  # the decoder start token
        preds = [
            Prediction(tuple(ids), len(start) + k - 1, tok, shown[k], tuple(start + new[:k]))
            for k, tok in enumerate(new)
        ]
        labels = tuple(t.display for t in rows)
    steps = check_count(steps, 2, 200, "number of integrated-gradients steps")
    steps, note = _fit_steps(method, steps, len(preds[-1].ids))
    scores = np.full((len(preds), len(labels)), np.nan)
    values, base_values, deltas, done = [], [], [], 0
    for k, pred in enumerate(preds):
        report = (lambda f, k=k: progress((k + f) / len(preds))) if progress is not None else None
        try:
            result = attribute(lm, pred, method, steps, output, report, should_stop)
        except Stopped:
            if done == 0:
                raise
            note = (note + " " if note else "") + f"Stopped after {done} of {len(preds)} answer tokens."
            break
        scores[k, : len(pred.ids)] = result.scores
        values.append(result.value)
        base_values.append(result.baseline_value)
        deltas.append(np.nan if result.delta is None else result.delta)
        done += 1
    return AnswerAttribution(
        method, output, labels, tuple(segments), shown[:done], scores[:done], np.array(values), np.array(base_values),
        np.array(deltas), steps, note,
    )  # fmt: skip
