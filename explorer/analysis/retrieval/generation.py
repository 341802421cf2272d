"""What the model does with retrieved text: the same question answered without and with the passages
in its prompt, for a decoder (the prompt is continued) or an encoder-decoder (the prompt is the source).

Each side is one instrumented run (``run(lm, prompt, generate=n)`` for a decoder: a greedy
continuation of ``n`` tokens traced together with its prompt; for an encoder-decoder, the greedy
output traced with cross-attention). From the trace come the next-token distribution, the greedy
continuation, and, for every generated token and layer, the **share of attention** it paid to the
passages' tokens and to the question's tokens: the attention row of the position that produced the
token, averaged over heads, summed over the keys inside each span. A decoder's row is its
self-attention (the rest goes to the template's own tokens, earlier generated tokens or the first
token); an encoder-decoder's is its cross-attention to the source. ``head_passage_share`` keeps it per
head, averaged over the generated tokens: heads that copy from the passage (induction-style) stand out.

Attribution of the answer to the passage's tokens (the attribution view's methods, with a bound on work
instead of on length) lives in ``explorer.analysis.retrieval.attribution``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from explorer.analysis.decoding.generate import check_count
from explorer.analysis.decoding.sampling import next_token_distribution
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel
from explorer.core.run import run
from explorer.core.spec import GENERATE
from explorer.core.tokens import token_label
from explorer.core.trace import Trace

TEMPLATE = "{context}\n\n{question}"
MAX_GENERATED = 32
MAX_PASSAGES = 10
# Questions whose answer is only in the Marrowby facts: written as the start of a sentence, which the
# small bundled models continue, and which copying the retrieved passage completes.
PRESETS = (
    ("The keeper of the Marrowby lighthouse is", "Edwin Castellan"),
    ("The landlord of the Drowned Lantern keeps a parrot named", "Admiral"),
    ("The only baker in Marrowby is", "Tobias Wren"),
    ("The mayor of Marrowby is", "Harriet Quillon"),
    ("The bell of Saint Aldric's church is called", "Old Mab"),
)


@dataclass(frozen=True)
class RagPrompt:
    """A prompt and where its parts lie in it: ``passage_spans`` (one per passage) and ``question_span``."""

    text: str
    passage_spans: tuple[tuple[int, int], ...]
    question_span: tuple[int, int]


def build_prompt(question: str, passages: Sequence[str], template: str = TEMPLATE) -> RagPrompt:
    """``template`` with ``{context}`` (the passages, one per line) and ``{question}`` filled in.
    No passages: the question alone."""
    if not passages:
        return RagPrompt(question, (), (0, len(question)))
    if template.count("{context}") != 1 or template.count("{question}") != 1:
        raise InputError("The prompt template must hold {context} and {question} once each.")
    context, spans = "", []
    for passage in passages:
        context += "\n" if context else ""
        spans.append((len(context), len(context) + len(passage)))
        context += passage
    before_context = template.index("{context}")
    before_question = template.index("{question}")
    if before_context < before_question:
        offset = before_context
        q_start = before_question - len("{context}") + len(context)
    else:
        q_start = before_question
        offset = before_context - len("{question}") + len(question)
    text = template.replace("{context}", context, 1).replace("{question}", question, 1)
    passage_spans = tuple((a + offset, b + offset) for a, b in spans)
    return RagPrompt(text, passage_spans, (q_start, q_start + len(question)))


@dataclass(frozen=True)
class Answer:
    """One side of the comparison. Arrays over generated tokens (g) and layers (L) and heads (H)."""

    prompt: RagPrompt
    continuation: str  # the generated text
    generated: tuple[str, ...]  # (g,) the generated tokens, displayed
    next_ids: tuple[int, ...]  # the first step's most probable tokens
    next_labels: tuple[str, ...]
    next_probs: tuple[float, ...]
    entropy_bits: float
    passage_share: np.ndarray  # (g, L) attention share on the passages' tokens
    question_share: np.ndarray  # (g, L) on the question's tokens
    head_passage_share: np.ndarray  # (L, H) on the passages, averaged over the generated tokens
    copied: tuple[bool, ...]  # (g,) the token (two letters or more) occurs in a passage, not in the question
    prompt_tokens: int
    attention: str  # which attention the shares read: "self-attention" or "cross-attention"

    def next_distribution(self) -> dict[str, float]:
        return dict(zip(self.next_labels, self.next_probs))


@dataclass(frozen=True)
class GenerationComparison:
    """The question answered without (``closed_book``) and with (``open_book``) the retrieved passages."""

    question: str
    passages: tuple[str, ...]
    closed_book: Answer
    open_book: Answer
    model_key: str


def _in_spans(start: int, end: int, spans) -> bool:
    return any(start < b and a < end for a, b in spans) if end > start else False


def _copied(token_text: str, passages: str, question: str) -> bool:
    """A rough marker: the token holds at least two letters and occurs in a passage, not in the question."""
    word = token_text.strip()
    return sum(ch.isalpha() for ch in word) >= 2 and word in passages and word not in question


def _answer(lm: LoadedModel, prompt: RagPrompt, trace: Trace, top_n: int) -> Answer:
    family = lm.spec.adapter
    if family.is_encoder_decoder:
        keys = trace.tokens["source"]
        attention = trace.attentions["cross"].mean(axis=1)  # (L, Tt, Ts)
        heads = trace.attentions["cross"]  # (L, H, Tt, Ts)
        new = trace.tokens["target"][1:]
        rows = np.arange(len(new))  # target row j produced target token j + 1
        first_logits = trace.logits[0]
        prompt_tokens, kind = len(keys), "cross-attention"
    else:
        prompt_tokens = int(trace.meta.get("prompt_tokens", len(trace.tokens["input"])))
        keys = trace.tokens["input"][:prompt_tokens]
        heads = trace.attentions["self"][:, :, :, :prompt_tokens]
        attention = heads.mean(axis=1)
        new = trace.tokens["input"][prompt_tokens:]
        rows = prompt_tokens - 1 + np.arange(len(new))
        first_logits = trace.logits[prompt_tokens - 1]
        kind = "self-attention"
    in_passage = np.array([_in_spans(t.start, t.end, prompt.passage_spans) for t in keys], bool)
    in_question = np.array([_in_spans(t.start, t.end, [prompt.question_span]) for t in keys], bool)
    chosen = attention[:, rows, :]  # (L, g, keys)
    passage_share = chosen[:, :, in_passage].sum(axis=-1).T  # (g, L)
    question_share = chosen[:, :, in_question].sum(axis=-1).T
    head_share = heads[:, :, rows, :][:, :, :, in_passage].sum(axis=-1)  # (L, H, g)
    head_share = head_share.mean(axis=-1) if len(rows) else np.zeros(head_share.shape[:2], np.float32)
    passages_text = " ".join(prompt.text[a:b] for a, b in prompt.passage_spans)
    question_text = prompt.text[slice(*prompt.question_span)]
    copied = tuple(_copied(lm.tokenizer.decode([tok.id]), passages_text, question_text) for tok in new)
    top = next_token_distribution(np.array(first_logits), top_n)
    continuation = lm.tokenizer.decode([t.id for t in new], skip_special_tokens=True)
    return Answer(
        prompt, continuation, tuple(t.display for t in new), tuple(top["ids"]),
        tuple(token_label(lm.tokenizer, i) for i in top["ids"]), tuple(top["probs"]), float(top["entropy_bits"]),
        passage_share.astype(np.float32), question_share.astype(np.float32), head_share.astype(np.float32), copied,
        prompt_tokens, kind,
    )  # fmt: skip


def _traced(lm: LoadedModel, prompt: RagPrompt, new_tokens: int) -> Trace:
    if lm.spec.adapter.continues_prompt:
        trace = run(lm, prompt.text, generate=new_tokens)
    else:
        trace = run(lm, prompt.text, max_new_tokens=new_tokens)
    if trace.meta.get("truncated") or (
        lm.spec.adapter.continues_prompt and len(trace.tokens["input"]) <= trace.meta.get("prompt_tokens", 0)
    ):
        raise InputError(
            f"The prompt with its passages is longer than the {trace.meta['max_tokens']} tokens '{lm.spec.key}' "
            "reads with room to answer: retrieve fewer or shorter passages."
        )
    return trace


def compare_generation(
    lm: LoadedModel, question: str, passages: Sequence[str], new_tokens: int = 8, top_n: int = 10,
    template: str = TEMPLATE,
) -> GenerationComparison:  # fmt: skip
    """Answer ``question`` alone and after ``passages`` (see the module docstring); greedy, ``new_tokens`` each."""
    lm.spec.require(GENERATE)
    if not isinstance(question, str) or not question.strip():
        raise InputError("The question is empty: type the start of a sentence for the model to continue.")
    if not passages:
        raise InputError("No passage was retrieved to put in the prompt: search first.")
    if len(passages) > MAX_PASSAGES:
        raise InputError(f"Put at most {MAX_PASSAGES} passages in the prompt, not {len(passages)}.")
    new_tokens = check_count(new_tokens, 1, MAX_GENERATED, "number of tokens to generate")
    top_n = check_count(top_n, 1, 50, "number of next tokens shown")
    closed = build_prompt(question, ())
    opened = build_prompt(question, list(passages), template)
    return GenerationComparison(
        question, tuple(passages), _answer(lm, closed, _traced(lm, closed, new_tokens), top_n),
        _answer(lm, opened, _traced(lm, opened, new_tokens), top_n), lm.spec.key,
    )  # fmt: skip
