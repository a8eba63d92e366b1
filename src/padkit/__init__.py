"""padkit: Personalized Alignment at Decoding-time for frozen LLMs."""

from padkit.decoding import PAD, PAPER_PAD, ConfigError, Generation, PADConfig, PADLogitsProcessor
from padkit.errors import GenerationError, ModelLoadError, PadkitError, PreferenceError
from padkit.preferences import CATALOG, Dimension, Preference, render_input

__version__ = "0.1.0"

__all__ = [
    "CATALOG",
    "PAD",
    "PAPER_PAD",
    "ConfigError",
    "Dimension",
    "Generation",
    "GenerationError",
    "ModelLoadError",
    "PADConfig",
    "PADLogitsProcessor",
    "PadkitError",
    "Preference",
    "PreferenceError",
    "render_input",
]
