"""MKL's packed GEMM for the decode steps of a batch: the row count is fixed for a whole generation.

Whether packing pays at a given row count differs between machines of the same kind (on one 2-core Xeon it lost
at 2 rows and won from 4; on a 2-core EPYC it won at 1-3 rows and lost from 4), so by default it is measured:
:class:`PackingTuner` times one pass over the model's linear layers with each kernel, once per machine, torch
version, model shape and row count, and caches the answer in ``$PADKIT_CACHE``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from padkit.errors import PadkitError
from padkit.prompts import atomic_write_text

PACK_MIN_ROWS = 4
"""The fixed rule (``PADKIT_GEMM_PACKING=fixed``): pack from this many rows, the choice measured on the machine
the fast path was first tuned on (at 2 rows a packed decode step was slower there)."""
PACK_MIN_STEPS = 16
"""Packing the 135M model takes about 0.2 s, won back after about ten decode steps at 4-8 rows; shorter
generations skip it."""
PACKING_POLICIES = ("auto", "fixed", "off")
TUNE_MARGIN = 0.03
"""Packing is chosen only when its measured pass is at least this fraction faster: a tie keeps the plain kernel."""
TUNE_ROUNDS = 5


def mkl_packing_available() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


def packing_policy() -> str:
    """``$PADKIT_GEMM_PACKING``: ``auto`` (measure per machine, the default), ``fixed`` (pack from
    :data:`PACK_MIN_ROWS` rows) or ``off``."""
    policy = os.environ.get("PADKIT_GEMM_PACKING", "auto").strip().lower()
    if policy not in PACKING_POLICIES:
        raise PadkitError(f"PADKIT_GEMM_PACKING={policy!r}: use one of {', '.join(PACKING_POLICIES)}")
    return policy


@functools.cache
def cpu_info() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none), read once."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor's block ends at its blank line
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    return cpu_info().get("model name") or platform.processor() or platform.machine()


def _packable(model: nn.Module) -> list[nn.Linear]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.Linear)
        and m.weight.dtype == torch.float32
        and m.weight.device.type == "cpu"
        and "forward" not in vars(m)
    ]


@dataclass(frozen=True)
class PackingTiming:
    """One pass over a model's linear layers at ``rows`` rows: the ordinary GEMM against MKL's packed one."""

    rows: int
    plain_ms: float
    packed_ms: float

    @property
    def pays(self) -> bool:
        return self.packed_ms < (1 - TUNE_MARGIN) * self.plain_ms


@torch.inference_mode()
def time_packing(layers: list[nn.Linear], rows: int, rounds: int = TUNE_ROUNDS) -> PackingTiming:
    """Fastest of ``rounds`` interleaved passes over ``layers`` (their own weights, so memory traffic is a
    decode step's) with each kernel, one ``rows``-row input per layer."""
    packed = [torch.ops.mkl._mkl_reorder_linear_weight(m.weight.detach(), rows) for m in layers]
    inputs = {m.in_features: torch.randn(rows, m.in_features) for m in layers}
    plain_s = packed_s = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for m in layers:
            nn.functional.linear(inputs[m.in_features], m.weight, m.bias)
        plain_s = min(plain_s, time.perf_counter() - start)
        start = time.perf_counter()
        for m, p in zip(layers, packed, strict=True):
            torch.ops.mkl._mkl_linear(inputs[m.in_features], p, m.weight, m.bias, rows)
        packed_s = min(packed_s, time.perf_counter() - start)
    return PackingTiming(rows, plain_s * 1e3, packed_s * 1e3)


class PackingTuner:
    """Whether packed weights beat the ordinary GEMM for a model at a row count on this machine: measured once
    (:func:`time_packing`, about a decode step's GEMMs times ten) and kept in a JSON file under the machine
    (CPU model, torch threads, torch version) and the model's linear shapes.

    Example:

    ```python
    >>> tuner = PackingTuner()          # $PADKIT_CACHE/gemm-packing.json
    >>> tuner.pays(model, rows=2)       # measured the first time, read from the file after
    True
    ```
    """

    def __init__(
        self, path: Path | None = None, measure: Callable[[list[nn.Linear], int], PackingTiming] = time_packing
    ) -> None:
        self._path = path
        self.measure = measure
        self._decided: dict[tuple[Path, str, str, int], bool] = {}
        """Answers already given in this process: a generate asks once per decode, the file is read once."""

    @property
    def path(self) -> Path:
        if self._path is not None:
            return self._path
        from padkit.models.loading import cache_dir

        return cache_dir() / "gemm-packing.json"

    @staticmethod
    def machine_key() -> str:
        return f"{cpu_model()} | {torch.get_num_threads()} threads | torch {torch.__version__}"

    @staticmethod
    def shapes_key(layers: list[nn.Linear]) -> str:
        shapes = Counter((m.out_features, m.in_features, m.bias is not None) for m in layers)
        return hashlib.sha1(repr(sorted(shapes.items())).encode()).hexdigest()[:12]

    def _read(self) -> dict:
        try:
            table = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # absent or damaged: measured again and rewritten
        return table if isinstance(table, dict) else {}

    def this_machine(self) -> dict[str, dict[int, PackingTiming]]:
        """Everything measured on this machine: model shapes (a digest) -> row count -> timing."""
        found = {}
        for shapes, by_rows in self._read().get(self.machine_key(), {}).items():
            try:
                found[shapes] = {int(r): PackingTiming(**t) for r, t in by_rows.items()}
            except (TypeError, ValueError, AttributeError):
                continue  # an entry written by another version: measured again
        return found

    def pays(self, model: nn.Module, rows: int) -> bool:
        layers = _packable(model)
        if not layers:
            return False
        shapes = self.shapes_key(layers)
        asked = (self.path, self.machine_key(), shapes, rows)
        if asked not in self._decided:
            known = self.this_machine().get(shapes, {})
            if rows not in known:
                known[rows] = self.measure(layers, rows)
                table = self._read()
                mine = table.setdefault(self.machine_key(), {})
                if not isinstance(mine, dict):
                    mine = table[self.machine_key()] = {}
                mine[shapes] = {str(r): asdict(t) for r, t in sorted(known.items())}
                atomic_write_text(self.path, json.dumps(table, indent=1))
            self._decided[asked] = known[rows].pays
        return self._decided[asked]


TUNER = PackingTuner()
"""The tuner every :class:`PackedGemm` asks under the ``auto`` policy."""


def should_pack(model: nn.Module, rows: int) -> bool:
    """The kernel choice for ``model``'s decode steps at ``rows`` rows under :func:`packing_policy`."""
    policy = packing_policy()
    if policy == "off" or not mkl_packing_available():
        return False
    if policy == "fixed":
        return rows >= PACK_MIN_ROWS
    return TUNER.pays(model, rows)


class PackedGemm:
    """Multiply every float32 ``nn.Linear`` of a CPU model by weights packed by MKL for inputs of ``rows`` rows.

    A decode step's linear layers see exactly one row per sequence. On a CPU, MKL's ordinary GEMM handles such
    short, wide inputs poorly; weights packed once for that row count (``cblas_sgemm_pack``, what
    ``torch.compile`` freezing uses for float32 on CPU) give identical results faster: one decode step of the
    135M default over 8 rows took 64-74 ms plain and 48-50 ms packed on a 2-core Xeon; a 2-core EPYC gained at
    1-3 rows instead. Which row counts pack is :func:`should_pack`'s choice (measured per machine by default).
    Inputs of any other shape (the prompt's prefill) and autograd fall back to ``F.linear``. Packing copies the
    weights once per context (about 0.2 s and the model's float32 size in memory for the 135M model); the copies
    are freed on exit, so a changed weight is never served stale. Off a CPU, without MKL, at a row count where
    packing does not pay, for fewer than :data:`PACK_MIN_STEPS` steps or for layers that already carry a forward
    override (e.g. accelerate's offloading hooks), the context changes nothing.

    Example:

    ```python
    >>> with torch.inference_mode(), PackedGemm(model, rows=16, steps=128):
    ...     out = model.generate(**inputs)   # 16 rows: each decode step's GEMMs use the packed weights
    ```
    """

    def __init__(self, model: nn.Module, rows: int, steps: int | None = None) -> None:
        self.model = model
        self.rows = rows
        self.steps = steps
        self._packed: list[nn.Linear] = []
        self._active: bool | None = None

    @property
    def active(self) -> bool:
        """Whether this model gets packed weights: enough ``steps`` (when given) to pay back, and a row count
        where packing pays (:func:`should_pack`, decided once per context)."""
        if self._active is None:
            long_enough = self.steps is None or self.steps >= PACK_MIN_STEPS
            self._active = long_enough and should_pack(self.model, self.rows)
        return self._active

    def _packed_forward(self, layer: nn.Linear, packed: torch.Tensor):
        rows, weight, bias = self.rows, layer.weight, layer.bias

        def forward(x: torch.Tensor) -> torch.Tensor:
            if x.dtype != torch.float32 or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
                return nn.functional.linear(x, weight, bias)
            return torch.ops.mkl._mkl_linear(x, packed, weight, bias, rows)  # other row counts: plain GEMM inside

        return forward

    def __enter__(self) -> PackedGemm:
        if not self.active:
            return self
        with torch.no_grad():
            for layer in _packable(self.model):
                packed = torch.ops.mkl._mkl_reorder_linear_weight(layer.weight.detach(), self.rows)
                layer.forward = self._packed_forward(layer, packed)
                self._packed.append(layer)
        return self

    def __exit__(self, *exc: object) -> None:
        for layer in self._packed:
            del layer.forward
        self._packed = []
