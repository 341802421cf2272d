"""Speculative decoding's speed-up, measured against plain greedy decoding and next to the formula's.

For each k, plain greedy decoding and speculative decoding with a draft are timed in turn on the same prompt
(after one untimed round), so a busy host slows both alike; the measured speed-up is the median of their
ratios, and the expected one is ``expected_speedup`` from the acceptance rate and the draft's cost measured
in the same runs; ``explained`` is the same count with the passes' measured costs (why the two differ). Each point also says whether both wrote the same tokens (greedy: they must).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from explorer.analysis.decoding.generate import check_count, greedy
from explorer.analysis.inference.speculative import MAX_K, Draft, SpeculativeResult, speculative_generate
from explorer.core.loading import LoadedModel

MAX_REPEATS = 10


@dataclass(frozen=True)
class SpeedupPoint:
    """One k: seconds per repeat for plain greedy and speculative decoding, and what the steps say."""

    k: int
    plain_seconds: np.ndarray  # (repeats,)
    speculative_seconds: np.ndarray  # (repeats,)
    result: SpeculativeResult  # the last speculative run: its steps, acceptance and cost ratio
    same_tokens: bool  # speculative wrote exactly plain greedy's tokens

    @property
    def measured(self) -> float:
        """Median of plain / speculative, run by run (> 1: speculative decoding is faster)."""
        return float(np.median(self.plain_seconds / self.speculative_seconds))

    @property
    def expected(self) -> float:
        return self.result.expected_speedup

    @property
    def alpha(self) -> float:
        return self.result.alpha

    @property
    def explained(self) -> float:
        """The speed-up the steps predict with their passes' real costs: tokens per step × a plain greedy step's
        seconds / (the draft's and the verifier's seconds per step). The formula counts a verify pass over k + 1
        tokens as one plain step and assumes k proposals every step; on a CPU the pass over k + 1 tokens costs
        1.3-1.6 plain steps (the output layer runs once per position; tiny-gpt2's is half its weights), and prompt
        lookup often proposes fewer than k. What this leaves out (Python between the passes) was 0.1-0.3%."""
        steps = self.result.steps
        busy = sum(s.draft_seconds + s.verify_seconds for s in steps) / max(len(steps), 1)
        plain_step = float(np.median(self.plain_seconds)) / max(len(self.result.new_ids), 1)
        return self.result.tokens_per_step * plain_step / busy if busy > 0 else float("nan")


def speedup_by_k(
    lm: LoadedModel, prompt_ids, draft: Draft, ks=(1, 2, 4, 8), new_tokens: int = 32, repeats: int = 3,
    progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None,
) -> list[SpeedupPoint]:  # fmt: skip
    """Greedy speculative decoding at each k against plain greedy decoding, interleaved; the points finished
    when ``should_stop()`` turns true (after at least one timed round). ``progress(fraction)`` after every run."""
    ks = [check_count(k, 1, MAX_K, "number of proposed tokens k") for k in ks]
    repeats = check_count(repeats, 1, MAX_REPEATS, "number of repeats")
    plain: dict[int, list[float]] = {k: [] for k in ks}
    spec: dict[int, list[float]] = {k: [] for k in ks}
    last: dict[int, SpeculativeResult] = {}
    reference = greedy(lm, prompt_ids, new_tokens).new_ids  # also the untimed warm-up of plain decoding
    total, done = (repeats + 1) * len(ks), 0
    for round_ in range(repeats + 1):
        if round_ > 1 and should_stop is not None and should_stop():
            break
        for k in ks:
            start = time.perf_counter()
            greedy(lm, prompt_ids, new_tokens)
            middle = time.perf_counter()
            last[k] = speculative_generate(lm, prompt_ids, draft, k, new_tokens)
            end = time.perf_counter()
            if round_:  # round 0 warms both up
                plain[k].append(middle - start)
                spec[k].append(end - middle)
            done += 1
            if progress is not None:
                progress(done / total)
    return [
        SpeedupPoint(k, np.array(plain[k]), np.array(spec[k]), last[k], last[k].new_ids == reference)
        for k in ks if plain[k]
    ]  # fmt: skip
