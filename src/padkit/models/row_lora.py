"""LoRA adapters at run time: switched on for one block of a batch's rows, or on and off for a whole forward."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper
from transformers import PreTrainedModel


class LoRARows:
    """Apply a PEFT model's active LoRA adapter to ``rows`` (a slice of the batch) only; the other rows run the
    base weights, so a LoRA PersRM and its base share one forward.

    PEFT's mixed-adapter batches (``adapter_names``) do this for any adapter, but each call registers hooks on
    every module and each LoRA layer index-copies every row group at every step (PAD with the shipped PersRM:
    23.0 tok/s that way, 25.1 with a forward hook per layer, at batch 1). Here the adapted rows are one slice,
    so while the context is active each LoRA layer's forward is replaced by one that runs its base layer and adds
    the LoRA delta to that slice of the output in place (``linear`` by A's own weight, then ``addmm_`` by the
    pre-scaled B transposed once): a decode step dispatches three small ops per LoRA layer and skips PEFT's
    per-call checks and hooks. A is applied as ``linear`` (its ``(r, in)`` layout) rather than ``mm`` by its
    transpose: for one row (PAD at batch 1) that is about 2 us less per layer on a 2-core Xeon.
    Models this fast path cannot serve exactly (LoRA variants such as DoRA, non-``Linear`` LoRA layers,
    ``lora_bias``, ``modules_to_save``, merged adapters) fall back to PEFT: the context does nothing and
    :meth:`forward_kwargs` returns the ``adapter_names`` list.

    Example:

    ```python
    >>> rows = LoRARows(peft_model, slice(1, 3), batch_size=3)   # row 0 base, rows 1-2 adapted
    >>> with rows:
    ...     out = peft_model(**inputs, **rows.forward_kwargs())
    ```
    """

    def __init__(self, model: PreTrainedModel, rows: slice, batch_size: int) -> None:
        self.rows = rows
        self.batch_size = batch_size
        self.adapter: str = model.active_adapter
        self.layers = self._fast_layers(model, self.adapter)
        self._replaced: list[Any] = []
        start, stop, step = rows.indices(batch_size)
        if step != 1:
            raise ValueError(f"LoRARows needs a contiguous block of rows, got {rows}")
        self._span = (start, stop)
        # A as it is and the pre-scaled B transposed once: per layer and step one linear and one in-place addmm
        with torch.no_grad():
            self._weights = {
                layer: (
                    layer.lora_A[self.adapter].weight.contiguous(),
                    (layer.lora_B[self.adapter].weight * layer.scaling[self.adapter]).t().contiguous(),
                )
                for layer in self.layers or ()
            }

    @property
    def fast(self) -> bool:
        """Whether the row-slice forward serves this model (else PEFT's ``adapter_names`` does)."""
        return self.layers is not None

    @staticmethod
    def _fast_layers(model: PreTrainedModel, adapter: str) -> list[Any] | None:
        layers = []
        for module in model.modules():
            if isinstance(module, AuxiliaryTrainingWrapper):
                return None
            if isinstance(module, BaseTunerLayer):
                plain = (
                    isinstance(module, LoraLinear)
                    and hasattr(module, "_disable_adapters")
                    and not module.merged
                    and adapter not in module.lora_variant
                    and (adapter not in module.lora_B or module.lora_B[adapter].bias is None)
                )
                if not plain:
                    return None
                if adapter in module.lora_A:
                    layers.append(module)
        return layers

    def adapter_names(self) -> list[str]:
        """The same split as PEFT ``adapter_names``: the active adapter on ``rows``, ``"__base__"`` elsewhere."""
        names = ["__base__"] * self.batch_size
        names[self.rows] = [self.adapter] * len(range(*self.rows.indices(self.batch_size)))
        return names

    def forward_kwargs(self) -> dict[str, list[str]]:
        """Extra forward (or ``generate``) arguments: none on the fast path, ``adapter_names`` otherwise."""
        return {} if self.fast else {"adapter_names": self.adapter_names()}

    def _row_forward(self, layer: Any) -> Any:
        base = layer.base_layer
        a_w, b_t = self._weights[layer]
        dropout = layer.lora_dropout[self.adapter]
        no_dropout = isinstance(dropout, torch.nn.Identity)
        start, stop = self._span

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            out = base(x, *args, **kwargs)
            if no_dropout and x.is_contiguous() and out.is_contiguous() and x.dtype == out.dtype == a_w.dtype:
                per_row = x.numel() // (x.shape[0] * x.shape[-1])  # positions per batch row
                rows_x = x.view(-1, x.shape[-1])[start * per_row : stop * per_row]
                rows_out = out.view(-1, out.shape[-1])[start * per_row : stop * per_row]
                rows_out.addmm_(F.linear(rows_x, a_w), b_t)
                return out
            rows_x = dropout(x[start:stop]).to(a_w.dtype)
            out[start:stop] += (F.linear(rows_x, a_w) @ b_t).to(out.dtype)
            return out

        return forward

    def __enter__(self) -> LoRARows:
        for layer in self.layers or ():
            layer.forward = self._row_forward(layer)
            self._replaced.append(layer)
        return self

    def __exit__(self, *exc: object) -> None:
        for layer in self._replaced:
            del layer.forward
        self._replaced = []


class AdapterSwitch:
    """Turn every PEFT adapter layer of ``model`` on or off while the context is active, then restore each
    layer's own state; nestable, and a no-op for a model without adapters.

    How one set of weights serves as both the base and a LoRA PersRM: padkit loads the base once, puts the LoRA
    on it, and runs each forward under the switch its role needs (the base's with adapters off, the PersRM's
    on). PEFT's ``disable_adapter()`` re-enables the adapters on exit, whatever they were before, so it cannot
    nest inside a decode that runs the base and the PersRM in turn.

    Example:

    ```python
    >>> with AdapterSwitch(peft_model, enabled=False):
    ...     base_logits = peft_model(**inputs).logits   # the base's own weights
    ```
    """

    def __init__(self, model: torch.nn.Module, enabled: bool) -> None:
        self.enabled = enabled
        self.layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        self._saved: list[bool] = []

    def __enter__(self) -> AdapterSwitch:
        self._saved = [layer._disable_adapters for layer in self.layers]
        for layer in self.layers:
            layer._disable_adapters = not self.enabled
        return self

    def __exit__(self, *exc: object) -> None:
        for layer, was in zip(self.layers, self._saved, strict=True):
            layer._disable_adapters = was
        self._saved = []


class BaseWeightsOnly:
    """While active, take every LoRA layer out of a PEFT model's module tree (each replaced by the base layer it
    wraps) and hand back the bare ``transformers`` model: a decode that needs only the base then runs the base's
    own modules, without PEFT's per-layer adapter dispatch (about 4% of a batch-8 step of the default base on a
    2-core CPU). Exiting puts the LoRA layers back. A model without adapters is returned as it is.

    Only for a decode in which nothing needs the adapters (no PersRM forward on the same weights inside it).

    Example:

    ```python
    >>> with BaseWeightsOnly(peft_model) as base:
    ...     out = base.generate(**inputs, max_new_tokens=32)   # the base alone
    ```
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []

    def __enter__(self) -> torch.nn.Module:
        get_base = getattr(self.model, "get_base_model", None)
        if get_base is None:
            return self.model
        for parent in list(self.model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, BaseTunerLayer):
                    self._swapped.append((parent, name, child))
                    setattr(parent, name, child.get_base_layer())
        return get_base()

    def __exit__(self, *exc: object) -> None:
        for parent, name, layer in reversed(self._swapped):
            setattr(parent, name, layer)
        self._swapped = []


def set_adapters(model: torch.nn.Module, enabled: bool) -> None:
    """Turn every PEFT adapter layer of ``model`` on or off until changed again (see :class:`AdapterSwitch`)."""
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module._disable_adapters = not enabled
