"""Reading JSON and JSONL (optionally gzipped) with errors that name the file and line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from padkit.errors import PadkitError


def open_text(path: Path) -> IO[str]:
    """Open a text file, transparently gunzipping ``.gz``."""
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_jsonl(path: Path) -> Iterator[tuple[Any, str]]:
    """Yield each non-blank line's value with its ``file:line`` location."""
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line), f"{path}:{lineno}"
            except json.JSONDecodeError as err:
                raise PadkitError(f"{path}:{lineno}: invalid JSON: {err.msg}") from err


def load_json(path: Path) -> Any:
    """Parse a whole JSON file."""
    try:
        with open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise PadkitError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from err
