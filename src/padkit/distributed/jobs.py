"""A generation job as batches, run in this process or by :class:`~padkit.distributed.RayPool` workers.

The CLI's ``generate --input`` and the evaluation harness both cut their work into :class:`Batch` es; a runner
executes each with :func:`run_batch` and hands the result to a callback, which alone writes the output. So a
batch retried after a worker died is written once, and the output is the same whichever runner ran it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from padkit.decoding.pad import PAD, Generation
from padkit.preferences import PreferenceLike
from padkit.preferences.render import Prompt


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads: arguments of :meth:`PAD.from_pretrained`."""

    base: str
    rm: str | None = None
    dtype: str = "float32"

    def load(self) -> PAD:
        return PAD.from_pretrained(base=self.base, rm=self.rm, dtype=self.dtype)


@dataclass
class Batch:
    """Prompts decoded together: one preference per prompt, shared ``PAD.generate`` keyword arguments.

    ``model`` names which of the runner's models decodes it; ``tag`` is the caller's own data (row ids, ...),
    handed back untouched with the result.
    """

    prompts: list[Prompt]
    preferences: list[PreferenceLike | None]
    kwargs: dict[str, Any] = field(default_factory=dict)
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
    gens = pads[batch.model].generate(batch.prompts, preferences=batch.preferences, **batch.kwargs)
    return gens, time.monotonic() - start


def run_local(pads: dict[str, PAD], batches: Iterable[Batch], on_result: OnResult) -> None:
    """Run batches one after another in this process."""
    for batch in batches:
        gens, seconds = run_batch(pads, batch)
        on_result(batch, gens, seconds)
