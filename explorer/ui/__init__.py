"""Gradio only here: the app factory and one module per tab."""
