"""LLM Explorer: the Hugging Face Space entry point (``python app.py``)."""

import explorer  # noqa: F401  (sets OpenMP's passive waiting before torch loads)
from explorer.core.settings import SettingsError, settings

try:
    settings()  # every EXPLORER_* variable, read once here: a bad value stops start-up with one sentence
except SettingsError as err:
    raise SystemExit(f"LLM Explorer cannot start: {err}") from None

from explorer.ui.app import build_app, launch  # noqa: E402

demo = build_app()

if __name__ == "__main__":
    launch(demo)
