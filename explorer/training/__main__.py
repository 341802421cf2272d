"""``python -m explorer.training --family decoder --steps 2000 --out models/tiny-gpt2``"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from explorer.core.objectives import document_openings, random_windows, span_ends, token_stream  # noqa: E402
from explorer.core.tokenizer_training import tokens_per_word  # noqa: E402
from explorer.training import card, recipes, warm_start  # noqa: E402
from explorer.training.corpus import EXTRA_SOURCES, MODERN_SAMPLE, SOURCES, build_corpus  # noqa: E402

MAX_WEIGHT_BYTES = 24 * 2**20


def previous_run(out: Path, recipe) -> dict:
    """What earlier runs in ``out`` did: the card of the last finished one, plus the stage stopped at
    its last checkpoint when a later run was stopped early (read from ``train.log``)."""
    card_file = out / "card.json"
    previous = json.loads(card_file.read_text()) if card_file.exists() else {}
    log = (out / "train.log").read_text().splitlines() if (out / "train.log").exists() else []
    finished = max((i for i, line in enumerate(log) if line.startswith("done in")), default=-1)
    stopped = log[finished + 1 :] if previous else log
    steps = [int(line.split()[-1]) for line in stopped if line.startswith("checkpoint at step")]
    if not steps:
        if previous:
            return previous
        raise SystemExit(f"{out} holds no finished run and no checkpoint to resume from")
    progress = [p for p in map(recipes.read_step_line, stopped) if p]
    peak_lr = max((p["lr"] for p in progress), default=recipe.lr)
    wall = progress[-1]["seconds"] if progress else 0.0
    stage = {"steps": steps[-1], "lr": peak_lr, "stopped_early": True}
    stages = previous.get("stages", [{"steps": previous["steps"], "lr": previous["lr"]}] if previous else [])
    last_loss = progress[-1]["loss"] if progress else previous.get("final_train_loss", float("nan"))
    return {**previous, "steps": previous.get("steps", 0) + steps[-1], "lr": peak_lr,
            "wall_time_s": previous.get("wall_time_s", 0.0) + wall, "stopped_early": True,
            "final_train_loss": last_loss, "stages": [*stages, stage]}  # fmt: skip


def earlier_stages(previous: dict) -> list[dict]:
    """The stages of the runs a resumed run continues; a single run's card gives its dropout to its stage."""
    if not previous:
        return []
    stages = previous.get("stages", [{"steps": previous["steps"], "lr": previous["lr"]}])
    if len(stages) == 1 and "dropout" in previous:
        return [{"dropout": previous["dropout"], "warmup": previous.get("warmup"), **stages[0]}]
    return stages


# Tokens of text the loop penalty's greedy continuations start from (a length drawn per step). Openings of 4 to 32
# tokens, tried for 30 minutes after the bundled decoder's loop stage, left its presets' loops as they were and
# raised the held-out loops from 9% to 15%.
LOOP_OPENING = (32, 32)
# With --loop-starts, that share of the openings are instead a training document's first 4 to 12 tokens: short
# prompts like the lesson presets, whose loops the windows' openings did not reach. Tried for 30-35 minutes on the
# bundled decoder after its loop stage (lr 1e-4, copy share 0.2; presets' loop share 0.25, held-out loops 0.10):
#   starts only, weight 2: presets 0.11, held-out 0.15, rare-token runs ("Laurous", "Michalavib");
#   half starts, weight 2: presets 0.16, held-out 0.08, rare-token runs ("Worcester Worcester", "metPrinsey");
#   half starts, weight 2, --loop-anchor 1: presets 0.23, held-out 0.17, no such runs, the presets' loops kept;
#   half starts, the looped tokens only pulled towards the start model without them (a distillation, weight 1):
#   presets 0.13 ("In the beginning God created the earth."), held-out 0.18, the door loop kept.
#   through the CLI, half starts, --loop-anchor 1 as it now is (looped tokens taken out of the start model's
#   distribution, every continuation token pulled towards it), --unlikelihood 1 / 2: presets 0.33 / 0.27,
#   held-out 0.19 / 0.19, both presets' loops kept.
# Through the CLI for 45 minutes, half starts, --unlikelihood 2 --loop-anchor 0.25 / 0.5: presets 0.09 / 0.10
# ("In the beginning God created the earth. He will be a great covenant with the people"), held-out 0.14 / 0.14,
# no rare-token runs, the door loop kept; 0.25 was shipped as stage 5. Another 28 minutes from it at lr 5e-5 with
# starts 0 / 0.25: presets 0.09 / 0.16, held-out 0.16 / 0.17, not kept.
LOOP_DOCUMENT_START = (4, 12)


DEFAULT_STEPS = 2000


def stage_steps(steps: int | None, minutes: float | None) -> int:
    """The steps a stage may run: as asked; else, with a time budget, as many as fit in it (the learning rate then
    decays over the time); else the default. A budget once stopped silently at the default 2,000 steps."""
    if steps is not None:
        return steps
    return sys.maxsize if minutes else DEFAULT_STEPS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Train one of the bundled models from scratch.")
    parser.add_argument("--family", choices=list(recipes.RECIPES), required=True)
    parser.add_argument(
        "--steps", type=int,
        help=f"training steps (default {DEFAULT_STEPS}; with --minutes and no --steps, as many as the time allows)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resume", action="store_true", help="continue from the model, tokenizer and card already in --out"
    )
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (default: the recipe's)")
    parser.add_argument("--dropout", type=float, help="encoder dropout (default: the recipe's)")
    parser.add_argument("--batch", type=int, help="sequences per step (default: the recipe's)")
    parser.add_argument(
        "--short-share", type=float,
        help="encoder-decoder: share of each batch that is a sentence-long window with one or two spans (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--end-weight", type=float,
        help="encoder-decoder: extra loss weight of the target's sentinels and </s>, where an answer ends (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat-share", type=float,
        help="decoder: share of each batch whose windows end by repeating a stretch of their own text (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--copy-share", type=float,
        help="decoder: share of each batch that is a short stretch said again and again (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--unlikelihood", type=float,
        help="decoder: weight of a penalty on loops in its own greedy continuations, every second step (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--loop-starts", type=float,
        help="decoder, with --unlikelihood: share of the penalty's openings that are a document's first 4-12 tokens (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--loop-anchor", type=float,
        help="decoder, with --unlikelihood: weight of a KL to the starting model with the loops taken out (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--copy-start", action="store_true",
        help="decoder: before training, fit a previous-token head and an induction head (recipes.start_copy_heads)",
    )  # fmt: skip
    parser.add_argument(
        "--local-bias", type=lambda text: tuple(float(x) for x in text.split(",")),
        help="encoder-decoder from scratch: per-head slopes of a local start for the encoder's position bias, e.g. 1,0.5,0.25,0",
    )  # fmt: skip
    parser.add_argument(
        "--match-prior", type=float,
        help="encoder-decoder from scratch: logit by which one cross-attention head starts out matching equal tokens",
    )  # fmt: skip
    parser.add_argument(
        "--minutes", type=float, help="stop after this long, the learning rate decaying over it (default: no limit)"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        help="a trained model folder of the same shape to start from (its tokenizer may differ)",
    )
    parser.add_argument("--device", default=str(recipes.default_device()), help="cuda when available, else cpu")
    parser.add_argument(
        "--shape", choices=recipes.SHAPES, default="bundled",
        help="bundled: the ~5M-parameter model; draft: a decoder under 1M parameters for speculative decoding",
    )  # fmt: skip
    parser.add_argument(
        "--add-source", action="append", choices=sorted(EXTRA_SOURCES), default=[],
        help="train this stage on the corpus plus this source too (explorer/training/corpus.py: EXTRA_SOURCES)",
    )  # fmt: skip
    parser.add_argument(
        "--tokenizer-from", type=Path,
        help="reuse this trained model's tokenizer instead of training one (a draft shares its target's ids)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.minutes is not None and not args.minutes > 0:  # NaN too: a budget that never ends, or no budget
        parser.error("--minutes is a time budget: give a number of minutes over 0")
    args.steps = stage_steps(args.steps, args.minutes)
    if args.resume and (args.local_bias or args.match_prior):  # initial values: a trained model has its own
        parser.error("--local-bias and --match-prior set a model's starting weights: use them without --resume")
    if args.copy_start and args.family != "decoder":
        parser.error("--copy-start fits two heads of a decoder: use it with --family decoder")
    if args.end_weight and args.family != "encoder_decoder":
        parser.error(
            "--end-weight weights where a span-corruption target's spans end: use it with --family encoder_decoder"
        )
    if args.unlikelihood and args.family != "decoder":
        parser.error("--unlikelihood penalises a decoder's loops: use it with --family decoder")
    if (args.loop_starts or args.loop_anchor) and not args.unlikelihood:
        parser.error("--loop-starts and --loop-anchor shape the loop penalty: use them with --unlikelihood")
    if args.loop_starts is not None and not 0 <= args.loop_starts <= 1:
        parser.error("--loop-starts is a share: give a number from 0 to 1")
    if args.copy_start and not args.steps:  # the fitted heads would be saved, and no stage would record them
        parser.error("--copy-start begins a training stage: give it --steps")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = (args.out / "train.log").open("a", encoding="utf-8")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    recipe = recipes.recipe_for(args.family, args.shape)
    overrides = {
        k: getattr(args, k)
        for k in (
            "lr",
            "warmup",
            "dropout",
            "batch",
            "short_share",
            "end_weight",
            "repeat_share",
            "copy_share",
            "unlikelihood",
            "loop_starts",
            "loop_anchor",
            "local_bias",
            "match_prior",
        )
        if getattr(args, k) is not None
    }
    recipe = dataclasses.replace(recipe, **overrides)
    corpus = build_corpus(SOURCES + [EXTRA_SOURCES[name] for name in dict.fromkeys(args.add_source)])
    log(f"corpus: {corpus.describe()}")
    previous, initialised = {}, None
    if args.resume:
        previous = previous_run(args.out, recipe)
        tokenizer, model = recipes.load_trained(args.family, args.out)
        if args.dropout is not None:
            recipes.set_dropout(model, args.dropout)
        if args.steps:  # a continued stage needs only a short warm-up
            recipe = dataclasses.replace(recipe, warmup=min(recipe.warmup, 50))
        log(f"resuming from {args.out} after {previous['steps']} steps")
    else:
        if args.tokenizer_from:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_from)
        else:
            tokenizer = recipes.train_tokenizer(args.family, corpus.train)
        torch.manual_seed(args.seed)
        model = recipes.build_model(args.family, tokenizer, recipe.dropout, recipe.sinusoidal_positions, args.shape)
        if recipe.local_bias or recipe.match_prior:
            recipes.start_t5_attention(model, recipe.local_bias, recipe.match_prior)
        if args.init_from:
            old_tokenizer, old_model = recipes.load_trained(args.family, args.init_from)
            warm = warm_start.transfer(model, tokenizer, old_model, old_tokenizer)
            log(f"started from {args.init_from}: {warm}")
            initialised = {"model": args.init_from.name, **warm}
    model.to(args.device)
    separator = recipes.separator_id(args.family, tokenizer)
    stream = token_stream(tokenizer, corpus.train, separator)
    log(f"tokenizer: {recipe.tokenizer_kind}, {len(tokenizer)} entries; {len(stream):,} training tokens")
    log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
    copy_start = None
    if args.copy_start:
        model.cpu()  # a short fit of two heads; CPU is plenty
        copy_start = recipes.start_copy_heads(model, stream, seed=args.seed, log=log)
        model.to(args.device)

    def checkpoint(step: int) -> None:
        model.save_pretrained(args.out)
        tokenizer.save_pretrained(args.out)
        log(f"checkpoint at step {step}")

    start = time.time()
    next_batch = recipes.batch_maker(args.family, tokenizer, stream, recipe)
    seed = args.seed + previous.get("steps", 0)  # a resumed run draws fresh batches
    budget = args.minutes * 60 if args.minutes else None

    def next_prefixes(rng):  # what the loop penalty continues: openings of training windows, or of documents
        if recipe.loop_starts and rng.random() < recipe.loop_starts:
            length = int(rng.integers(LOOP_DOCUMENT_START[0], LOOP_DOCUMENT_START[1] + 1))
            return torch.from_numpy(document_openings(stream, separator, recipe.batch, length, rng))
        length = int(rng.integers(LOOP_OPENING[0], LOOP_OPENING[1] + 1))
        return torch.from_numpy(random_windows(stream, recipe.batch, length, rng))

    losses = recipes.train(
        model, next_batch, args.steps, recipe, log, seed=seed, checkpoint=checkpoint, seconds=budget,
        next_prefixes=next_prefixes, span_ends=span_ends(tokenizer) if recipe.end_weight else None,
    )  # fmt: skip
    steps_run = len(losses)
    wall = time.time() - start
    model.cpu()  # evaluated, sampled and saved on the CPU whatever it was trained on
    settled = {}
    if args.family == "decoder":  # its output rows are its input rows (tied): unseen ones could win greedy decoding
        settled = {"unseen_tokens_set_to_mean": recipes.settle_unseen_tokens(model, stream)}
        log(f"tokens never in the training text, set to the mean embedding: {settled['unseen_tokens_set_to_mean']}")
    # Bundled weights must stay under 25 MB: past that they are stored as float16, and evaluated as
    # stored (rounded to float16, computed in float32) so the card describes the shipped model.
    half = sum(p.numel() for p in model.parameters()) * 4 > MAX_WEIGHT_BYTES
    if half:
        model.half().float()
    metrics = recipes.evaluate(args.family, model, tokenizer, corpus, stream)
    log(f"held-out: {metrics}")
    if args.resume and not steps_run:  # only re-evaluated: the figures of the run that trained it
        kept = {k: previous[k] for k in ("batch", "lr", "warmup", "dropout") if k in previous}
        recipe = dataclasses.replace(recipe, **kept)
        args.threads = previous.get("threads", args.threads)
    metrics.update(
        steps=steps_run + previous.get("steps", 0), batch=recipe.batch, seq_len=recipe.seq_len, lr=recipe.lr,
        threads=args.threads, wall_time_s=round(wall + previous.get("wall_time_s", 0), 1),
        final_train_loss=float(np.mean(losses[-50:])) if losses else previous.get("final_train_loss", float("nan")),
        tokenizer=recipe.tokenizer_kind,
        train_tokens=int(len(stream)), warmup=recipe.warmup, dropout=recipe.dropout,
        sinusoidal_positions=recipe.sinusoidal_positions, mask_rate=recipe.mask_rate, optimizer=recipe.optimizer, stopped_early=previous.get("stopped_early", False),
        stages=[*earlier_stages(previous),
                *([{"steps": steps_run, "lr": recipe.lr, "warmup": recipe.warmup, "dropout": recipe.dropout, **({"minutes": args.minutes} if args.minutes else {}),
                    **({"short_share": recipe.short_share} if recipe.short_share else {}),
                    **({"add_source": args.add_source} if args.add_source else {}),
                    **({"end_weight": recipe.end_weight} if recipe.end_weight else {}),
                    **({"repeat_share": recipe.repeat_share} if recipe.repeat_share else {}),
                    **({"copy_share": recipe.copy_share} if recipe.copy_share else {}),
                    **({"copy_start": copy_start} if copy_start else {}),
                    **({"unlikelihood": recipe.unlikelihood, "loop_opening": list(LOOP_OPENING)} if recipe.unlikelihood else {}),
                    **({"loop_starts": recipe.loop_starts, "loop_document_start": list(LOOP_DOCUMENT_START)} if recipe.unlikelihood and recipe.loop_starts else {}),
                    **({"loop_anchor": recipe.loop_anchor} if recipe.unlikelihood and recipe.loop_anchor else {}),
                    **({"local_bias": list(recipe.local_bias)} if recipe.local_bias and not args.resume else {}),
                    **({"match_prior": recipe.match_prior} if recipe.match_prior and not args.resume else {})}] if steps_run else [])],
        device=str(args.device) if steps_run else previous.get("device", "cpu"),
        initialised_from=initialised or previous.get("initialised_from"),
    )  # fmt: skip
    tokenizer_from = args.tokenizer_from or previous.get("tokenizer_from")
    metrics["shape"] = args.shape if not args.resume else previous.get("shape", args.shape)
    if tokenizer_from:
        metrics["tokenizer_from"] = str(tokenizer_from)
    if tokenizer_from and metrics["shape"] == "draft":  # its target's tokenizer, and the target's figures
        metrics["draft_for"] = Path(tokenizer_from).name
    metrics["weights_dtype"] = "float16" if half else "float32"
    metrics.update(settled)
    metrics["modern_passes"] = recipes.MODERN_PASSES
    metrics["tokens_per_word_modern"] = tokens_per_word(tokenizer, MODERN_SAMPLE.read_text(encoding="utf-8"))
    (model.half() if half else model).save_pretrained(args.out)  # safetensors by default
    model.float()
    tokenizer.save_pretrained(args.out)
    sample_list = card.samples(args.family, model, tokenizer)
    for s in sample_list:
        log(f"sample: {s['prompt']!r} -> {s['output']!r}")
    # The licences of every source the model read, in this stage or an earlier one (WordNet's asks to be kept).
    licences = {**previous.get("sources", {}), **corpus.licences}
    card.write_card(args.out, args.family, metrics, model, tokenizer, corpus.describe(), sample_list, licences)
    log(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
