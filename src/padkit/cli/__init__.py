"""The ``padkit`` command line."""
