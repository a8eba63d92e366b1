"""Preferences: the catalog of dimensions, parsing, and rendering into model input."""

from padkit.preferences.catalog import CATALOG, CatalogDimension, lookup
from padkit.preferences.preference import Dimension, Preference, PreferenceLike
from padkit.preferences.render import GUIDELINES, render_input

__all__ = [
    "CATALOG",
    "GUIDELINES",
    "CatalogDimension",
    "Dimension",
    "Preference",
    "PreferenceLike",
    "lookup",
    "render_input",
]
