"""Faster inference, measured: quantization and speculative decoding, as the Inference views report them.

Quantization: per precision, the stored size over float32's, the forward and per-token latency over
float32's (timed in turn in the same run), and the KL divergence and top-1 agreement against float32 on the
held-out text. Speculative decoding (greedy, k proposals): per draft kind, the acceptance rate α, the
formula's expected speed-up, and the measured speed-up of the app's speculative loop over its plain greedy
loop and over ``model.generate``; beside it transformers' own assisted generation (``prompt_lookup_num_tokens``,
``assistant_model``) over ``model.generate``. All four are timed in turn (``interleaved_medians``).
On the bundled decoder (its drafts: early exit, prompt lookup and the bundled draft model tiny-gpt2-draft) and a
GPT-2-small-shaped random-weight model (with GPT-2's tokenizer; its draft model is a random 2 x 64 GPT-2): a
random model's drafts agree with it by chance only, so low acceptance there is expected.

Why measured speed-ups sit below the formula's: the verifier profile times one cached pass over k + 1 tokens
against the one-token pass plain greedy decoding makes (the formula counts both as one pass), the first pass
over the prompt with every position's logits (as before) and with only the k + 1 checked (as now), and the
seconds per step spent outside the forward passes.

    python bench/inference.py [--repeats 3] [--tokens 48] [--k 4] [--models tiny-gpt2 gpt2-small-random]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from timing import interleaved_medians  # noqa: E402
from trace_overhead import PASSAGE, gpt2_small_random  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from explorer.analysis.decoding.generate import greedy  # noqa: E402
from explorer.analysis.inference.quantization_effects import compare_precisions  # noqa: E402
from explorer.analysis.inference.speculative import (  # noqa: E402
    PromptLookupDraft,
    early_exit_draft,
    model_draft,
    speculative_generate,
)
from explorer.core.loading import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = (ROOT / "assets" / "heldout" / "modern.txt").read_text(encoding="utf-8")
PROMPT = "On Monday morning the bus was late again, so I walked to work. On Monday morning the bus"


DRAFT_MODEL = "tiny-gpt2-draft"


def trained_draft(lm):
    """The bundled draft model, where it shares ``lm``'s vocabulary (tiny-gpt2); else None."""
    try:
        draft = load(DRAFT_MODEL)
    except Exception:
        return None
    if draft.tokenizer.get_vocab() != lm.tokenizer.get_vocab():
        return None
    made = model_draft(lm, draft)
    made.name = f"draft model {DRAFT_MODEL} (trained)"
    return made


def small_draft(lm, folder: Path):
    """A 2-layer, 64-wide random GPT-2 with ``lm``'s tokenizer: the draft-model slot until one is trained."""
    torch.manual_seed(1)
    eos = lm.tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(lm.tokenizer), n_positions=lm.max_positions, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=eos, eos_token_id=eos)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return load(str(folder))


def quantization_table(label: str, lm, repeats: int) -> None:
    print(f"\n{label}: quantization against float32 (KL in nats over {len(HELDOUT):,} held-out characters)")
    print(f"{'precision':<16}{'kind':<11}{'size x':>8}{'forward x':>10}{'token x':>9}{'KL':>9}{'top-1':>7}{'bpb':>7}")
    prompt = PASSAGE[:400]
    for r in compare_precisions(lm, None, HELDOUT, prompt, new_tokens=16, repeats=repeats):
        bpb = f"{r.bits_per_byte:7.3f}" if r.bits_per_byte is not None else "      -"
        print(
            f"{r.name:<16}{r.kind:<11}{r.size_ratio:>8.3f}{r.latency.forward_ratio:>10.2f}{r.latency.token_ratio:>9.2f}"
            f"{r.mean_kl:>9.4f}{r.top1_agreement:>7.3f}{bpb}"
        )
    print("x = quantized / float32 (latency > 1: slower). Simulated precisions run on float32 weights: their")
    print("latency is float32's by design; only float16/bfloat16 and int8-dynamic change the arithmetic.")


def hf_assisted(lm, ids, n: int, k: int, draft):
    """``model.generate`` with transformers' own assisted generation for this draft kind."""
    kwargs = {"max_new_tokens": n, "do_sample": False, "pad_token_id": lm.tokenizer.eos_token_id}
    if isinstance(draft, PromptLookupDraft):
        return lambda: lm.model.generate(
            ids, prompt_lookup_num_tokens=k, max_matching_ngram_size=draft.max_ngram, **kwargs
        )
    assistant = draft.lm.model
    assistant.generation_config.num_assistant_tokens = k
    assistant.generation_config.num_assistant_tokens_schedule = "constant"
    assistant.generation_config.assistant_confidence_threshold = 0.0  # always propose k, as ours does
    return lambda: lm.model.generate(ids, assistant_model=assistant, **kwargs)


def speculative_table(label: str, lm, drafts, n: int, k: int, repeats: int) -> None:
    prompt = lm.tokenizer(PROMPT)["input_ids"]
    ids = torch.tensor([prompt], device=lm.device)
    plain = greedy(lm, prompt, n).new_ids
    print(f"\n{label}: greedy speculative decoding, k = {k}, {n} new tokens, medians of {repeats} interleaved runs")
    print(f"{'draft':<34}{'alpha':>6}{'tok/step':>9}{'c':>6}{'expected':>9}{'vs loop':>8}{'vs gen':>7}"
          f"{'HF x':>6}{'vs HF':>6}{'same':>6}")  # fmt: skip
    for draft in drafts:
        result = speculative_generate(lm, prompt, draft, k, n)
        gen_kwargs = {"max_new_tokens": n, "do_sample": False, "pad_token_id": lm.tokenizer.eos_token_id}
        assisted = hf_assisted(lm, ids, n, k, draft)
        with torch.inference_mode():
            hf_tokens = assisted()[0, len(prompt) :].tolist()
        ours, loop, gen, hf = interleaved_medians(
            [
                lambda d=draft: speculative_generate(lm, prompt, d, k, n),
                lambda: greedy(lm, prompt, n),
                lambda g=gen_kwargs: lm.model.generate(ids, **g),
                assisted,
            ],
            repeats,
        )
        same = "yes" if result.new_ids == plain and tuple(hf_tokens) == plain else "NO"
        print(
            f"{draft.name[:33]:<34}{result.alpha:>6.2f}{result.tokens_per_step:>9.2f}{result.cost_ratio:>6.2f}"
            f"{result.expected_speedup:>9.2f}{loop / ours:>8.2f}{gen / ours:>7.2f}{gen / hf:>6.2f}{hf / ours:>6.2f}{same:>6}"
        )
    print("vs loop / vs gen: the app's speculative decoding over its own greedy loop / over model.generate;")
    print(
        "HF x: transformers' assisted generation over model.generate; vs HF: ours over HF assisted (> 1: ours faster)."
    )
    print("expected: (1 - a^(k+1)) / ((1 - a)(c k + 1)), c = draft seconds per token / verifier seconds per pass.")
    print("same: ours and HF assisted wrote exactly plain greedy's tokens.")


def _forward_ms(model, ids, repeats: int, before=None, **kwargs) -> float:
    """Median milliseconds of ``model(ids, **kwargs)`` after one untimed call; ``before()`` ahead of each."""
    import time

    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            if before is not None:
                before()
            start = time.perf_counter()
            model(ids, **kwargs)
            times.append(time.perf_counter() - start)
    return 1e3 * sorted(times[1:])[len(times[1:]) // 2]


def verifier_profile(label: str, lm, drafts, n: int, k: int, repeats: int) -> None:
    """Where the formula's speed-up goes: pass costs, the prompt's logits (the fix), time outside the passes."""
    import inspect

    prompt = lm.tokenizer(PROMPT)["input_ids"]
    ids = torch.tensor([prompt], device=lm.device)
    reps = max(5, 4 * repeats)
    cache_arg = "cache" if "cache" in inspect.signature(lm.model.forward).parameters else "past_key_values"
    with torch.inference_mode():
        out = lm.model(ids[:, : -(k + 1)], use_cache=True, return_dict=True)
    cache = out.get("cache") if "cache" in out else out.get("past_key_values")
    length = cache.get_seq_length()

    def rewind() -> None:
        if cache.get_seq_length() > length:
            cache.crop(length - cache.get_seq_length())  # a negative count removes that many tokens

    def cached_pass(tokens: int) -> float:  # the prompt's last tokens fed after the cached rest
        fed = ids[:, length : length + tokens]
        return _forward_ms(lm.model, fed, reps, before=rewind, use_cache=True, **{cache_arg: cache})

    one, many = cached_pass(1), cached_pass(k + 1)
    full = _forward_ms(lm.model, ids, reps)
    kept = _forward_ms(lm.model, ids, reps, logits_to_keep=k + 1)
    print(f"\n{label}: verifier profile (median ms, {reps} runs, prompt of {len(prompt)} tokens)")
    print(f"  one cached pass over 1 token (plain greedy's step):   {one:7.2f}")
    print(
        f"  one cached pass over k + 1 = {k + 1} tokens (a verify step): {many:7.2f}  ({many / one:.2f}x the formula's 1)"
    )
    print(f"  first pass, logits at all {len(prompt)} prompt positions (before): {full:7.2f}")
    print(f"  first pass, logits at the {k + 1} checked positions (after):    {kept:7.2f}  ({full / kept:.2f}x faster)")
    import time

    def plain_seconds() -> float:
        start = time.perf_counter()
        greedy(lm, prompt, n)
        return time.perf_counter() - start

    for draft in drafts:
        runs, plains = [], []
        for _ in range(reps // 2 + 1):  # the first pair warms up
            plains.append(plain_seconds())
            runs.append(speculative_generate(lm, prompt, draft, k, n))
        runs, plains = runs[1:], plains[1:]
        steps = sum(len(r.steps) for r in runs)
        draft_s = sum(s.draft_seconds for r in runs for s in r.steps)
        verify_s = sum(s.verify_seconds for r in runs for s in r.steps)
        total = sum(r.seconds for r in runs)
        outside = total - draft_s - verify_s
        plain_step = sorted(plains)[len(plains) // 2] / n  # seconds per token of the plain greedy loop
        tokens = sum(len(r.new_ids) for r in runs) / steps
        # The formula with the passes' real costs: tokens per step x a plain step / (draft + verify per step).
        real = tokens * plain_step / ((draft_s + verify_s) / steps)
        measured = sorted(plains)[len(plains) // 2] / sorted(r.seconds for r in runs)[len(runs) // 2]
        print(f"  {draft.name[:40]:<41} formula {runs[-1].expected_speedup:5.2f}x; with the passes' real costs "
              f"{real:5.2f}x; measured {measured:5.2f}x; verify pass {1e3 * verify_s / steps:.1f} ms = "
              f"{verify_s / steps / plain_step:.2f} plain steps; outside the passes {1e3 * outside / steps:.3f} ms "
              f"per step ({outside / total:.1%})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2", "gpt2-small-random"])
    parser.add_argument("--skip", choices=["quantization", "speculative"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device cpu")
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.models:
            lm = load(gpt2_small_random(Path(tmp) / "g") if label == "gpt2-small-random" else label)
            if args.skip != "quantization":
                quantization_table(label, lm, args.repeats)
            if args.skip != "speculative":
                layers = max(1, lm.spec.n_layers // 4)
                draft_model = trained_draft(lm)
                if draft_model is None:
                    draft_model = model_draft(lm, small_draft(lm, Path(tmp) / f"draft-{label}"))
                    draft_model.name = "draft model (random, 2 x 64)"
                drafts = [early_exit_draft(lm, layers), PromptLookupDraft(3), draft_model]
                speculative_table(label, lm, drafts, args.tokens, args.k, args.repeats)
                verifier_profile(label, lm, drafts, args.tokens, args.k, args.repeats)


if __name__ == "__main__":
    main()
