"""Prompt files in, generation files out: JSON, JSONL or plain text, with resumable JSONL output."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from padkit.errors import PadkitError
from padkit.jsonio import iter_jsonl, load_dataset_split, load_json

PROMPT_KEYS = ("prompt", "instruction", "question", "text")


@dataclass
class PromptRow:
    """One prompt to answer; ``preference`` overrides the run's preference for this row. ``has_input``: a
    self-instruct task whose separate input was appended to its instruction (not an open question)."""

    id: str
    prompt: str
    preference: Any = None
    has_input: bool = False


def _row_from_record(record: Any, index: int, where: str) -> PromptRow:
    if isinstance(record, str):
        return PromptRow(str(index), record)
    if not isinstance(record, dict):
        raise PadkitError(f"{where}: expected an object with a prompt, got {type(record).__name__}")
    if isinstance(record.get("turns"), list) and record["turns"]:
        prompt = record["turns"][0]
    else:
        prompt = next((record[k] for k in PROMPT_KEYS if k in record), None)
    if not isinstance(prompt, str) or not prompt.strip():
        raise PadkitError(f"{where}: no non-empty prompt field (one of {', '.join(PROMPT_KEYS)}, or turns)")
    extra = _instance_input(record)
    if extra:
        prompt = f"{prompt}\n\n{extra}"
    rid = record.get("id", record.get("question_id", index))
    return PromptRow(str(rid), prompt, record.get("preference"), bool(extra))


def _instance_input(record: Any) -> str:
    """A self-instruct record's first instance input, stripped ('' if none): what a row appends to its prompt."""
    instances = record.get("instances") if isinstance(record, dict) else None
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        extra = instances[0].get("input")
        if isinstance(extra, str):
            return extra.strip()
    return ""


def read_prompts(path: str | Path, with_input: bool = True) -> list[PromptRow]:
    """Read prompts from ``.json`` (a list), ``.jsonl`` (one object per line) or any other file (one per line).

    Self-instruct records append their first instance's input to the instruction; ``with_input=False`` drops
    such records instead, keeping open questions only.
    """
    path = Path(path)
    if not path.is_file():
        raise PadkitError(f"prompt file not found: {path}")
    if path.suffix == ".json":
        data = load_json(path)
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise PadkitError(f"{path}: expected a JSON list of prompts")
        return [
            _row_from_record(r, i, f"{path}: item {i}")
            for i, r in enumerate(data)
            if with_input or not _instance_input(r)
        ]
    if path.suffix == ".jsonl":
        records = list(iter_jsonl(path))
        return [
            _row_from_record(r, i, where)
            for i, (r, where) in enumerate(records)
            if with_input or not _instance_input(r)
        ]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        where = f"byte {err.object[err.start]:#04x} at offset {err.start}"
        raise PadkitError(f"{path} is not UTF-8 text ({where}): give a prompt file of text") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    return [_row_from_record(line, i, f"{path}:{n}") for i, (n, line) in enumerate(lines)]


def _padkit_record(path: Path, n: int, line: str) -> dict:
    """Line ``n`` of an output being resumed, which must be one JSON object (a record padkit wrote)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        raise PadkitError(
            f"{path}:{n} is not a JSON record written by padkit; resuming would overwrite the file's content. "
            "Choose another output file."
        )
    return record


def read_resumable(path: str | Path, repair: bool = True) -> list[dict]:
    """The records of a JSONL output that a run is about to resume and append to.

    The one line an interrupted write can leave, a torn *last* line (no closing newline, not valid JSON), is
    dropped, and the file rewritten without it (atomically; ``repair=False`` reads another run's output and
    leaves it as it is). Anything else that is not one JSON object per line means the file is not a padkit
    output, and resuming into it would lose what it holds: that is an error.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PadkitError(f"{path} is not a padkit JSONL output (not UTF-8 text); choose another output") from None
    lines = text.split("\n")
    torn = lines.pop() if lines else ""  # the text after the last newline: "" for a whole file
    records = [_padkit_record(path, n, line) for n, line in enumerate(lines, 1)]
    if torn:
        try:
            json.loads(torn)
        except json.JSONDecodeError:  # the write an interrupted run left: dropped
            if repair:
                atomic_write_text(path, text[: len(text) - len(torn)])
        else:  # a whole record without its newline
            records.append(_padkit_record(path, len(lines) + 1, torn))
            if repair:
                atomic_write_text(path, text + "\n")
    return records


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write through a temp file and rename, so a crash never leaves a half-written file.

    The temp file is created as an ordinary file is (mode 0666 less the umask), not 0600 as ``mkstemp`` makes
    it: the renamed file is the user's output and keeps the permissions any other file of theirs gets."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_jsonl(path: str | Path, records: list[dict]) -> None:
    """Append whole lines and flush them to disk."""
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_prompt_dataset(name_or_path: str, column: str = "prompt", split: str = "train") -> list[PromptRow]:
    """Prompts from a Hugging Face ``datasets`` dataset (a saved path or a name), one per row of ``column``."""
    ds = load_dataset_split(name_or_path, split)
    if column not in ds.column_names:
        raise PadkitError(f"dataset {name_or_path!r} has no column {column!r}; it has {', '.join(ds.column_names)}")
    return [_row_from_record({**row, "prompt": row[column]}, i, f"{name_or_path} row {i}") for i, row in enumerate(ds)]
