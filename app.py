"""LLM Explorer: the Hugging Face Space entry point (``python app.py``)."""

import explorer  # noqa: F401  (sets OpenMP's passive waiting before torch loads)
from explorer.ui.app import build_app, launch

demo = build_app()

if __name__ == "__main__":
    launch(demo)
