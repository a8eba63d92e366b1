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
    lineno = 0
    try:
        with open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line), f"{path}:{lineno}"
                except json.JSONDecodeError as err:
                    raise PadkitError(f"{path}:{lineno}: invalid JSON: {err.msg}") from err
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise PadkitError(f"{path}:{lineno + 1}: not UTF-8 JSON lines ({err.__class__.__name__})") from None


def load_json(path: Path) -> Any:
    """Parse a whole JSON file."""
    try:
        with open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise PadkitError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from err
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise PadkitError(f"{path} is not UTF-8 JSON ({err.__class__.__name__})") from None


def load_dataset_split(name_or_path: str, split: str = "train"):
    """One split of a Hugging Face ``datasets`` dataset, from a ``save_to_disk`` folder or by name."""
    import datasets

    path = Path(name_or_path)
    try:
        ds = datasets.load_from_disk(str(path)) if path.is_dir() else datasets.load_dataset(name_or_path, split=split)
    except (OSError, ValueError, ConnectionError) as err:
        raise PadkitError(f"cannot load dataset {name_or_path!r}: {err}") from err
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise PadkitError(f"dataset {name_or_path!r} has no split {split!r}; it has {', '.join(ds)}")
        ds = ds[split]
    return ds
