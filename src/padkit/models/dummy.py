"""Random-weight models of real shapes, for speed measurements with nothing to download (as vLLM's
``--load-format dummy``): a base built from a config, and a random LoRA PersRM on it.

Shipped shapes (config only, no weights) live in ``models/shapes/``: ``smollm2-135m``, ``llama-3.2-1b``,
``qwen2.5-7b`` and ``llama-3.1-8b``. Any ``config.json`` of an architecture transformers knows works too.

Example:

```python
>>> model = dummy_model("llama-3.1-8b", dtype="bfloat16", device="cuda")   # random weights, 8B shape
>>> persrm = random_lora(model, rank=16)                                    # a PersRM on the same weights
```
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from padkit.errors import ModelLoadError
from padkit.models.loading import resolve_device, resolve_dtype

SHAPES_DIR = Path(__file__).parent / "shapes"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The modules the shipped PersRM adapts, so a random PersRM costs what a trained one does."""


def shapes() -> list[str]:
    """The shipped shape names."""
    return sorted(p.stem for p in SHAPES_DIR.glob("*.json"))


def shape_config(spec: str) -> PretrainedConfig:
    """A model config from a shipped shape name, a ``config.json`` file, or a directory holding one."""
    path = Path(spec).expanduser()
    if spec in shapes():
        path = SHAPES_DIR / f"{spec}.json"
    elif path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelLoadError(
            f"no model config {spec!r}: give a shipped shape ({', '.join(shapes())}), a config.json file or a "
            "directory holding one"
        )
    try:
        values = json.loads(path.read_text())
        model_type = values.pop("model_type")
        return AutoConfig.for_model(model_type, **values)
    except (ValueError, KeyError) as err:
        raise ModelLoadError(f"{path} is not a model config transformers knows: {err!r}") from err


def dummy_model(
    spec: str | PretrainedConfig,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = "auto",
    seed: int = 0,
) -> PreTrainedModel:
    """A causal LM of ``spec``'s shape with random weights, built directly on ``device`` in ``dtype``."""
    config = spec if isinstance(spec, PretrainedConfig) else shape_config(spec)
    where = resolve_device(device)
    torch.manual_seed(seed)
    with where:
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype, where))
    return model.eval()


def random_lora(model: PreTrainedModel, rank: int = 16, seed: int = 0) -> PreTrainedModel:
    """A LoRA of ``rank`` with random (non-zero) A and B on ``model``'s attention and MLP projections: a PersRM
    that differs from the base, as a trained one does, on the base's own weights (one copy)."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ModelLoadError(f"LoRA rank must be at least 1, got {rank}")
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in present]
    if not targets:
        raise ModelLoadError(f"the model has none of the projections a PersRM adapts ({', '.join(LORA_TARGETS)})")
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False)
    return get_peft_model(model, config).eval()
