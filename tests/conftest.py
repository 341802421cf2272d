import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("EXPLORER_DEVICE", "cpu")
os.environ.setdefault("EXPLORER_WARMUP", "0")  # no background UMAP compilation in every app the tests build
if "EXPLORER_CACHE_DIR" not in os.environ:  # projections cached by tests never reach the user's cache
    import tempfile

    os.environ["EXPLORER_CACHE_DIR"] = tempfile.mkdtemp(prefix="explorer-test-cache-")

import pytest  # noqa: E402

from tests import tiny_models  # noqa: E402
from tests.serving import close_app  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """name -> folder of a tiny random-weight model saved with save_pretrained."""
    root = tmp_path_factory.mktemp("tiny")
    return {name: tiny_models.save(name, root / name) for name in tiny_models.TINY}


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """name -> LoadedModel, loaded through the project's own loader."""
    from explorer.core.loading import load

    return {name: load(str(folder)) for name, folder in tiny_dir.items()}


@pytest.fixture(scope="module")
def ctx(tiny_dir):
    """The app's shared services, on the tiny GPT-2 by default."""
    from explorer.ui.context import AppContext

    return AppContext(default_model=str(tiny_dir["gpt2"]))


@pytest.fixture(scope="module")
def app_url(ctx):
    """The whole app served on loopback (the app test tier); one per test module."""
    from explorer.ui.app import build_app

    demo = build_app(ctx)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield demo.local_url
    finally:
        close_app(demo)


@pytest.fixture(scope="module")
def client(app_url):
    """One browser session of the app, through gradio_client."""
    from gradio_client import Client

    return Client(app_url, verbose=False)


@pytest.fixture(autouse=True, scope="module")
def _stop_background_maps():
    """A whole-vocabulary map a module started in the background (the app's embeddings tab) is stopped when the
    module ends, so it never runs on beside the next module's tests (two UMAPs compiling at once can hang)."""
    yield
    import sys

    tab = sys.modules.get("explorer.ui.tabs.embeddings")
    if tab is not None:
        tab.staged_projections().stop(timeout=120)
