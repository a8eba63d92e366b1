"""Model loading: aliases, GGUF conversion, local directories, Hub ids and PEFT adapters."""

from padkit.models.loading import (
    ADAPTERS,
    ALIASES,
    DEFAULT_BASE,
    DEFAULT_RM,
    adapter_base,
    cache_dir,
    convert_gguf,
    default_rm,
    load_model,
    load_tokenizer,
    model_identity,
    resolve_model_dir,
)

__all__ = [
    "ADAPTERS",
    "ALIASES",
    "DEFAULT_BASE",
    "DEFAULT_RM",
    "adapter_base",
    "cache_dir",
    "convert_gguf",
    "default_rm",
    "load_model",
    "load_tokenizer",
    "model_identity",
    "resolve_model_dir",
]
