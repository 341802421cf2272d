"""The components every tab shares (model picker, text, state) and how tabs hook into an analysis."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr


@dataclass
class Shared:
    """Handles a tab needs from the shell: the session's ``Selection`` state and the analysis events."""

    state: gr.State
    model: gr.Dropdown
    text: gr.Textbox
    status: gr.Markdown
    _listeners: list = field(default_factory=list)
    _presets: list = field(default_factory=list)

    def on_analyzed(self, fn, inputs, outputs, api_name: str | bool = False) -> None:
        """Run ``fn`` after every successful analysis (model, text or target changed)."""
        self._listeners.append((fn, inputs, outputs, api_name))

    def preset_button(self, label: str, text: str) -> gr.Button:
        """A button that puts ``text`` in the text box and analyzes it."""
        button = gr.Button(label, size="sm", variant="secondary")
        self._presets.append((button, text))
        return button
