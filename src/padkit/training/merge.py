"""Merge trained PersRMs into one: the weighted sum of their LoRA updates (a model soup), exactly.

Two PersRMs continued from one parent on different pair mixes learn different things; their average can keep
much of both without a training run. PEFT's ``cat`` combination stacks the LoRA factors, so the merged update is
``sum_i w_i * B_i A_i`` with no approximation, at rank ``sum_i r_i``. Weights that sum to 1 average the updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from padkit.errors import PadkitError
from padkit.evaluation.rm_accuracy import RMReport, evaluate_rm
from padkit.models.loading import adapter_base, load_model, load_tokenizer, read_metadata
from padkit.training.data import PreferencePair, spaced_sample, split_pairs
from padkit.training.dpo import LOSS_PLOT, card_usage, decoding_record, heldout_table, save_adapter, trained_lora

# What a PersRM's held-out figures depend on: merged sources must agree on these, so the merge is scored on the
# pairs none of them trained on, the way each was.
SPLIT_KEYS = ("heldout_fraction", "split_salt", "max_length", "max_prompt_length")


@dataclass
class MergeResult:
    """Where the merged adapter went, its LoRA rank and its held-out accuracy (also in its ``padkit.json``)."""

    output_dir: Path
    rank: int
    heldout: RMReport | None
    metadata: dict = field(repr=False, default_factory=dict)


def _as_set(value: object) -> set:
    """A LoRA config's module or layer list (a name, an index or a list of them; None for all) as a set."""
    if value is None:
        return set()
    return {value} if isinstance(value, (str, int)) else set(value)


def check_sources(sources: Sequence[str | Path], weights: Sequence[float]) -> tuple[list[Path], list[dict]]:
    """The sources' directories and ``padkit.json`` metadata (empty for adapters trained elsewhere), after checking
    that they can be merged: at least two LoRA PersRMs of one base on the same modules and layers, trained on one
    held-out split, and one positive, finite weight for each."""
    if len(sources) < 2:
        raise PadkitError(f"merging needs at least two PersRMs, got {len(sources)}")
    if len(weights) != len(sources):
        raise PadkitError(f"{len(weights)} weight(s) for {len(sources)} PersRMs: give one weight per PersRM")
    bad = [w for w in weights if not (math.isfinite(w) and w > 0)]
    if bad:
        raise PadkitError(f"merge weights must be positive numbers, got {bad[0]}")
    found = [trained_lora(str(source), repr(str(source))) for source in sources]
    (first_dir, first), base = found[0], adapter_base(found[0][0])
    for where, config in found[1:]:
        for key in ("target_modules", "layers_to_transform"):
            mine, theirs = first.get(key), config.get(key)
            if _as_set(mine) != _as_set(theirs):
                raise PadkitError(f"{first_dir} and {where} adapt different {key}: {mine} against {theirs}")
        if adapter_base(where) != base:
            raise PadkitError(f"{where} was trained on {adapter_base(where)!r}, {first_dir} on {base!r}")
    dirs = [where for where, _ in found]
    metas = [read_metadata(where) or {} for where in dirs]
    trained = [meta.get("config") or {} for meta in metas]
    for where, config in zip(dirs[1:], trained[1:], strict=True):
        for key in SPLIT_KEYS:
            if config.get(key) != trained[0].get(key):
                raise PadkitError(
                    f"{first_dir} and {where} were trained with different {key} "
                    f"({trained[0].get(key)!r} against {config.get(key)!r}): their held-out pairs differ"
                )
    return dirs, metas


def merge_persrms(
    sources: Sequence[str | Path],
    weights: Sequence[float] | None,
    output_dir: str | Path,
    pairs: Sequence[PreferencePair] = (),
    data_sources: Sequence[str] = (),
    command: str | None = None,
    heldout_eval_pairs: int | None = None,
    progress: bool = False,
    reward_margin: float | None = None,
) -> MergeResult:
    """Write the PersRM whose LoRA update is ``sum_i weights[i] * update(sources[i])`` to ``output_dir``
    (``weights`` None: equal weights summing to 1, the average).

    With ``pairs`` (the data the sources were trained on) the merge is scored on ``heldout_eval_pairs`` evenly
    spaced pairs of their common held-out split, as ``padkit train`` scores what it trains. The adapter, its
    ``padkit.json`` and model card are written to a temp dir and moved in at the end. ``reward_margin`` is recorded
    as the merge's decoding margin (:func:`~padkit.training.dpo.decoding_record`).
    """
    from peft import PeftModel

    weights = list(weights) if weights else [1.0 / len(sources)] * len(sources)
    dirs, metas = check_sources(sources, weights)
    decoding = decoding_record(metas, reward_margin)
    base = adapter_base(dirs[0])
    config = dict(metas[0].get("config") or {})
    model = PeftModel.from_pretrained(load_model(base, "float32"), str(dirs[0]), adapter_name="source0")
    names = ["source0"]
    for i, where in enumerate(dirs[1:], start=1):
        model.load_adapter(str(where), adapter_name=f"source{i}")
        names.append(f"source{i}")
    model.add_weighted_adapter(names, weights, "default", combination_type="cat")
    model.set_adapter("default")
    for name in names:
        model.delete_adapter(name)
    model.eval()
    rank = model.peft_config["default"].r
    tokenizer = load_tokenizer(base)
    report = None
    heldout: list[PreferencePair] = []
    if pairs:
        _, heldout = split_pairs(list(pairs), config.get("heldout_fraction", 0.1), config.get("split_salt", "padkit"))
        if heldout:
            report = evaluate_rm(
                model,
                tokenizer,
                spaced_sample(heldout, heldout_eval_pairs),
                "rm-init",
                max_length=config.get("max_length"),
                max_prompt_length=config.get("max_prompt_length"),
                progress=progress,
            )
    metadata = {
        "format": "padkit-persrm/1",
        "base": base,
        "data": list(data_sources),
        "command": command,
        "config": {**config, "lora_r": rank, "lora_alpha": model.peft_config["default"].lora_alpha},
        "merged_from": [
            {
                "source": str(source),
                "weight": weight,
                "command": meta.get("command"),
                "data": meta.get("data", []),
                "steps": meta.get("steps"),
                "final_loss": meta.get("final_loss"),
                "loss_curve": meta.get("loss_curve", []),
                "heldout_accuracy": (meta.get("heldout") or {}).get("accuracy"),
            }
            for source, weight, meta in zip(sources, weights, metas, strict=True)
        ],
        "pairs": {"heldout": len(heldout)},
        "heldout": report.as_dict() if report else None,
        **({"decoding": decoding} if decoding else {}),
    }
    plot = plot_merge_losses if any(s["loss_curve"] for s in metadata["merged_from"]) else None
    save_adapter(model, Path(output_dir), base, metadata, merge_card(metadata), plot)
    return MergeResult(Path(output_dir), rank, report, metadata)


def plot_merge_losses(metadata: dict, path: Path) -> None:
    """Each source's logged training loss against ln 2, in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, source in enumerate(metadata["merged_from"], start=1):
        curve = source["loss_curve"]
        ax.plot([s for s, _ in curve], [v for _, v in curve], label=f"{i}: {Path(source['source']).name}")
    ax.axhline(math.log(2), color="grey", linestyle="--", label="ln 2")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def merge_card(metadata: dict) -> str:
    """A README for a merged PersRM: what it averages, how each source was trained, and how well it ranks."""
    sources = metadata["merged_from"]
    lines = [
        "# padkit PersRM (merged)",
        "",
        f"A LoRA personalized reward model on `{metadata['base']}`: the weighted sum of {len(sources)} PersRMs' "
        f"LoRA updates, made by `padkit merge` (PEFT's `cat` combination, exact, rank {metadata['config']['lora_r']}).",
        card_usage(metadata),
        "",
        "## Command",
        "",
        "```",
        metadata.get("command") or "(merged through the Python API)",
        "```",
        "",
        "## Sources",
        "",
        "| # | PersRM | weight | training steps | mean training loss | held-out accuracy (its own sample) |",
        "|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(sources, start=1):
        loss = "-" if s["final_loss"] is None else f"{s['final_loss']:.4f}"
        acc = "-" if s["heldout_accuracy"] is None else f"{s['heldout_accuracy']:.3f}"
        lines.append(f"| {i} | `{s['source']}` | {s['weight']:g} | {s['steps'] or '-'} | {loss} | {acc} |")
    for i, s in enumerate(sources, start=1):
        lines += ["", f"Source {i} was trained by:", "", "```", s["command"] or "(trained elsewhere)", "```"]
        lines += [f"- {d}" for d in s["data"]]
    if any(s["loss_curve"] for s in sources):
        lines += ["", f"![training loss of each source]({LOSS_PLOT})"]
    heldout = metadata.get("heldout")
    if heldout:
        lines += [
            "",
            "## Held-out accuracy",
            "",
            f"Pairwise accuracy of the merged PersRM's summed implicit reward (reference: {heldout['reference']}), "
            f"on {heldout['n']} pairs whose prompts none of the sources trained on.",
            "",
            *heldout_table(heldout),
        ]
    return "\n".join(lines) + "\n"
