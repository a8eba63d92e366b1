"""Train a PersRM: DPO with a LoRA on the base model, through TRL's ``DPOTrainer``.

The preference is rendered into the PersRM's input by :func:`padkit.preferences.render_clipped`, the same
rendering PAD decodes with, so the adapter is always queried in the form it was trained on.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from padkit.errors import PadkitError
from padkit.evaluation.rm_accuracy import RMReport, evaluate_rm
from padkit.models.loading import DEFAULT_BASE, load_model, load_tokenizer
from padkit.preferences import Dimension, render_clipped
from padkit.training.data import PreferencePair, spaced_sample, split_pairs

METADATA_FILE = "padkit.json"
LOSS_PLOT = "loss_curve.png"


@dataclass
class PersRMTrainConfig:
    """Settings of a PersRM training run; the defaults fit a ~1 hour run of the 135M default model on 2 CPU cores."""

    base: str = DEFAULT_BASE
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    layers: tuple[int, ...] | None = None
    learning_rate: float = 5e-4
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    gradient_accumulation: int = 1
    max_length: int = 192
    max_prompt_length: int = 96
    bf16: bool = False
    precompute_ref: bool = True
    heldout_fraction: float = 0.1
    split_salt: str = "padkit"
    max_train_pairs_per_dimension: int | None = None
    dimension_caps: dict[str, int] = field(default_factory=dict)
    heldout_eval_pairs: int | None = None
    save_steps: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_prompt_length >= self.max_length:
            raise PadkitError("max_prompt_length must be smaller than max_length")
        if self.beta <= 0 or self.learning_rate <= 0 or self.lora_r < 1 or self.batch_size < 1:
            raise PadkitError("beta, learning_rate, lora_r and batch_size must be positive")


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


def _dataset(tokenizer, pairs: Sequence[PreferencePair], max_prompt_length: int):
    from datasets import Dataset

    rows = [
        {
            "prompt": render_clipped(tokenizer, p.prompt, Dimension(p.preference).principle, max_prompt_length),
            "chosen": p.chosen,
            "rejected": p.rejected,
        }
        for p in pairs
    ]
    return Dataset.from_list(rows)


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

    Checkpoints go to ``output_dir/checkpoints``; with ``resume`` a rerun continues from the last one. The
    adapter files and ``padkit.json`` are written to a temp dir first and moved in at the end.
    """
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    config = config or PersRMTrainConfig()
    output_dir = Path(output_dir)
    train, heldout = split_pairs(list(pairs), config.heldout_fraction, config.split_salt)
    train = [p for p in train if p.holdout is None]  # held-out wordings and dimensions never train
    if config.max_train_pairs_per_dimension is not None or config.dimension_caps:
        seen: Counter[str] = Counter()
        capped = []
        for pair in train:
            seen[pair.group] += 1
            cap = config.dimension_caps.get(pair.group, config.max_train_pairs_per_dimension)
            if cap is None or seen[pair.group] <= cap:
                capped.append(pair)
        train = capped
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
        output_dir=str(checkpoints),
        beta=config.beta,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        max_length=config.max_length,
        precompute_ref_log_probs=config.precompute_ref,
        precompute_ref_batch_size=4 * config.batch_size,
        bf16=config.bf16,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        save_steps=config.save_steps,
        save_total_limit=2,
        train_sampling_strategy="sequential",  # the order mirrored_order made
        logging_steps=5,
        report_to=[],
        seed=config.seed,
        disable_tqdm=not progress,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=_dataset(tokenizer, mirrored_order(train, config.seed), config.max_prompt_length),
        processing_class=tokenizer,
        peft_config=lora,
    )
    start = time.monotonic()
    trainer.train(resume_from_checkpoint=_last_checkpoint(checkpoints) if resume else None)
    seconds = time.monotonic() - start
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
        },
        "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1),
        "final_loss": next((h["train_loss"] for h in reversed(trainer.state.log_history) if "train_loss" in h), None),
        "loss_curve": [[h["step"], round(h["loss"], 4)] for h in trainer.state.log_history if "loss" in h],
        "heldout": report.as_dict() if report else None,
    }
    _save_adapter(peft_model, tokenizer, output_dir, config.base, metadata)
    return TrainResult(output_dir, len(train), len(heldout), trainer.state.global_step, seconds, report, metadata)


def model_card(metadata: dict) -> str:
    """A README for a trained PersRM: how it was made, on what, how long it took, and how well it ranks."""
    cfg = metadata["config"]
    lines = [
        "# padkit PersRM",
        "",
        f"A LoRA personalized reward model on `{metadata['base']}`, trained with DPO by `padkit train`.",
        "Use it with `padkit generate --rm DIR` or `PAD.from_pretrained(rm=DIR)`.",
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
    curve = metadata.get("loss_curve") or []
    tail = curve[-max(1, len(curve) // 5) :]
    lines += [
        "",
        "## Training",
        "",
        f"{metadata['steps']} steps in {metadata['train_seconds'] / 60:.1f} min; mean training loss "
        f"{metadata['final_loss'] if metadata['final_loss'] is None else round(metadata['final_loss'], 4)}"
        + (f", {sum(v for _, v in tail) / len(tail):.4f} over the last fifth of the logged steps" if tail else "")
        + f" (ln 2 = {math.log(2):.4f} is the loss of a model that has not moved). "
        f"LoRA r={cfg['lora_r']}, alpha={cfg['lora_alpha']} on {', '.join(cfg['target_modules'])}"
        f"{' of layers ' + ', '.join(map(str, cfg['layers'])) if cfg['layers'] else ''}; beta={cfg['beta']}, "
        f"lr={cfg['learning_rate']}, batch {cfg['batch_size']}, max length {cfg['max_length']} "
        f"(prompt {cfg['max_prompt_length']}), bf16={cfg['bf16']}.",
        "",
        *([f"![training loss]({LOSS_PLOT})", ""] if curve else []),
    ]
    heldout = metadata.get("heldout")
    if heldout:
        lines += [
            "## Held-out accuracy",
            "",
            f"Pairwise accuracy of the summed implicit reward (reference: {heldout['reference']}), on pairs whose "
            "prompts were never trained on.",
            "",
            "| dimension | accuracy | mean margin | pairs |",
            "|---|---|---|---|",
            *[
                f"| {name} | {d['accuracy']:.3f} | {d['margin']:.3f} | {d['n']} |"
                for name, d in heldout["dimensions"].items()
            ],
            f"| all | {heldout['accuracy']:.3f} | | {heldout['n']} |",
            "",
        ]
    return "\n".join(lines)


def _save_adapter(peft_model, tokenizer, output_dir: Path, base: str, metadata: dict) -> None:
    """Write the adapter (named after its base by alias or path, not a cache dir) and its metadata atomically."""
    tmp = output_dir / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp))
    adapter_config = json.loads((tmp / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = base
    (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    (tmp / "README.md").write_text(model_card(metadata))
    if metadata.get("loss_curve"):
        plot_loss(metadata["loss_curve"], tmp / LOSS_PLOT)
    for item in tmp.iterdir():
        os.replace(item, output_dir / item.name)
    tmp.rmdir()


def plot_loss(curve: Sequence[Sequence[float]], path: Path) -> None:
    """The logged DPO loss per step, against ln 2 (the loss of an adapter that has learnt nothing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([s for s, _ in curve], [v for _, v in curve], label="train loss")
    ax.axhline(math.log(2), color="grey", linestyle="--", label="ln 2")
    ax.set_xlabel("step")
    ax.set_ylabel("DPO loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_metadata(adapter_dir: str | Path) -> dict | None:
    """The ``padkit.json`` of a trained PersRM, or None for adapters trained elsewhere."""
    path = Path(adapter_dir) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None
