"""Dependencies point down: core, analysis and plots never import gradio; core never imports plotly."""

import subprocess
import sys


def imported_after(modules: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_lower_layers_do_not_import_gradio():
    loaded = imported_after(
        ["explorer.core.run", "explorer.core.pool", "explorer.analysis.tokens", "explorer.plots.attention"]
    )
    assert "gradio" not in loaded


def test_core_does_not_import_plotting():
    loaded = imported_after(["explorer.core.run", "explorer.core.pool", "explorer.core.loading"])
    assert "plotly" not in loaded and "gradio" not in loaded
