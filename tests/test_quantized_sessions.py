"""Each session's quantized copies: kept and reused, separate between sessions, bounded by a budget with a sentence
when full, freed when the session ends, and the shared model never changed (the bundled decoder)."""

import pytest
import torch

from explorer.analysis.inference.quantized_sessions import QuantizedCopies
from explorer.analysis.lora.sessions import SessionBudget
from explorer.core.errors import InputError
from explorer.core.loading import load


@pytest.fixture(scope="module")
def bundled():
    return load("tiny-gpt2")


def state(lm) -> dict:
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def test_a_session_reuses_its_copy_and_sessions_are_separate(bundled):
    before = state(bundled)
    copies = QuantizedCopies(SessionBudget(10 * bundled.nbytes))
    alice = copies.get("alice", bundled, "int4-g32-sym")
    assert copies.get("alice", bundled, "int4-g32-sym") is alice and copies.made == 1  # not quantized again
    bob = copies.get("bob", bundled, "int4-g32-sym")
    assert bob is not alice and copies.made == 2
    assert bob.lm.model is not alice.lm.model and bob.lm.model is not bundled.model
    name = "transformer.h.0.attn.c_attn.weight"
    with torch.no_grad():  # one session's copy changing leaves the other's and the shared model as they were
        alice.lm.model.get_parameter(name).add_(1.0)
    assert torch.equal(bob.lm.model.get_parameter(name), bob.reconstructed(name))
    assert not torch.equal(alice.lm.model.get_parameter(name), bob.lm.model.get_parameter(name))
    assert copies.held("alice") == [("tiny-gpt2", "int4-g32-sym")] == copies.held("bob")
    assert copies.budget.held == alice.nbytes + bob.nbytes
    after = state(bundled)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_session_keeps_its_latest_copies_and_frees_them_when_it_ends(bundled):
    copies = QuantizedCopies(SessionBudget(10 * bundled.nbytes), per_session=2)
    for name in ("int8", "float16", "int4-g128-sym"):
        copies.get("alice", bundled, name)
    assert copies.held("alice") == [("tiny-gpt2", "float16"), ("tiny-gpt2", "int4-g128-sym")]  # int8 dropped
    half = copies.get("alice", bundled, "float16")
    assert copies.made == 3 and half.nbytes == bundled.nbytes // 2  # reused, now the latest
    assert copies.held("alice")[-1] == ("tiny-gpt2", "float16")
    copies.get("bob", bundled, "int8")
    copies.end("alice")
    assert copies.held("alice") == [] and len(copies) == 1
    assert copies.budget.held == copies.get("bob", bundled, "int8").nbytes
    copies.end("bob")
    assert copies.budget.held == 0 and len(copies) == 0


def test_the_budget_refuses_a_copy_that_does_not_fit_with_a_sentence(bundled):
    copies = QuantizedCopies(SessionBudget(int(1.4 * bundled.nbytes)))
    alice = copies.get("alice", bundled, "float16")  # half a float32 copy once made
    with pytest.raises(InputError, match="private model copies") as refused:
        copies.get("bob", bundled, "int8")  # making it needs a float32 copy beside alice's half
    assert str(refused.value).endswith("pick a smaller model.") and "\n" not in str(refused.value)
    assert copies.held("bob") == [] and copies.budget.held == alice.nbytes  # nothing of bob's counted
    copies.get("alice", bundled, "int8")  # alice's own older copy goes to make room
    assert copies.held("alice") == [("tiny-gpt2", "int8")]
    with pytest.raises(InputError, match="precision"):
        copies.get("alice", bundled, "int3")
    assert copies.held("alice") == [("tiny-gpt2", "int8")]  # a refused name drops nothing


def test_a_fine_tune_and_a_quantized_copy_are_counted_together(bundled):
    """The app's one budget bounds both kinds of private copy: a fine-tune leaves less room for a quantized copy."""
    from explorer.analysis.inference.quantization import copy_bytes
    from explorer.analysis.lora.finetune import LoraSettings, session_bytes
    from explorer.analysis.lora.sessions import SessionRegistry, model_training_data, start_training

    text, lora = "The tiger jumped out of a tree. " * 20, LoraSettings(("attn.c_attn",), r=4, steps=1)
    budget = SessionBudget(10 * bundled.nbytes)
    fine_tunes, copies = SessionRegistry(budget), QuantizedCopies(budget)
    tuned = start_training(fine_tunes, "alice", bundled, lora, text)
    quantized = copies.get("alice", bundled, "float16")
    assert tuned.nbytes > 0 and budget.held == tuned.nbytes + quantized.nbytes
    copies.end("alice")
    fine_tunes.end("alice")
    assert budget.held == 0

    starting = max(tuned.nbytes, session_bytes(bundled, lora, model_training_data(bundled, text)))
    tight = SessionBudget(starting + copy_bytes(bundled) - 1)  # either fits alone, not both
    fine_tunes, copies = SessionRegistry(tight), QuantizedCopies(tight)
    start_training(fine_tunes, "alice", bundled, lora, text)
    with pytest.raises(InputError, match="private model copies"):
        copies.get("bob", bundled, "int8")
    fine_tunes.end("alice")
    assert copies.get("bob", bundled, "int8").nbytes == tight.held  # room again once the fine-tune is gone
