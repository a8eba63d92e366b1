"""A user's preference: one or more dimensions, each a text with a weight."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from padkit.errors import PreferenceError
from padkit.preferences.catalog import lookup

_WEIGHTED = re.compile(r"^\s*(?P<text>[^=]+?)\s*=\s*(?P<weight>[^=]+?)\s*$")

MAX_WEIGHT = 100.0
"""Largest magnitude of a dimension's weight and of the alignment strength w. Far beyond any useful setting
(the base's log-probs no longer count above ~10), and far from float32 overflow, which at 1e38 turns every
candidate's score into inf."""


def _check_weight(text: str, weight: float) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise PreferenceError(f"weight of dimension {text!r} is not a number: {weight!r}") from None
    if not math.isfinite(value) or abs(value) > MAX_WEIGHT:
        raise PreferenceError(
            f"weight of dimension {text!r} must be a finite number in [-{MAX_WEIGHT:g}, {MAX_WEIGHT:g}], got {value:g}"
        )
    return value


@dataclass(frozen=True)
class Dimension:
    """One preference dimension: a catalog name (``"concise"``) or free text (``"formal"``), with a weight."""

    text: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise PreferenceError("a preference dimension needs a non-empty text")
        object.__setattr__(self, "text", self.text.strip())
        object.__setattr__(self, "weight", _check_weight(self.text, self.weight))

    @property
    def principle(self) -> str:
        """The sentence the PersRM is conditioned on.

        Catalog names map to their principle; a short free text (a label such as "formal" or "bullet points")
        becomes "Generate a response that follows this preference: <text>."; a longer free text (a whole
        sentence) is used as written.
        """
        entry = lookup(self.text)
        if entry is not None:
            return entry.principle
        if len(self.text.split()) <= 4 and not self.text.endswith((".", "!", "?")):
            return f"Generate a response that follows this preference: {self.text}."
        return self.text


@dataclass(frozen=True)
class Preference:
    """A weighted combination of dimensions; PAD sums ``weight_i * r_i`` over them."""

    dimensions: tuple[Dimension, ...]

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise PreferenceError("a preference needs at least one dimension")

    @classmethod
    def parse(cls, spec: PreferenceLike) -> Preference:
        """Build a preference from a string, a list, a mapping or an existing preference.

        >>> Preference.parse("concise=0.7,humorous=0.3").dimensions[1]
        Dimension(text='humorous', weight=0.3)
        """
        if isinstance(spec, Preference):
            return spec
        if isinstance(spec, Dimension):
            return cls((spec,))
        if isinstance(spec, str):
            return cls(_parse_string(spec))
        if isinstance(spec, Mapping):
            if "dimension" in spec:
                return cls((_parse_item(spec),))
            return cls(tuple(Dimension(str(k), _check_weight(str(k), v)) for k, v in spec.items()))
        if isinstance(spec, Iterable):
            return cls(tuple(_parse_item(item) for item in spec))
        raise PreferenceError(f"cannot read a preference from {type(spec).__name__}: {spec!r}")

    @property
    def trained(self) -> bool:
        """Whether every dimension is a catalog dimension the shipped PersRM was trained on; free text and the
        catalog's unseen dimensions are not (what ``padkit eval``'s scorecard measures generalization on)."""
        entries = [lookup(d.text) for d in self.dimensions]
        return all(e is not None and e.trained for e in entries)

    def prompt_principle(self) -> str:
        """One instruction for methods that put the preference into the prompt (``prompt``, ``policy``).

        Positive weights contribute their principle; a negative weight contributes the catalog opposite's
        principle where there is one. Magnitudes cannot be expressed in a prompt and are dropped.
        """
        parts: list[str] = []
        for dim in self.dimensions:
            if dim.weight > 0:
                parts.append(dim.principle)
            elif dim.weight < 0:
                entry = lookup(dim.text)
                if entry is not None and entry.opposite is not None:
                    parts.append(Dimension(entry.opposite).principle)
        if not parts:
            raise PreferenceError(f"preference {self} has no dimension with a usable weight for a prompt")
        return " ".join(dict.fromkeys(parts))

    def __str__(self) -> str:
        return ",".join(f"{d.text}={d.weight:g}" for d in self.dimensions)


PreferenceLike = Preference | Dimension | str | Mapping | Iterable


def _parse_string(spec: str) -> tuple[Dimension, ...]:
    if not spec.strip():
        raise PreferenceError("preference is empty; give a dimension such as 'concise' or 'concise=0.7,humorous=0.3'")
    if "=" in spec:
        dims = []
        for part in spec.split(","):
            match = _WEIGHTED.match(part)
            if match is None:
                raise PreferenceError(f"cannot parse {part.strip()!r} in preference {spec!r}; expected TEXT=WEIGHT")
            dims.append(Dimension(match["text"], _check_weight(match["text"], match["weight"])))
        return tuple(dims)
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) > 1 and all(lookup(p) is not None for p in parts):
        return tuple(Dimension(p) for p in parts)
    return (Dimension(spec),)


def _parse_item(item: object) -> Dimension:
    if isinstance(item, Dimension):
        return item
    if isinstance(item, str):
        dims = _parse_string(item)
        if len(dims) != 1:
            raise PreferenceError(f"list item {item!r} holds several dimensions; give one per item")
        return dims[0]
    if isinstance(item, Mapping):
        if "dimension" not in item:
            raise PreferenceError(f"preference item {dict(item)!r} needs a 'dimension' key")
        text = str(item["dimension"])
        return Dimension(text, _check_weight(text, item.get("weight", 1.0)))
    if isinstance(item, tuple | list) and len(item) == 2:
        return Dimension(str(item[0]), _check_weight(str(item[0]), item[1]))
    raise PreferenceError(f"cannot read a preference dimension from {item!r}")
