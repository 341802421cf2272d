"""Models that run on NDIF: marked in the catalogue and the model list, refused with one sentence without the
server's key, and the key never shown. (NDIF is unreachable here: the remote call itself is not tested.)"""

import logging

import pytest

from explorer.core.catalogue import catalogue, remote_entry
from explorer.core.errors import ExplorerError, InputError
from explorer.core.loading import load
from explorer.core.settings import Settings, overridden
from explorer.ui.context import AppContext, Selection, user_message

KEY = "ndif-test-key-8f3a1c"
TEXT = "The tiger jumped out of a tree."


def test_large_catalogue_models_are_marked_and_listed_as_running_on_ndif():
    remote = [k for k, e in catalogue().items() if e.remote == "ndif"]
    assert remote and all(not catalogue()[k].bundled for k in remote)
    assert remote_entry(catalogue()[remote[0]].source).key == remote[0] and remote_entry("tiny-gpt2") is None
    keyless = AppContext(settings=Settings(ndif_api_key="")).model_choices()
    assert (f"{remote[0]} (needs an NDIF key)", remote[0]) in keyless and ("tiny-gpt2", "tiny-gpt2") in keyless
    keyed = AppContext(settings=Settings(ndif_api_key=KEY)).model_choices()
    assert (f"{remote[0]} (runs on NDIF)", remote[0]) in keyed and not any(KEY in label for label, _ in keyed)


def test_without_the_key_an_ndif_model_gets_one_sentence_saying_what_to_set():
    with overridden(ndif_api_key=""):
        with pytest.raises(InputError) as err:
            load("llama-3.1-8b")
        message = str(err.value)
        assert "EXPLORER_NDIF_API_KEY" in message and message.count(". ") == 0 and message.endswith(".")
        ctx = AppContext()
        with pytest.raises(InputError, match="EXPLORER_NDIF_API_KEY"):
            ctx.trace(Selection("llama-3.1-70b", TEXT))
        assert "llama-3.1-70b" not in ctx.pool.loaded()


def test_the_key_never_appears_in_settings_messages_or_logs(caplog, capsys):
    server = Settings.from_env({"EXPLORER_NDIF_API_KEY": f"  {KEY} "})
    assert server.ndif_api_key == KEY and KEY not in repr(server) and KEY not in str(server)
    caplog.set_level(logging.DEBUG)
    with overridden(ndif_api_key=KEY):
        with pytest.raises(ExplorerError) as err:  # offline here: the hub config cannot be fetched (or no extra)
            AppContext().trace(Selection("llama-3.1-8b", TEXT))
        shown = user_message(err.value)
    assert KEY not in shown and "llama-3.1-8b" in shown
    out = capsys.readouterr()
    everything = "\n".join([shown, out.out, out.err, caplog.text, *(r.getMessage() for r in caplog.records)])
    assert KEY not in everything


def test_nnsight_keeps_the_key_in_memory_only(tmp_path):
    nnsight = pytest.importorskip("nnsight", reason="the optional 'ndif' extra (nnsight) is not installed")
    from explorer.core.nnsight_backend import use_key

    before = nnsight.CONFIG.API.APIKEY
    try:
        saved = []
        original = type(nnsight.CONFIG).save
        type(nnsight.CONFIG).save = lambda self, *a, **k: saved.append(True)  # would write the config file
        use_key(KEY)
        assert nnsight.CONFIG.API.APIKEY == KEY and not saved
    finally:
        type(nnsight.CONFIG).save = original
        nnsight.CONFIG.API.APIKEY = before
