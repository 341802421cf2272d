import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("EXPLORER_DEVICE", "cpu")

import pytest  # noqa: E402

from tests import tiny_models  # noqa: E402


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
