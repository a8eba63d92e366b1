"""Preferences: the catalog of dimensions, parsing, and rendering into model input."""

from padkit.preferences.catalog import CATALOG, CatalogDimension, lookup
from padkit.preferences.preference import Dimension, Preference, PreferenceLike
from padkit.preferences.render import GUIDELINES, Prompt, render_clipped, render_input

__all__ = [
    "CATALOG",
    "GUIDELINES",
    "CatalogDimension",
    "Dimension",
    "Preference",
    "PreferenceLike",
    "Prompt",
    "lookup",
    "render_clipped",
    "render_input",
]
