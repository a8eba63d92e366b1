"""Stop strings: where an answer's text ends, also while it is still streaming."""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def streamable(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The part of a growing text that is safe to show, and whether a stop string was reached.

    Cut before a stop string; otherwise hold back a tail that may be the start of one (``"\\nQues"``).
    """
    end = find_stop(text, stops)
    if end is not None:
        return text[:end], True
    held = max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
    return text[: len(text) - held], False
