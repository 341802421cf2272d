"""Pure computations over traces and models (no gradio)."""
