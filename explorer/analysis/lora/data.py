"""Training text for the LoRA view: the bundled style datasets, pasted text, token windows and a held-out part.

A text becomes one stream of token ids. Its last tenth (at least one window) is held out to
measure loss on text the adapter never trained on; training batches are random windows of
``block`` tokens from the rest, drawn with a seeded generator so a run can be repeated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from explorer.core.errors import InputError
from explorer.core.limits import MAX_TRAINING_CHARS
from explorer.core.run import check_text

DATASETS_DIR = Path(__file__).resolve().parents[3] / "assets" / "lora"
MIN_CHARS = 300  # below this there is too little text to hold some out
HELDOUT_FRACTION = 0.1
DEFAULT_BLOCK = 64


@dataclass(frozen=True)
class StyleDataset:
    """A bundled dataset: its text, a sentence about it and prompts that show what training changed."""

    name: str
    text: str
    about: str
    probes: tuple[str, ...]


@cache
def bundled_datasets() -> dict[str, StyleDataset]:
    """The datasets in ``assets/lora`` by name (written for the project, public domain)."""
    index = json.loads((DATASETS_DIR / "datasets.json").read_text(encoding="utf-8"))
    return {
        d["name"]: StyleDataset(d["name"], (DATASETS_DIR / d["file"]).read_text(encoding="utf-8"), d["about"],
                                tuple(d["probes"]))
        for d in index["datasets"]
    }  # fmt: skip


def check_training_text(text) -> str:
    """Refuse text that is empty, too short to hold some out, or too long to train on in a minute."""
    text = check_text(text, "training text", allow_empty=True)
    if len(text.strip()) < MIN_CHARS:
        raise InputError(
            f"The training text has {len(text.strip()):,} characters; paste at least {MIN_CHARS} "
            "(a few paragraphs) so some of it can be held out."
        )
    if len(text) > MAX_TRAINING_CHARS:
        raise InputError(f"The training text has {len(text):,} characters; at most {MAX_TRAINING_CHARS:,} can be used.")
    return text


def check_probes(probes) -> list[str]:
    """Probe prompts, one a line: at least one, at most eight, each short."""
    if isinstance(probes, str):
        probes = probes.splitlines()
    lines = [p.strip() for p in (probes or []) if p and p.strip()]
    if not lines:
        raise InputError("Type at least one probe prompt (one a line).")
    if len(lines) > 8:
        raise InputError(f"{len(lines)} probe prompts given; at most 8 are compared at once.")
    for line in lines:
        check_text(line, "probe prompt")
        if len(line) > 300:
            raise InputError("A probe prompt is at most 300 characters.")
    return lines


@dataclass(frozen=True)
class TrainingData:
    """Token ids of a training text: ``train`` (n_train,) to draw windows from, ``heldout`` (n_windows, block)."""

    train: torch.Tensor
    heldout: torch.Tensor
    block: int

    @property
    def n_tokens(self) -> int:
        return int(self.train.numel() + self.heldout.numel())

    def batch(self, size: int, generator: torch.Generator) -> torch.Tensor:
        """``size`` random windows of ``block`` tokens from the training part: (size, block)."""
        starts = torch.randint(0, self.train.numel() - self.block + 1, (size,), generator=generator)
        return torch.stack([self.train[s : s + self.block] for s in starts.tolist()])


def training_data(tokenizer, text: str, block: int = DEFAULT_BLOCK, max_positions: int = 1024) -> TrainingData:
    """Tokenize ``text`` and split it: held-out windows from its end, the rest for training."""
    text = check_training_text(text)
    block = int(min(block, max_positions))
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    n_heldout = max(1, round(ids.numel() * HELDOUT_FRACTION / block))
    if ids.numel() < (n_heldout + 2) * block:
        raise InputError(
            f"The training text is only {ids.numel()} tokens; at least {(n_heldout + 2) * block} are needed "
            f"(windows of {block} tokens, some held out). Paste a little more."
        )
    cut = ids.numel() - n_heldout * block
    return TrainingData(ids[:cut], ids[cut:].view(n_heldout, block), block)
