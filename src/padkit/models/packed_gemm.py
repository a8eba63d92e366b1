"""MKL's packed GEMM for the decode steps of a batch: the row count is fixed for a whole generation."""

from __future__ import annotations

import torch
from torch import nn

PACK_MIN_ROWS = 4
"""Below this many rows packing does not pay: at 2 rows a packed decode step was slower than a plain one."""
PACK_MIN_STEPS = 16
"""Packing the 135M model takes about 0.2 s, won back after about ten decode steps at 4-8 rows; shorter
generations skip it."""


def mkl_packing_available() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


class PackedGemm:
    """Multiply every float32 ``nn.Linear`` of a CPU model by weights packed by MKL for inputs of ``rows`` rows.

    A decode step's linear layers see exactly one row per sequence. On a CPU, MKL's ordinary GEMM handles such
    short, wide inputs poorly from about 4 rows up; weights packed once for that row count (``cblas_sgemm_pack``,
    what ``torch.compile`` freezing uses for float32 on CPU) give identical results faster: one decode step of the
    135M default over 8 rows took 64-74 ms plain and 48-50 ms packed on a 2-core CPU (4 rows: 48-57 vs 38-44 ms;
    2 rows: packing was slower, hence :data:`PACK_MIN_ROWS`). Inputs of any other shape (the prompt's prefill)
    and autograd fall back to ``F.linear``. Packing copies the weights once per context (about 0.2 s and the
    model's float32 size in memory for the 135M model); the copies are freed on exit, so a changed weight is
    never served stale. Off a CPU, without MKL, below :data:`PACK_MIN_ROWS` rows or for layers that already
    carry a forward override (e.g. accelerate's offloading hooks), the context changes nothing.

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

    @property
    def active(self) -> bool:
        """Whether this model gets packed weights: enough rows, and enough ``steps`` (when given) to pay back."""
        long_enough = self.steps is None or self.steps >= PACK_MIN_STEPS
        return self.rows >= PACK_MIN_ROWS and long_enough and mkl_packing_available()

    def _layers(self) -> list[nn.Linear]:
        return [
            m
            for m in self.model.modules()
            if isinstance(m, nn.Linear)
            and m.weight.dtype == torch.float32
            and m.weight.device.type == "cpu"
            and "forward" not in vars(m)
        ]

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
            for layer in self._layers():
                packed = torch.ops.mkl._mkl_reorder_linear_weight(layer.weight.detach(), self.rows)
                layer.forward = self._packed_forward(layer, packed)
                self._packed.append(layer)
        return self

    def __exit__(self, *exc: object) -> None:
        for layer in self._packed:
            del layer.forward
        self._packed = []
