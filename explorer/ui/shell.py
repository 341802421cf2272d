"""The components every tab shares (model picker, text, state) and how tabs hook into an analysis."""

from __future__ import annotations

from collections.abc import Callable
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
    _requirements: list = field(default_factory=list)
    _openers: list = field(default_factory=list)  # events waiting for the app's analysis
    _results: list = field(default_factory=list)  # what buttons made from an analysis: cleared by the next one
    _analyze: Callable | None = None
    building: str | None = None  # the id of the tab being built (set by the app around each tab's build)

    def on_analyzed(self, fn, inputs, outputs, api_name: str | bool = False) -> None:
        """Run ``fn`` after an analysis (model, text or target changed) while its tab is on screen, or when
        its tab is next opened: nothing a screen does not show is computed before it is shown."""
        self._listeners.append((self.building, fn, inputs, outputs, api_name))

    def preset_button(self, label: str, text: str, presenting: bool = True) -> gr.Button:
        """A button that puts ``text`` in the text box and analyzes it; ``presenting=False`` hides it in presenter
        mode (a preset above a figure, where the figure needs the room)."""
        button = gr.Button(label, size="sm", variant="secondary", elem_classes=None if presenting else "explorer-aside")
        self.analyze_after(button.click(lambda: text, None, self.text, api_name=False))
        return button

    def opens_model(self, event) -> None:
        """``event`` puts a model's name in the model picker: the app then analyzes the text with it and redraws
        the views, as if the user had picked it (e.g. the Training tab opening the model it trained)."""
        self.analyze_after(event)

    def analyze_after(self, event) -> None:
        """Analyze once ``event`` has put a model or text in place. Events made while the page is built wait for
        the app's analysis to exist; events of parts rendered later (a lesson's presets) are chained at once."""
        if self._analyze is not None:
            self._analyze(event)
        else:
            self._openers.append(event)

    def analysis_ready(self, then_analyze) -> None:
        """The app's analysis exists: ``then_analyze(event)`` chains it after an event."""
        self._analyze = then_analyze
        for event in self._openers:
            then_analyze(event)
        self._openers.clear()

    def results_of_analysis(self, *components) -> None:
        """Outputs (and states) a button fills from the analysed model and text: emptied when a new analysis
        replaces it, as the tab's views are redrawn (a table of one model's beams stayed under another model's
        status line, and a step-by-step history went on with another model's tokens)."""
        self._results.extend(components)

    def requires(self, *capabilities: str) -> gr.Markdown:
        """A line at this place of the tab, shown only while the current model cannot do what the tab needs:
        the family adapter's sentence (``spec.why_not``), e.g. “'tiny-bert' is a BERT-style encoder: ...”."""
        notice = gr.Markdown(visible=False, elem_classes="explorer-requires")
        self._requirements.append((notice, tuple(capabilities)))
        return notice
