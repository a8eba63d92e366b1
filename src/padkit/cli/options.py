"""CLI options derived from a settings dataclass, so a setting is declared once: name, type, default, help.

Each dataclass field becomes ``--field-name`` (``metadata["flags"]`` adds or replaces names) with the field's
``metadata["help"]``. A field whose type the command line cannot spell (tuples, mappings) declares
``metadata["cli"] = (cli_type, parse)``: the option takes ``cli_type`` and ``parse`` turns it into the value.
:func:`settings_command` wraps a command so that it receives the built dataclass instead of loose options.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer


def _cli_type(field: dataclasses.Field, hint: Any) -> Any:
    custom = field.metadata.get("cli")
    return custom[0] if custom else hint


def dataclass_parameters(cls: type, exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per field of ``cls``, annotated as a typer option with the field's help."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.metadata.get("cli"):
            default = f.metadata.get("cli_default", None)
        flag = f.name.replace("_", "-")
        flags = f.metadata.get("flags") or ((f"--{flag}/--no-{flag}",) if hints[f.name] is bool else (f"--{flag}",))
        option = typer.Option(*flags, help=f.metadata.get("help", ""), show_default=True)
        annotation = Annotated[_cli_type(f, hints[f.name]), option]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    return params


def build_settings(cls: type, values: dict[str, Any]) -> Any:
    """``cls`` from the options' values, each custom-typed one parsed (``None``: the field's default)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        custom = f.metadata.get("cli")
        if custom:
            if value is None:
                continue
            value = custom[1](value)
        kwargs[f.name] = value
    return cls(**kwargs)


def settings_command(cls: type, name: str = "settings", exclude: tuple[str, ...] = ()) -> Callable:
    """Decorate a command so that its options include ``cls``'s fields, derived, not copied.

    The command's own parameters come first; the dataclass's follow and arrive as one dict ``name``, for
    :func:`build_settings` (inside the command, where its errors are reported).
    """

    def decorate(command: Callable) -> Callable:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != name]
        derived = dataclass_parameters(cls, exclude)
        field_names = {p.name for p in derived}

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {k: kwargs.pop(k) for k in list(kwargs) if k in field_names}
            return command(**kwargs, **{name: values})

        wrapper.__signature__ = inspect.Signature(
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + derived
        )
        wrapper.__annotations__ = {}
        return wrapper

    return decorate
