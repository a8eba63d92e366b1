"""How a setting is declared: a dataclass field that carries its help, so every entry point derives from it.

The settings dataclasses (:class:`padkit.PADConfig`, the training and synthesis configs) declare each field with
:func:`setting`; :mod:`padkit.cli.options` turns the fields into CLI options, so the name, type, default and help
are written once.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def setting(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with ``default`` and its ``help`` (the CLI option's text).

    ``metadata`` carries how the CLI spells the option: ``flags`` (names replacing ``--field-name``), ``cli`` (a
    ``(cli_type, parse)`` pair for a type the command line cannot spell) with ``cli_default``, and any
    module-specific key (e.g. ``dpo``, the :class:`trl.DPOConfig` field a training setting sets). A list or dict
    default is copied per instance, as ``default_factory`` would.

    Example::

        @dataclass
        class Sampling:
            top_p: float = setting(1.0, "Nucleus sampling mass in (0, 1].")
    """
    meta = {"help": help, **metadata}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def comma_names(spec: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``: the CLI form of a tuple-of-names setting (``cli=(str, comma_names)``)."""
    return tuple(m.strip() for m in spec.split(",") if m.strip())
