"""Beam search as ``generate(num_beams=...)`` runs it, recorded as a tree of every hypothesis looked at.

``BeamNode.logprob`` is beam search's running score: the sum of the model's log-probs (nats) of the
tokens since the root (beam search here applies no logits processors, so transformers' "processed
scores" are these log-probs). A finished hypothesis is ranked by
``score = logprob / new_tokens ** length_penalty``, which is what transformers reports as
``sequences_scores``; ``new_tokens`` counts the end-of-sequence token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis.decoding.generate import (
    MAX_NEW_TOKENS,
    Runner,
    check_count,
    check_generative,
    check_ids,
    check_room,
    decode_text,
    eos_ids,
)
from explorer.core.errors import InputError
from explorer.core.loading import LoadedModel

MAX_BEAMS = 8
NEG = -1.0e9  # transformers' stand-in for "impossible" in beam search (finite, so sums stay ordered)


@dataclass(frozen=True)
class BeamNode:
    """One hypothesis beam search looked at. Node 0 is the root (the prompt, step 0).

    At each step the ``2 * num_beams`` best continuations of the running beams are considered
    (more when there are several end-of-sequence ids). ``status`` is ``"kept"`` (continues as a
    beam), ``"finished"`` (ended and entered the list of finished hypotheses at this step; a better
    one may push it out later, ``BeamResult.finished`` is the final list), or ``"pruned"``.
    """

    id: int
    parent: int | None
    step: int
    token: int | None
    logprob: float  # running score: sum of the log-probs of the tokens since the root
    status: str
    score: float | None = None  # finished only: logprob / new_tokens ** length_penalty
    candidate_rank: int = 0  # 0 is the best continuation of its step


@dataclass(frozen=True)
class BeamHypothesis:
    node: int
    ids: tuple[int, ...]  # what generate returns: decoder prompt + new tokens
    new_ids: tuple[int, ...]
    logprob: float
    score: float  # the length-penalised score that ranks finished hypotheses (transformers' sequences_scores)
    text: str


@dataclass(frozen=True)
class BeamResult:
    """The whole search: every node considered, and the finished hypotheses best first."""

    nodes: tuple[BeamNode, ...]
    finished: tuple[BeamHypothesis, ...]
    num_beams: int
    length_penalty: float
    early_stopping: bool | str

    @property
    def best(self) -> BeamHypothesis:
        return self.finished[0]

    @property
    def n_steps(self) -> int:
        return max(n.step for n in self.nodes)

    def at_step(self, step: int) -> list[BeamNode]:
        return [n for n in self.nodes if n.step == step]

    def path(self, node: int) -> list[int]:
        """Node ids from the root's first child down to ``node``."""
        return _path(self.nodes, node)


@torch.no_grad()
def beam_search(
    lm: LoadedModel,
    prompt_ids,
    num_beams: int = 4,
    max_new_tokens: int = 20,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    eos_token_id: int | list[int] | None = None,
) -> BeamResult:
    """Beam search as ``generate(num_beams=..., do_sample=False)`` runs it, keeping every hypothesis.

    Each step (transformers' ``_beam_search``): add each running beam's score to the log-probs of
    its next token; take the top ``2 * num_beams`` of all beams' continuations; those among the
    first ``num_beams`` that end (an end-of-sequence token, or the last allowed position) enter the
    finished list with score ``logprob / new_tokens ** length_penalty`` if it beats its worst;
    the best ``num_beams`` that did not end run on. The search stops when the finished list is
    full and (``early_stopping=False``) no running beam, at its current length, could beat it;
    with ``early_stopping=True`` as soon as the list is full; with ``"never"`` assuming the best
    length; and always at ``max_new_tokens``. ``eos_token_id`` overrides the model's end ids.
    """
    check_generative(lm)
    prompt_ids = check_ids(lm, prompt_ids)
    k = check_count(num_beams, 1, MAX_BEAMS, "number of beams")
    max_new_tokens = check_count(max_new_tokens, 1, MAX_NEW_TOKENS, "number of new tokens")
    if early_stopping not in (True, False, "never"):
        raise InputError(f"Early stopping is True, False or 'never', not {early_stopping!r}.")
    if not np.isfinite(length_penalty) or abs(length_penalty) > 10:
        raise InputError(f"The length penalty must be a number from -10 to 10, not {length_penalty!r}.")
    eos = eos_ids(lm) if eos_token_id is None else [int(e) for e in np.atleast_1d(eos_token_id)]
    eos_t = torch.tensor(eos, dtype=torch.long, device=lm.device)
    check_room(lm, len(prompt_ids), max_new_tokens)
    runner = Runner(lm, prompt_ids, k)
    dev, prompt_len = lm.device, runner.prompt_len
    max_length, cur_len = prompt_len + max_new_tokens, prompt_len
    n_keep = max(2, 1 + len(eos)) * k  # candidates per step
    top_mask = torch.arange(n_keep, device=dev) < k  # only the first k candidates may finish

    nodes = [BeamNode(0, None, 0, None, 0.0, "root")]
    running_nodes = [0] * k
    running_scores = torch.zeros((1, k), device=dev)  # (1, k); beams 1.. start "impossible" so the
    running_scores[:, 1:] = NEG  # first step expands only one copy of the prompt
    pool_scores = torch.full((1, k), NEG, device=dev)  # finished list, best first
    pool_finished = torch.zeros((1, k), dtype=torch.bool, device=dev)
    pool_nodes: list[int | None] = [None] * k
    improvable = torch.ones((1, 1), dtype=torch.bool, device=dev)  # transformers' "heuristic unsatisfied"

    while True:
        logits = runner.next_logits()  # (k, V)
        vocab = logits.shape[-1]
        log_probs = torch.log_softmax(logits, dim=-1)[None] + running_scores[:, :, None]  # (1, k, V)
        top_scores, top_index = torch.topk(log_probs.reshape(1, -1), k=n_keep)  # (1, 2k)
        parent_beam, tokens = top_index // vocab, top_index % vocab
        ends = torch.isin(tokens, eos_t) | (cur_len + 1 >= max_length)  # (1, 2k)

        # the best k candidates that did not end run on
        run_scores = top_scores + ends.to(torch.float32) * NEG
        next_index = torch.topk(run_scores, k=k)[1]  # (1, k)
        # those of the first k that ended may enter the finished list (transformers' _update_finished_beams)
        just_finished = ends & top_mask[None, :]
        # (transformers also blocks additions when the list is full under early_stopping=True, or cannot
        # improve; for one prompt the loop has already stopped in both cases, so those terms are left out)
        penalised = top_scores / ((cur_len + 1 - prompt_len) ** length_penalty)
        penalised += (~just_finished) * NEG
        merged_scores = torch.cat((pool_scores, penalised), dim=1)  # (1, 3k): old list, then candidates
        merged = torch.topk(merged_scores, k=k)[1][0].tolist()

        first = len(nodes)
        entered = {i - k for i in merged if i >= k and bool(just_finished[0, i - k])}
        kept = {i for i in next_index[0].tolist() if not ends[0, i]}  # at the last position all end
        for i in range(n_keep):
            status = "kept" if i in kept else "finished" if i in entered else "pruned"
            score = float(penalised[0, i]) if status == "finished" else None
            nodes.append(BeamNode(first + i, running_nodes[int(parent_beam[0, i])], cur_len - prompt_len + 1,
                                  int(tokens[0, i]), float(top_scores[0, i]), status, score, i))  # fmt: skip
        merged_nodes = pool_nodes + [first + i for i in range(n_keep)]
        pool_scores = merged_scores[:, merged]
        pool_finished = torch.cat((pool_finished, just_finished), dim=1)[:, merged]
        pool_nodes = [merged_nodes[i] for i in merged]

        running_scores = run_scores.gather(1, next_index)
        running_nodes = [first + i for i in next_index[0].tolist()]
        parents = parent_beam.gather(1, next_index)[0]  # (k,) rows of the cache to continue from
        runner.append(tokens.gather(1, next_index)[0], parents)
        cur_len += 1

        # stopping (transformers' _check_early_stop_heuristic and _beam_search_has_unfinished_sequences)
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = max_length - prompt_len
        else:
            best_length = cur_len - prompt_len
        best_running = running_scores[:, :1] / (best_length**length_penalty)
        worst_finished = torch.where(pool_finished, torch.min(pool_scores, dim=1, keepdim=True)[0], NEG)
        improvable = improvable & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
        open_beam = not (bool(torch.all(pool_finished)) and early_stopping is True)
        if not (bool(improvable.any()) and open_beam and not bool(torch.all(ends))):
            break

    start = tuple(runner.ids[0, :prompt_len].tolist())  # the prompt, or the decoder start token
    finished = []
    for slot, node in enumerate(pool_nodes):
        if node is None or not bool(pool_finished[0, slot]):
            continue
        new_ids = tuple(nodes[i].token for i in _path(nodes, node))
        hypothesis = BeamHypothesis(node, start + new_ids, new_ids, nodes[node].logprob, float(pool_scores[0, slot]),
                                    decode_text(lm, new_ids))  # fmt: skip
        finished.append(hypothesis)
    return BeamResult(tuple(nodes), tuple(finished), k, float(length_penalty), early_stopping)


def _path(nodes, node: int) -> list[int]:
    out = []
    while nodes[node].parent is not None:
        out.append(node)
        node = nodes[node].parent
    return out[::-1]
