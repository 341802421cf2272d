"""LoRA: parameter counts, a fresh adapter changes nothing, training learns a planted pattern, merging,
the rank of ΔW, adapter files, bounds, and isolation (the shared model never changes; sessions are private)."""

import json
import time

import pytest
import torch
from gradio_client import Client, handle_file
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

from explorer.analysis.lora import compare
from explorer.analysis.lora.data import bundled_datasets, check_probes, training_data
from explorer.analysis.lora.files import load_adapter, save_adapter
from explorer.analysis.lora.finetune import (
    LoraSession,
    LoraSettings,
    adaptable_modules,
    default_targets,
    lora_parameter_count,
    parameter_count,
)
from explorer.analysis.lora.sessions import SessionBudget, SessionRegistry
from explorer.core.errors import InputError
from explorer.core.loading import load
from explorer.core.settings import overridden

PLANTED = bundled_datasets()["Planted pattern"]
PASSWORD_PROMPT = "Hamlet said that the password is"


@pytest.fixture(scope="module")
def bundled():
    return load("tiny-gpt2")


def snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before: dict) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


@torch.no_grad()
def next_probs(model, tokenizer, prompt: str) -> torch.Tensor:
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    return torch.softmax(model(input_ids=ids).logits[0, -1], -1)


@pytest.fixture(scope="module")
def planted_session(bundled):
    """A LoRA trained on the planted pattern on the bundled decoder (the shared model is snapshotted first)."""
    before = snapshot(bundled.model)
    data = training_data(bundled.tokenizer, PLANTED.text)
    settings = LoraSettings(("attn.c_attn", "attn.c_proj"), r=4, alpha=8, lr=1e-2, steps=40, batch_size=4)
    session = LoraSession(bundled, settings, data)
    session.train(settings.steps)
    session.finish()
    return session, before


# ---------------------------------------------------------------- set-up


def test_gpt2_small_with_r8_on_c_attn_trains_294912_parameters():
    with torch.device("meta"):  # GPT-2 small's shapes, no memory and no download
        model = GPT2LMHeadModel(GPT2Config())
    assert lora_parameter_count(model, ["attn.c_attn"], 8) == 294_912  # 12 layers x 8 x (768 + 2304)
    base = parameter_count(model)
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["c_attn"], fan_in_fan_out=True))
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert trainable == 294_912 and total == base + 294_912 == 124_734_720
    assert round(100 * trainable / total, 2) == 0.24


def test_module_kinds_and_defaults_for_each_decoder(tiny):
    assert set(adaptable_modules(tiny["gpt2"].model)) == {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}
    llama = adaptable_modules(tiny["llama"].model)
    assert {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"} <= set(llama)
    assert all(len(names) == 2 for names in llama.values())  # one per layer
    assert default_targets(tiny["llama"].model) == [k for k in llama if k.startswith("self_attn")]


def test_peft_trains_exactly_the_parameters_we_count(tiny):
    for name, targets in [("gpt2", ["attn.c_attn", "mlp.c_fc"]), ("llama", ["self_attn.q_proj", "mlp.up_proj"])]:
        lm = tiny[name]
        data = training_data(lm.tokenizer, PLANTED.text, block=32)
        session = LoraSession(lm, LoraSettings(tuple(targets), r=3), data)
        assert session.peft.get_nb_trainable_parameters()[0] == lora_parameter_count(lm.model, targets, 3)
        session.close()


# ---------------------------------------------------------------- a fresh adapter, training, merging


def test_a_fresh_adapter_leaves_logits_unchanged(tiny):
    for name in ("gpt2", "llama"):
        lm = tiny[name]
        data = training_data(lm.tokenizer, PLANTED.text, block=32)
        session = LoraSession(lm, LoraSettings(tuple(adaptable_modules(lm.model)), r=8), data)
        ids = torch.tensor([lm.tokenizer("To be, or not to be")["input_ids"]])
        with torch.no_grad(), session.lock, session.using("adapted") as adapted:
            assert torch.equal(adapted.model(input_ids=ids).logits, lm.model(input_ids=ids).logits)


def test_training_on_a_planted_pattern_makes_the_model_prefer_it(bundled, planted_session):
    session, _ = planted_session
    target = bundled.tokenizer(" marmalade")["input_ids"][0]
    base = next_probs(bundled.model, bundled.tokenizer, PASSWORD_PROMPT)
    with session.lock, session.using("adapted") as adapted:
        after = next_probs(adapted.model, bundled.tokenizer, PASSWORD_PROMPT)
    assert float(base[target]) < 0.01  # the bundled model has never seen the pattern
    # now its first choice, and at least ten times likelier (the exact probability varies with the bundled weights)
    assert int(after.argmax()) == target and float(after[target]) > 0.1
    assert session.losses[-1] < session.losses[0] and session.heldout_after < session.heldout_before


def test_merged_adapter_gives_the_same_logits_as_the_unmerged_one(planted_session):
    session, _ = planted_session
    logits = compare.merge_check(session, PASSWORD_PROMPT)
    torch.testing.assert_close(logits["merged"], logits["on"], atol=1e-4, rtol=1e-5)
    assert float((logits["on"] - logits["off"]).abs().max()) > 1.0  # the adapter does change the model
    assert session.mode == "on"  # the check restores the mode it found


def test_delta_w_is_what_merging_adds_and_has_rank_at_most_r(bundled, planted_session):
    session, _ = planted_session
    deltas = compare.delta_weights(session)
    assert len(deltas) == 2 * 4  # two kinds in each of four blocks
    shared = dict(bundled.model.named_modules())
    session.set_mode("merged")
    try:
        for d in deltas:
            assert torch.linalg.matrix_rank(d.delta) <= session.settings.r
            assert compare.numerical_rank(d.singular_values()) <= session.settings.r
            assert d.norm > 0
            name = f"transformer.{d.block}.{d.kind}"
            merged = dict(session.lm.model.named_modules())[name].get_base_layer().weight
            torch.testing.assert_close(
                merged - shared[name].weight, d.delta.T, atol=1e-5, rtol=1e-4
            )  # Conv1D: (in, out)
    finally:
        session.set_mode("on")


def test_before_after_views_report_what_moved(bundled, planted_session):
    session, _ = planted_session
    comparisons = compare.compare_probes(session, [PASSWORD_PROMPT, "And God said"])
    assert comparisons[0].kl_bits > 1.0 and comparisons[0].kl_bits > comparisons[1].kl_bits
    ids, before, after = compare.moved_tokens(comparisons)
    assert ids[0] == bundled.tokenizer(" marmalade")["input_ids"][0] and after[0] > before[0]
    # Sampled: most seeds write the planted word after the adapter, none before (one sample can still miss it).
    samples = [compare.generations(session, PASSWORD_PROMPT, 8, seed=seed) for seed in range(5)]
    assert sum(adapted.startswith(" mar") for _, adapted in samples) >= 4, samples
    assert not any(base.startswith(" mar") for base, _ in samples), samples
    assert compare.generations(session, PASSWORD_PROMPT, 8, seed=3) == samples[3]  # same seed, same texts


def test_full_finetuning_trains_every_weight_on_a_copy(bundled, planted_session):
    session, shared_before = planted_session
    fractions = []
    report = compare.full_finetune(session, [PASSWORD_PROMPT], progress=fractions.append)
    assert len(fractions) == 40 and fractions[-1] == 1.0  # after every step
    lora = compare.lora_report(session, [PASSWORD_PROMPT])
    assert report.trainable == report.total == parameter_count(bundled.model)
    assert lora.trainable == lora_parameter_count(bundled.model, session.settings.targets, 4) < report.trainable / 20
    assert report.training_bytes > 3 * lora.training_bytes
    assert report.heldout_after < report.heldout_before and report.steps == 40
    assert_unchanged(bundled.model, shared_before)


def test_a_stopped_full_finetune_says_how_far_it_got_and_leaves_the_model(bundled, planted_session):
    """The Stop button (or the browser tab closing) ends the full run at its next step, not at its end."""
    session, shared_before = planted_session
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(InputError, match="ran 3 of 40 steps"):
        compare.full_finetune(session, [PASSWORD_PROMPT], should_stop=should_stop)
    assert_unchanged(bundled.model, shared_before)


# ---------------------------------------------------------------- isolation and bounds


def test_the_shared_model_is_never_modified_by_training_or_merging(bundled, planted_session):
    session, before = planted_session
    session.set_mode("merged")
    session.set_mode("off")
    session.set_mode("on")
    assert_unchanged(bundled.model, before)
    assert not any(p.requires_grad for p in bundled.model.parameters())
    assert session.peft.get_base_model() is not bundled.model


def test_two_sessions_have_independent_adapters(bundled, planted_session):
    session, _ = planted_session
    other = LoraSession(
        bundled, LoraSettings(("mlp.c_fc",), r=2, steps=3), training_data(bundled.tokenizer, PLANTED.text)
    )
    before = compare.compare_probes(session, [PASSWORD_PROMPT])[0].adapted
    other.train(3)
    other.set_mode("merged")
    assert torch.equal(compare.compare_probes(session, [PASSWORD_PROMPT])[0].adapted, before)
    assert [d.kind for d in compare.delta_weights(other)] == ["mlp.c_fc"] * 4
    other.close()


def test_adapter_file_round_trip_and_refusals(tmp_path, bundled, tiny, planted_session):
    session, _ = planted_session
    path = save_adapter(session, tmp_path / "a.safetensors")
    assert path.stat().st_size < 200_000
    loaded = load_adapter(bundled, path, session.data)
    for a, b in zip(compare.delta_weights(loaded), compare.delta_weights(session)):
        assert torch.equal(a.delta, b.delta)
    with pytest.raises(InputError, match="trained on 'tiny-gpt2'"):
        load_adapter(tiny["gpt2"], path, training_data(tiny["gpt2"].tokenizer, PLANTED.text, block=32))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file at all")
    with pytest.raises(InputError, match="not a safetensors file"):
        load_adapter(bundled, junk, session.data)
    with safe_open(path, "pt") as f:  # the same weights with settings of the wrong kind, then out of range
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    for bad, message in (({"r": "8"}, "whole number"), ({"r": 0}, "rank r"), ({"r": 8.5}, "whole number"),
                         ({"r": True}, "whole number"), ({"lr": "fast"}, "finite number")):  # fmt: skip
        settings = {**json.loads(metadata["settings"]), **bad}
        save_file(tensors, tmp_path / "bad.safetensors", {**metadata, "settings": json.dumps(settings)})
        with pytest.raises(InputError, match=message):
            load_adapter(bundled, tmp_path / "bad.safetensors", session.data)


def test_bounds_give_one_clear_sentence(bundled, tiny):
    with pytest.raises(InputError, match="at least 300"):
        training_data(bundled.tokenizer, "Too short.")
    with pytest.raises(InputError, match="at most 20,000"):
        training_data(bundled.tokenizer, "word " * 5000)
    with pytest.raises(InputError, match="at most 8"):
        check_probes("\n".join(f"p{i}" for i in range(9)))
    with pytest.raises(InputError, match="rank r"):
        LoraSettings(("attn.c_attn",), r=0).validate()
    data = training_data(bundled.tokenizer, PLANTED.text)
    with pytest.raises(InputError, match="decoders"):
        LoraSession(tiny["bert"], LoraSettings(("attention.self.query",)), data)
    with pytest.raises(InputError, match="no module 'q_proj'"):
        LoraSession(bundled, LoraSettings(("q_proj",)), data)
    with overridden(lora_max_mb=1), pytest.raises(InputError, match="per session"):
        LoraSession(bundled, LoraSettings(("attn.c_attn",)), data)
    budget = SessionBudget(max_bytes=100)
    budget.reserve("a", 60)
    budget.reserve("a", 70)  # a session's new fine-tune replaces its old one
    with pytest.raises(InputError, match="other sessions"):
        budget.reserve("b", 40)
    budget.release("a")
    budget.reserve("b", 40)


def test_a_new_fine_tune_replaces_the_old_one_and_ending_frees_it(tiny):
    lm = tiny["gpt2"]
    data = training_data(lm.tokenizer, PLANTED.text, block=32)
    registry = SessionRegistry(SessionBudget(max_bytes=2**30))
    first = registry.start("alice", lm.nbytes, lambda: LoraSession(lm, LoraSettings(("attn.c_attn",)), data))
    second = registry.start("alice", lm.nbytes, lambda: LoraSession(lm, LoraSettings(("attn.c_attn",)), data))
    assert first.closed and first.peft is None and not second.closed
    assert registry.budget.held == second.nbytes and len(registry) == 1
    with pytest.raises(InputError, match="replaced"):
        first.finish()

    def failing():
        raise InputError("no")

    with pytest.raises(InputError):
        registry.start("bob", lm.nbytes, failing)
    assert registry.budget.held == second.nbytes  # a failed start holds nothing
    registry.end("alice")
    assert second.closed and registry.budget.held == 0 and len(registry) == 0


# ---------------------------------------------------------------- the app: named endpoints, two sessions


TRAIN_ARGS = ("Planted pattern", "", ["attn.c_attn"], 4, 8, 0.0, 0.01, 20, 4, 0, PASSWORD_PROMPT + "\nThe")


def test_app_trains_compares_merges_and_never_changes_the_shared_model(app_url, ctx, tiny_dir, tmp_path):
    shared = ctx.pool.get(str(tiny_dir["gpt2"]))
    ids = torch.tensor([shared.tokenizer(PASSWORD_PROMPT)["input_ids"]])
    with torch.no_grad():
        logits_before = shared.model(input_ids=ids).logits.clone()
    alice, bob = Client(app_url, verbose=False), Client(app_url, verbose=False)
    _, note = alice.predict(["attn.c_attn"], 8, api_name="/lora_setup")
    assert "**2,048**" in note  # 2 layers x 8 x (32 + 96)

    status, _, mode = alice.predict(*TRAIN_ARGS, api_name="/lora_train")
    assert "20/20" in status and "done" in status and mode == "on", status
    table, _, _, generations = alice.predict(PASSWORD_PROMPT + "\nThe", 1, api_name="/lora_compare")
    kl = table["data"][0][1]
    assert kl > 0 and len(generations["data"]) == 2
    note = alice.predict("merged", PASSWORD_PROMPT, api_name="/lora_mode")
    assert "merged vs adapter on" in note
    _, choices, update_note, _, _ = alice.predict(None, api_name="/lora_update")
    assert len(choices["choices"]) == 2 and "rank **4**" in update_note

    bob_view, *_ = bob.predict(PASSWORD_PROMPT, 1, api_name="/lora_compare")
    assert "Train an adapter first" in bob_view["data"][0][1]  # Alice's adapter is not Bob's
    bob.predict("Pirate voice", "", ["attn.c_proj"], 2, 4, 0.0, 0.01, 10, 2, 1, "Ahoy", api_name="/lora_train")
    table_again, *_ = alice.predict(PASSWORD_PROMPT + "\nThe", 1, api_name="/lora_compare")
    assert table_again["data"][0][1] == kl  # Bob's training did not touch Alice's adapter

    file_path, _ = alice.predict(api_name="/lora_download")
    upload_note, _ = bob.predict(handle_file(file_path), "Planted pattern", "", api_name="/lora_upload")
    assert "r = 4" in upload_note
    bob_table, *_ = bob.predict(PASSWORD_PROMPT + "\nThe", 1, api_name="/lora_compare")
    assert bob_table["data"][0][1] == pytest.approx(kl, abs=1e-3)  # the same adapter, uploaded into Bob's session

    with torch.no_grad():
        assert torch.equal(shared.model(input_ids=ids).logits, logits_before)


def test_app_bad_settings_and_other_families_get_a_sentence(app_url, tiny_dir):
    client = Client(app_url, verbose=False)
    status, _, _ = client.predict("your own text", "too short", ["attn.c_attn"], 4, 8, 0.0, 0.01, 20, 4, 0, "The",
                               api_name="/lora_train")  # fmt: skip
    assert status.startswith("⚠️") and "at least 300" in status
    client.predict(str(tiny_dir["gpt2"]), "The tiger jumped.", "", api_name="/analyze")
    modules, _ = client.predict([], 8, api_name="/lora_setup")
    modules = modules.get("value") if isinstance(modules, dict) else modules  # an update of choices and value
    assert modules  # GPT-2's module names
    client.predict(str(tiny_dir["t5"]), "The tiger jumped.", "", api_name="/analyze")
    modules, note = client.predict(modules, 8, api_name="/lora_setup")
    assert note.startswith("⚠️") and "decoders" in note
    modules = modules.get("value") if isinstance(modules, dict) else modules  # an update of choices and value
    assert modules == [], "the module box still lists the previous model's names"
    table = client.predict("The", api_name="/lora_full_finetune")
    assert "Train an adapter first" in table["data"][0][0]


def test_stop_cancels_training_and_keeps_the_adapter_trained_so_far(app_url):
    client = Client(app_url, verbose=False)
    job = client.submit("Pirate voice", "", ["attn.c_attn"], 4, 8, 0.0, 0.01, 500, 2, 0, "Ahoy", api_name="/lora_train")
    deadline = time.monotonic() + 120
    while len(job.outputs()) < 3 and not job.done():  # a few progress updates: the loss curve is live
        assert time.monotonic() < deadline, "the training never reported progress"
        time.sleep(0.1)
    job.cancel()
    status, _ = client.predict(api_name="/lora_stop")
    steps_done = int(status.split("**")[1].split("/")[0])
    assert "stopped" in status and "after" in status and 0 < steps_done < 500
    time.sleep(2.0)  # a step still running would have ended by now and changed the count
    assert client.predict(api_name="/lora_stop")[0] == status  # no step ran after the stop
    table, *_ = client.predict("Ahoy", 1, api_name="/lora_compare")
    assert table["data"][0][1] > 0  # the adapter trained so far is there to compare


@pytest.mark.parametrize("lora_dropout", [0.0, 0.2])
def test_the_same_seed_and_settings_give_the_same_losses(tiny, lora_dropout):
    """The tiny GPT-2 has the base model's own dropout (0.1): training must not draw from torch's global generator."""
    lm = tiny["gpt2"]
    assert lm.model.config.resid_pdrop > 0
    data = training_data(lm.tokenizer, PLANTED.text, block=32)
    settings = LoraSettings(
        ("attn.c_attn",), r=4, alpha=8, dropout=lora_dropout, lr=1e-2, steps=6, batch_size=2, seed=3
    )
    runs = []
    for _ in range(2):
        session = LoraSession(lm, settings, data)
        torch.rand(17)  # other requests advance the global generator between runs
        session.train(settings.steps)
        runs.append(session.losses)
        session.close()
    assert runs[0] == runs[1]
    other = LoraSession(lm, LoraSettings(**{**settings.__dict__, "seed": 4}), data)
    other.train(settings.steps)
    assert other.losses != runs[0]  # the seed matters: different batches and dropout


def test_a_refused_new_fine_tune_leaves_the_previous_one_in_place(tiny):
    lm = tiny["gpt2"]
    data = training_data(lm.tokenizer, PLANTED.text, block=32)
    registry = SessionRegistry(SessionBudget(max_bytes=2**30))
    first = registry.start("alice", lm.nbytes, lambda: LoraSession(lm, LoraSettings(("attn.c_attn",)), data))
    held = registry.budget.held

    def refused():
        raise InputError("That file is not a safetensors file.")

    with pytest.raises(InputError):
        registry.start("alice", lm.nbytes, refused)
    assert not first.closed and len(registry) == 1 and registry.budget.held == held
    first.finish()  # still usable


def test_app_uploading_a_file_that_is_not_an_adapter_keeps_the_trained_one(app_url, tmp_path):
    client = Client(app_url, verbose=False)
    status, _, _ = client.predict(*TRAIN_ARGS, api_name="/lora_train")
    assert "done" in status, status
    junk = tmp_path / "notes.safetensors"
    junk.write_bytes(b"these are my lecture notes, not tensors")
    note, _ = client.predict(handle_file(str(junk)), "Planted pattern", "", api_name="/lora_upload")
    assert note.startswith("⚠️") and "not a safetensors file" in note
    table, *_ = client.predict(PASSWORD_PROMPT + "\nThe", 1, api_name="/lora_compare")
    assert table["data"][0][1] > 0, table  # the adapter trained before the refused upload is still there


def held_bytes(session: LoraSession) -> int:
    """What a session's tensors take: its private copy (LoRA matrices included), optimizer state and text."""
    tensors = {t.data_ptr(): t for t in [*session.peft.parameters(), *session.peft.buffers()]}
    state = [v for s in session.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    held = sum(t.numel() * t.element_size() for t in [*tensors.values(), *state])
    return held + session.data.train.numel() * 8 + session.data.heldout.numel() * 8


def test_the_memory_budget_counts_what_a_session_holds(bundled):
    data = training_data(bundled.tokenizer, PLANTED.text)
    session = LoraSession(bundled, LoraSettings(("attn.c_attn", "mlp.c_fc"), r=16, batch_size=8, steps=3), data)
    session.train(3)
    assert session.nbytes >= held_bytes(session) > bundled.nbytes  # copy + adapter + AdamW state + text
    # a training step's logits (batch x block x vocabulary floats), which the allocator keeps, are counted too
    logits = 8 * data.block * bundled.model.config.vocab_size * 4
    assert session.nbytes >= held_bytes(session) + logits


def test_one_client_address_holds_a_bounded_number_of_fine_tunes(tiny):
    from explorer.core.settings import overridden

    with overridden(lora_per_client=2):
        _check_client_bound(tiny)


def _check_client_bound(tiny):
    lm = tiny["gpt2"]
    data = training_data(lm.tokenizer, PLANTED.text, block=32)
    registry = SessionRegistry(SessionBudget(max_bytes=2**30))

    def make():
        return LoraSession(lm, LoraSettings(("attn.c_attn",)), data)

    registry.start("tab-1", lm.nbytes, make, client="10.0.0.7")
    registry.start("tab-2", lm.nbytes, make, client="10.0.0.7")
    registry.start("tab-2", lm.nbytes, make, client="10.0.0.7")  # replacing its own fine-tune is fine
    with pytest.raises(InputError, match="at most 2 at once"):
        registry.start("api-3", lm.nbytes, make, client="10.0.0.7")
    registry.start("other", lm.nbytes, make, client="10.0.0.8")  # another address is not affected
    registry.end("tab-1")
    registry.start("api-3", lm.nbytes, make, client="10.0.0.7")
    assert len(registry) == 3


@pytest.mark.parametrize("spoil", ["nan", "int8"])
def test_an_adapter_with_nan_or_integer_weights_is_refused(tmp_path, bundled, planted_session, spoil):
    session, _ = planted_session
    path = save_adapter(session, tmp_path / "a.safetensors")
    with safe_open(path, "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    name = sorted(tensors)[0]
    if spoil == "nan":
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("nan")
    else:
        tensors[name] = (tensors[name] * 100).to(torch.int8)
    save_file(tensors, tmp_path / "spoiled.safetensors", metadata)
    with pytest.raises(InputError, match="NaN" if spoil == "nan" else "int8 numbers"):
        load_adapter(bundled, tmp_path / "spoiled.safetensors", session.data)
