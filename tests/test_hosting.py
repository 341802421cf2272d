"""Hosting: what the served app promises a classroom (no telemetry, bounded uploads, no files left behind)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from explorer.analysis.lora.files import MAX_FILE_BYTES
from tests.serving import close_app


@pytest.fixture(scope="module")
def served(ctx):
    """The app served the way ``app.py`` serves it (through ``launch``), on loopback."""
    from explorer.ui.app import build_app, launch

    demo = build_app(ctx)
    launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield demo.local_url.rstrip("/")
    finally:
        close_app(demo)


def test_served_config_sends_no_telemetry_and_bounds_uploads(served):
    config = httpx.get(f"{served}/config", timeout=30).json()
    assert config["analytics_enabled"] is False
    assert config["max_file_size"] == MAX_FILE_BYTES  # the largest adapter the LoRA tab reads


def test_an_upload_over_the_limit_is_refused_with_a_sentence(served):
    big = b"\0" * (MAX_FILE_BYTES + 2**20)
    response = httpx.post(f"{served}/gradio_api/upload", files={"files": ("adapter.safetensors", big)}, timeout=120)
    assert response.status_code == 413
    assert "maximum allowed size" in response.text
    small = httpx.post(f"{served}/gradio_api/upload", files={"files": ("a.safetensors", b"abc")}, timeout=30)
    assert small.status_code == 200  # an ordinary file still goes through


@pytest.mark.parametrize(
    "env, expected",
    [({}, False), ({"EXPLORER_ANALYTICS": "1"}, True), ({"GRADIO_ANALYTICS_ENABLED": "True"}, True)],
)
def test_analytics_only_when_a_setting_turns_them_on(monkeypatch, env, expected):
    from explorer.ui.app import analytics_enabled

    monkeypatch.delenv("EXPLORER_ANALYTICS", raising=False)
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    from explorer.core.settings import Settings, configure, settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    old = settings()
    configure(Settings.from_env())  # settings are read once at start-up: read them again for this environment
    try:
        assert analytics_enabled() is expected
    finally:
        configure(old)


def test_scratch_folders_are_removed_when_the_process_exits():
    code = (
        "from explorer.ui.export import scratch_folder\n"
        "folder = scratch_folder()\n"
        "(folder / 'export.csv').write_text('a,b')\n"
        "print(folder.parent)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    root = Path(out.stdout.strip().splitlines()[-1])
    assert root.name.startswith("explorer-files-")
    assert not root.exists()
