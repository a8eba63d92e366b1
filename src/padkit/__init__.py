"""padkit: Personalized Alignment at Decoding-time for frozen LLMs."""

from padkit.decoding import PAD, Generation, PADLogitsProcessor
from padkit.errors import GenerationError, ModelLoadError, PadkitError, PreferenceError
from padkit.preferences import CATALOG, Dimension, Preference, render_input

__version__ = "0.1.0"

__all__ = [
    "CATALOG",
    "PAD",
    "Dimension",
    "Generation",
    "GenerationError",
    "ModelLoadError",
    "PADLogitsProcessor",
    "PadkitError",
    "Preference",
    "PreferenceError",
    "render_input",
]
