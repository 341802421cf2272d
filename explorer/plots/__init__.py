"""Pure figures: numpy arrays and labels in, plotly Figures out. No torch models, no gradio."""
