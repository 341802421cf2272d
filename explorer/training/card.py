"""Samples from a freshly trained model and the model card that records how it was made."""

from __future__ import annotations

import json
from pathlib import Path

import torch

DECODER_PROMPTS = ["ROMEO:", "And God said", "To be, or not to be", "The king"]
ENCODER_PROMPTS = [
    "and god said, let there be [MASK]: and there was light.",
    "the [MASK] of england is dead.",
    "i will [MASK] thee, my lord.",
    "in the beginning god created the [MASK] and the earth.",
]
T5_PROMPTS = [
    "And God said, Let there be <extra_id_0>: and there was light.",
    "KING HENRY: Once more unto the <extra_id_0>, dear friends, once more.",
    "In the beginning God created the <extra_id_0> and the earth.",
]


@torch.no_grad()
def samples(family: str, model, tokenizer, seed: int = 0) -> list[dict]:
    model.eval()
    out = []
    if family == "decoder":
        for prompt in DECODER_PROMPTS:
            torch.manual_seed(seed)
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            gen = model.generate(ids, max_new_tokens=40, do_sample=True, top_k=40, temperature=0.8,
                                 pad_token_id=tokenizer.eos_token_id)  # fmt: skip
            out.append({"prompt": prompt, "output": tokenizer.decode(gen[0])})
    elif family == "encoder":
        for prompt in ENCODER_PROMPTS:
            enc = tokenizer(prompt, return_tensors="pt")
            pos = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0]
            top = model(**enc).logits[0, pos].softmax(-1).topk(5)
            words = [f"{tokenizer.decode([i])} ({p:.2f})" for p, i in zip(top.values.tolist(), top.indices.tolist())]
            out.append({"prompt": prompt, "output": ", ".join(words)})
    else:
        for prompt in T5_PROMPTS:
            enc = tokenizer(prompt, return_tensors="pt")
            gen = model.generate(**enc, max_new_tokens=12, num_beams=4)
            out.append({"prompt": prompt, "output": tokenizer.decode(gen[0], skip_special_tokens=False)})
    return out


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


def quality_lines(family: str, metrics: dict) -> list[str]:
    if family == "decoder":
        return [
            f"- Held-out loss: {metrics['held_out_loss']:.3f} nats per token",
            f"- **Bits per byte: {metrics['bits_per_byte']:.3f}** on {metrics['held_out_bytes']:,} held-out bytes",
        ]
    if family == "encoder":
        return [
            f"- **Fill-mask top-5 accuracy: {metrics['top5_accuracy']:.1%}** "
            f"(top-1 {metrics['top1_accuracy']:.1%}) on {metrics['masked_tokens']:,} held-out masked tokens",
        ]
    return [
        f"- **Held-out span-infill loss: {metrics['held_out_loss']:.3f}** nats per target token "
        f"({metrics['target_tokens']:,} tokens)",
        f"- Unigram baseline on the same targets: {metrics['unigram_baseline_loss']:.3f} nats per token",
    ]


def write_card(out: Path, family: str, metrics: dict, model, tokenizer, corpus_text: str, sample_list) -> None:
    title, objective, cls = DESCRIPTIONS[family]
    n_params = sum(p.numel() for p in model.parameters())
    metrics = {**metrics, "parameters": n_params, "family": family}
    (out / "card.json").write_text(json.dumps({**metrics, "samples": sample_list}, indent=2) + "\n")
    stages = metrics.get("stages") or [{"steps": metrics["steps"], "lr": metrics["lr"]}]
    commands = "\n".join(
        f"    python -m explorer.training --family {family} --steps {st['steps']} --out {out}"
        + (f" --resume --lr {st['lr']}" if i else "")
        for i, st in enumerate(stages)
    )
    sample_md = "\n".join(f"- `{s['prompt']}` → {s['output']!r}" for s in sample_list)
    cfg = model.config
    text = f"""---
license: mit
language: en
library_name: transformers
tags: [llm-explorer, {family}]
---
# {out.name}: a small {title}

Bundled with LLM Explorer so that every view works offline. Trained by the project's own recipe:

{commands}

- Architecture: `{cls}`, {n_params / 1e6:.2f} M parameters stored as {metrics.get("weights_dtype", "float32")}, hidden size {getattr(cfg, "hidden_size", None) or cfg.d_model}, vocabulary {len(tokenizer):,}
- Tokenizer: {metrics["tokenizer"]}, trained on the same corpus
- Objective: {objective}
- Corpus: {corpus_text}; about 3% of documents held out
- Training: warm-up {metrics.get("warmup", "?")} steps, dropout {metrics.get("dropout", 0.1)}{f", {metrics['mask_rate']:.0%} of tokens predicted" if "mask_rate" in metrics and metrics.get("family") == "encoder" else ""}{", position embeddings started from the sinusoidal table" if metrics.get("sinusoidal_positions") else ""};
  {metrics["steps"]} steps{f" in {len(stages)} stages" if len(stages) > 1 else ""} of {metrics["batch"]} × {metrics["seq_len"]} tokens, AdamW, peak lr {metrics["lr"]},
  {" (the first stage was stopped at its last checkpoint, before its learning rate had decayed)" if metrics.get("stopped_early") else ""}
  {metrics["wall_time_s"] / 60:.1f} min on {metrics["threads"]} CPU thread(s); final training loss {metrics["final_train_loss"]:.3f}

## Measured quality (held-out text)

{chr(10).join(quality_lines(family, metrics))}

## Samples

{sample_md}

## Limits

A few million parameters trained for minutes on two public-domain books: it knows the words and
the rhythm of Early Modern English and little else. It exists to be looked inside, not to be used.
"""
    (out / "README.md").write_text(text, encoding="utf-8")
