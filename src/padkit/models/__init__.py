"""Model loading: aliases, GGUF conversion, local directories, Hub ids and PEFT adapters."""

from padkit.models.loading import (
    ALIASES,
    DEFAULT_BASE,
    adapter_base,
    cache_dir,
    convert_gguf,
    load_model,
    load_tokenizer,
    resolve_model_dir,
)

__all__ = [
    "ALIASES",
    "DEFAULT_BASE",
    "adapter_base",
    "cache_dir",
    "convert_gguf",
    "load_model",
    "load_tokenizer",
    "resolve_model_dir",
]
