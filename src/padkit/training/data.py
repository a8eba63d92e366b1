"""Preference pairs ``{prompt, chosen, rejected, preference}`` from files, datasets and HH-RLHF dialogues."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from padkit.errors import PadkitError
from padkit.jsonio import iter_jsonl, load_dataset_split, load_json

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PreferencePair:
    """One preference judgement: ``chosen`` beats ``rejected`` as an answer to ``prompt`` under ``preference``.

    ``prompt`` is a user text or, for multi-turn data, the chat messages before the answer. ``dimension``
    names the catalog dimension a free-text ``preference`` (one of its wordings) expresses, or a group of pairs
    reported and capped on its own (synthesized ``early-end`` pairs, under many dimensions); ``holdout`` marks
    pairs made to test generalization (``"wording"``: a wording never trained on; ``"dimension"``: a dimension
    never trained on), which training skips. ``chosen_cut`` / ``rejected_cut`` mark a text stopped by a length
    limit rather than at its end (synthesized answers are sampled to 64 tokens): training then leaves out its
    end-of-sequence token, so the PersRM is not taught to end answers wherever the sampler happened to stop
    (synthesized pairs also open a complete side whose partner is cut, so the token never separates the two).
    """

    prompt: str | Messages
    chosen: str
    rejected: str
    preference: str
    dimension: str | None = None
    holdout: str | None = None
    chosen_cut: bool = False
    rejected_cut: bool = False

    @property
    def group(self) -> str:
        """What reports group by: the dimension a wording belongs to (else the preference text), with the
        held-out part (``"wording"`` or ``"dimension"``) it tests, if any."""
        name = self.dimension or self.preference
        return f"{name} ({self.holdout} held out)" if self.holdout else name

    @property
    def prompt_key(self) -> str:
        """The text the train / held-out split hashes, so one prompt never lands on both sides."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.prompt)


def _pair_from_record(record: object, where: str, preference: str | None) -> PreferencePair:
    if not isinstance(record, Mapping):
        raise PadkitError(f"{where}: expected an object, got {type(record).__name__}")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
    pref = record.get("preference", preference)
    if pref is None:
        missing.append("preference")
    if missing:
        raise PadkitError(f"{where}: missing field(s) {', '.join(missing)}")
    for key in ("chosen", "rejected"):
        if not isinstance(record[key], str) or not record[key].strip():
            raise PadkitError(f"{where}: field {key!r} must be a non-empty string")
    prompt = record["prompt"]
    if not (isinstance(prompt, str) and prompt.strip()) and not (
        isinstance(prompt, list) and prompt and all(isinstance(m, Mapping) and "content" in m for m in prompt)
    ):
        raise PadkitError(f"{where}: field 'prompt' must be a non-empty string or a list of chat messages")
    holdout = record.get("holdout")
    if holdout not in (None, "wording", "dimension"):
        raise PadkitError(f"{where}: field 'holdout' must be 'wording' or 'dimension', got {holdout!r}")
    for key in ("chosen_cut", "rejected_cut"):
        if not isinstance(record.get(key, False), bool):
            raise PadkitError(f"{where}: field {key!r} must be true or false, got {record[key]!r}")
    dimension = record.get("dimension")
    return PreferencePair(
        prompt,
        record["chosen"],
        record["rejected"],
        str(pref),
        None if dimension is None else str(dimension),
        holdout,
        record.get("chosen_cut", False),
        record.get("rejected_cut", False),
    )


def read_pairs(path: str | Path, preference: str | None = None) -> list[PreferencePair]:
    """Read pairs from ``.json`` (a list) or ``.jsonl`` (optionally ``.gz``); ``preference`` fills a missing field.

    Records marked ``"kept": false`` (pairs a judge rejected during synthesis) are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise PadkitError(f"preference data not found: {path}")
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        records = list(iter_jsonl(path))
    else:
        data = load_json(path)
        if not isinstance(data, list):
            raise PadkitError(f"{path}: expected a JSON list of pairs")
        records = [(r, f"{path}: item {i}") for i, r in enumerate(data)]
    return [_pair_from_record(r, where, preference) for r, where in records if not _dropped(r)]


def _dropped(record: object) -> bool:
    """Synthesized files keep the pairs their judge rejected, marked ``"kept": false``, for the record."""
    return isinstance(record, Mapping) and record.get("kept") is False


def parse_hh_dialogue(text: str) -> tuple[Messages, str]:
    """Split an HH-RLHF transcript into the earlier turns (chat messages) and the final assistant turn."""
    messages: Messages = []
    for chunk in text.split("\n\nHuman: ")[1:] if text.startswith("\n\nHuman: ") else [None]:
        if chunk is None:
            raise ValueError("a dialogue must start with '\\n\\nHuman: '")
        human, *assistant = chunk.split("\n\nAssistant: ")
        messages.append({"role": "user", "content": human.strip()})
        messages.extend({"role": "assistant", "content": a.strip()} for a in assistant)
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise ValueError("a dialogue must end with an assistant turn")
    return messages[:-1], messages[-1]["content"]


def read_hh_rlhf(path: str | Path, preference: str = "harmless") -> list[PreferencePair]:
    """Read Anthropic HH-RLHF ``{chosen, rejected}`` transcripts (``.jsonl`` or ``.jsonl.gz``)."""
    path = Path(path)
    if not path.is_file():
        raise PadkitError(f"HH-RLHF file not found: {path}")
    pairs = []
    for record, where in iter_jsonl(path):
        if not isinstance(record, Mapping) or not {"chosen", "rejected"} <= record.keys():
            raise PadkitError(f"{where}: expected an object with 'chosen' and 'rejected' dialogues")
        try:
            prompt, chosen = parse_hh_dialogue(record["chosen"])
            rejected_prompt, rejected = parse_hh_dialogue(record["rejected"])
        except ValueError as err:
            raise PadkitError(f"{where}: {err}") from err
        if rejected_prompt != prompt or not chosen or not rejected or chosen == rejected:
            continue
        pairs.append(PreferencePair(prompt, chosen, rejected, preference))
    return pairs


def read_hf_dataset(
    name_or_path: str,
    split: str = "train",
    columns: Mapping[str, str] | None = None,
    preference: str | None = None,
) -> list[PreferencePair]:
    """Read pairs from a Hugging Face ``datasets`` dataset; ``columns`` maps our field names to its columns."""
    columns = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "preference": "preference"} | dict(
        columns or {}
    )
    ds = load_dataset_split(name_or_path, split)
    pairs = []
    for i, row in enumerate(ds):
        record = {k: row[v] for k, v in columns.items() if v in row}
        pairs.append(_pair_from_record(record, f"{name_or_path}[{split}] row {i}", preference))
    return pairs


def split_pairs(
    pairs: list[PreferencePair], heldout_fraction: float = 0.1, salt: str = "padkit"
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Deterministic train / held-out split by a hash of the prompt: a prompt never lands on both sides."""
    if not 0 <= heldout_fraction <= 1:
        raise PadkitError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
    train, heldout = [], []
    for pair in pairs:
        (heldout if is_heldout(pair.prompt_key, heldout_fraction, salt) else train).append(pair)
    return train, heldout


def select_groups(pairs: Sequence[PreferencePair], groups: Sequence[str]) -> list[PreferencePair]:
    """The pairs whose report group (:attr:`PreferencePair.group`) is one of ``groups``, e.g. ``early-end`` or
    ``"bold (wording held out)"``; a group with no pair is an error that lists the groups the data has."""
    wanted = set(groups)
    kept = [p for p in pairs if p.group in wanted]
    missing = wanted - {p.group for p in kept}
    if missing:
        known = ", ".join(sorted({p.group for p in pairs}))
        raise PadkitError(f"no pairs in group(s) {', '.join(sorted(missing))}; the data's groups: {known}")
    return kept


def spaced_sample(pairs: list[PreferencePair], n: int | None) -> list[PreferencePair]:
    """``n`` pairs evenly spaced over all of ``pairs`` (all when ``n`` is None), so a sample keeps the file's mix
    of dimensions, the last ones included (HH-RLHF pairs come after the pair file's)."""
    if n is None or n >= len(pairs):
        return pairs
    if n < 1:
        raise PadkitError(f"a sample needs at least 1 pair, got {n}")
    return [pairs[i * len(pairs) // n] for i in range(n)]


def is_heldout(prompt_key: str, heldout_fraction: float, salt: str = "padkit") -> bool:
    """Whether the prompt hash split puts ``prompt_key`` on the held-out side."""
    digest = hashlib.sha256(f"{salt}:{prompt_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < heldout_fraction


def parse_columns(spec: str | None) -> dict[str, str]:
    """``"prompt=question,chosen=good"`` -> a column mapping for :func:`read_hf_dataset`."""
    mapping = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in {"prompt", "chosen", "rejected", "preference"} or not value.strip():
            raise PadkitError(
                f"bad column mapping {item!r}: use FIELD=COLUMN with FIELD in prompt, chosen, rejected, preference"
            )
        mapping[key.strip()] = value.strip()
    return mapping


def load_pair_sources(
    data: Sequence[str | Path] = (),
    hh_rlhf: Sequence[str | Path] = (),
    datasets: Sequence[str] = (),
    columns: Mapping[str, str] | None = None,
    hh_preference: str = "harmless",
) -> tuple[list[PreferencePair], list[str]]:
    """All pairs of pair files, HH-RLHF files and HF datasets, with a description of each source."""
    pairs: list[PreferencePair] = []
    sources: list[str] = []
    for path in data:
        got = read_pairs(path)
        pairs += got
        sources.append(f"pairs:{path} ({len(got)})")
    for path in hh_rlhf:
        got = read_hh_rlhf(path, hh_preference)
        pairs += got
        sources.append(f"hh-rlhf:{path} as {hh_preference!r} ({len(got)})")
    for name in datasets:
        got = read_hf_dataset(name, columns=columns)
        pairs += got
        sources.append(f"dataset:{name} ({len(got)})")
    if not pairs:
        raise PadkitError("no preference pairs: give --data, --hh-rlhf or --dataset")
    return pairs, sources
