"""Samples from a freshly trained model and the model card that records how it was made."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from explorer.analysis.decoding.fill_mask import span_end_ids
from explorer.core.tokens import token_label
from explorer.training.corpus import EXTRA_SOURCES

# The lesson presets (assets/lessons/presets.json) and a few plain modern sentences: the card lists
# what the model makes of each, greedy for the decoder so the listed text is what the app shows first.
DECODER_PROMPTS = [
    "To be, or not to be, that is the",
    "In the beginning God created the",
    "The animal didn't cross the street because it was too",
    "When Mary and John went to the store, John gave a drink to",
    "The capital of France is",
    "In a shocking finding, scientist discovered a herd of unicorns living in a remote, previously "
    "unexplored valley, in the Andes Mountains.",
    "She opened the door and",
]
ENCODER_PROMPTS = [
    "the animal didn't cross the street because it was too [MASK].",
    "the trophy doesn't fit into the brown suitcase because it is too [MASK].",
    "when mary and john went to the store, john gave a drink to [MASK].",
    "the capital of france is [MASK].",
    "in the beginning god created the [MASK] and the earth.",
    "she opened the [MASK] and walked into the room.",
]
T5_PROMPTS = [
    "The animal didn't cross the <extra_id_0> because it was too tired.",
    "When Mary and John went to the <extra_id_0>, John gave a drink to Mary.",
    "To be, or not to be, that is the <extra_id_0>.",
    "In the beginning God created the <extra_id_0> and the earth.",
    "She opened the <extra_id_0> and walked into the room.",
]
SAMPLED_PROMPTS = ["Once upon a time", "The weather today"]  # decoder, sampled (top-k 40, temperature 0.8)

# Today's first bundled models (Shakespeare and the King James Bible only), measured with
# ``python -m explorer.training.measure --trained-on old`` before they were replaced.
PREVIOUS = {
    "decoder": {"modern": {"bits_per_byte": 2.358}, "old": {"bits_per_byte": 1.800}, "tokens_per_word_modern": 1.415},
    "encoder": {
        "modern": {"top1_accuracy": 0.137, "top5_accuracy": 0.302},
        "old": {"top1_accuracy": 0.270, "top5_accuracy": 0.479},
        "tokens_per_word_modern": 1.337,
    },
    "encoder_decoder": {
        "modern": {"held_out_loss": 5.327, "unigram_baseline_loss": 6.104},
        "old": {"held_out_loss": 5.138, "unigram_baseline_loss": 5.976},
        "tokens_per_word_modern": 1.423,
    },
}
GPT2_TOKENS_PER_WORD_MODERN = 1.140  # GPT-2's own BPE (models/gpt2-bpe) on assets/heldout/modern.txt


@torch.no_grad()
def samples(family: str, model, tokenizer, seed: int = 0) -> list[dict]:
    model.eval()
    out = []
    if family == "decoder":
        for prompt in DECODER_PROMPTS + SAMPLED_PROMPTS:
            torch.manual_seed(seed)
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            sampled = prompt in SAMPLED_PROMPTS
            settings = {"do_sample": True, "top_k": 40, "temperature": 0.8} if sampled else {"do_sample": False}
            gen = model.generate(
                ids, max_new_tokens=40 if sampled else 24, pad_token_id=tokenizer.eos_token_id, **settings
            )
            out.append(
                {"prompt": prompt, "output": tokenizer.decode(gen[0]), "decoding": "sampled" if sampled else "greedy"}
            )
    elif family == "encoder":
        for prompt in ENCODER_PROMPTS:
            enc = tokenizer(prompt, return_tensors="pt")
            pos = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0]
            top = model(**enc).logits[0, pos].softmax(-1).topk(5)
            words = [f"{tokenizer.decode([i])} ({p:.2f})" for p, i in zip(top.values.tolist(), top.indices.tolist())]
            out.append({"prompt": prompt, "output": ", ".join(words)})
    else:
        # The span after <extra_id_0>: its likeliest first tokens, and beam search's whole span (ended where the
        # model closes the one blank asked for, as the app's fill-in view ends it: span_end_ids).
        first = tokenizer.convert_tokens_to_ids("<extra_id_0>")
        with torch.no_grad():
            for prompt in T5_PROMPTS:
                enc = tokenizer(prompt, return_tensors="pt")
                start = torch.tensor([[model.config.decoder_start_token_id, first]])
                top = model(**enc, decoder_input_ids=start).logits[0, -1].softmax(-1).topk(5)
                words = [  # as the fill-in view labels them: a lone "▁" is "␣", not an empty word
                    f"{token_label(tokenizer, i)!r} ({p:.2f})"
                    for p, i in zip(top.values.tolist(), top.indices.tolist())
                ]
                gen = model.generate(**enc, decoder_input_ids=start, max_new_tokens=8, num_beams=4,
                                     eos_token_id=span_end_ids(tokenizer, prompt, [tokenizer.eos_token_id]))  # fmt: skip
                span = tokenizer.decode(gen[0, 2:], skip_special_tokens=True).strip()
                out.append({"prompt": prompt, "output": f"{span!r}; first word: {', '.join(words)}"})
    return out


OPTIMIZERS = {"adamw": "AdamW", "adafactor": "Adafactor (steps relative to each weight's scale)"}

DESCRIPTIONS = {
    "decoder": ("GPT-2-architecture decoder", "causal language modelling (next-token prediction)", "GPT2LMHeadModel"),
    "encoder": (
        "BERT-style encoder with a masked-LM head (layer norm before each sub-layer)",
        "masked language modelling (80% [MASK], 10% random, 10% kept; share predicted below)",
        "RobertaPreLayerNormForMaskedLM",
    ),
    "encoder_decoder": (
        "T5 encoder-decoder",
        "T5 span corruption (15% noise, mean span 3)",
        "T5ForConditionalGeneration",
    ),
}


def _figure(family: str, m: dict | None) -> str:
    """One cell of the quality table."""
    if not m:
        return "—"
    if family == "decoder":
        return f"{m['bits_per_byte']:.3f} bits/byte"
    if family == "encoder":
        return f"top-5 {m['top5_accuracy']:.1%}, top-1 {m['top1_accuracy']:.1%}"
    gap = m["unigram_baseline_loss"] - m["held_out_loss"]
    blanked = f"; input blanked {m['input_blanked_loss']:.2f}" if "input_blanked_loss" in m else ""
    se = m.get("gap_standard_error")  # over corrupted windows; absent from cards written before it was measured
    error = f" ± {se:.2f}" if se is not None and math.isfinite(se) else ""
    return f"{m['held_out_loss']:.2f} nats (unigram {m['unigram_baseline_loss']:.2f}; {gap:.2f}{error} under{blanked})"


def gap_parts_line(parts: dict) -> str:
    """Where the modern sample's gap under unigram comes from (``recipes.GAP_PARTS``): each part's share of the
    per-token figures."""
    total = sum(p["tokens"] for p in parts.values())
    share = {part: f"{p['under_unigram']:.2f} ({p['tokens'] / total:.0%} of the tokens)" for part, p in parts.items()}
    blanked = sum(p["under_blanked"] for p in parts.values())
    return (
        "Where the modern sample's gap under unigram comes from (each part's share of the per-token figure): the "
        f"sentinels and `</s>` that frame the spans {share['sentinels']}, the first token of each span "
        f"{share['first tokens']}, its later tokens {share['later tokens']}. The first token of a span is the one "
        f"only the text around the blank can tell; of the {blanked:.2f} nats that blanking the input costs, it "
        f"accounts for {parts['first tokens']['under_blanked']:.2f}."
    )


def compared_with(family: str, metrics: dict, models: Path | None = None) -> tuple[str, dict]:
    """The model a card compares with: a draft's target (its card beside it), else the first bundled one."""
    target = metrics.get("draft_for")
    folder = (models or Path(__file__).resolve().parents[2] / "models") / str(target)
    if target and (folder / "card.json").is_file():
        figures = json.loads((folder / "card.json").read_text())
        keep = ("modern", "old", "tokens_per_word_modern", "bits_per_byte")
        return f"{target} (the model it drafts for)", {k: figures[k] for k in keep if k in figures}
    return "First bundled model (Shakespeare/KJV only)", PREVIOUS[family]


def quality_lines(family: str, metrics: dict) -> list[str]:
    label_previous, previous = compared_with(family, metrics)
    rows = [
        ("Modern sample (`assets/heldout/modern.txt`, written for the project)", "modern"),
        ("Old held-out text (Shakespeare/KJV, what the first models were measured on)", "old"),
        ("This corpus's held-out documents", None),
    ]
    lines = [f"| Held-out text | This model | {label_previous} |", "|---|---|---|"]
    for label, key in rows:
        mine = metrics.get(key) if key else metrics
        theirs = previous.get(key) if key else (previous if "bits_per_byte" in previous else None)
        lines.append(f"| {label} | {_figure(family, mine)} | {_figure(family, theirs)} |")
    unit = {
        "decoder": "Bits per byte: cross-entropy of the next token over the UTF-8 bytes of the text (lower is better).",
        "encoder": "Fill-mask: 15% of tokens replaced by [MASK]; is the right one the first, or among the first five, guesses?",
        "encoder_decoder": "Span infill: T5 span corruption (15% noise, mean span 3), loss per target token beside a "
        "unigram model of the training targets that ignores the input, and beside the same model with its input "
        "blanked (all padding): the gap between the two says how much the decoder reads its encoder. "
        "± is one standard error of the gap under unigram, over the corrupted windows.",
    }[family]
    lines += ["", unit]
    if family != "decoder":
        modern = metrics.get("modern", {})
        tokens = modern.get("masked_tokens", modern.get("target_tokens"))
        lines.append(f"The modern sample is masked or corrupted {metrics.get('modern_passes', 10)} times with "
                     "different random choices, so its figures rest on "
                     f"{f'{tokens:,}' if tokens else 'a few thousand'} predicted tokens.")  # fmt: skip
    if metrics.get("modern", {}).get("gap_parts"):
        lines += ["", gap_parts_line(metrics["modern"]["gap_parts"])]
    if metrics.get("copying"):
        copy = metrics["copying"]
        lines += [
            "",
            f"In-context copying: a {copy['stretch']}-token stretch of the modern sample, read again {copy['gap']} tokens later, "
            f"costs {copy['second']:.2f} nats per token the second time against {copy['first']:.2f} the first "
            f"({copy['windows']} windows). The difference is what the model takes from its own context: an induction "
            "head looks at what followed the current token last time.",
        ]
    if metrics.get("loops"):
        loops = metrics["loops"]
        lines += [
            "",
            f"Greedy loops: continuing {loops['prefixes']} openings of the modern sample (32 tokens each) greedily for 64 "
            "tokens, "
            f"{loops['looped']:.0%} of the tokens it wrote repeat a 4-gram it had already written "
            f'(the sample\'s own text: {loops["text"]:.0%}). Small models fall into loops ("the door of the door of") '
            "under greedy decoding; sampling, or the Next token tab's repetition penalty, breaks them.",
        ]
    if "tokens_per_word_modern" in metrics:
        lines += [
            "",
            f"Tokens per word on the modern sample: {metrics['tokens_per_word_modern']:.3f} "
            f"(GPT-2's own 50k BPE: {GPT2_TOKENS_PER_WORD_MODERN:.3f}, "
            f"{metrics['tokens_per_word_modern'] / GPT2_TOKENS_PER_WORD_MODERN - 1:+.0%}; "
            f"{label_previous.split(' (')[0].lower() if metrics.get('draft_for') else 'the first bundled model'}: "
            f"{previous['tokens_per_word_modern']:.3f}).",
        ]
    return lines


def opening_words(stage: dict) -> str:
    """The openings a stage's loop penalty continued: "32-token openings", "openings of 4 to 32 tokens",
    "32-token openings or (half the time) a document's first 4 to 12 tokens"."""
    low, high = stage.get("loop_opening", (32, 32))
    words = f"{low}-token openings" if low == high else f"openings of {low} to {high} tokens"
    if stage.get("loop_starts"):
        first, last = stage["loop_document_start"]
        share = "half" if stage["loop_starts"] == 0.5 else f"{stage['loop_starts']:.0%} of"
        words += f" or ({share} the time) a document's first {first} to {last} tokens"
    return words


def attention_start(stages: list[dict]) -> str:
    """The attention starts the stages used (``recipes.start_t5_attention``, ``recipes.start_copy_heads``) and
    their copy windows, as a clause of the card's Training line."""
    first = stages[0] if stages else {}
    parts = []
    if first.get("local_bias"):
        slopes = ", ".join(f"{s:g}" for s in first["local_bias"])
        parts.append(f"the encoder's position bias started local (−slope × distance, slopes {slopes} by head)")
    if first.get("match_prior"):
        parts.append(f"one cross-attention head started matching equal tokens (logit +{first['match_prior']:g})")
    added = {  # consecutive stages that added the same sources share a clause, placed at the first of them
        a: f"{stage_names(a, b)} read the corpus with {' and '.join(EXTRA_SOURCES[n].name for n in names)} added"
        for names, a, b in stage_runs([tuple(st.get("add_source") or ()) for st in stages])
        if names
    }
    for number, stage in enumerate(stages, 1):  # the decoder's copy start (``recipes.start_copy_heads``)
        if stage.get("copy_start"):
            fit = stage["copy_start"]
            (pl, ph), (il, ih) = fit["previous_token_head"], fit["induction_head"]
            parts.append(
                f"stage {number} began by fitting a previous-token head (layer {pl} head {ph}: {fit['previous_token']:.2f}"
                f" of its attention on the token before) and an induction head (layer {il} head {ih}: {fit['induction']:.2f}"
                " on the token after the current one's last appearance; geometric means)"
            )
        if number in added:
            parts.append(added[number])
        if stage.get("end_weight"):
            parts.append(
                f"in stage {number} the target's marks that end an answer or the output (sentinels and </s>) counted "
                f"{1 + stage['end_weight']:g} times in the loss"
            )
        if stage.get("copy_share"):
            parts.append(f"{stage['copy_share']:.0%} of stage {number}'s windows a short stretch said over and over")
        if stage.get("unlikelihood"):
            parts.append(
                f"every second step of stage {number} the model continued {opening_words(stage)} greedily and its loops "
                f"were made unlikely (weight {stage['unlikelihood']:g}; sequence-level unlikelihood, Welleck et al. 2019)"
                + (
                    f", the continuations pulled towards the model the stage began from, its looped tokens taken out (KL, weight {stage['loop_anchor']:g})"
                    if stage.get("loop_anchor")
                    else ""
                )
            )
    return ", " + "; ".join(parts) if parts else ""


def per_stage(metrics: dict, key: str, unit: str = "") -> str:
    """A setting of each stage: "0.1" when every stage had it, else each value with the stages that had it,
    "100 steps (stage 1), 50 (stages 2–4)" (the card's own value for stages that did not record it)."""
    values = [st.get(key, metrics.get(key, "?")) for st in metrics.get("stages") or []] or [metrics.get(key, "?")]
    if len(set(values)) == 1:
        return f"{values[0]}{unit}"
    return ", ".join(
        f"{v}{unit if not k else ''} ({stage_names(a, b)})" for k, (v, a, b) in enumerate(stage_runs(values))
    )


def stage_runs(values: list) -> list[list]:
    """Consecutive stages with equal values, as [value, first stage, last stage] (stages counted from 1)."""
    runs = []
    for i, v in enumerate(values, 1):
        if runs and runs[-1][0] == v:
            runs[-1][2] = i
        else:
            runs.append([v, i, i])
    return runs


def stage_names(first: int, last: int) -> str:
    """ "stage 2" or "stages 2–3"."""
    return f"stages {first}–{last}" if last > first else f"stage {first}"


def write_card(
    out: Path, family: str, metrics: dict, model, tokenizer, corpus_text: str, sample_list, licences=None
) -> None:
    title, objective, cls = DESCRIPTIONS[family]
    n_params = sum(p.numel() for p in model.parameters())
    metrics = {**metrics, "parameters": n_params, "family": family, "previous_model": compared_with(family, metrics)[1]}
    draft_for = metrics.get("draft_for")
    metrics["corpus"] = corpus_text
    if licences:
        metrics["sources"] = licences
    (out / "card.json").write_text(json.dumps({**metrics, "samples": sample_list}, indent=2) + "\n")
    stages = metrics.get("stages") or [{"steps": metrics["steps"], "lr": metrics["lr"]}]
    start = metrics.get("initialised_from")
    first = (
        f" --lr {stages[0]['lr']} --warmup {stages[0].get('warmup', metrics.get('warmup'))}"
        f" --init-from build/first/{start['model']}"
        if start
        else ""
    )
    commands = "\n".join(
        f"    python -m explorer.training --family {family} --steps {st['steps']}"
        + (f" --resume --lr {st['lr']}" if i else first)
        + (f" --dropout {st['dropout']}" if "dropout" in st else "")
        + (f" --short-share {st['short_share']}" if st.get("short_share") else "")
        + "".join(f" --add-source {name}" for name in st.get("add_source", []))
        + (f" --end-weight {st['end_weight']}" if st.get("end_weight") else "")
        + (f" --repeat-share {st['repeat_share']}" if st.get("repeat_share") else "")
        + (f" --copy-share {st['copy_share']}" if st.get("copy_share") else "")
        + (" --copy-start" if st.get("copy_start") else "")
        + (f" --unlikelihood {st['unlikelihood']}" if st.get("unlikelihood") else "")
        + (f" --loop-starts {st['loop_starts']}" if st.get("loop_starts") else "")
        + (f" --loop-anchor {st['loop_anchor']}" if st.get("loop_anchor") else "")
        + (f" --local-bias {','.join(map(str, st['local_bias']))}" if st.get("local_bias") else "")
        + (f" --match-prior {st['match_prior']}" if st.get("match_prior") else "")
        + (f" --batch {metrics['batch']} --threads {metrics['threads']}" if "minutes" in st or i else "")
        + (" --shape draft" if draft_for and not i else "")
        + (f" --tokenizer-from {metrics['tokenizer_from']}" if metrics.get("tokenizer_from") and not i else "")
        + f" --out models/{out.name}"
        for i, st in enumerate(stages)
    )
    if start:
        commands += (
            f"\n\nStarted from the first bundled {out.name} (Shakespeare/KJV only, kept in git history):"
            f" {start['copied']} weight tensors copied, {start['rebuilt']} rebuilt for the new vocabulary"
            f" ({start['shared_tokens']:,} tokens shared with the old one; {start['new_tokens']:,} new tokens"
            " start as the mean of their old pieces)."
        )
    sample_md = "\n".join(
        f"- `{s['prompt']}` → {s['output']!r}" + (f" ({s['decoding']})" if "decoding" in s else "") for s in sample_list
    )
    source_md = "\n".join(f"- {name}: {licence}" for name, licence in (metrics.get("sources") or {}).items())
    cfg = model.config
    device = metrics.get("device", "cpu")
    where = "a CUDA GPU" if device.startswith("cuda") else f"CPU ({metrics['threads']} thread(s))"
    timed = (
        " (each run had a time budget, `--minutes`, over which its learning rate decayed)"
        if any("minutes" in st for st in stages)
        else ""
    )
    drafting = (
        f"A draft model for speculative decoding: it proposes the next few tokens cheaply and {draft_for}, whose "
        f"tokenizer it shares, verifies them in one forward pass (greedy output stays exactly {draft_for}'s). "
        if draft_for
        else ""
    )
    text = f"""---
license: mit
language: en
library_name: transformers
tags: [llm-explorer, {family}]
---
# {out.name}: a small {title}{f", a draft model for {draft_for}" if draft_for else ""}

{drafting}Bundled with LLM Explorer so that every view works offline. Trained by the project's own recipe
(`make train`), shown here with the steps each run reached{timed}:

{commands}

- Architecture: `{cls}`, {n_params / 1e6:.2f} M parameters stored as {metrics.get("weights_dtype", "float32")}, hidden size {getattr(cfg, "hidden_size", None) or cfg.d_model}, vocabulary {len(tokenizer):,}
- Tokenizer: {metrics["tokenizer"]}, {f"{draft_for}'s own, reused (same ids, not trained again)" if draft_for else "trained on the same corpus" + (f" (the one in `{metrics['tokenizer_from']}`, reused)" if metrics.get("tokenizer_from") else "")}
- Objective: {objective}
- Corpus: {corpus_text}; about 3% of documents held out (chosen by hash, never trained on)
- Training: warm-up {per_stage(metrics, "warmup", " steps")}, dropout {per_stage(metrics, "dropout")}{f", {metrics['mask_rate']:.0%} of tokens predicted" if "mask_rate" in metrics and metrics.get("family") == "encoder" else ""}{", position embeddings started from the sinusoidal table" if metrics.get("sinusoidal_positions") else ""}{attention_start(stages)};
  {metrics["steps"]} steps{f" in {len(stages)} stages" if len(stages) > 1 else ""} of {metrics["batch"]} × {metrics["seq_len"]} tokens, {OPTIMIZERS[metrics.get("optimizer", "adamw")]}, peak lr {per_stage(metrics, "lr")},
  {" (a stage was stopped at its last checkpoint, before its learning rate had decayed)" if metrics.get("stopped_early") else ""}
  {metrics["wall_time_s"] / 60:.1f} min, trained on {where}; final training loss {metrics["final_train_loss"]:.3f}

## Sources and licences

{source_md or "- (not recorded)"}

## Measured quality (held-out text)

{chr(10).join(quality_lines(family, metrics))}

## Samples (the lesson presets and a few modern sentences)

{sample_md}

## Limits

{"Under a million parameters trained for half an hour" if draft_for else "A few million parameters trained for an hour or two"} on about ten million characters of public-domain
English (Austen, the World English Bible, Bierce, the Jargon File, some Shakespeare and KJV): it knows
common words and the shape of a sentence, and little about the world. It exists to be looked inside,
not to be used.
"""
    (out / "README.md").write_text(text, encoding="utf-8")


def rewrite_readme(folder: Path, family: str) -> None:
    """Write ``README.md`` again from ``card.json`` (figures and samples as measured, nothing re-run)."""
    from explorer.training.recipes import load_trained

    metrics = json.loads((folder / "card.json").read_text())
    sample_list = metrics.pop("samples")
    tokenizer, model = load_trained(family, folder)
    sources = metrics.get("sources") or {}
    corpus_text = metrics.get("corpus", "")
    write_card(folder, family, metrics, model, tokenizer, corpus_text, sample_list, sources)
