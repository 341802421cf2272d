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

    def on_analyzed(self, fn, inputs, outputs, api_name: str | None = None) -> None:
        """Run ``fn`` after every successful analysis (model, text or target changed)."""
        self._listeners.append((fn, inputs, outputs, api_name))
