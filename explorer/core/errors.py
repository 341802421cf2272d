"""Errors whose message is one sentence to show a user as it is."""


class ExplorerError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing sentence."""


class ModelLoadError(ExplorerError):
    """A model or tokenizer could not be loaded."""


class InputError(ExplorerError):
    """A text or setting cannot be used as given."""


class CapabilityError(InputError):
    """The current model cannot do what a view asks of it (see ``ModelSpec.require``)."""


class Stopped(ExplorerError):
    """Long work ended early: its Stop button was pressed, or its browser session left."""
