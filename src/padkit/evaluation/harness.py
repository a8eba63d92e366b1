"""``padkit eval``: methods x preferences x weights over a prompt set, scored by offline judges.

Every method is the core API with a parameter (see :data:`METHODS`). Generations are appended to
``generations.jsonl`` as they are made, keyed by method, preference, weight and prompt id, so an interrupted
run resumes. The report has, per method, preference and judge: the mean with a 95% bootstrap interval, the
win rate against the base answer to the same prompt (a looping, hollow or off-topic answer loses to a sound
one), mean tokens, tokens/s, and fluency: the perplexity of the output under the base model, and the share of
answers that loop (perplexity alone cannot see a loop: a run of one emoji or of "-" lines is very predictable).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import random
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from padkit.decoding.config import PAPER_PAD, PADConfig
from padkit.decoding.pad import PAD
from padkit.decoding.sequence_reward import response_logprobs
from padkit.distributed.jobs import Runner, Task, run_local, run_tasks
from padkit.errors import PadkitError
from padkit.evaluation.judges import (
    DIMENSION_JUDGES,
    OFF_TOPIC_BELOW,
    LLMPairwiseJudge,
    RelevanceJudge,
    get_judge,
    split_direction,
)
from padkit.models.loading import model_identity
from padkit.preferences import Preference, render_input
from padkit.prompts import PromptRow, append_jsonl, atomic_write_text, read_resumable

METHODS: dict[str, dict] = {
    "base": {"method": "base"},
    "prompt": {"method": "prompt"},
    "policy": {"method": "policy"},
    "pad": {"method": "pad", "reference": "base"},
    "paper-pad": {"method": "pad", "reference": "base", **PAPER_PAD},
    "prompt-pad": {"method": "pad", "reference": "base", "prompted_base": True},
    "pad-rm-init": {"method": "pad", "reference": "rm-init"},
    "best-of-n": {"method": "best-of-n", "best_of": 4, "temperature": 1.0, "seed": 0},
    "args": {"method": "args", "reference": "base"},
    "amulet": {"method": "amulet"},
    "persona-judge": {"method": "persona-judge", "temperature": 0.9, "top_p": 0.9, "seed": 0},
}
WEIGHTED = ("pad", "paper-pad", "prompt-pad", "pad-rm-init", "pad-self", "args")
"""Method name -> ``PAD.generate`` arguments. ``pad-self`` (PAD with ``rm="self"``) is added when the run
is given a second PAD object whose PersRM is the base itself."""


@dataclass
class EvalConfig:
    """What to run: the methods, preferences and weights crossed over the prompts."""

    methods: tuple[str, ...] = ("base", "prompt", "pad")
    preferences: tuple[str, ...] = ("concise",)
    weights: tuple[float, ...] = (1.0,)
    judges: tuple[str, ...] | None = None
    decoding: PADConfig = field(default_factory=PADConfig)
    """Decoding settings every method starts from (``max_new_tokens``, ``top_k``, ``min_p``, ``amulet_alpha``,
    ...); each method's entry in :data:`METHODS` then sets its own (method, reference, sampling) and the sweep
    sets ``weight``."""
    batch_size: int = 8
    llm_judge: LLMPairwiseJudge | None = field(default=None, repr=False)
    min_relevance: float = OFF_TOPIC_BELOW
    """An answer whose MiniLM similarity to its prompt is under this is off topic (:func:`off_topic`) and loses to
    an on-topic base answer, as a looping or hollow one does; -1 turns the check off."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS and m != "pad-self"]
        if unknown:
            raise PadkitError(f"unknown method(s) {', '.join(unknown)}; use {', '.join([*METHODS, 'pad-self'])}")
        for judge in self.judges or ():
            get_judge(split_direction(judge)[0])
        for pref in self.preferences:
            Preference.parse(pref)
        if not self.methods or not self.preferences or not self.weights:
            raise PadkitError("give at least one method, one preference and one weight")
        if any(not math.isfinite(w) for w in self.weights):
            raise PadkitError(f"weights must be finite numbers, got {self.weights}")
        if not -1.0 <= self.min_relevance < 1.0:
            raise PadkitError(f"min_relevance is a cosine similarity in [-1, 1), got {self.min_relevance}")

    def judges_for(self, preference: str) -> list[tuple[str, int]]:
        """(judge, direction) pairs: the ones asked for (``words:lower`` states the direction; otherwise the
        catalog's for that judge, else higher-is-more), or those mapped to each dimension of the preference."""
        if self.judges:
            specs = [split_direction(j) for j in self.judges]
            return [(j, d if d is not None else _direction(j, preference)) for j, d in specs]
        found = []
        for dim in Preference.parse(preference).dimensions:
            spec = DIMENSION_JUDGES.get(dim.text.lower())
            if spec and (spec.judge, spec.direction) not in found:
                found.append((spec.judge, spec.direction if dim.weight >= 0 else -spec.direction))
        return found or [("words", -1)]


def _direction(judge: str, preference: str) -> int:
    for dim in Preference.parse(preference).dimensions:
        spec = DIMENSION_JUDGES.get(dim.text.lower())
        if spec and spec.judge == judge:
            return spec.direction
    return 1


BASE_PREFERENCE = "-"


def answer_key(method: str, preference: str, weight: float, pid: str) -> str:
    """The ``id`` of one answer in an eval run's ``generations.jsonl`` (the base's preference is ``"-"``)."""
    return f"{method}|{preference}|{weight:g}|{pid}"


def run_generations(
    pads: dict[str, PAD],
    prompts: Sequence[PromptRow],
    output: Path,
    config: EvalConfig,
    progress: bool = True,
    run: Runner | None = None,
    reuse: Sequence[str | Path] = (),
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Generate what is missing from ``output`` (JSONL) and return all its records.

    ``run(batches, on_result)`` decodes the batches: by default here with ``pads``; a
    :meth:`padkit.distributed.RayPool.map` spreads them over Ray workers (``pads`` is then not used).
    ``reuse`` names other eval runs whose answers this run would make alike (:func:`reuse_answers`).
    """
    tasks = []
    for pref in config.preferences:
        for method in config.methods:
            if method == "base" and pref != config.preferences[0]:
                continue  # the base answer ignores the preference: made once, scored under each preference
            key_pref = BASE_PREFERENCE if method == "base" else pref
            for w in config.weights if method in WEIGHTED else (0.0,):
                settings = METHODS.get(method, {"method": "pad", "reference": "base"})
                pad_config = dataclasses.replace(config.decoding, **settings, weight=w)
                model = "self" if method == "pad-self" else "main"
                if pad_config.reads("reward_margin") and pad_config.reward_margin is None and model in pads:
                    # the PersRM's own margin, written into the settings each record keeps
                    pad_config = pad_config.replace(reward_margin=pads[model].reward_margin(pad_config))
                fields = dict(method=method, preference=key_pref, weight=w)
                tasks += [
                    Task(
                        answer_key(method, key_pref, w, row.id),
                        row.prompt,
                        None if method == "base" else pref,
                        pad_config,
                        model=model,
                        fields=dict(fields, prompt_id=row.id),
                    )
                    for row in prompts
                ]
    context = {name: [pad.base_name, model_identity(pad.rm_name)] for name, pad in sorted(pads.items())}
    for source in reuse:
        copied = reuse_answers(source, tasks, context, output)
        if log is not None:
            log(f"reused {copied} answers from {source}")
    return run_tasks(
        tasks,
        run or functools.partial(run_local, pads),
        output,
        config.batch_size,
        context=context,
        progress=progress,
        desc="eval generations",
        log=log,
    )


def reuse_answers(source: str | Path, tasks: Sequence[Task], context: dict, output: Path) -> int:
    """Copy into ``output`` the answers of the eval run in directory ``source`` that these tasks would make alike:
    the same key, prompt and settings, where a method that reads no PersRM (base, prompt, amulet, persona-judge)
    matches whatever PersRM the other run loaded. So a new PersRM is compared with base and prompting without
    decoding them again. A copy keeps ``reused_from``; returns how many were copied."""
    path = Path(source) / "generations.jsonl"
    if not path.is_file():
        raise PadkitError(f"--reuse {source}: not an eval run (no {path})")
    done = {str(r.get("id")) for r in read_resumable(output)}
    theirs = {str(r.get("id")): r for r in read_resumable(path, repair=False)}
    copies = []
    for task in tasks:
        record = theirs.get(task.key)
        if task.key in done or record is None or record.get("prompt", record.get("messages")) != task.prompt:
            continue
        want, had = task.settings(context), task.recorded_settings(record)
        if had is not None and not task.config.reads_rm:
            # the same base is enough: the PersRM (and any other model of that run) never touched this answer
            same_base = (had.get(task.model) or [None])[0] == want[task.model][0]
            had = {**had, **{name: want[name] for name in context}} if same_base else None
        if had == want:
            copies.append({**record, "settings": want, "reused_from": str(source)})
    if copies:
        append_jsonl(output, copies)
    return len(copies)


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    if not values:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


@torch.inference_mode()
def perplexity(
    pad: PAD, prompts: Sequence[str], texts: Sequence[str], ended: Sequence[bool] | None = None
) -> list[float]:
    """Per-output perplexity under the base model, given the plain prompt: a fluency check (:func:`fluency`)."""
    return [ppl for ppl, _ in fluency(pad, prompts, texts, ended)]


def fluency(
    pad: PAD, prompts: Sequence[str], texts: Sequence[str], ended: Sequence[bool] | None = None
) -> list[tuple[float, float]]:
    """Per-output perplexity under the base model, given the plain prompt, and the share of the output's tokens
    that are not the base's most likely next token (where a decoder overrode the base: session 64 found a PAD
    answer's extra perplexity in those tokens, the rest cost no more than a base answer's).

    ``ended``: whether each output ended (default: all did), so that its end token is scored. An answer cut by
    the token limit has none: scoring one would charge it for the base's surprise at stopping mid-sentence (a
    third of a 64-token base answer's log-loss), which no token of the answer earned."""
    ends = [True] * len(texts) if ended is None else list(ended)
    contexts = [render_input(pad.tokenizer, p) for p in prompts]
    scores = response_logprobs(pad.base_model, pad.tokenizer, contexts, list(texts), batch_size=16, add_eos=ends)
    counts = scores.tokens.clamp(min=1)  # an empty cut answer: no tokens, nothing charged
    overridden = (scores.tokens - scores.greedy).tolist()
    return [
        (math.exp(-lp / n), o / n) for lp, o, n in zip(scores.total.tolist(), overridden, counts.tolist(), strict=True)
    ]


def _ended(record: dict) -> bool:
    """Whether a generation record's answer ended by itself (its end token or a stop text), not at the limit."""
    return record.get("finish_reason") != "length"


LOOP_DISTINCT_TRIGRAMS = 0.6
ENDING_JUDGES = frozenset({"follow-up", "sign-off"})
"""Judges that read how an answer ends: on answers cut by the token limit they measure whether answers end."""


def distinct_trigram_share(items: Sequence) -> float:
    """Share of distinct trigrams in a sequence (words, token ids): 1.0 for no repetition (or fewer than three
    items); a looping text scores low."""
    grams = list(zip(items, items[1:], items[2:], strict=False))
    return len(set(grams)) / len(grams) if grams else 1.0


def loops(pad: PAD, texts: Sequence[str]) -> list[bool]:
    """Whether each answer degenerates into repetition: fewer than 60% of its trigrams of base-model tokens are
    distinct. Tokens, not words, so that emoji runs and lines of bare symbols count (a word-level measure sees
    no words in them); every hand-read answer of the 64-token koala runs under 0.6 loops ("Biodiversity" x 6,
    "aw, aw, aw", emoji runs), base answers included (2 of 20)."""
    return [
        distinct_trigram_share(pad.tokenizer(text, add_special_tokens=False)["input_ids"]) < LOOP_DISTINCT_TRIGRAMS
        for text in texts
    ]


HOLLOW_WORD_SHARE = 0.5
_LETTER = re.compile(r"[^\W\d_]")


def hollow(texts: Sequence[str]) -> list[bool]:
    """Whether each answer is form without content: fewer than half of its whitespace-separated pieces hold a
    letter. Lines of bare "1." or "-", runs of emoji and "### ****" fool the format judges and need not loop (the
    numbers count up, the emoji vary). No base answer of the koala runs is hollow; every hollow PAD answer found
    there was degenerate (v11 at its defaults: 6 of 750 on 50 prompts; with its own candidates, 65% of emoji
    answers)."""
    out = []
    for text in texts:
        pieces = text.split()
        out.append(bool(pieces) and sum(bool(_LETTER.search(p)) for p in pieces) < HOLLOW_WORD_SHARE * len(pieces))
    return out


def off_topic(prompts: Sequence[str], texts: Sequence[str], min_relevance: float) -> list[bool]:
    """Whether each answer leaves its prompt: the MiniLM cosine similarity of prompt and answer is under
    ``min_relevance``. A question back to the user with no answer ("What would you like to know next?") games the
    follow-up judge, and so do a bare "Hope this helps!" (sign-off), "Here's a rewritten version:" (concise) or
    "In short: In short, the answer is:" (summary-first). On the 50 koala prompts every such answer of PersRM v25c
    read by hand was under 0.23; the base's lowest, 0.247, is its one evasion ("I'm not able to provide specific
    answers"), the next 0.32 (median 0.71). -1 (the lowest similarity) marks nothing and loads no model."""
    if min_relevance <= -1.0:
        return [False] * len(texts)
    return [s < min_relevance for s in RelevanceJudge().scores(list(prompts), list(texts))]


def win_outcome(diff: float, degenerate: bool, base_degenerate: bool) -> float:
    """One answer against the base answer to the same prompt: 1 a win, 0.5 a tie, 0 a loss, by the judge's
    signed difference ``diff`` (positive: further in the preference's direction). A looping or hollow answer loses
    to a base answer that is neither, whatever the judge says: such text games the count judges (v11 with its own
    candidates "won" 0.95 of numbered answers with lines of "1. 1."); so does an off-topic one (:func:`off_topic`).
    Otherwise the judge decides."""
    if degenerate and not base_degenerate:
        return 0.0
    return 1.0 if diff > 0 else 0.5 if diff == 0 else 0.0


@dataclass
class ReportRow:
    method: str
    preference: str
    weight: float
    judge: str
    mean: float
    ci_low: float
    ci_high: float
    win_rate: float | None
    mean_tokens: float
    tokens_per_s: float
    perplexity: float
    n: int
    shift: float | None = None
    loops: float = 0.0
    ended: float = 1.0
    hollow: float = 0.0
    off_topic: float = 0.0
    direction: int = 1
    """Which way the judge reads more of the preference: +1 higher, -1 lower."""
    swapped: float = 0.0
    """Mean share of an answer's tokens that are not the base's greedy choice (near 0 for greedy base answers, PAD's
    overrides otherwise): with the perplexity, how often and how far a method leaves the base."""

    @property
    def win_text(self) -> str:
        return "" if self.win_rate is None else f"{self.win_rate:.2f}"

    @property
    def shift_text(self) -> str:
        return "" if self.shift is None else f"{self.shift:+.2f}"

    def better_apart(self, other: ReportRow) -> bool:
        """Whether this row's judge mean is on the preference's side of ``other``'s with the two 95% intervals
        apart, the issue's test for a move no resampling explains."""
        if self.direction >= 0:
            return self.ci_low > other.ci_high
        return self.ci_high < other.ci_low


FLUENCY_BUDGET = 1.5
"""How much less fluent than the base a default may be: a weight is within budget when its median perplexity over
the preferences is at most this multiple of the base's (how padkit's ``DEFAULT_WEIGHT`` was picked)."""
WIN_TARGET = 0.75
"""The win rate against base a method must reach on a preference to count as aligning to it."""
UNSEEN_TARGET = 0.5
"""How far, relative to the trained preferences' median shift, the unseen ones must move the judges."""


@dataclass
class EvalReport:
    rows: list[ReportRow] = field(default_factory=list)
    answers: list[dict] = field(default_factory=list)
    """One mark sheet per scored answer (``answers.jsonl``): its key, perplexity, degeneracy marks and judge scores,
    so that the answers behind a row's median (the least fluent, the ones a judge missed) can be read."""

    def median_perplexity(self, method: str, weight: float | None = None) -> float | None:
        """The median of ``method``'s perplexity over its rows (at ``weight``, when given), as the comparison table
        takes it; None without rows."""
        values = [r.perplexity for r in self.rows if r.method == method and weight in (None, r.weight)]
        return statistics.median(values) if values else None

    def fluent_weight(self, method: str = "pad", budget: float = FLUENCY_BUDGET) -> float | None:
        """The largest swept weight of ``method`` whose median perplexity is within ``budget`` times the base's:
        the strongest default that keeps fluency. None without base rows or when no weight is within it."""
        base = self.median_perplexity("base")
        if base is None:
            return None
        weights = sorted({r.weight for r in self.rows if r.method == method}, reverse=True)
        return next((w for w in weights if self.median_perplexity(method, w) <= budget * base), None)

    def summary(self) -> dict:
        keys = ("method", "preference", "judge", "mean", "ci_low", "ci_high", "win_rate", "shift", "tokens_per_s")
        return {"rows": [{k: getattr(r, k) for k in (*keys, "weight")} for r in self.rows]}

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(ReportRow.__dataclass_fields__))
        writer.writeheader()
        for r in self.rows:
            writer.writerow(asdict(r))
        return buf.getvalue()

    def markdown(self) -> str:
        lines = [
            "| method | preference | w | judge | mean [95% CI] | win vs base | shift (d) | tokens | tok/s | ppl "
            "| loops | hollow | off topic | ended | n |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.method} | {r.preference} | {r.weight:g} | {r.judge} | {r.mean:.3f} [{r.ci_low:.3f}, "
                f"{r.ci_high:.3f}] | {r.win_text} | {r.shift_text} | {r.mean_tokens:.1f} | {r.tokens_per_s:.1f} | "
                f"{r.perplexity:.1f} | {r.loops:.2f} | {r.hollow:.2f} | {r.off_topic:.2f} | {r.ended:.2f} | {r.n} |"
            )
        cut = [r for r in self.rows if r.judge in ENDING_JUDGES and r.ended < 0.5]
        if cut:
            lines += [
                "",
                "Cut short: "
                + "; ".join(f"{r.method} {r.preference} (w={r.weight:g}) ended {r.ended:.0%}" for r in cut)
                + ". These judges read how an answer ends, so on answers cut by the token limit they measure whether "
                "answers end; give a --max-new-tokens at which most answers end.",
            ]
        return "\n".join(lines) + "\n"

    def comparison(self) -> str:
        """The methods side by side: per preference, each method's judge mean [95% CI] and the method whose mean
        moved furthest from base's towards it, on the judge's own scale (a standardized shift divides by a spread
        that differs between methods, so a steadier method with the smaller mean could read as further); then per
        method, the medians over preferences of perplexity, share of looping answers, shift, win rate against base
        and tokens/s, and how often it moved furthest."""
        swept = {m for m in {r.method for r in self.rows} if len({r.weight for r in self.rows if r.method == m}) > 1}

        def column(r: ReportRow) -> str:
            return f"{r.method} w={r.weight:g}" if r.method in swept else r.method

        columns = list(dict.fromkeys(column(r) for r in sorted(self.rows, key=lambda r: r.method != "base")))
        cells: dict[tuple[str, str], dict[str, ReportRow]] = {}
        for r in self.rows:
            cells.setdefault((r.preference, r.judge), {})[column(r)] = r
        lines = [
            f"| preference | judge | {' | '.join(columns)} | furthest |",
            "|---|---|" + "---|" * (len(columns) + 1),
        ]
        furthest_count = dict.fromkeys(columns, 0)
        for (pref, judge), by_column in cells.items():
            base_row = by_column.get("base")
            moves = {
                c: r.direction * (r.mean - base_row.mean) for c, r in by_column.items() if base_row and c != "base"
            }
            best = max(moves, key=moves.get) if moves and max(moves.values()) > 0 else None
            if best is not None:
                furthest_count[best] += 1
            means = [
                f"{by_column[c].mean:.2f} [{by_column[c].ci_low:.2f}, {by_column[c].ci_high:.2f}]"
                if c in by_column
                else ""
                for c in columns
            ]
            lines.append(f"| {pref} | {judge} | {' | '.join(means)} | {best or 'none'} |")
        lines += [
            "",
            "| method | median perplexity | median loops | median shift (sd) | median win vs base | median tok/s "
            "| furthest on |",
            "|---|---|---|---|---|---|---|",
        ]

        def median(values: list[float]) -> str:
            return f"{statistics.median(values):.2f}" if values else "-"

        for c in columns:
            rows = [r for by_column in cells.values() for col, r in by_column.items() if col == c]
            shifts = [r.shift for r in rows if r.shift is not None]
            wins = [r.win_rate for r in rows if r.win_rate is not None]
            lines.append(
                f"| {c} | {median([r.perplexity for r in rows])} | {median([r.loops for r in rows])} | "
                f"{median(shifts)} | {median(wins)} | "
                f"{median([r.tokens_per_s for r in rows])} | {furthest_count[c] if shifts else '-'} |"
            )
        base = self.median_perplexity("base")
        for method in sorted(swept) if base is not None else ():
            w = self.fluent_weight(method)
            if w is not None:
                ppl = self.median_perplexity(method, w)
                verdict = f"the largest {method} weight within it is w={w:g} ({ppl:.2f}, {ppl / base:.2f}x)."
            else:
                lowest = min(r.weight for r in self.rows if r.method == method)
                ratio = self.median_perplexity(method, lowest) / base
                verdict = f"no {method} weight is within it (the lowest, w={lowest:g}, is at {ratio:.2f}x)."
            lines += ["", f"Fluency budget {FLUENCY_BUDGET:g}x the base's median perplexity ({base:.2f}): {verdict}"]
        return "\n".join(lines) + "\n"

    def scorecard(self) -> str:
        """Each method and weight against padkit's quality targets: per preference and judge, the win rate against
        base, the shift, and whether the judge mean is better than base's and prompting's with the intervals apart;
        then the count of wins at :data:`WIN_TARGET`, how far the unseen preferences move against the trained ones
        (:attr:`Preference.trained`), the median perplexity against the base's and the off-topic and looping shares."""
        base = {(r.preference, r.judge): r for r in self.rows if r.method == "base"}
        prompt = {(r.preference, r.judge): r for r in self.rows if r.method == "prompt"}
        sections = [
            _scorecard_section(
                method if method == "prompt" else f"{method} w={weight:g}",
                [r for r in self.rows if (r.method, r.weight) == (method, weight)],
                base,
                {} if method == "prompt" else prompt,
                self.median_perplexity("base"),
            )
            for method, weight in dict.fromkeys((r.method, r.weight) for r in self.rows if r.method != "base")
        ]
        return "\n\n".join(sections) + "\n"


def _scorecard_section(
    title: str,
    rows: list[ReportRow],
    base: dict[tuple[str, str], ReportRow],
    rivals: dict[tuple[str, str], ReportRow],
    base_ppl: float | None,
) -> str:
    """One method and weight of :meth:`EvalReport.scorecard`: ``base`` and ``rivals`` (prompting's rows, none for
    prompting itself) keyed by preference and judge."""

    def mark(row: ReportRow, other: ReportRow | None) -> str:
        return "" if other is None else ("yes" if row.better_apart(other) else "no")

    trained = {r.preference: Preference.parse(r.preference).trained for r in rows}
    lines = [
        f"## {title}",
        "",
        "| preference | judge | trained | win vs base | shift (sd) | apart from base | apart from prompt | off topic "
        "| perplexity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        key = (r.preference, r.judge)
        lines.append(
            f"| {r.preference} | {r.judge} | {'yes' if trained[r.preference] else 'no'} | {r.win_text} "
            f"| {r.shift_text} | {mark(r, base.get(key))} | {mark(r, rivals.get(key))} | {r.off_topic:.2f} "
            f"| {r.perplexity:.2f} |"
        )
    lines.append("")
    wins = [r for r in rows if r.win_rate is not None]
    below = [f"{r.preference} {r.win_rate:.2f}" for r in wins if r.win_rate < WIN_TARGET]
    lines.append(
        f"- win rate >= {WIN_TARGET:g}: {len(wins) - len(below)} of {len(wins)}"
        + (f" (below: {', '.join(below)})" if below else "")
    )
    judged = [r for r in rows if (r.preference, r.judge) in base]
    if rivals:
        both = [
            (r, base[(r.preference, r.judge)], rivals[(r.preference, r.judge)])
            for r in judged
            if (r.preference, r.judge) in rivals
        ]
        missed = [r.preference for r, b, p in both if not (r.better_apart(b) and r.better_apart(p))]
        further = sum((r.shift or 0.0) > (p.shift or 0.0) for r, _, p in both)
        lines.append(
            f"- better than base and prompt, 95% intervals apart: {len(both) - len(missed)} of {len(both)}"
            + (f" (not: {', '.join(missed)})" if missed else "")
            + f"; shift further than prompt's: {further} of {len(both)}"
        )
    else:
        apart = [r for r in judged if r.better_apart(base[(r.preference, r.judge)])]
        lines.append(f"- better than base, 95% intervals apart: {len(apart)} of {len(judged)}")
    shifts: dict[bool, list[float]] = {True: [], False: []}
    for r in rows:
        if r.shift is not None:
            shifts[trained[r.preference]].append(r.shift)
    if shifts[True] or shifts[False]:
        lines.append(f"- median shift {statistics.median(shifts[True] + shifts[False]):.2f} sd")
    if shifts[True] and shifts[False]:
        seen, unseen = statistics.median(shifts[True]), statistics.median(shifts[False])
        ratio = f"{unseen / seen:.2f}" if seen > 0 else "-"
        lines.append(
            f"- unseen preferences: median shift {unseen:.2f} sd against the trained ones' {seen:.2f}: "
            f"{ratio} of trained (target >= {UNSEEN_TARGET:g})"
        )
    ppl = statistics.median(r.perplexity for r in rows)
    if base_ppl:
        lines.append(
            f"- median perplexity {ppl:.2f}, {ppl / base_ppl:.2f}x the base's {base_ppl:.2f} "
            f"(budget {FLUENCY_BUDGET:g}x)"
        )
    lines.append(
        f"- off topic {_mean([r.off_topic for r in rows]):.3f}, looping {_mean([r.loops for r in rows]):.3f} "
        "(means over preferences)"
    )
    return "\n".join(lines)


def _index(values: Sequence[str], value: str) -> int:
    return values.index(value) if value in values else len(values)


def standardized_shift(scores: Sequence[float], base: Sequence[float], direction: int) -> float:
    """How far ``scores`` moved from ``base`` towards the preference, in pooled standard deviations (Cohen's d),
    so judges on different scales (words, VADER, counts) compare. When neither side varies (every base answer 0,
    every PAD answer 1) the spread of both sides together stands in, so a complete move is not read as none."""
    pooled = math.sqrt((_variance(scores) + _variance(base)) / 2) or math.sqrt(_variance([*scores, *base]))
    return 0.0 if pooled == 0 else direction * (_mean(scores) - _mean(base)) / pooled


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _variance(values: Sequence[float]) -> float:
    """Sample variance (n - 1), 0 for a single value."""
    mean = _mean(values)
    return sum((x - mean) ** 2 for x in values) / max(len(values) - 1, 1)


def _row(
    method, pref, w, judge, scores, win, rows, tps, ppl, looped, empty, strayed, shift=None, direction=1, *, swapped
) -> ReportRow:
    low, high = bootstrap_ci(scores)
    mean_tokens = sum(r["n_tokens"] for r in rows) / len(rows)
    return ReportRow(
        method,
        pref,
        w,
        judge,
        sum(scores) / len(scores),
        low,
        high,
        win,
        mean_tokens,
        tps,
        sorted(ppl)[len(ppl) // 2],
        len(scores),
        shift,
        sum(looped) / len(looped),
        sum(map(_ended, rows)) / len(rows),
        sum(empty) / len(empty),
        sum(strayed) / len(strayed),
        direction,
        sum(swapped) / len(swapped),
    )


def _answer(record: dict) -> tuple[str, str, bool]:
    """What fluency and the degeneracy marks read of a record: its prompt, its text and whether it ended."""
    return record["prompt"], record["text"], _ended(record)


def build_report(pad: PAD, records: list[dict], config: EvalConfig, progress: bool = False) -> EvalReport:
    """Score every record with its preference's judges and aggregate per method, preference and weight."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r["preference"], r["weight"])].append(r)
    base_text = {(r["preference"], r["prompt_id"]): r for r in records if r["method"] == "base"}
    # each distinct answer is read once: the base answer is one record per preference (15 on the koala runs)
    answers = list(dict.fromkeys(map(_answer, records)))
    prompts, texts, ends = ([a[i] for a in answers] for i in range(3))
    flags = zip(loops(pad, texts), hollow(texts), off_topic(prompts, texts, config.min_relevance), strict=True)
    marks = dict(zip(answers, flags, strict=True))  # (looping, hollow, off topic)
    fluent = {}  # answer -> (perplexity, share of tokens not the base's greedy choice)
    bar = tqdm(total=len(answers), disable=not progress, desc="perplexity", unit="answer")
    by_prompt = sorted(answers, key=lambda a: a[0])  # one prompt's answers together: its encoding is shared
    for i in range(0, len(by_prompt), 64):
        part = by_prompt[i : i + 64]
        asked, said, ended = (list(column) for column in zip(*part, strict=True))
        fluent.update(zip(part, fluency(pad, asked, said, ended), strict=True))
        bar.update(len(part))
    bar.close()
    base_bad = {k: any(marks[_answer(r)]) for k, r in base_text.items()}
    report = EvalReport()

    def order(group: tuple) -> tuple:  # as asked: methods, then preferences, then weights
        method, pref, w = group[0]
        return (_index(config.methods, method), _index(config.preferences, pref), pref, w)

    for (method, pref, w), rows in tqdm(sorted(groups.items(), key=order), disable=not progress, desc="scoring"):
        ppl, swapped = ([fluent[_answer(r)][i] for r in rows] for i in range(2))
        looped, empty, strayed = (list(column) for column in zip(*(marks[_answer(r)] for r in rows), strict=True))
        batches = {(r["batch_seconds"], r["batch_tokens"]) for r in rows}
        tps = sum(t for _, t in batches) / max(sum(s for s, _ in batches), 1e-9)
        degenerate = [a or b or c for a, b, c in zip(looped, empty, strayed, strict=True)]
        sheets = [
            {
                "method": method,
                "preference": pref,
                "weight": w,
                "prompt_id": r["prompt_id"],
                "perplexity": p,
                "swapped": sw,
                "looping": a,
                "hollow": b,
                "off_topic": c,
                "ended": _ended(r),
                "judges": {},
            }
            for r, p, sw, a, b, c in zip(rows, ppl, swapped, looped, empty, strayed, strict=True)
        ]
        report.answers += sheets
        # a report row of this group, given its judge, scores and win rate
        marks_of_group = dict(rows=rows, tps=tps, ppl=ppl, looped=looped, empty=empty, strayed=strayed, swapped=swapped)
        group_row = functools.partial(_row, method, pref, w, **marks_of_group)
        for judge_name, direction in config.judges_for(pref):
            judge = get_judge(judge_name)
            scores = [judge.score(r["prompt"], r["text"]) for r in rows]
            win = shift = None
            if method != "base":
                base_scores = {
                    pid: judge.score(b["prompt"], b["text"]) for (p, pid), b in base_text.items() if p == pref
                }
                if base_scores:
                    shift = standardized_shift(scores, list(base_scores.values()), direction)
                outcomes = [
                    win_outcome(direction * (s - base_scores[r["prompt_id"]]), bad, base_bad[(pref, r["prompt_id"])])
                    for r, s, bad in zip(rows, scores, degenerate, strict=True)
                    if r["prompt_id"] in base_scores
                ]
                win = sum(outcomes) / len(outcomes) if outcomes else None
            report.rows.append(group_row(judge_name, scores, win, shift=shift, direction=direction))
            for sheet, score in zip(sheets, scores, strict=True):
                sheet["judges"][judge_name] = score
        if config.llm_judge is not None and method != "base":
            principle = Preference.parse(pref).prompt_principle()
            wins = []
            for r, sheet in zip(rows, sheets, strict=True):
                if (pref, r["prompt_id"]) in base_text:
                    base_answer = base_text[(pref, r["prompt_id"])]["text"]
                    wins.append(config.llm_judge.compare(r["prompt"], principle, r["text"], base_answer))
                    sheet["judges"]["llm-win"] = wins[-1]
            if wins:
                report.rows.append(group_row("llm-win", wins, sum(wins) / len(wins)))
    return report


def plot_report(report: EvalReport, out_dir: Path) -> list[Path]:
    """A bar chart per preference (mean and CI per method), and a trade-off curve when weights were swept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for pref in sorted({r.preference for r in report.rows}):
        rows = [r for r in report.rows if r.preference == pref]
        for judge in sorted({r.judge for r in rows}):
            sel = [r for r in rows if r.judge == judge]
            fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(sel)), 3.2))
            labels = [r.method if r.weight == 0 else f"{r.method}\nw={r.weight:g}" for r in sel]
            ax.bar(
                labels,
                [r.mean for r in sel],
                yerr=[[r.mean - r.ci_low for r in sel], [r.ci_high - r.mean for r in sel]],
                capsize=3,
            )
            ax.set_title(f"{pref}: {judge}")
            paths.append(_save(fig, out_dir / f"bar_{_slug(pref)}_{judge}.png", plt))
            swept = sorted((r.weight, r.mean, r.perplexity) for r in sel if r.method == "pad")
            if len(swept) > 2:
                fig, ax = plt.subplots(figsize=(4, 3.2))
                ax.plot([s[2] for s in swept], [s[1] for s in swept], marker="o")
                for wt, m, p in swept:
                    ax.annotate(f"w={wt:g}", (p, m))
                ax.set_xlabel("perplexity under base (fluency cost)")
                ax.set_ylabel(judge)
                ax.set_title(f"{pref}: weight sweep")
                paths.append(_save(fig, out_dir / f"sweep_{_slug(pref)}_{judge}.png", plt))
    paths += _plot_two_dimension_sweeps(report, out_dir, plt)
    return paths


def _plot_two_dimension_sweeps(report: EvalReport, out_dir: Path, plt) -> list[Path]:
    """For preferences mixing the same two dimensions with different weights: one point per mix and method,
    at (score on the first dimension's judge, score on the second's)."""
    mixes: dict[tuple[str, str], list[tuple[str, ReportRow, ReportRow]]] = defaultdict(list)
    for pref in sorted({r.preference for r in report.rows}):
        dims = Preference.parse(pref).dimensions
        specs = [DIMENSION_JUDGES.get(d.text.lower()) for d in dims]
        if len(dims) != 2 or None in specs or specs[0].judge == specs[1].judge:
            continue
        names = (dims[0].text.lower(), dims[1].text.lower())
        for method in sorted({r.method for r in report.rows if r.preference == pref}):
            for w in sorted({r.weight for r in report.rows if r.preference == pref and r.method == method}):
                by_judge = {r.judge: r for r in report.rows if (r.preference, r.method, r.weight) == (pref, method, w)}
                if specs[0].judge in by_judge and specs[1].judge in by_judge:
                    label = f"{method} {pref}" + (f" w={w:g}" if w else "")
                    mixes[names].append((label, by_judge[specs[0].judge], by_judge[specs[1].judge]))
    paths = []
    for (first, second), points in mixes.items():
        if len(points) < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 4))
        for label, x, y in points:
            ax.scatter(x.mean, y.mean)
            ax.annotate(label, (x.mean, y.mean), fontsize=7)
        ax.set_xlabel(f"{first}: {points[0][1].judge}")
        ax.set_ylabel(f"{second}: {points[0][2].judge}")
        ax.set_title(f"{first} x {second}")
        paths.append(_save(fig, out_dir / f"scatter_{_slug(first)}_{_slug(second)}.png", plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:40]


def run_eval(
    pads: dict[str, PAD],
    prompts: Sequence[PromptRow],
    out_dir: str | Path,
    config: EvalConfig,
    progress: bool = True,
    log: Callable[[str], None] = lambda m: None,
    run: Runner | None = None,
    reuse: Sequence[str | Path] = (),
) -> EvalReport:
    """Generate (resuming, and copying what the runs in ``reuse`` already made alike: :func:`reuse_answers`),
    score, and write ``report.md``, ``comparison.md`` (the methods side by side), ``scorecard.md`` (each method
    against the quality targets), ``report.csv``, ``summary.json``, ``answers.jsonl`` (each answer's marks) and
    plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = run_generations(pads, prompts, out_dir / "generations.jsonl", config, progress, run, reuse, log)
    wanted = {(m, p) for m in config.methods for p in config.preferences}
    records = [
        {**r, "preference": pref} if r["method"] == "base" else r
        for r in records
        for pref in (config.preferences if r["method"] == "base" else (r["preference"],))
    ]
    records = [r for r in records if (r["method"], r["preference"]) in wanted]
    log(f"scoring {len(records)} answers")
    report = build_report(pads["main"], records, config, progress)
    for name, text in (
        ("report.md", report.markdown()),
        ("comparison.md", report.comparison()),
        ("scorecard.md", report.scorecard()),
        ("report.csv", report.csv()),
        ("summary.json", json.dumps(report.summary(), indent=2) + "\n"),
        ("answers.jsonl", "".join(json.dumps(a) + "\n" for a in report.answers)),
    ):
        atomic_write_text(out_dir / name, text)
    plot_report(report, out_dir)
    return report
