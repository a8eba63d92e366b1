"""Train a PersRM: DPO with a LoRA on the base model, through TRL's ``DPOTrainer``.

The preference is rendered into the PersRM's input by :func:`padkit.preferences.render_clipped`, the same
rendering PAD decodes with, so the adapter is always queried in the form it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from padkit.errors import PadkitError
from padkit.evaluation.rm_accuracy import SHAPES, RMReport, evaluate_rm
from padkit.models.loading import (
    DEFAULT_BASE,
    PERSRM_METADATA,
    adapter_base,
    load_model,
    load_tokenizer,
    read_metadata,
    resolve_model_dir,
)
from padkit.preferences import Dimension, render_clipped
from padkit.settings import comma_names, setting
from padkit.training.data import PreferencePair, spaced_sample, split_pairs

LOSS_PLOT = "loss_curve.png"
REF_LOGPS_DIR = "ref_logps"


def parse_layers(spec: str) -> tuple[int, ...] | None:
    """``"20-29"`` or ``"0,5,7"`` -> layer indices."""
    if not spec:
        return None
    out: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise PadkitError(f"bad layer list {spec!r}: use e.g. '20-29' or '0,5,7'") from None
    return tuple(out)


def parse_caps(specs: Sequence[str]) -> dict[str, int]:
    """``["harmless=400"]`` -> ``{"harmless": 400}``."""
    caps = {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise PadkitError(f"bad --cap {spec!r}: use DIMENSION=N, e.g. harmless=400")
        caps[name.strip()] = int(value)
    return caps


@dataclass
class PersRMTrainConfig:
    """Settings of a PersRM training run; the defaults fit a ~1 hour run of the 135M default model on 2 CPU cores.

    The CLI's ``padkit train`` options are derived from these fields. Fields with a ``dpo`` name are the
    :class:`trl.DPOConfig` settings a user picks (:meth:`dpo_kwargs`); the rest of the ``DPOConfig`` is fixed by
    padkit (cosine schedule, sequential order from :func:`mirrored_order`, checkpoints, CPU when no GPU).
    """

    base: str = setting(DEFAULT_BASE, "Base model: alias, local directory, .gguf file or Hub id.")
    beta: float = setting(0.1, "DPO beta: higher stays closer to the base.", dpo="beta")
    sft_weight: float = setting(
        0.0,
        "Weight of a next-token loss on the chosen answers, added to the DPO loss (RPO). DPO alone lowers the "
        "log-probs of both sides, so the token reward punishes content the two share; this keeps the chosen "
        "text likely. 0: plain DPO.",
    )
    lora_r: int = setting(16, "LoRA rank.")
    lora_alpha: int = setting(32, "LoRA alpha (the update is scaled by alpha / r).")
    lora_dropout: float = setting(0.0, "Dropout on the LoRA input.")
    target_modules: tuple[str, ...] = setting(
        ("q_proj", "k_proj", "v_proj", "o_proj"),
        "Comma-separated module names that get LoRA.",
        cli=(str, comma_names),
        cli_default="q_proj,k_proj,v_proj,o_proj",
    )
    layers: tuple[int, ...] | None = setting(
        None, "Only these layers get LoRA, e.g. '20-29' (default: all).", cli=(str, parse_layers)
    )
    learning_rate: float = setting(
        5e-4, "Peak learning rate (cosine schedule).", dpo="learning_rate", flags=("--learning-rate", "--lr")
    )
    epochs: float = setting(1.0, "Passes over the training pairs.", dpo="num_train_epochs")
    max_steps: int = setting(-1, "Stop after N steps (-1: run all epochs).", dpo="max_steps")
    batch_size: int = setting(4, "Pairs per step.", dpo="per_device_train_batch_size")
    gradient_accumulation: int = setting(
        1, "Steps whose gradients add up before an update.", dpo="gradient_accumulation_steps", flags=("--grad-accum",)
    )
    max_length: int = setting(192, "Tokens of prompt + response.", dpo="max_length")
    max_prompt_length: int = setting(96, "Tokens of the rendered prompt (preference included); clipped from the left.")
    bf16: bool = setting(False, "bf16 autocast.", dpo="bf16")
    precompute_ref: bool = setting(True, "Reference log-probs once, up front.", dpo="precompute_ref_log_probs")
    heldout_fraction: float = setting(0.1, "Share of prompts held out (never trained) and scored at the end.")
    split_salt: str = setting("padkit", "Salt of the prompt hash that splits train from held-out.")
    max_train_pairs_per_dimension: int | None = setting(None, "Cap the training pairs of each dimension.")
    dimension_caps: dict[str, int] = setting(
        {},
        "DIMENSION=N: a cap for one dimension, over the per-dimension one (repeatable).",
        cli=(list[str] | None, parse_caps),
        flags=("--cap",),
    )
    balance_length: tuple[str, ...] = setting(
        (),
        "Comma-separated dimensions whose training pairs are kept half with the longer answer (in words) chosen, "
        "half not (the first ones of each kind), so the PersRM cannot rank them by length alone (e.g. 'harmless').",
        cli=(str, comma_names),
        cli_default="",
    )
    heldout_eval_pairs: int | None = setting(None, "Score N held-out pairs (evenly spaced) at the end; default all.")
    save_steps: int = setting(25, "Checkpoint every N steps (a rerun resumes from the last).", dpo="save_steps")
    seed: int = setting(0, "Seed of the LoRA init and the pair order.", dpo="seed")
    init_adapter: str | None = setting(
        None,
        "Start from this trained PersRM (an adapter directory or 'persrm-smollm2') instead of a fresh LoRA, to "
        "teach it new pairs; its LoRA shape replaces the LoRA settings, and the reference stays the base.",
    )
    reward_margin: float | None = setting(
        None,
        "Record this reward margin (nats) in padkit.json: the margin `padkit generate` decodes the PersRM with by "
        "default. Default: --init-adapter's recorded margin, else none (margin 0, the paper's PAD).",
    )
    reuse_ref_logps: tuple[str, ...] = setting(
        (),
        "Comma-separated output directories of earlier runs on the same base and LoRA shape whose reference "
        "log-probs are read back row by row; only rows none of them holds are computed (--init-adapter's "
        "directory is always searched).",
        cli=(str, comma_names),
        cli_default="",
    )

    def __post_init__(self) -> None:
        if self.max_prompt_length >= self.max_length:
            raise PadkitError("max_prompt_length must be smaller than max_length")
        if self.beta <= 0 or self.learning_rate <= 0 or self.lora_r < 1 or self.batch_size < 1:
            raise PadkitError("beta, learning_rate, lora_r and batch_size must be positive")
        if self.max_train_pairs_per_dimension is not None and self.max_train_pairs_per_dimension < 0:
            raise PadkitError(
                f"max_train_pairs_per_dimension must be 0 or more, got {self.max_train_pairs_per_dimension}"
            )
        negative = {name: cap for name, cap in self.dimension_caps.items() if cap < 0}
        if negative:
            raise PadkitError(f"dimension caps must be 0 or more, got {negative}")
        if self.sft_weight < 0:
            raise PadkitError(f"sft_weight must be 0 or more, got {self.sft_weight}")
        if not 0 <= self.heldout_fraction < 1:
            raise PadkitError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.reward_margin is not None:
            from padkit.decoding.config import PADConfig

            PADConfig(reward_margin=self.reward_margin).validate()

    def dpo_kwargs(self) -> dict[str, Any]:
        """The user-chosen :class:`trl.DPOConfig` arguments, by their DPO names."""
        kwargs = {f.metadata["dpo"]: getattr(self, f.name) for f in fields(self) if "dpo" in f.metadata}
        if self.sft_weight:
            kwargs.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, self.sft_weight])
        return kwargs


@dataclass
class TrainResult:
    """Where the adapter went, with the counts, time and held-out accuracy written to its ``padkit.json``."""

    output_dir: Path
    train_pairs: int
    heldout_pairs: int
    steps: int
    seconds: float
    heldout: RMReport | None
    metadata: dict = field(repr=False, default_factory=dict)


def training_selection(train: Sequence[PreferencePair], config: PersRMTrainConfig) -> list[PreferencePair]:
    """The training pairs a run uses, in file order: for each dimension in ``balance_length`` as many pairs whose
    chosen answer has more words than the rejected one as others (the ``by_shape`` rows of a report), then each
    dimension's cap (half of it per kind when balanced). A cap or a balanced dimension that no training pair has is
    an error: a misspelt name would otherwise train on the wrong mix without a word."""

    def longer(pair: PreferencePair) -> bool:
        return SHAPES["chosen longer"](pair.chosen.strip(), pair.rejected.strip())

    kinds = [longer(p) if p.group in config.balance_length else None for p in train]
    per_kind = Counter((p.group, kind) for p, kind in zip(train, kinds, strict=True) if kind is not None)
    for name in config.balance_length:
        present = {kind for group, kind in per_kind if group == name}
        if len(present) < 2:
            missing = "pair whose chosen answer is " + ("not longer" if True in present else "longer")
            raise PadkitError(f"cannot balance {name!r} by length: it has no training {missing if present else 'pair'}")
    groups = {p.group for p in train}
    unknown = sorted(set(config.dimension_caps) - groups)
    if unknown:
        raise PadkitError(
            f"--cap names {', '.join(map(repr, unknown))}, which no training pair has "
            f"(they have: {', '.join(sorted(groups))})"
        )
    seen: Counter[tuple[str, bool | None]] = Counter()
    kept = []
    for pair, kind in zip(train, kinds, strict=True):
        cap = config.dimension_caps.get(pair.group, config.max_train_pairs_per_dimension)
        if kind is not None:
            fewer = min(per_kind[pair.group, True], per_kind[pair.group, False])
            cap = fewer if cap is None else min(fewer, cap // 2)
        seen[pair.group, kind] += 1
        if cap is None or seen[pair.group, kind] <= cap:
            kept.append(pair)
    return kept


def _dataset(tokenizer, pairs: Sequence[PreferencePair], max_prompt_length: int):
    """TRL's prompt / chosen / rejected rows, with each answer's cut mark (see :func:`open_cut_ends`)."""
    from datasets import Dataset

    rows = [
        {
            "prompt": render_clipped(tokenizer, p.prompt, Dimension(p.preference).principle, max_prompt_length),
            "chosen": p.chosen,
            "rejected": p.rejected,
            "chosen_cut": p.chosen_cut,
            "rejected_cut": p.rejected_cut,
        }
        for p in pairs
    ]
    return Dataset.from_list(rows)


def open_cut_ends(dataset, eos_token_id: int):
    """``dataset`` (TRL-tokenized, with ``chosen_cut`` / ``rejected_cut`` columns) without the end-of-sequence
    token TRL appends to every answer, on the answers that were cut by a length limit.

    Synthesized answers are sampled to 64 tokens and cut to whole sentences: with an EOS after each, the
    PersRM learns that answers end after about 50 tokens (v9's numbered answers ended within 64 tokens 0.45 of
    the time; v11's, trained without it, 0.10). Answers that really end (a concise rewrite, a pair closed on
    both sides, human HH-RLHF turns) keep their EOS.
    """
    if "chosen_cut" not in dataset.column_names:
        return dataset

    def strip(row: dict) -> dict:
        out = {}
        for side in ("chosen", "rejected"):
            ids = row[f"{side}_ids"]
            out[f"{side}_ids"] = ids[:-1] if row[f"{side}_cut"] and ids[-1:] == [eos_token_id] else ids
        return out

    return dataset.map(strip, remove_columns=["chosen_cut", "rejected_cut"], desc="Opening cut answers")


def mirrored_order(pairs: Sequence[PreferencePair], seed: int) -> list[PreferencePair]:
    """``pairs`` shuffled (seeded) in blocks that keep each pair beside its mirror: the same prompt and texts with
    chosen and rejected swapped under the opposite preference. Trained in this order, every batch that teaches a
    form ("bulleted") also teaches its opposite ("prose") on the same texts, so the only way to lower the loss is
    to read the preference; randomly shuffled, a batch with one side alone teaches the form unconditionally, the
    next batch undoes it, and the DPO loss hovers at ln 2 (measured: 45 steps at 0.69-0.84, accuracy 0.33-0.53).
    Pairs without a mirror (HH-RLHF) go in twos (an odd one last), so blocks never straddle an even batch."""
    groups: dict[tuple, list[PreferencePair]] = {}
    for pair in pairs:
        groups.setdefault((pair.prompt_key, frozenset((pair.chosen, pair.rejected))), []).append(pair)
    blocks = [g for g in groups.values() if len(g) > 1]
    singles = [g[0] for g in groups.values() if len(g) == 1]
    blocks += [singles[i : i + 2] for i in range(0, len(singles) - 1, 2)]
    random.Random(seed).shuffle(blocks)
    return [pair for block in blocks for pair in block] + singles[len(singles) // 2 * 2 :]


REF_COLUMNS = ["ref_chosen_logps", "ref_rejected_logps"]
REF_LOGPS_PART_ROWS = 128  # rows of reference log-probs computed and saved at a time, so a stopped run keeps them


def ref_row_keys(dataset, model_hash: str) -> list[str]:
    """One key per tokenized row of ``dataset``: a digest of the reference model's hash and of every column of
    the row, so a saved reference log-prob is reused only for the same tokens under the same reference."""
    columns = sorted(dataset.column_names)
    values = [dataset[column] for column in columns]
    keys = []
    for row in zip(*values, strict=True):
        digest = hashlib.sha256(model_hash.encode())
        digest.update(json.dumps(list(zip(columns, row, strict=True))).encode())
        keys.append(digest.hexdigest()[:32])
    return keys


def saved_ref_logps(dirs: Sequence[Path]) -> dict[str, tuple[float, float]]:
    """Every reference log-prob pair saved with its row key under ``dirs`` (stores written before keys were kept
    are skipped)."""
    from datasets import load_from_disk

    known: dict[str, tuple[float, float]] = {}
    for store in sorted(path for d in dirs if d.is_dir() for path in d.iterdir() if not path.name.startswith(".")):
        saved = load_from_disk(str(store))
        if "ref_key" in saved.column_names:
            known.update(zip(saved["ref_key"], zip(*(saved[c] for c in REF_COLUMNS), strict=True), strict=True))
    return known


def _persrm_trainer(trainer_class: type, ref_logps_dir: Path, reuse_dirs: Sequence[Path] = ()) -> type:
    """``trainer_class`` (TRL's ``DPOTrainer``) with two changes padkit's training needs.

    - Cut answers train without an end-of-sequence token (:func:`open_cut_ends`).
    - Precomputed reference log-probs are kept in ``ref_logps_dir``. TRL computes them before the first step
      (about 20 minutes for 1,600 pairs on a 2-core CPU) and caches them only beside a file-backed dataset, so
      every resumed run paid for them again. Here they are saved once per dataset, under a digest of its
      tokenized rows and of the reference model's weights (TRL's own hash): a resumed run reads them back.
      Each row is saved with its key (:func:`ref_row_keys`), so a run on other data reads back the rows that
      this directory or ``reuse_dirs`` already hold and computes only the rest (a continuation with a few more
      pairs pays for those alone). The missing rows are computed and saved in parts of
      ``REF_LOGPS_PART_ROWS``, so a run stopped midway (a session's end) keeps the parts it finished; the parts
      are removed once the whole store is saved. ``ref_logps_reused`` / ``ref_logps_computed`` count the rows
      of the last call.
    """
    from datasets import concatenate_datasets, load_from_disk

    class PersRMTrainer(trainer_class):
        ref_logps_reused = 0
        ref_logps_computed = 0

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            return open_cut_ends(dataset, processing_class.eos_token_id)

        def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
            digest = hashlib.sha256(str(self._precompute_model_hash).encode())
            for column in sorted(dataset.column_names):
                digest.update(json.dumps([column, list(dataset[column])]).encode())
            path = ref_logps_dir / f"{name}-{digest.hexdigest()[:16]}"
            keys = ref_row_keys(dataset, str(self._precompute_model_hash))
            if path.is_dir():
                self.ref_logps_reused, self.ref_logps_computed = len(dataset), 0
                saved = load_from_disk(str(path))
                if "ref_key" not in saved.column_names:  # saved before keys were kept: add them for later runs
                    _save_atomically(saved.add_column("ref_key", keys), path)
                    saved = load_from_disk(str(path))
                return concatenate_datasets([dataset, saved.select_columns(REF_COLUMNS)], axis=1)
            known = saved_ref_logps([ref_logps_dir, *reuse_dirs])
            missing = [i for i, key in enumerate(keys) if key not in known]
            for start in range(0, len(missing), REF_LOGPS_PART_ROWS):
                part = missing[start : start + REF_LOGPS_PART_ROWS]
                computed = super()._precompute_ref_logps(dataset.select(part), name, batch_size)
                part_keys = [keys[i] for i in part]
                values = list(zip(*(computed[c] for c in REF_COLUMNS), strict=True))
                _save_atomically(_keyed_logps(part_keys, values), path.with_name(f"{path.name}.part-{part_keys[0]}"))
                known.update(zip(part_keys, values, strict=True))
            self.ref_logps_reused, self.ref_logps_computed = len(keys) - len(missing), len(missing)
            logps = _keyed_logps(keys, [known[k] for k in keys])
            _save_atomically(logps, path)
            for part in path.parent.glob(f"{path.name}.part-*"):
                shutil.rmtree(part)
            return concatenate_datasets([dataset, logps.select_columns(REF_COLUMNS)], axis=1)

    return PersRMTrainer


def _keyed_logps(keys: list[str], logps: list[tuple[float, float]]):
    """A store of reference log-probs, one (chosen, rejected) pair per row key, as :func:`saved_ref_logps` reads."""
    from datasets import Dataset, Features, Value

    return Dataset.from_dict(
        {"ref_key": keys, **{c: [pair[side] for pair in logps] for side, c in enumerate(REF_COLUMNS)}},
        features=Features({"ref_key": Value("string"), **{c: Value("float32") for c in REF_COLUMNS}}),
    )


def _save_atomically(dataset, path: Path) -> None:
    """``dataset`` saved to ``path`` through a temp dir, replacing what was there only once it is whole."""
    tmp, old = path.with_name(f".{path.name}.saving"), path.with_name(f".{path.name}.old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


class TrainingClock(TrainerCallback, ExportableState):
    """Seconds spent in training steps over every run of one output directory: the total rides in each
    checkpoint's ``trainer_state.json``, so a run resumed in a later session adds to it instead of restarting it.

    ``since_step`` is the step from which the clock has counted: 0 for a run trained from the start, or the step
    a run resumed at from a checkpoint that carried no clock (one written before padkit kept it).

    Example:

    ```python
    >>> clock = TrainingClock()
    >>> trainer = DPOTrainer(..., callbacks=[clock])
    >>> trainer.train(resume_from_checkpoint=...)
    >>> TrainingClock.of(trainer).seconds
    ```
    """

    def __init__(self, seconds: float = 0.0, since_step: int | None = None) -> None:
        self.seconds = seconds
        self.since_step = since_step
        self._start = 0.0
        self._carried = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        if self.since_step is None:  # fresh, or resumed from a checkpoint without a clock
            self.since_step, self.seconds = state.global_step, 0.0
        self._start, self._carried = time.monotonic(), self.seconds

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds = self._carried + time.monotonic() - self._start

    def state(self) -> dict:
        return {"args": {"seconds": self.seconds, "since_step": self.since_step}, "attributes": {}}

    @staticmethod
    def of(trainer) -> TrainingClock:
        """The trainer's clock (a resume replaces the instance passed in by one restored from the checkpoint)."""
        return next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TrainingClock))


def trained_lora(name: str, label: str) -> tuple[Path, dict]:
    """The directory and LoRA config of the trained PersRM ``name`` (an alias or a path), after checking that it is
    what padkit can continue or merge: a PEFT LoRA on modules. ``label`` names it in the errors."""
    source = resolve_model_dir(name)
    if not isinstance(source, Path) or not (source / "adapter_config.json").is_file():
        raise PadkitError(f"{label} is not a trained PersRM directory (no adapter_config.json)")
    lora = json.loads((source / "adapter_config.json").read_text())
    if lora.get("peft_type") != "LORA" or lora.get("target_parameters"):
        raise PadkitError(f"{label} is not a LoRA on modules; padkit trains and merges only those")
    return source, lora


def decoding_record(metas: Sequence[dict], reward_margin: float | None) -> dict:
    """The ``decoding`` record of a PersRM made from others (a merge's sources, a training run's init adapter):
    ``reward_margin`` when given, else the sources' own record when they all agree, else none.

    A PersRM's recorded margin is the one its rewards were measured with (``padkit generate`` decodes with it by
    default); sources that disagree, or a source that records none (the paper's PAD, margin 0), leave the choice to
    whoever measured the new PersRM."""
    from padkit.decoding.config import PADConfig

    if reward_margin is not None:
        PADConfig(reward_margin=reward_margin).validate()
        return {"reward_margin": float(reward_margin)}
    records = [meta.get("decoding") or {} for meta in metas] or [{}]
    return dict(records[0]) if all(r == records[0] for r in records) else {}


def continued_config(config: PersRMTrainConfig) -> tuple[PersRMTrainConfig, Path]:
    """``config`` with the LoRA shape of ``config.init_adapter`` (whose weights training starts from), and the
    adapter's directory. The adapter must be a LoRA trained on ``config.base``: its weights only fit that model."""
    source, lora = trained_lora(config.init_adapter, f"--init-adapter {config.init_adapter!r}")
    base = adapter_base(source)
    if base != config.base:
        raise PadkitError(
            f"--init-adapter {config.init_adapter!r} was trained on {base!r}, not on the base {config.base!r}: "
            f"pass --base {base}"
        )
    layers = lora.get("layers_to_transform")
    shape = replace(
        config,
        lora_r=lora["r"],
        lora_alpha=lora["lora_alpha"],
        lora_dropout=lora.get("lora_dropout", 0.0),
        target_modules=tuple(sorted(lora["target_modules"])),
        layers=tuple([layers] if isinstance(layers, int) else layers) if layers else None,
    )
    return shape, source


def _load_lora_weights(peft_model, adapter_dir: Path) -> None:
    """Copy a saved adapter's LoRA weights into ``peft_model``'s own (same shape), failing on any that do not fit."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(peft_model, load_file(str(adapter_dir / "adapter_model.safetensors")))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise PadkitError(
            f"the adapter in {adapter_dir} does not fit the LoRA built from its config "
            f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})"
        )


def _last_checkpoint(directory: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(directory)) if directory.is_dir() else None


def train_persrm(
    pairs: Sequence[PreferencePair],
    output_dir: str | Path,
    config: PersRMTrainConfig | None = None,
    data_sources: Sequence[str] = (),
    command: str | None = None,
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Split ``pairs`` by prompt, train a LoRA PersRM with DPO, score the held-out part, and save the adapter.

    Checkpoints go to ``output_dir/checkpoints``; with ``resume`` a rerun continues from the last one, reading
    the reference log-probs back from ``output_dir/ref_logps`` instead of computing them again. The adapter
    files and ``padkit.json`` are written to a temp dir first and moved in at the end.
    """
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    config = config or PersRMTrainConfig()
    init_dir = None
    if config.init_adapter:
        config, init_dir = continued_config(config)
    output_dir = Path(output_dir)
    reuse = [Path(d) / REF_LOGPS_DIR for d in config.reuse_ref_logps]
    for source, store in zip(config.reuse_ref_logps, reuse, strict=True):
        if not store.is_dir():
            raise PadkitError(f"--reuse-ref-logps {source!r}: no reference log-probs there (no {store})")
    if init_dir is not None:
        reuse.append(init_dir / REF_LOGPS_DIR)
    train, heldout = split_pairs(list(pairs), config.heldout_fraction, config.split_salt)
    train = [p for p in train if p.holdout is None]  # held-out wordings and dimensions never train
    train = training_selection(train, config)
    if not train:
        raise PadkitError("no training pairs left after the held-out split")
    tokenizer = load_tokenizer(config.base)
    tokenizer.padding_side = "right"
    model = load_model(config.base, "float32")
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        layers_to_transform=list(config.layers) if config.layers else None,
        task_type="CAUSAL_LM",
    )
    checkpoints = output_dir / "checkpoints"
    args = DPOConfig(
        **config.dpo_kwargs(),
        output_dir=str(checkpoints),
        precompute_ref_batch_size=4 * config.batch_size,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        save_total_limit=2,
        train_sampling_strategy="sequential",  # the order mirrored_order made
        logging_steps=5,
        report_to=[],
        disable_tqdm=not progress,
        restore_callback_states_from_checkpoint=True,  # the TrainingClock
    )
    trainer = _persrm_trainer(DPOTrainer, output_dir / REF_LOGPS_DIR, reuse)(
        model=model,
        args=args,
        train_dataset=_dataset(tokenizer, mirrored_order(train, config.seed), config.max_prompt_length),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[TrainingClock()],
    )
    last = _last_checkpoint(checkpoints) if resume else None
    if init_dir is not None and last is None:
        # After the trainer's init: the reference log-probs it precomputed are the base's (adapters off) either way.
        _load_lora_weights(trainer.model, init_dir)
    start = time.monotonic()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.monotonic() - start
    clock = TrainingClock.of(trainer)
    curve = [[h["step"], round(h["loss"], 4)] for h in trainer.state.log_history if "loss" in h]
    reward_curve = [
        [h["step"], *(round(h[k], 4) for k in ("rewards/chosen", "rewards/rejected", "rewards/accuracies"))]
        for h in trainer.state.log_history
        if "rewards/chosen" in h
    ]
    peft_model = trainer.model.eval()
    report = None
    if heldout:
        report = evaluate_rm(
            peft_model,
            tokenizer,
            spaced_sample(heldout, config.heldout_eval_pairs),
            "rm-init",
            max_length=config.max_length,
            max_prompt_length=config.max_prompt_length,
            progress=progress,
        )
    metadata = {
        "format": "padkit-persrm/1",
        "base": config.base,
        "data": list(data_sources),
        "command": command,
        "config": asdict(config),
        "pairs": {
            "train": len(train),
            "heldout": len(heldout),
            "train_per_dimension": dict(Counter(p.group for p in train)),
            "heldout_per_dimension": dict(Counter(p.group for p in heldout)),
            "train_cut_answers": sum(p.chosen_cut + p.rejected_cut for p in train),
        },
        "reference_logps": {"reused": trainer.ref_logps_reused, "computed": trainer.ref_logps_computed},
        "steps": trainer.state.global_step,
        "train_seconds": round(clock.seconds, 1),
        "timed_from_step": clock.since_step,
        "final_loss": sum(loss for _, loss in curve) / len(curve) if curve else None,
        "loss_curve": curve,
        "reward_curve": reward_curve,
        "heldout": report.as_dict() if report else None,
    }
    decoding = decoding_record([read_metadata(init_dir) or {}] if init_dir else [], config.reward_margin)
    if decoding:
        metadata["decoding"] = decoding
    plot = plot_loss if curve else None
    save_adapter(peft_model, output_dir, config.base, metadata, model_card(metadata), plot)
    return TrainResult(output_dir, len(train), len(heldout), trainer.state.global_step, seconds, report, metadata)


def card_usage(metadata: dict) -> str:
    """A model card's line on how to use a PersRM, naming the reward margin it decodes with by default."""
    margin = (metadata.get("decoding") or {}).get("reward_margin")
    tail = f", which decode it with its recorded reward margin of {margin:g} nats by default." if margin else "."
    return "Use it with `padkit generate --rm DIR` or `PAD.from_pretrained(rm=DIR)`" + tail


def model_card(metadata: dict) -> str:
    """A README for a trained PersRM: how it was made, on what, how long it took, and how well it ranks."""
    cfg = metadata["config"]
    lines = [
        "# padkit PersRM",
        "",
        f"A LoRA personalized reward model on `{metadata['base']}`, trained with DPO by `padkit train`.",
        card_usage(metadata),
        "",
        "## Command",
        "",
        "```",
        metadata.get("command") or "(trained through the Python API)",
        "```",
        "",
        "## Data",
        "",
        *[f"- {source}" for source in metadata["data"]],
        "",
        "| dimension | train pairs | held-out pairs |",
        "|---|---|---|",
    ]
    pairs = metadata["pairs"]
    for dim in sorted(set(pairs["train_per_dimension"]) | set(pairs["heldout_per_dimension"])):
        lines.append(
            f"| {dim} | {pairs['train_per_dimension'].get(dim, 0)} | {pairs['heldout_per_dimension'].get(dim, 0)} |"
        )
    if cfg.get("balance_length"):
        lines += [
            "",
            f"Training pairs of {', '.join(cfg['balance_length'])} were kept half with the longer answer (in words) "
            "chosen, half not, so length alone does not rank them.",
        ]
    if pairs.get("train_cut_answers"):
        lines += [
            "",
            f"{pairs['train_cut_answers']} of the {2 * pairs['train']} training answers stop at a length limit, not at "
            "their end: they were trained without an end-of-sequence token.",
        ]
    curve = metadata.get("loss_curve") or []
    tail = curve[-max(1, len(curve) // 5) :]
    sft = f"next-token loss on the chosen x {cfg['sft_weight']} (in the loss), " if cfg.get("sft_weight") else ""
    lines += [
        "",
        "## Training",
        "",
        _duration(metadata) + "; mean training loss "
        f"{metadata['final_loss'] if metadata['final_loss'] is None else round(metadata['final_loss'], 4)}"
        + (f", {sum(v for _, v in tail) / len(tail):.4f} over the last fifth of the logged steps" if tail else "")
        + f" (ln 2 = {math.log(2):.4f} is the loss of a model that has not moved). "
        f"LoRA r={cfg['lora_r']}, alpha={cfg['lora_alpha']} on {', '.join(cfg['target_modules'])}"
        f"{' of layers ' + ', '.join(map(str, cfg['layers'])) if cfg['layers'] else ''}; beta={cfg['beta']}, "
        f"{sft}lr={cfg['learning_rate']}, batch {cfg['batch_size']}, max length {cfg['max_length']} "
        f"(prompt {cfg['max_prompt_length']}), bf16={cfg['bf16']}."
        + (
            f" Started from the trained PersRM `{cfg['init_adapter']}` (its LoRA weights; the reference is the base)."
            if cfg.get("init_adapter")
            else ""
        ),
        "",
        *([f"![training loss]({LOSS_PLOT})", ""] if curve else []),
    ]
    heldout = metadata.get("heldout")
    if heldout:
        lines += [
            "## Held-out accuracy",
            "",
            f"Pairwise accuracy of the summed implicit reward (reference: {heldout['reference']}) and of its mean "
            "per token (the sum grows with an answer's length; PAD adds the reward token by token), on pairs whose "
            "prompts were never trained on.",
            "",
            *heldout_table(heldout),
            "",
        ]
    return "\n".join(lines)


def heldout_table(heldout: dict) -> list[str]:
    """A held-out report (:meth:`RMReport.as_dict`) as markdown table lines: each dimension, all, each shape.

    A report written before rm-eval measured the per-token accuracy shows "-" in that column."""

    def per_token(row: dict) -> str:
        return f"{row['token_accuracy']:.3f}" if row.get("token_accuracy") is not None else "-"

    return [
        "| dimension | accuracy | per token | mean margin | pairs |",
        "|---|---|---|---|---|",
        *[
            f"| {name} | {d['accuracy']:.3f} | {per_token(d)} | {d['margin']:.3f} | {d['n']} |"
            for name, d in heldout["dimensions"].items()
        ],
        f"| all | {heldout['accuracy']:.3f} | {per_token(heldout)} | | {heldout['n']} |",
        *[
            f"| all, {name} | {d['accuracy']:.3f} | {per_token(d)} | {d['margin']:.3f} | {d['n']} |"
            for name, d in heldout.get("by_shape", {}).items()
        ],
        *kind_table(heldout),
    ]


def kind_table(heldout: dict) -> list[str]:
    """A held-out report's ``by_kind`` rows (:func:`padkit.evaluation.rm_accuracy.kind_split`) as markdown lines:
    how many groups of each kind reach padkit's bar, and which fall short. Nothing for a report without them."""

    def at_bar(k: dict) -> str:
        return f"{k['at_bar']} of {k['groups']} >= {k['bar']:.2f}" if "bar" in k else "-"

    kinds = heldout.get("by_kind")
    if not kinds:
        return []
    return [
        "",
        "| kind | accuracy | per token | pairs | groups at the bar | below the bar |",
        "|---|---|---|---|---|---|",
        *[
            f"| {name} | {k['accuracy']:.3f} | {k['token_accuracy']:.3f} | {k['n']} | {at_bar(k)} | "
            f"{', '.join(k.get('below', []))} |"
            for name, k in kinds.items()
        ],
    ]


def _duration(metadata: dict) -> str:
    """How many steps, and how long they took over every run (resumed runs included) where that is known."""
    steps, since = metadata["steps"], metadata.get("timed_from_step") or 0
    minutes = f"{metadata['train_seconds'] / 60:.1f} min"
    ref = metadata.get("reference_logps") or {}
    reused = (
        f" (reference log-probs: {ref['reused']:,} rows read back from earlier runs, {ref['computed']:,} computed)"
        if ref.get("reused")
        else ""
    )
    if not since:
        return f"{steps} steps in {minutes}{reused}"
    return (
        f"{steps} steps; the {steps - since} from step {since} on in {minutes} (the time of earlier runs was not "
        f"kept){reused}"
    )


def save_adapter(
    peft_model, output_dir: Path, base: str, metadata: dict, card: str, plot: Callable[[dict, Path], None] | None
) -> None:
    """Write the adapter (named after its base by alias or path, not a cache dir), its metadata, model card and
    ``plot`` of its training atomically: everything goes to a temp dir first and is moved in at the end."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp))
    adapter_config = json.loads((tmp / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = base
    (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    (tmp / PERSRM_METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
    (tmp / "README.md").write_text(card)
    if plot is not None:
        plot(metadata, tmp / LOSS_PLOT)
    for item in tmp.iterdir():
        os.replace(item, output_dir / item.name)
    tmp.rmdir()


def plot_loss(metadata: dict, path: Path) -> None:
    """The logged loss per step against ln 2 (the loss of an adapter that has learnt nothing) and, where logged,
    both sides' rewards: plain DPO may lower both as long as the rejected falls further, which PAD reads as a
    penalty on everything the two sides share, so the drift belongs in the picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve, rewards = metadata["loss_curve"], metadata.get("reward_curve") or []
    sft = metadata.get("config", {}).get("sft_weight") or 0.0
    fig, axes = plt.subplots(1, 2 if rewards else 1, figsize=(10 if rewards else 6, 3.2), squeeze=False)
    ax = axes[0][0]
    ax.plot([s for s, _ in curve], [v for _, v in curve], label="train loss")
    ax.axhline(math.log(2), color="grey", linestyle="--", label="ln 2")
    ax.set_xlabel("step")
    ax.set_ylabel(f"DPO loss + {sft:g} x next-token loss" if sft else "DPO loss")
    ax.legend()
    if rewards:
        ax = axes[0][1]
        steps = [row[0] for row in rewards]
        ax.plot(steps, [row[1] for row in rewards], label="chosen")
        ax.plot(steps, [row[2] for row in rewards], label="rejected")
        ax.axhline(0.0, color="grey", linestyle="--")
        ax.set_xlabel("step")
        ax.set_ylabel("reward (beta x log-ratio)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
