"""Greedy decoding, sampling and beam search side by side on one prompt: the strategies view's numbers.

A class runs the same comparison many times (one text on the projector, the same defaults), and each part is
fixed by its inputs: greedy and beam search by the prompt and their settings, the samples by those and the
seed. So each part is kept per loaded model (a few hundred results, freed with the model), and a request that
finds one, or arrives while another computes it, does not run the model again.
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.analysis.decoding.beam_search import BeamResult, beam_search
from explorer.analysis.decoding.generate import greedy, sample
from explorer.analysis.decoding.sampling import DecodingSettings
from explorer.core.cache import BoundedCache, PerObject
from explorer.core.loading import LoadedModel
from explorer.core.tokens import token_label


@dataclass(frozen=True)
class StrategyRow:
    """One continuation: which strategy wrote it, its text, the model's log-probability, whether it ended."""

    strategy: str  # "greedy", "sample 2", "beam 1 (score -1.234)"
    text: str
    logprob: float
    finished: bool


@dataclass(frozen=True)
class StrategyComparison:
    """The rows (greedy, then each sample, then each finished beam, best first), the beam search itself, and
    its tree as the nodes ``explorer.plots.decoding.beam_tree`` draws (``id``, ``parent``, ``step``,
    ``score``, ``status``, ``label``)."""

    rows: list[StrategyRow]
    beams: BeamResult
    tree: list[dict]


def beam_tree_nodes(lm: LoadedModel, result: BeamResult) -> list[dict]:
    """Every node beam search looked at, labelled with its token (the root is ``⟨start⟩``)."""
    return [
        {"id": n.id, "parent": n.parent, "step": n.step, "score": n.logprob, "status": n.status,
         "label": "⟨start⟩" if n.token is None else token_label(lm.tokenizer, n.token)}
        for n in result.nodes
    ]  # fmt: skip


RESULTS_PER_MODEL = 256  # parts of comparisons (a few KB each) kept per loaded model
_kept: PerObject[BoundedCache] = PerObject(lambda lm: BoundedCache(None, max_items=RESULTS_PER_MODEL))


def compare_strategies(
    lm: LoadedModel,
    text: str,
    settings: DecodingSettings,
    new_tokens: int,
    n_samples: int,
    num_beams: int,
    length_penalty: float = 1.0,
    seed: int = 0,
) -> StrategyComparison:
    """Continue ``text`` by ``new_tokens`` tokens three ways: greedy, ``n_samples`` samples drawn with
    ``settings`` (seeded), and beam search of width ``num_beams``."""
    prompt = tuple(lm.tokenizer(text)["input_ids"])
    kept = _kept(lm)
    g = kept.get(("greedy", prompt, new_tokens), lambda: greedy(lm, list(prompt), new_tokens))
    rows = [StrategyRow("greedy", g.text, g.logprob, g.finished)]
    sampled = kept.get(("sample", prompt, settings, n_samples, new_tokens, seed),
                       lambda: sample(lm, list(prompt), settings, n_samples, new_tokens, seed))  # fmt: skip
    rows += [StrategyRow(f"sample {i + 1}", s.text, s.logprob, s.finished) for i, s in enumerate(sampled)]
    result = kept.get(("beam", prompt, num_beams, new_tokens, length_penalty),
                      lambda: beam_search(lm, list(prompt), num_beams, new_tokens, length_penalty))  # fmt: skip
    rows += [
        StrategyRow(f"beam {i + 1} (score {h.score:.3f})", h.text, h.logprob, True)
        for i, h in enumerate(result.finished[:num_beams])
    ]
    return StrategyComparison(rows, result, beam_tree_nodes(lm, result))
