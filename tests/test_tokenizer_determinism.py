"""Tokenizer training gives the same vocabulary in every process (issue 21), and the committed tokenizers the
live trainer loads are the ones the code trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.analysis.pretraining.configs import OBJECTIVES, TOKENIZERS_DIR, PretrainSettings, build_tokenizer
from explorer.analysis.pretraining.corpus import bundled_split

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IN_A_PROCESS = """
import json, sys
from explorer.analysis.pretraining.corpus import bundled_split
from explorer.core import tokenizer_training as tt
texts = list(bundled_split().train[:40])
out = {name: getattr(tt, name)(texts, 512).get_vocab() for name in ("train_wordpiece", "train_unigram")}
json.dump(out, sys.stdout)
"""


def _vocabularies_in_a_fresh_process(hash_seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_IN_A_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_wordpiece_and_unigram_vocabularies_are_the_same_in_two_processes():
    first, second = _vocabularies_in_a_fresh_process("1"), _vocabularies_in_a_fresh_process("2")
    for name in ("train_wordpiece", "train_unigram"):
        assert len(first[name]) > 400
        assert first[name] == second[name], f"{name}: {sorted(set(first[name]) ^ set(second[name]))[:10]}"


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_the_live_trainer_loads_the_committed_tokenizer_and_it_matches_a_fresh_training(objective):
    settings = PretrainSettings(objective=objective)
    assert (TOKENIZERS_DIR / f"{objective}-{settings.vocab}" / "tokenizer.json").is_file()
    loaded = build_tokenizer(settings, bundled_split().train)
    trained = OBJECTIVES[objective].tokenizer(list(bundled_split().train), settings.vocab)
    assert type(loaded) is type(trained)
    assert loaded.get_vocab() == trained.get_vocab()
    text = "And God said, Let there be light: and there was light."
    assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True).lower().startswith("and god said")
