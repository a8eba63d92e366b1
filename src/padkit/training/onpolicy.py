"""On-policy pairs: preference pairs made from the answers of one ``padkit eval`` run.

The synthesized pairs (:mod:`padkit.training.synth`) teach a PersRM which *forms* a preference takes; they never
show it the answers PAD writes with it, where the cost of guidance is paid: a swap the base finds unlikely raises
its perplexity whether or not it brings the preference. An eval run holds, for each prompt and preference, the
base's answer, the prompted base's and PAD's at each weight, each judged and scored for fluency
(``answers.jsonl``). :func:`onpolicy_pairs` ranks them two at a time and keeps a pair when one answer is plainly
the better one to have decoded:

- ``sound-over-bad``: a sound answer over one that loops, is hollow or leaves the prompt, unless the sound one
  misses the preference (its judge not ``min_gap_sd`` of the judge's spread better than the base answer's) where
  the bad one has it (its judge that gap better than the sound one's): under ``sign-off`` a sound answer without a
  sign-off over an evasive one that signs off teaches the PersRM to drop the sign-off, not the evasion (v52,
  docs/results.md "Session 72");
- ``judge-at-little-cost``: the preference's judge moves by at least ``min_gap_sd`` of its spread and the
  perplexity rises by at most ``max_cost`` times;
- ``same-judge-less-cost``: the judge is not worse by that gap, the chosen answer carries the preference (its
  judge is that gap better than the base answer's to the same prompt), and the other answer's perplexity is at
  least ``min_saving`` times as high (a swap that bought nothing). Two answers that both miss the preference make
  no such pair: under ``sign-off`` the base's plain answer over PAD's costly answer that failed to sign off too
  teaches the PersRM that no sign-off is the answer to prefer (v49, docs/results.md "Session 71"). A run without
  base answers makes none of these pairs.

``rules`` keeps only some of these reasons: without ``sound-over-bad`` a bad answer is on neither side of a pair,
so the pairs are about the preference rather than fluency; ``preferences`` pairs the answers of the named
preferences only (a continuation aimed at the weakest). Pairs with a PAD answer on either side come first (at most
``pairs_per_prompt`` per prompt and preference), so the pairs are about the PersRM's own choices. Each pair's
preference is one of the dimension's training wordings (seeded), as synthesized pairs are; free-text preferences
keep their text. A side cut by the token limit is marked ``chosen_cut`` / ``rejected_cut`` (trained without an end
token). ``padkit data from-eval`` is the command.

The answers to pair should be written on *training* prompts, or pairs made from them would teach the PersRM the
very prompts its held-out accuracy is measured on. :func:`training_prompts` picks them (``padkit data prompts``):
the prompts that ``padkit train``'s hash split keeps on its training side, within a length range, in a fixed order
by a hash of their text.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from padkit.errors import PadkitError
from padkit.evaluation.harness import BASE_PREFERENCE, EvalConfig, answer_key
from padkit.jsonio import iter_jsonl
from padkit.preferences.catalog import lookup
from padkit.prompts import PromptRow, atomic_write_text, read_prompts
from padkit.settings import comma_names, setting
from padkit.training.data import is_heldout

ANSWER_FIELDS = (
    "method",
    "preference",
    "weight",
    "prompt_id",
    "perplexity",
    "looping",
    "hollow",
    "off_topic",
    "ended",
    "judges",
)
"""The marks of ``answers.jsonl`` the pairing reads."""

RULES = ("sound-over-bad", "judge-at-little-cost", "same-judge-less-cost")
"""The three reasons a pair is kept, strongest first (the ``kind`` of each pair)."""


@dataclass
class OnPolicyConfig:
    """How an eval run's answers are paired. ``padkit data from-eval`` derives its options from these fields."""

    max_cost: float = setting(
        1.3, "judge-at-little-cost: the chosen answer's perplexity is at most this times the rejected one's."
    )
    min_saving: float = setting(
        1.5,
        "same-judge-less-cost: the rejected answer's perplexity is at least this times the chosen one's, which carries "
        "the preference (its judge a gap better than the base answer's).",
    )
    min_gap_sd: float = setting(
        0.5,
        "A judge moves when two answers differ by at least this many of its standard deviations (over every answer "
        "under the preference).",
    )
    rules: tuple[str, ...] = setting(
        RULES,
        "Comma-separated rules a pair may be kept by (sound-over-bad, judge-at-little-cost, same-judge-less-cost); "
        "without sound-over-bad an answer that loops, is hollow or leaves the prompt is on neither side, so the "
        "pairs teach the preference rather than fluency.",
        cli=(str, comma_names),
        cli_default=",".join(RULES),
    )
    pairs_per_prompt: int = setting(2, "Pairs per prompt and preference at most (those with a PAD answer first).")
    preferences: tuple[str, ...] = setting(
        (),
        "Comma-separated preferences (as the eval run names them) to pair the answers of, so a continuation can "
        "aim at the weakest; every preference of the run when empty.",
        cli=(str, comma_names),
        cli_default="",
    )
    dimension: str = setting("onpolicy", "The group the pairs are reported and capped under (padkit train --cap).")
    seed: int = setting(0, "Seed of the wording drawn for each pair's preference.")
    include_unseen: bool = setting(
        False,
        "Also pair the answers under catalog dimensions held out of training (enthusiastic, headings, pirate, ...); "
        "off, so that they stay unseen for the generalization test.",
    )

    def __post_init__(self) -> None:
        for name in ("max_cost", "min_saving"):
            if getattr(self, name) < 1.0:
                raise PadkitError(f"{name} is a perplexity ratio of 1 or more, got {getattr(self, name)}")
        if self.min_gap_sd <= 0:
            raise PadkitError(f"min_gap_sd must be above 0, got {self.min_gap_sd}")
        if self.pairs_per_prompt < 1:
            raise PadkitError(f"pairs_per_prompt must be at least 1, got {self.pairs_per_prompt}")
        self.rules = comma_names(self.rules) if isinstance(self.rules, str) else tuple(self.rules)
        self.preferences = (
            comma_names(self.preferences) if isinstance(self.preferences, str) else tuple(self.preferences)
        )
        held_out = [p for p in self.preferences if _unseen(p)]
        if held_out and not self.include_unseen:
            raise PadkitError(
                f"preferences names {', '.join(held_out)}, held out of training to test generalization; "
                "pair them with include_unseen (--include-unseen)"
            )
        unknown = [r for r in self.rules if r not in RULES]
        if unknown or not self.rules:
            raise PadkitError(f"rules are some of {', '.join(RULES)}; got {', '.join(self.rules) or 'none'}")
        if not self.dimension.strip():
            raise PadkitError("dimension must name a group")


@dataclass
class OnPolicyReport:
    """What :func:`onpolicy_pairs` read (every answer), the prompt x preference cells it paired, and its pairs."""

    answers: int
    cells: int
    pairs: int
    unseen_cells: int = 0
    """Cells under a held-out catalog dimension, left out unless ``include_unseen``."""
    other_cells: int = 0
    """Cells under a preference that ``preferences`` leaves out."""
    by_rule: dict[str, int] = field(default_factory=dict)
    by_sides: dict[str, int] = field(default_factory=dict)


def _read_run(run: Path) -> dict[tuple[str, str], list[dict]]:
    """Each (prompt id, preference) of an eval run with its scored answers, texts joined from generations.jsonl."""
    for name in ("generations.jsonl", "answers.jsonl"):
        if not (run / name).is_file():
            raise PadkitError(f"{run}: no {name}; give the output directory of a `padkit eval` run (it writes both)")
    texts = {}
    for record, where in iter_jsonl(run / "generations.jsonl"):
        if not all(isinstance(record.get(k), str) for k in ("id", "prompt", "text")):
            raise PadkitError(f"{where}: not a `padkit eval` record (a generation needs its id, prompt and text)")
        texts[record["id"]] = (record["prompt"], record["text"])
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for answer, where in iter_jsonl(run / "answers.jsonl"):
        missing = [k for k in ANSWER_FIELDS if k not in answer]
        if missing:
            raise PadkitError(f"{where}: no {', '.join(missing)}; is this the answers.jsonl of a `padkit eval` run?")
        preference = BASE_PREFERENCE if answer["method"] == "base" else answer["preference"]
        key = answer_key(answer["method"], preference, float(answer["weight"]), str(answer["prompt_id"]))
        if key not in texts:
            raise PadkitError(f"{where}: no generation {key!r} in {run / 'generations.jsonl'}")
        prompt, text = texts[key]
        cells[(str(answer["prompt_id"]), answer["preference"])].append({**answer, "prompt": prompt, "text": text})
    return cells


def _judged(answers: list[dict], preference: str) -> list[tuple[str, int]]:
    judges = EvalConfig(preferences=(preference,)).judges_for(preference)
    missing = [j for j, _ in judges if any(j not in a["judges"] for a in answers)]
    if missing:
        raise PadkitError(f"answers under {preference!r} have no {', '.join(missing)} judge score")
    return judges


def _bad(answer: dict) -> bool:
    return bool(answer["looping"] or answer["hollow"] or answer["off_topic"] or not answer["text"].strip())


def _compare(a: dict, b: dict, judges: list[tuple[str, int]], gaps: dict[str, float]) -> tuple[bool, bool]:
    """Whether answer ``a`` is better than ``b`` on some judge by its gap, and whether it is worse on some."""
    diffs = [(d * (a["judges"][j] - b["judges"][j]), gaps[j]) for j, d in judges]
    return any(diff >= gap for diff, gap in diffs), any(diff <= -gap for diff, gap in diffs)


def _rule(
    chosen: dict,
    rejected: dict,
    carries: bool,
    judges: list[tuple[str, int]],
    gaps: dict[str, float],
    config: OnPolicyConfig,
) -> str | None:
    """Why ``chosen`` is the better answer to have decoded than ``rejected`` (``carries``: ``chosen`` carries the
    preference, judged against the base's answer), or None."""
    if _bad(chosen):
        return None
    better, worse = _compare(chosen, rejected, judges, gaps)
    if _bad(rejected):
        return RULES[0] if RULES[0] in config.rules and (carries or not worse) else None
    cheap = chosen["perplexity"] <= config.max_cost * rejected["perplexity"]
    if RULES[1] in config.rules and better and not worse and cheap:
        return RULES[1]
    saving = rejected["perplexity"] >= config.min_saving * chosen["perplexity"]
    if RULES[2] in config.rules and not worse and carries and saving:
        return RULES[2]
    return None


def _wording(preference: str, prompt_id: str, n: int, seed: int) -> str:
    """A training wording of a catalog dimension (drawn by a hash of the pair and the seed), else the text."""
    dim = lookup(preference)
    if dim is None:
        return preference
    digest = hashlib.sha256(f"{seed}|{prompt_id}|{preference}|{n}".encode()).digest()
    return dim.train_wordings[int.from_bytes(digest[:8], "big") % len(dim.train_wordings)]


def _unseen(preference: str) -> bool:
    dim = lookup(preference)
    return dim is not None and not dim.trained


def _drop(cells: dict[tuple[str, str], list[dict]], leave_out) -> list[tuple[str, str]]:
    """Remove from ``cells`` those whose preference ``leave_out`` is true of, and return their keys."""
    dropped = [cell for cell in cells if leave_out(cell[1])]
    for cell in dropped:
        del cells[cell]
    return dropped


def _side(answer: dict) -> str:
    return answer["method"] if answer["method"] in ("base", "prompt") else f"{answer['method']}@{answer['weight']:g}"


def onpolicy_pairs(run: str | Path, config: OnPolicyConfig | None = None) -> tuple[list[dict], OnPolicyReport]:
    """Pairs (records ``padkit train --data`` reads) from the answers of the eval run in directory ``run``."""
    config = config or OnPolicyConfig()
    cells = _read_run(Path(run))
    n_answers = sum(len(a) for a in cells.values())
    other = []
    if config.preferences:
        present = {preference for _, preference in cells}
        missing = [p for p in config.preferences if p not in present]
        if missing:
            raise PadkitError(
                f"{run}: no answers under {', '.join(map(repr, missing))}; the run's preferences: "
                f"{', '.join(sorted(present))}"
            )
        other = _drop(cells, lambda preference: preference not in config.preferences)
    unseen = _drop(cells, lambda preference: not config.include_unseen and _unseen(preference))
    by_preference: dict[str, list[dict]] = defaultdict(list)
    for (_, preference), answers in cells.items():
        by_preference[preference] += answers
    judges = {p: _judged(answers, p) for p, answers in by_preference.items()}
    gaps = {
        p: {j: max(config.min_gap_sd * statistics.pstdev(a["judges"][j] for a in answers), 1e-9) for j, _ in judges[p]}
        for p, answers in by_preference.items()
    }
    pairs, rules, sides = [], Counter(), Counter()
    for (pid, preference), answers in sorted(cells.items()):
        found = []
        base = next((a for a in answers if a["method"] == "base"), None)
        for chosen in answers:
            carries = base is not None and _compare(chosen, base, judges[preference], gaps[preference]) == (True, False)
            for rejected in answers:
                if chosen is not rejected and chosen["text"] != rejected["text"]:
                    rule = _rule(chosen, rejected, carries, judges[preference], gaps[preference], config)
                    if rule is not None:
                        found.append((rule, chosen, rejected))
        found.sort(
            key=lambda f: (
                "pad" not in (f[1]["method"], f[2]["method"]),
                RULES.index(f[0]),
                -abs(f[2]["perplexity"] - f[1]["perplexity"]),
            )
        )
        j = judges[preference][0][0]  # the margin a pair records is its preference's first judge's
        for n, (rule, chosen, rejected) in enumerate(found[: config.pairs_per_prompt]):
            pairs.append(
                {
                    "prompt": chosen["prompt"],
                    "chosen": chosen["text"],
                    "rejected": rejected["text"],
                    "preference": _wording(preference, pid, n, config.seed),
                    "dimension": config.dimension,
                    "chosen_cut": not chosen["ended"],
                    "rejected_cut": not rejected["ended"],
                    "kind": rule,
                    "judge": j,
                    "margin": chosen["judges"][j] - rejected["judges"][j],
                    "sides": f"{_side(chosen)} > {_side(rejected)}",
                    "perplexity": [chosen["perplexity"], rejected["perplexity"]],
                }
            )
            rules[rule] += 1
            sides[pairs[-1]["sides"]] += 1
    report = OnPolicyReport(
        answers=n_answers,
        cells=len(cells),
        pairs=len(pairs),
        unseen_cells=len(unseen),
        other_cells=len(other),
        by_rule={r: rules[r] for r in RULES},
        by_sides=dict(sides.most_common()),
    )
    return pairs, report


def write_onpolicy_pairs(run: str | Path, output: str | Path, config: OnPolicyConfig | None = None) -> OnPolicyReport:
    """:func:`onpolicy_pairs` written to ``output`` (JSONL, through a temp file and a rename)."""
    pairs, report = onpolicy_pairs(run, config)
    atomic_write_text(output, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    return report


@dataclass
class PromptSelectConfig:
    """Which prompts an on-policy eval run answers. ``padkit data prompts`` derives its options from these fields."""

    heldout_fraction: float = setting(
        0.2,
        "The held-out share of the training run the pairs are for (padkit train --heldout-fraction): the prompts its "
        "hash split holds out are left out.",
    )
    split_salt: str = setting("padkit", "The salt of that split's prompt hash (padkit train --split-salt).")
    no_input: bool = setting(
        False,
        "Leave out self-instruct tasks with a separate input, keeping open questions (as data synth --no-input).",
        flags=("--no-input/--with-input",),
    )
    min_chars: int = setting(1, "Leave out prompts shorter than this many characters.")
    max_chars: int | None = setting(None, "Leave out prompts longer than this many characters.")
    limit: int | None = setting(
        None, "Keep the first N in the order of a hash of their text (a fixed sample across every file)."
    )

    def __post_init__(self) -> None:
        if not 0 <= self.heldout_fraction < 1:
            raise PadkitError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.min_chars < 1:
            raise PadkitError(f"min_chars must be at least 1, got {self.min_chars}")
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise PadkitError(f"max_chars ({self.max_chars}) is below min_chars ({self.min_chars})")
        if self.limit is not None and self.limit < 1:
            raise PadkitError(f"limit must be at least 1, got {self.limit}")


@dataclass
class PromptSelectReport:
    """How many prompts :func:`training_prompts` read, and how many each step left out."""

    read: int
    with_input: int
    repeated: int
    heldout: int
    length: int
    past_limit: int
    kept: int


def training_prompts(
    paths: list[str | Path], config: PromptSelectConfig | None = None
) -> tuple[list[PromptRow], PromptSelectReport]:
    """The prompts of ``paths`` on the training side of ``padkit train``'s split, first by a hash of their text.

    A prompt's text decides its side exactly as a pair's does (a self-instruct task's input is part of it), and a
    prompt given twice is kept once. An eval run keys its answers by prompt id, so an id that another file already
    gave a different prompt is qualified by its file's name (``other:3``)."""
    config = config or PromptSelectConfig()
    by_id: dict[str, str] = {}
    unique: dict[str, PromptRow] = {}
    read = with_input = 0
    for path in paths:
        file_rows = read_prompts(path)
        read += len(file_rows)
        if config.no_input:
            with_input += sum(row.has_input for row in file_rows)
            file_rows = [row for row in file_rows if not row.has_input]
        for row in file_rows:
            if by_id.get(row.id, row.prompt) != row.prompt:  # another file's id: qualified by this file's name
                row = replace(row, id=f"{Path(path).stem}:{row.id}")
            by_id.setdefault(row.id, row.prompt)
            unique.setdefault(row.prompt, row)
    repeated = read - with_input - len(unique)
    rows = [row for row in unique.values() if not is_heldout(row.prompt, config.heldout_fraction, config.split_salt)]
    heldout = len(unique) - len(rows)
    n = len(rows)
    rows = [r for r in rows if config.min_chars <= len(r.prompt) <= (config.max_chars or len(r.prompt))]
    length = n - len(rows)
    rows.sort(key=lambda r: hashlib.sha256(r.prompt.encode()).hexdigest())
    kept = rows[: config.limit]
    if not kept:
        raise PadkitError(
            f"no prompt left of {read}: {with_input} with an input, {heldout} held out, {length} out of the length "
            "range"
        )
    report = PromptSelectReport(read, with_input, repeated, heldout, length, len(rows) - len(kept), len(kept))
    return kept, report


def write_training_prompts(
    paths: list[str | Path], output: str | Path, config: PromptSelectConfig | None = None
) -> PromptSelectReport:
    """:func:`training_prompts` written to ``output`` as a JSON list of ``{id, prompt}`` (``padkit eval --prompts``
    reads it), through a temp file and a rename."""
    rows, report = training_prompts(paths, config)
    records = [{"id": r.id, "prompt": r.prompt} for r in rows]
    atomic_write_text(output, json.dumps(records, ensure_ascii=False, indent=0) + "\n")
    return report
