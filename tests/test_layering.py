"""Dependencies point down (core → analysis → plots → ui), checked on the source of every module.

Every ``import`` statement under ``explorer/`` and ``bench/`` is read with ``ast`` (imports inside
functions included), so a rule holds for the whole tree, not only for the modules a test happens to
import. Two rules the thin-tabs refactor will make true are checked against an explicit list of
today's exceptions: a new exception fails, and so does a listed one that has gone (remove it from the
list), so the list only shrinks.
"""

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "captum")  # model code: never reached from plots

# Known exceptions that the thin-tabs refactor (issue 18, phase 2) must remove: then delete them here.
TORCH_IN_UI: set[str] = set()  # the decoding tab's tensor work moved to analysis/decoding/
TAB_IMPORTS_TAB: set[tuple[str, str]] = set()  # message_figure now in plots/text.py, token_label in core/tokens.py


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the tree by dotted name (bench scripts as ``bench.<name>``)."""
    files = [*ROOT.joinpath("explorer").rglob("*.py"), *ROOT.joinpath("bench").glob("*.py")]
    return {module_name(f): f for f in files}


def _resolve(name: str) -> str:
    """``explorer.analysis.decoding.greedy`` -> the longest prefix that is a module of the tree."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules():
            return ".".join(parts[:n])
    return name


@cache
def imports(module: str) -> frozenset[str]:
    """What ``module`` imports: tree modules by their own name, anything else by its top-level package."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("explorer", "bench"):
                found.add(_resolve(name))
            else:
                found.add(name.split(".")[0])
    found.discard(module)
    return frozenset(found)


@cache
def reaches(module: str) -> frozenset[str]:
    """Everything ``module`` imports, directly or through other modules of the tree."""
    seen, todo = set(), [module]
    while todo:
        for name in imports(todo.pop()):
            if name not in seen:
                seen.add(name)
                if name in modules():
                    todo.append(name)
    return frozenset(seen)


def under(prefix: str) -> list[str]:
    return sorted(m for m in modules() if m == prefix or m.startswith(prefix + "."))


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "explorer" and len(parts) > 1 else parts[0] if parts[0] == "bench" else None


def broken(modules_: list[str], bad) -> dict[str, list[str]]:
    """module -> the imports for which ``bad(import)`` holds, for modules with any."""
    found = {m: sorted(i for i in imports(m) if bad(i)) for m in modules_}
    return {m: v for m, v in found.items() if v}


def test_the_walk_sees_the_whole_tree():
    assert len(under("explorer")) > 60 and len(under("bench")) > 5
    assert "gradio" in imports("explorer.ui.app") and "torch" in imports("explorer.core.run")
    # a from-import of names, and an import inside a function
    assert "explorer.analysis.decoding.generate" in imports("explorer.analysis.decoding.beam_search")
    assert "explorer.core.tokenizer_training" in imports("explorer.analysis.tokens.bpe")


def test_analysis_is_grouped_into_rooms_by_topic():
    """Every analysis module lives in a topic subpackage (no flat files), and each room says what it holds."""
    flat = [m for m in under("explorer.analysis") if m.count(".") != 3 and modules()[m].name != "__init__.py"]
    assert flat == [], "put the module in the room of its topic (explorer/analysis/<topic>/)"
    rooms = [m for m in under("explorer.analysis") if m.count(".") == 2]
    assert len(rooms) >= 7
    for room in rooms:
        tree = ast.parse(modules()[room].read_text(encoding="utf-8"))
        assert len(ast.get_docstring(tree) or "") > 80, f"{room}/__init__.py: say in a paragraph what lives there"


def test_gradio_only_under_ui():
    assert broken([m for m in modules() if layer(m) != "ui"], lambda i: i == "gradio") == {}  # bench may be a client


def test_core_imports_nothing_above_it():
    assert broken(under("explorer.core"), lambda i: layer(i) not in (None, "core") and i != "explorer") == {}


def test_analysis_never_imports_training_ui_or_plots():
    assert broken(under("explorer.analysis"), lambda i: layer(i) in ("training", "ui", "plots")) == {}


def test_plots_reach_no_model_code():
    for module in under("explorer.plots"):
        reached = reaches(module)
        assert not {layer(m) for m in reached} & {"analysis", "ui", "training"}, module
        assert not reached & set(HEAVY), (module, sorted(reached & set(HEAVY)))


def test_bench_never_imports_ui():
    for module in under("bench"):
        assert not [m for m in reaches(module) if layer(m) == "ui"], module


def test_torch_in_ui_only_where_listed():
    """Phase 2 moves tensor work out of the tabs: this list must end empty."""
    found = set(broken(under("explorer.ui"), lambda i: i == "torch"))
    assert found - TORCH_IN_UI == set(), "a new torch import in ui/: put the tensor work in analysis/"
    assert TORCH_IN_UI - found == set(), "an exception has gone: remove it from TORCH_IN_UI"


def test_tabs_import_other_tabs_only_where_listed():
    """Phase 2 moves shared view helpers out of the tabs: this list must end empty."""
    tabs = under("explorer.ui.tabs")
    found = {(m, i) for m in tabs for i in imports(m) if i in tabs and i != "explorer.ui.tabs"}
    assert found - TAB_IMPORTS_TAB == set(), "a tab imports another tab: move what they share below ui/tabs"
    assert TAB_IMPORTS_TAB - found == set(), "an exception has gone: remove it from TAB_IMPORTS_TAB"


def imported_after(modules_: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules_) + "print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(out.split())


def test_lower_layers_do_not_load_gradio_when_imported():
    loaded = imported_after([m for m in under("explorer") if layer(m) in ("core", "analysis", "plots")])
    assert "gradio" not in loaded


def test_plots_do_not_load_torch_when_imported():
    loaded = imported_after(under("explorer.plots"))
    assert "torch" not in loaded and "transformers" not in loaded


def test_tabs_are_thin():
    """A tab's ``build()`` declares its layout and wires module-level handlers: at most ~120 lines, no
    complexity waiver; its handlers live at module level, where tests call them without a server."""
    for path in sorted(ROOT.joinpath("explorer", "ui", "tabs").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert "noqa: C901" not in source, f"{path.name} waives the complexity check"
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name == "build":
                length = node.end_lineno - node.lineno + 1
                assert length <= 120, f"{path.name}: build() is {length} lines"
                nested = [n.name for n in ast.walk(node) if isinstance(n, ast.FunctionDef) and n is not node]
                assert len(nested) <= 2, f"{path.name}: build() defines handlers inside it: {nested}"


def test_every_tab_module_is_in_the_app():
    """A tab written but left out of ``TABS`` never reaches a user (the Retrieval tab once was)."""
    from explorer.ui.app import TABS

    written = {p.stem for p in ROOT.joinpath("explorer", "ui", "tabs").glob("*.py") if p.stem != "__init__"}
    assert {m.__name__.rsplit(".", 1)[-1] for m in TABS} == written


def test_the_app_starts_without_peft():
    """peft takes seconds to import; the app loads it at the first fine-tune, not for every page."""
    code = "import sys; from explorer.ui.app import build_app; print('peft' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
