"""Synthesized preference pairs: contrastive prompting of the base model, filtered by an offline judge.

For each prompt and each dimension with an opposite (elementary/knowledgeable, concise/informative,
friendly/unfriendly) the base model answers several times under the dimension's principle and several times
under its opposite (RLCD-style contrastive distillation). The judge picks the most extreme answer of each
side; the pair is kept when the judge agrees with the intended direction by ``min_margin``. A kept group
gives two pairs, one per direction. Rejected groups are written too (``"kept": false``) so the report and
resume see them; ``read_pairs`` skips them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from padkit.decoding.pad import PAD
from padkit.errors import PadkitError
from padkit.evaluation.judges import DIMENSION_JUDGES, get_judge
from padkit.preferences.catalog import lookup
from padkit.prompts import PromptRow, append_jsonl, atomic_write_text, intact_jsonl

DEFAULT_MARGINS: dict[str, float] = {"grade": 2.0, "words": 25.0, "sentiment": 0.4}


@dataclass
class SynthConfig:
    """How pairs are generated and filtered."""

    dimensions: tuple[str, ...] = ("elementary", "concise", "friendly")
    samples: int = 3
    max_new_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 24
    seed: int = 0
    min_margin: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MARGINS))

    def __post_init__(self) -> None:
        for name in self.dimensions:
            entry = lookup(name)
            if entry is None or entry.opposite is None or name not in DIMENSION_JUDGES:
                known = sorted(d for d in DIMENSION_JUDGES if lookup(d) and lookup(d).opposite)
                raise PadkitError(f"cannot synthesize pairs for {name!r}: use one of {', '.join(known)}")
        if self.samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise PadkitError("samples, batch_size and max_new_tokens must be at least 1")


@dataclass
class SynthReport:
    """Counts and judge margins of a synthesis file (the whole file, resumed runs included)."""

    groups: int
    kept_groups: int
    pairs: int
    per_dimension: dict[str, dict[str, float]]


def _complete_groups(path: Path) -> set[str]:
    """Groups fully written; lines of a group cut short by an interruption are removed (atomically)."""
    if not path.is_file():
        return set()
    records = intact_jsonl(path)
    counts = Counter(r.get("group") for r, _ in records)
    done = {g for g, c in counts.items() if c == 2}
    atomic_write_text(path, "".join(line + "\n" for r, line in records if r.get("group") in done))
    return done


def _group_records(
    row: PromptRow, dimension: str, answers: dict[str, list[str]], config: SynthConfig, settings: dict
) -> list[dict]:
    opposite = lookup(dimension).opposite
    spec = DIMENSION_JUDGES[dimension]
    judge = get_judge(spec.judge)
    scored = {side: [(spec.direction * judge.score(row.prompt, a), a) for a in answers[side]] for side in answers}
    best = max(scored[dimension])
    worst = min(scored[opposite])
    margin = best[0] - worst[0]
    kept = margin >= config.min_margin.get(spec.judge, 0.0) and best[1].strip() != "" and worst[1].strip() != ""
    group = f"{row.id}/{dimension}-{opposite}"
    common = {"group": group, "prompt": row.prompt, "judge": spec.judge, "margin": round(margin, 4), "kept": kept}

    def record(preference: str, chosen: tuple[float, str], rejected: tuple[float, str]) -> dict:
        return {
            "id": f"{group}/{preference}",
            "preference": preference,
            "chosen": chosen[1],
            "rejected": rejected[1],
            "chosen_score": round(spec.direction * chosen[0], 4),
            "rejected_score": round(spec.direction * rejected[0], 4),
            **common,
            "settings": settings,
        }

    return [record(dimension, best, worst), record(opposite, worst, best)]


def synthesize_pairs(
    pad: PAD,
    prompts: Sequence[PromptRow],
    output: str | Path,
    config: SynthConfig | None = None,
    progress: bool = True,
) -> SynthReport:
    """Generate, judge and append pair records to ``output`` (JSONL); a rerun continues where it stopped."""
    config = config or SynthConfig()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = _complete_groups(output)
    settings = {"base": pad.base_name, "method": "prompt", **asdict(config)}
    todo = [
        (row, dim)
        for row in prompts
        for dim in config.dimensions
        if f"{row.id}/{dim}-{lookup(dim).opposite}" not in done
    ]
    per_call = 2 * config.samples
    groups_per_batch = max(1, config.batch_size // per_call)
    bar = tqdm(total=len(todo), desc="synth groups", unit="group", disable=not progress)
    for start in range(0, len(todo), groups_per_batch):
        chunk = todo[start : start + groups_per_batch]
        texts, prefs = [], []
        for row, dim in chunk:
            for side in (dim, lookup(dim).opposite):
                texts += [row.prompt] * config.samples
                prefs += [side] * config.samples
        outs = pad.generate(
            texts,
            preferences=prefs,
            method="prompt",
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=config.seed + start,
        )
        records = []
        for i, (row, dim) in enumerate(chunk):
            block = [o.text.strip() for o in outs[i * per_call : (i + 1) * per_call]]
            answers = {dim: block[: config.samples], lookup(dim).opposite: block[config.samples :]}
            records += _group_records(row, dim, answers, config, settings)
        append_jsonl(output, records)
        bar.update(len(chunk))
    bar.close()
    return summarize_synth(output)


def summarize_synth(path: str | Path) -> SynthReport:
    """Generated and kept counts, and the judge margin per dimension, of a synthesis file."""
    records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    per_dim: dict[str, dict[str, float]] = {}
    for dim in sorted({r["preference"] for r in records}):
        rows = [r for r in records if r["preference"] == dim]
        kept = [r for r in rows if r["kept"]]
        per_dim[dim] = {
            "generated": len(rows),
            "kept": len(kept),
            "judge": rows[0]["judge"],
            "mean_margin_kept": round(sum(r["margin"] for r in kept) / len(kept), 3) if kept else 0.0,
            "mean_margin_all": round(sum(r["margin"] for r in rows) / len(rows), 3),
        }
    groups = {r["group"]: r["kept"] for r in records}
    return SynthReport(len(groups), sum(groups.values()), sum(r["kept"] for r in records), per_dim)
