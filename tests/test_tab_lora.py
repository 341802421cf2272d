"""The LoRA tab's handlers, called without a server on the bundled models, and the training loop and
memory policy they call in ``analysis/lora``."""

import dataclasses

import pytest

from explorer.analysis.lora.data import bundled_datasets, training_data
from explorer.analysis.lora.files import adapter_filename
from explorer.analysis.lora.finetune import LoraSession, LoraSettings, train_live
from explorer.analysis.lora.sessions import (
    SessionBudget,
    SessionRegistry,
    compare_with_full_finetuning,
    full_finetune_bytes,
    upload_bytes,
)
from explorer.core.errors import InputError
from explorer.core.settings import settings
from explorer.ui.context import AppContext, Selection
from explorer.ui.tabs import lora as tab

TEXT = "The tiger jumped out of a tree"
PROBES = "Hamlet said that the password is\nThe password is"
# data, pasted text, modules, r, alpha, dropout, lr, steps, batch, seed, probes
KNOBS = ("Planted pattern", "", ["attn.c_attn"], 4, 8, 0.0, 0.01, 8, 1, 0, PROBES)


@pytest.fixture(scope="module")
def ctx():
    return AppContext()


@pytest.fixture(scope="module")
def gpt2():
    return Selection(model="tiny-gpt2", text=TEXT)


def registry(max_mb: float = 1024) -> SessionRegistry:
    return SessionRegistry(SessionBudget(int(max_mb * 2**20)))


@pytest.fixture(scope="module")
def trained(ctx, gpt2):
    """A registry and every update of one 8-step training of the bundled GPT-2 on the planted pattern."""
    fine_tunes = registry()
    return fine_tunes, list(tab.train(ctx, fine_tunes, gpt2, *KNOBS, None))


@pytest.fixture(scope="module")
def session(trained):
    return trained[1][-1][0]


# ---------------------------------------------------------------- set-up


def test_setup_lists_the_modules_and_counts_what_lora_trains(ctx, gpt2):
    modules, note = tab.setup(ctx, gpt2, [], 8)
    assert modules["choices"] == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert modules["value"] == ["attn.c_attn", "attn.c_proj"]  # the attention projections by default
    _, note = tab.setup(ctx, gpt2, ["attn.c_attn", "not.a.module"], 8)  # unknown names are dropped
    assert note.startswith("**tiny\\-gpt2**: LoRA trains **32,768** of ")  # 4 blocks x 8 x (256 in + 768 out)
    assert "per-session limit 1,024 MB" in note


def test_setup_refuses_other_families_and_empties_the_module_box(ctx):
    modules, note = tab.setup(ctx, Selection(model="tiny-t5", text=TEXT), ["attn.c_attn"], 8)
    assert (modules["choices"], modules["value"]) == ([], [])
    assert note.startswith("⚠️") and "decoders" in note


def test_the_server_settings_are_read_from_the_context_at_call_time(gpt2):
    small = AppContext(settings=dataclasses.replace(settings(), lora_max_mb=1))
    modules, note = tab.setup(small, gpt2, [], 8)
    assert modules["value"] == [] and "per session" in note and "1 MB" in note
    *_, last = tab.train(small, registry(), gpt2, *KNOBS, None)
    assert last[1].startswith("⚠️") and "per session" in last[1]


def test_the_dataset_choice_fills_its_note_and_probes(ctx):
    planted = bundled_datasets()["Planted pattern"]
    assert tab.describe(ctx, "Planted pattern") == f"*{planted.about}*"
    assert tab.describe(ctx, tab.PASTED).startswith("*Paste a few paragraphs")
    assert tab.probes_of(ctx, "Planted pattern", "mine").splitlines()[0] == "Hamlet said that the password is"
    assert tab.probes_of(ctx, tab.PASTED, "mine") == "mine"


# ---------------------------------------------------------------- training


def test_training_streams_the_loss_and_ends_done(trained):
    fine_tunes, updates = trained
    first, last = updates[0], updates[-1]
    session, status, curve, mode = last
    assert isinstance(session, LoraSession) and first[0] is session and first[3] == "on"
    assert "Step **8/8**" in status and status.endswith(" · done.") and mode == "on"
    assert f"after: **{session.heldout_after:.3f}**" in status
    assert [t.name for t in curve.data][:1] == ["training loss (batch)"] and len(curve.data[0].y) == 8
    title = curve.layout.title.text.replace("<br>", " ")
    assert "LoRA training loss" in title and "r = 4" in title and "tiny-gpt2" in title
    assert len(fine_tunes) == 1 and fine_tunes.budget.held == session.nbytes  # counted under its owner


@pytest.mark.parametrize(
    "change, sentence",
    [
        ({0: tab.PASTED, 1: "too short"}, "at least 300"),
        ({3: "four"}, "Every training setting must be a number"),
        ({3: 0}, "rank r must be from 1"),
        ({10: ""}, "at least one probe prompt"),
        ({0: "No such data"}, "Pick one of the datasets"),
    ],
)
def test_bad_training_input_gets_a_sentence(ctx, gpt2, change, sentence):
    knobs = [change.get(i, k) for i, k in enumerate(KNOBS)]
    fine_tunes = registry()
    (update,) = list(tab.train(ctx, fine_tunes, gpt2, *knobs, None))
    assert update[1].startswith("⚠️") and sentence in update[1], update[1]
    assert len(fine_tunes) == 0 and fine_tunes.budget.held == 0


def test_stop_reports_the_steps_so_far(ctx, session):
    status, curve = tab.stopped(ctx, session)
    assert status.startswith("Step **8/8**") and status.endswith(" · stopped.")
    assert tab.stopped(ctx, None)[0] == "⚠️ Train an adapter first \\(or upload one\\)\\."


def test_train_live_reports_by_time_and_progress_every_chunk(tiny):
    lm = tiny["gpt2"]  # a random two-layer GPT-2 of width 32: a hundred steps take little time
    data = training_data(lm.tokenizer, bundled_datasets()["Planted pattern"].text, block=32)
    lora = LoraSettings(("attn.c_attn",), r=2, steps=100, batch_size=1)
    seen = []
    live = LoraSession(lm, lora, data)
    assert list(train_live(live, lambda done, total: seen.append((done, total)), every_s=3600)) == [2, 100]
    assert seen == [(2 * i, 100) for i in range(1, 51)]  # chunks of a fiftieth of the run
    short = LoraSession(lm, dataclasses.replace(lora, steps=3), data)
    assert list(train_live(short, every_s=0)) == [1, 2, 3]  # at least one step a chunk; every chunk reported
    short.close()
    assert list(train_live(short)) == []  # a replaced fine-tune trains no further


# ---------------------------------------------------------------- the views


def test_compare_view_tables_draws_and_generates(ctx, session):
    table, bars, moved, generations = tab.compare_view(ctx, session, PROBES, 2)
    assert [row[0] for row in table] == PROBES.splitlines()
    assert all(row[1] > 0 for row in table)  # the adapter changed both distributions
    assert all(len(row[2].split(", ")) == 3 for row in table)
    assert {t.name for t in bars.data} == {"base", "adapted"}
    assert "After “The password is”" in bars.layout.title.text.replace("<br>", " ")  # probe 2 is drawn
    assert moved.data and "tiny-gpt2" in moved.layout.title.text.replace("<br>", " ")
    assert [row[0] for row in generations] == PROBES.splitlines() and all(len(row) == 3 for row in generations)


def test_the_views_ask_for_an_adapter_first(ctx):
    table, bars, moved, generations = tab.compare_view(ctx, None, PROBES, 1)
    assert table == [["⚠️", "Train an adapter first (or upload one).", "", ""]] and generations == []
    assert bars.layout.annotations[0].text.startswith("Train an adapter first")
    norm, _, note, *_ = tab.update_view(ctx, None, None)
    assert note.startswith("⚠️ Train an adapter first") and not norm.data
    assert tab.set_mode(ctx, None, "on", PROBES).startswith("⚠️ Train an adapter first")
    assert tab.download(ctx, None)[0] is None
    assert tab.full_compare(ctx, registry(), None, PROBES, None)[0][0].startswith("⚠️ Train an adapter first")


def test_update_view_shows_the_rank_of_the_update(ctx, session):
    norm, module, note, sv, delta = tab.update_view(ctx, session, "h.2 attn.c_attn")
    assert module["choices"] == [f"h.{i} attn.c_attn" for i in range(4)] and module["value"] == "h.2 attn.c_attn"
    assert note.startswith("**h\\.2 attn\\.c\\_attn**: ΔW is 768 × 256, numerical rank **4** (r = 4)")
    assert norm.data[0].type == "heatmap" and sv.data and delta.data[0].type == "heatmap"
    _, picked, *_ = tab.update_view(ctx, session, "no such matrix")  # else: the matrix that moved most
    assert picked["value"] in picked["choices"]


def test_modes_switch_the_same_private_model(ctx, session):
    note = tab.set_mode(ctx, session, "merged", PROBES)
    assert note.startswith("Adapter **merged**. Greedy continuation of “Hamlet said that the password is”")
    assert "merged vs adapter on" in note and session.mode == "merged"
    merged = float(note.split("merged vs adapter on **")[1].split("**")[0])
    assert merged < 1e-3  # the same model up to float rounding
    assert tab.set_mode(ctx, session, "sideways", PROBES).startswith("⚠️ The adapter can be on, off, merged")
    tab.set_mode(ctx, session, "on", PROBES)
    assert session.mode == "on"


def test_download_then_upload_into_another_session(ctx, gpt2, session, tmp_path):
    path, note = tab.download(ctx, session)
    assert path.endswith("lora-tiny-gpt2-r4.safetensors") and note.startswith("Saved ")
    other = registry()
    copy, note, curve = tab.upload(ctx, other, gpt2, path, "Planted pattern", "", None)
    assert copy is not session and len(other) == 1
    assert other.budget.held == max(upload_bytes(copy.base), copy.nbytes)  # reserved before the file was read
    assert note.startswith("Loaded an adapter with r = 4, alpha = 8 on attn\\.c\\_attn. Held-out loss")
    assert copy.heldout_after == pytest.approx(session.heldout_after, abs=1e-4)  # the same adapter, the same data
    junk = tmp_path / "notes.safetensors"
    junk.write_bytes(b"lecture notes, not tensors")
    _, refused, _ = tab.upload(ctx, other, gpt2, str(junk), "Planted pattern", "", None)
    assert refused.startswith("⚠️ That file is not a safetensors file")
    assert other._live["local"] is copy and not copy.closed  # the refused upload left the loaded one
    assert tab.upload(ctx, other, gpt2, None, "Planted pattern", "", None)[1] == ""


def test_full_fine_tuning_is_compared_within_the_budget(ctx, trained, session):
    fine_tunes = trained[0]
    rows = tab.full_compare(ctx, fine_tunes, session, PROBES, None)
    assert [row[0] for row in rows] == ["LoRA r=4 (lr 0.01)", "full fine-tuning (lr 0.001)"]
    assert rows[1][1].startswith("6,436,352 (100.00%)") and rows[1][4] == 8  # every weight, as many steps
    assert fine_tunes.budget.held == session.nbytes  # the full run's reservation was released
    tight = SessionRegistry(SessionBudget(session.nbytes + full_finetune_bytes(session.base) - 1))
    tight.budget.reserve("local", session.nbytes)
    (refused,) = tab.full_compare(ctx, tight, session, PROBES, None)
    assert refused[0].startswith("⚠️ The server already holds") and tight.budget.held == session.nbytes


def test_the_memory_policy_in_numbers(ctx, session):
    lm = ctx.pool.get("tiny-gpt2")
    assert upload_bytes(lm) == 2 * lm.nbytes and full_finetune_bytes(lm) == 4 * lm.nbytes
    budget = SessionBudget(100)
    with pytest.raises(InputError), budget.reserved("a", 60):
        assert budget.held == 60
        raise InputError("stopped")
    assert budget.held == 0  # released even when the work failed
    with pytest.raises(InputError, match="private model copies"), budget.reserved("b", 101):
        pass
    assert adapter_filename(session) == "lora-tiny-gpt2-r4.safetensors"
    bounded = SessionRegistry.from_settings(dataclasses.replace(settings(), lora_total_mb=3, lora_per_client=1))
    assert bounded.budget.max_bytes == 3 * 2**20 and bounded.per_client == 1


def test_a_closed_state_or_tab_frees_the_fine_tune(ctx, gpt2):
    fine_tunes = registry()
    *_, (first, *_) = list(tab.train(ctx, fine_tunes, gpt2, *KNOBS[:7], 1, *KNOBS[8:], None))
    assert len(fine_tunes) == 1
    tab.release_state(ctx, fine_tunes, first)
    assert first.closed and len(fine_tunes) == 0 and fine_tunes.budget.held == 0
    tab.release_state(ctx, fine_tunes, None)  # nothing held: nothing to do


def test_compare_with_full_finetuning_releases_a_refused_run(ctx, session, monkeypatch):
    """A model too big for full fine-tuning is refused inside the reservation, which is then released."""
    from explorer.analysis.lora import compare

    fine_tunes = registry()
    monkeypatch.setattr(compare, "FULL_FINETUNE_MAX_PARAMS", 1000)
    with pytest.raises(InputError, match="Full fine-tuning of 6M parameters"):
        compare_with_full_finetuning(fine_tunes, "alice", session, ["The"])
    assert fine_tunes.budget.held == 0


def test_the_app_takes_the_number_of_trainings_from_its_context():
    from explorer.ui.app import build_app

    ctx = AppContext(settings=dataclasses.replace(settings(), lora_trainings=5))
    demo = build_app(ctx)
    train = next(f for f in demo.fns.values() if f.api_name == "lora_train")
    assert train.concurrency_limit == 5
    texts = [b.value for b in demo.blocks.values() if type(b).__name__ == "Markdown" and isinstance(b.value, str)]
    assert any("At most 5 trainings run at once on this server" in t for t in texts)
