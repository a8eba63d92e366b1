"""The ``pad`` rows of several ``padkit eval`` output directories side by side: how two PersRMs (or two decoding
settings) compare preference by preference on the same prompts.

Each argument is ``LABEL=DIR[,DIR...]`` (several directories when one arm ran its preferences in parts). Prints a
Markdown table (judge mean / win rate against base / shift in sd / median perplexity / looping share) for the
preferences every arm has, then each arm's medians, mean looping and how many preferences win >= 0.75:

    python scripts/compare_pad_runs.py v11=runs/eval-v11-defaults-50 v19=runs/eval-v19-defaults-50
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path


def pad_rows(dirs: str) -> dict[str, dict[str, str]]:
    """The ``pad`` rows of each directory's ``report.csv``, by preference."""
    rows = {}
    for d in dirs.split(","):
        with (Path(d) / "report.csv").open() as f:
            rows.update({r["preference"]: r for r in csv.DictReader(f) if r["method"] == "pad"})
    return rows


def _median(rows: list[dict[str, str]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def main(args: list[str]) -> None:
    if not args or any("=" not in a for a in args):
        sys.exit(__doc__)
    arms = {label: pad_rows(dirs) for label, dirs in (a.split("=", 1) for a in args)}
    prefs = sorted(set.intersection(*(set(rows) for rows in arms.values())))
    print("| preference | " + " | ".join(f"{a}: mean / win / shift / ppl / loops" for a in arms) + " |")
    print("|---" * (len(arms) + 1) + "|")
    for p in prefs:
        cells = [
            f"{float(r['mean']):.2f} / {float(r['win_rate']):.2f} / {float(r['shift']):+.2f} / "
            f"{float(r['perplexity']):.2f} / {float(r['loops']):.2f}"
            for r in (rows[p] for rows in arms.values())
        ]
        print(f"| {p} | " + " | ".join(cells) + " |")
    for label, rows in arms.items():
        picked = [rows[p] for p in prefs]
        print(
            f"{label}: median win {_median(picked, 'win_rate'):.2f}, median shift {_median(picked, 'shift'):.2f}, "
            f"median perplexity {_median(picked, 'perplexity'):.2f}, "
            f"mean looping {statistics.mean(float(r['loops']) for r in picked):.3f}, "
            f"win >= 0.75 on {sum(float(r['win_rate']) >= 0.75 for r in picked)} of {len(picked)}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
