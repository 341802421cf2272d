"""Settings: every EXPLORER_* variable parsed once, bad values refused with a sentence, defaults as documented."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.core.settings import BUNDLED_MODELS, VARIABLES, Settings, SettingsError, overridden, settings

ROOT = Path(__file__).resolve().parents[1]


def readme_defaults() -> dict[str, str]:
    """variable -> its default cell, from the README's settings table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Settings (environment variables)")[1].split("\n## ")[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in re.findall(r"`((?:EXPLORER|HF_HUB)_[A-Z_]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def test_values_are_parsed_by_type():
    got = Settings.from_env(
        {
            "EXPLORER_DEVICE": "cuda:1",
            "EXPLORER_HOSTED": "true",
            "EXPLORER_POOL_MB": "512.5",
            "EXPLORER_WARMUP": "0",
            "EXPLORER_LORA_TRAININGS": " 3 ",
            "EXPLORER_CACHE_DIR": "~/elsewhere",
            "HF_HUB_OFFLINE": "1",
        }
    )
    assert got.device == "cuda:1" and got.hosted and not got.warmup and got.hub_offline
    assert got.pool_mb == 512.5 and got.pool_bytes == int(512.5 * 2**20)
    assert got.lora_trainings == 3 and isinstance(got.lora_trainings, int)
    assert got.cache_dir == Path.home() / "elsewhere"


def test_the_cache_folder_falls_back_to_xdg_then_home(tmp_path):
    assert Settings.from_env({"XDG_CACHE_HOME": str(tmp_path)}).cache_dir == tmp_path / "llm-explorer"
    assert Settings.from_env({}).cache_dir == Path.home() / ".cache" / "llm-explorer"
    assert Settings.from_env({"EXPLORER_CACHE_DIR": str(tmp_path / "x"), "XDG_CACHE_HOME": "/y"}).cache_dir == (
        tmp_path / "x"
    )


@pytest.mark.parametrize(
    "name, raw, says",
    [
        ("EXPLORER_POOL_MB", "lots", "a number of megabytes"),
        ("EXPLORER_POOL_MB", "-5", "at least 0"),
        ("EXPLORER_CACHE_MB", "nan", "a number of megabytes"),
        ("EXPLORER_LORA_TRAININGS", "1.5", "a whole number"),
        ("EXPLORER_LORA_TRAININGS", "0", "at least 1"),
        ("EXPLORER_LORA_TTL_S", "inf", "seconds"),
        ("EXPLORER_HOSTED", "maybe", "1 (on) or 0 (off)"),
        ("EXPLORER_DEVICE", "gpu", "cpu, cuda or cuda:1"),
        ("EXPLORER_DEVICE", "cuda:x", "torch device"),
    ],
)
def test_a_bad_value_is_one_sentence_naming_the_variable(name, raw, says):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: raw})
    message = str(caught.value)
    assert message.startswith(name) and says in message and repr(raw) in message
    assert message.endswith(".") and "\n" not in message


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SettingsError, match="EXPLORER_MODELS_DIR must name a folder"):
        Settings.from_env({"EXPLORER_MODELS_DIR": str(tmp_path / "f")})


def test_defaults_match_the_readme_table():
    documented, defaults = readme_defaults(), Settings.from_env({})
    assert set(documented) == set(VARIABLES)  # every variable read is documented, and no other
    for name, cell in documented.items():
        attr, parse = VARIABLES[name]
        value = getattr(defaults, attr)
        literal = re.fullmatch(r"`([^`]+)`", cell)
        if cell == "off":
            assert value is False, name
        elif name == "EXPLORER_DEVICE":
            assert cell.startswith("`cuda` if available") and value == ""  # "" picks at load time
        elif name == "EXPLORER_MODELS_DIR":
            assert cell == "`models/`" and value == BUNDLED_MODELS and (BUNDLED_MODELS / "catalogue.json").is_file()
        elif name == "EXPLORER_NDIF_API_KEY":
            assert cell == "none" and value == ""  # a secret has no default
        elif name == "EXPLORER_CACHE_DIR":
            assert cell.startswith("`$XDG_CACHE_HOME/llm-explorer`") and value.name == "llm-explorer"
        else:
            assert literal, f"{name}: a default the test does not know how to read: {cell}"
            assert value == parse(name, literal.group(1)), name


def test_read_once_and_carried_on_the_app_context(monkeypatch):
    from explorer.ui.context import AppContext

    first = settings()
    monkeypatch.setenv("EXPLORER_POOL_MB", "7")  # a change after start-up is not seen
    assert settings() is first
    with overridden(hosted=True, pool_mb=64) as changed:
        ctx = AppContext()
        assert ctx.settings is changed and ctx.hosted
    assert settings() is first


def test_the_app_refuses_to_start_with_a_bad_value_in_one_sentence():
    env = {"PATH": "", "HOME": str(Path.home()), "EXPLORER_POOL_MB": "lots"}
    done = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "LLM Explorer cannot start: EXPLORER_POOL_MB must be a number of megabytes, at least 0, not 'lots'."
    )


def test_each_bound_is_defined_once_in_limits():
    import ast

    from explorer.core import limits

    bounds = {name for name in vars(limits) if name.startswith("MAX_")}
    assert {"MAX_CHARS", "MAX_NEW_TOKENS", "MAX_TOKENS"} <= bounds
    elsewhere = []
    for path in ROOT.joinpath("explorer").rglob("*.py"):
        if path.name == "limits.py":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            elsewhere += [f"{path.name}: {t.id}" for t in targets if isinstance(t, ast.Name) and t.id in bounds]
    assert elsewhere == []
