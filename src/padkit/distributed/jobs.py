"""A generation job as batches, run in this process or by :class:`~padkit.distributed.RayPool` workers.

:func:`run_tasks` is the one resumable batch runner: the CLI's ``generate --input`` and the evaluation harness
both hand it :class:`Task` s. It skips the tasks already in the JSONL output (refusing an output written with
other settings, or one that is not padkit's), cuts the rest into :class:`Batch` es of one model and one
:class:`PADConfig`, and a runner executes each with :func:`run_batch` and hands the result to a callback, which
alone writes the output. So a batch retried after a worker died is written once, and the output is the same
whichever runner ran it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from padkit.decoding.config import BEFORE_ADDED, PADConfig
from padkit.decoding.pad import PAD, Generation
from padkit.errors import PadkitError
from padkit.preferences import Preference, PreferenceLike
from padkit.preferences.render import Prompt
from padkit.prompts import append_jsonl, read_resumable


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads: arguments of :meth:`PAD.from_pretrained`."""

    base: str
    rm: str | None = None
    dtype: str = "auto"
    device: str = "auto"

    def load(self) -> PAD:
        return PAD.from_pretrained(base=self.base, rm=self.rm, dtype=self.dtype, device=self.device)


@dataclass
class Batch:
    """Prompts decoded together: one preference per prompt, one decoding :class:`PADConfig` for all.

    ``model`` names which of the runner's models decodes it; ``tag`` is the caller's own data (row ids, ...),
    handed back untouched with the result.
    """

    prompts: list[Prompt]
    preferences: list[PreferenceLike | None]
    config: PADConfig = field(default_factory=PADConfig)
    model: str = "main"
    tag: Any = None


OnResult = Callable[[Batch, list[Generation], float], None]


def load_pads(models: dict[str, ModelSpec]) -> dict[str, PAD]:
    """Load each named model; an ``rm="self"`` spec reuses the base model another spec already loaded."""
    pads: dict[str, PAD] = {}
    for name, spec in sorted(models.items(), key=lambda item: item[1].rm == "self"):
        twin = next((p for n, p in pads.items() if models[n].base == spec.base and models[n].dtype == spec.dtype), None)
        if spec.rm == "self" and twin is not None:
            pads[name] = PAD(twin.base_model, twin.tokenizer, base_name=spec.base)
        else:
            pads[name] = spec.load()
    return pads


def run_batch(pads: dict[str, PAD], batch: Batch) -> tuple[list[Generation], float]:
    """Decode one batch; returns the generations and the seconds it took."""
    start = time.monotonic()
    gens = pads[batch.model].generate(batch.prompts, preferences=batch.preferences, config=batch.config)
    return gens, time.monotonic() - start


def run_local(pads: dict[str, PAD], batches: Iterable[Batch], on_result: OnResult) -> None:
    """Run batches one after another in this process."""
    for batch in batches:
        gens, seconds = run_batch(pads, batch)
        on_result(batch, gens, seconds)


Runner = Callable[[Iterable[Batch], OnResult], None]
"""Decodes batches and hands each result to a callback: ``functools.partial(run_local, pads)`` or
:meth:`RayPool.map <padkit.distributed.RayPool.map>`."""


@dataclass
class Task:
    """One answer to make and keep: a prompt under a preference and a :class:`PADConfig`, stored as record
    ``key``; ``fields`` go into the record as they are (they may override the generation's own fields)."""

    key: str
    prompt: Prompt
    preference: PreferenceLike | None
    config: PADConfig = field(default_factory=PADConfig)
    model: str = "main"
    fields: dict[str, Any] = field(default_factory=dict)

    def settings(self, context: dict[str, Any]) -> dict[str, Any]:
        """Everything that decides this answer, as stored with its record and compared on resume."""
        pref = None if self.preference is None else str(Preference.parse(self.preference))
        return {**context, "model": self.model, "preference": pref, **self.config.decisive().to_dict()}

    def recorded_settings(self, record: dict) -> dict[str, Any] | None:
        """The settings ``record`` was made with, as :meth:`settings` writes them today (None: none recorded).
        A decoding setting the record lacks was added to :class:`PADConfig` after it was written: it decoded as
        that setting's default does, or as :data:`BEFORE_ADDED` says for a setting whose default changed what its
        method does."""
        had = record.get("settings")
        if not isinstance(had, dict):
            return None
        before = {k: v for k, v in BEFORE_ADDED.items() if self.config.reads(k)}
        return {**{k: before.get(k, v) for k, v in PADConfig().to_dict().items() if k not in had}, **had}


def _check_settings(output: Path, done: dict[str, dict], tasks: list[Task], context: dict[str, Any]) -> None:
    """Refuse to resume over records made with other settings (:meth:`Task.recorded_settings`)."""
    for task in tasks:
        record = done.get(task.key)
        if record is None:
            continue
        want, had = task.settings(context), task.recorded_settings(record)
        if had != want:
            changed = (
                ", ".join(f"{k}: {had.get(k)!r} -> {v!r}" for k, v in want.items() if had.get(k) != v)
                if isinstance(had, dict)
                else "none recorded"
            )
            raise PadkitError(
                f"{output} already holds {task.key!r} made with other settings ({changed}); resuming would mix "
                "them. Use another output file, or delete this one to start over."
            )


def run_tasks(
    tasks: Sequence[Task],
    run: Runner,
    output: str | Path | None = None,
    batch_size: int = 8,
    context: dict[str, Any] | None = None,
    on_records: Callable[[list[dict]], None] | None = None,
    progress: bool = False,
    desc: str = "generating",
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Decode the tasks not yet in ``output`` (JSONL, appended as batches finish) and return every task's
    record, in task order.

    ``context`` (e.g. the base and PersRM names) is stored with each record's settings; a rerun whose settings
    differ for a key already written is refused, as is an output that holds anything but padkit's records.
    ``on_records`` sees each finished batch's new records (the CLI prints them).
    """
    if batch_size < 1:
        raise PadkitError(f"batch_size must be at least 1, got {batch_size}")
    context = context or {}
    output = Path(output) if output is not None else None
    done = {str(r.get("id")): r for r in read_resumable(output)} if output is not None else {}
    _check_settings(output, done, list(tasks), context)
    todo = [t for t in tasks if t.key not in done]
    if log is not None and len(todo) < len(tasks):
        log(f"resuming: {len(tasks) - len(todo)} of {len(tasks)} already in {output}")
    groups: dict[tuple[str, PADConfig], list[Task]] = {}
    for task in todo:
        groups.setdefault((task.model, task.config), []).append(task)
    batches = [
        Batch(
            [t.prompt for t in group[i : i + batch_size]],
            [t.preference for t in group[i : i + batch_size]],
            config,
            model,
            tag=group[i : i + batch_size],
        )
        for (model, config), group in groups.items()
        for i in range(0, len(group), batch_size)
    ]
    made: dict[str, dict] = {}
    bar = tqdm(total=len(todo), desc=desc, unit="answer", disable=not progress)

    def write(batch: Batch, gens: list[Generation], seconds: float) -> None:
        batch_tokens = sum(len(g.token_ids) for g in gens)
        records = [
            {
                "id": task.key,
                **({"prompt": task.prompt} if isinstance(task.prompt, str) else {"messages": task.prompt}),
                "text": gen.text,
                "method": gen.method,
                "preference": gen.preference,
                "finish_reason": gen.finish_reason,
                "n_tokens": len(gen.token_ids),
                "batch_seconds": seconds,
                "batch_tokens": batch_tokens,
                **task.fields,
                "settings": task.settings(context),
            }
            for task, gen in zip(batch.tag, gens, strict=True)
        ]
        if output is not None:
            append_jsonl(output, records)
        made.update((r["id"], r) for r in records)
        if on_records is not None:
            on_records(records)
        bar.update(len(records))

    try:
        run(batches, write)
    finally:
        bar.close()
    return [done.get(t.key) or made[t.key] for t in tasks]
