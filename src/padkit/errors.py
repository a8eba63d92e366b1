"""Errors padkit raises for bad input; each message names the problem and, where there is one, the fix."""


class PadkitError(Exception):
    """Base class for every error padkit raises on purpose."""


class ModelLoadError(PadkitError):
    """A model name, path or file could not be resolved or loaded."""


class PreferenceError(PadkitError, ValueError):
    """A preference could not be parsed or has an invalid weight."""


class GenerationError(PadkitError, ValueError):
    """Generation arguments or prompts are invalid (empty prompt, over-long input, bad setting)."""
