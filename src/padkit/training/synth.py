"""Synthesized preference pairs: a pool of base-model answers, contrasted and rewritten, then filtered.

Two steps, each resumable:

1. **Pool** (:func:`generate_pool`): the base model answers every prompt once plainly and once under each of a
   few principles (elementary, sophisticated, friendly, unfriendly: RLCD-style contrastive prompting), sampled.
2. **Pairs** (:func:`build_pairs`): each answer is cut to whole sentences and must pass three filters: fluency (the
   base model's perplexity of the answer), no degenerate repetition, and relevance (MiniLM similarity to the
   prompt). For each trained dimension pair a chosen/rejected pair is then made either by *contrast* (the pool
   answers scoring highest and lowest on the dimension's judge, kept when the judge margin is large; reading
   level, unless ``reading_level="rewrite"`` makes it plainer and fancier by :func:`rewrites.plainer` /
   :func:`rewrites.fancier`) or by
   *rewrite* (a plain answer and the same answer rewritten into the target form: shortened, bulleted, numbered,
   half of it with a follow-up question, a sign-off, a caveat first, an "In short:" summary, bold key terms, emoji,
   casual or formal register, warm or cold; :mod:`padkit.training.rewrites`), since a 135M base hardly follows such
   instructions on its own. Each direction gets a pair; its preference text is a wording sampled (seeded) from the
   direction's training wordings. Held-out prompts also get records with held-out wordings and with the unseen
   dimensions (``"holdout": "wording"`` / ``"dimension"``), which training skips and ``rm-eval`` reports
   separately. Each side is marked ``chosen_cut`` / ``rejected_cut`` when the answer stops at the token limit
   rather than at its end (:class:`Answer`), so training gives it no EOS; the two sides of a pair end alike unless
   the dimension is about length, so the EOS never separates them alone. A share of the directions outside length
   also get an *early-end* pair (group ``early-end``): the chosen answer against its own first sentence, ended,
   which teaches that under a preference that is not about length an answer does not stop after one sentence. A
   share also get a *degenerate* pair (group ``degenerate``): the chosen answer against a loop of its first line or
   its bare form (markers, emoji, punctuation without words), the text a PersRM that rewards form over content
   steers a small base into. And a share get a *stutter* pair (group ``stutter``): the chosen answer against itself
   with one early unit said twice in a row ("In short: In short: ..."), the token-level start of such a loop.
   Every direction, length included, also gets a share of *evasion* pairs (group ``evasion``): the chosen answer
   against the same form around a non-answer that fits any prompt ("Alright, sorry for the mistake." shortened;
   "I'm here to help ..." closed by "Hope this helps!"), the answers PAD wrote when the PersRM rewarded the form
   whatever it held. A share (``title_stub_fraction``) also gets a *title-stub* pair (group
   ``title-stub``): the chosen answer against its own first words as a title with nothing after it ("Hops are added
   during the boil:"). And a share (``echo_fraction``, none by default) gets an *echo* pair (group ``echo``): the
   chosen answer against the same form around the request said back, the prompt's first sentence or a wording of
   the preference ("Short and sweet: Is online casino legal in India?"). The directions judged at the answer's
   end (sign-off, follow-up) can get an *early-close* pair (group ``early-close``, ``early_close_fraction``): the
   answer's first sentences closed there (a sign-off, a question), ended, against the whole answer going on
   without a closer, which at the token limit is cut before it could close; and a *bare-close* pair (group
   ``bare-close``): the same first sentences closed by a closer drawn on its own, against that closer alone.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from tqdm.auto import tqdm

from padkit.decoding.pad import PAD
from padkit.errors import PadkitError
from padkit.evaluation.harness import distinct_trigram_share, perplexity
from padkit.evaluation.judges import DIMENSION_JUDGES, RelevanceJudge, get_judge
from padkit.preferences.catalog import dimension_pairs, lookup
from padkit.prompts import PromptRow, append_jsonl, atomic_write_text, read_resumable
from padkit.settings import setting
from padkit.training import rewrites
from padkit.training.data import is_heldout

POOL_SOURCES: tuple[str, ...] = ("plain", "elementary", "sophisticated", "friendly", "unfriendly")
"""The principles the pool is sampled under (``plain``: none; the others are catalog dimensions). The 135M
base follows the reading-level ones; it hardly follows "concise", "cautious" or "give an example" (tried on 60
prompts: no usable judge margin), nor reliably "friendly" / "unfriendly" (judged by hand: the contrast pairs
were noise), so those dimensions are made by rewrites; the friendly answers remain a rewrite source."""


def source_principle(source: str) -> str | None:
    """The principle a pool source is generated under (None for ``plain``)."""
    if source == "plain":
        return None
    return lookup(source).principle


@dataclass
class SynthConfig:
    """How the pool is generated and how pairs are made and filtered from it.

    ``padkit data synth`` derives its options from these fields (all but ``sources`` and ``min_margin``).
    """

    sources: tuple[str, ...] = POOL_SOURCES
    max_new_tokens: int = setting(64, "Tokens per pool answer.", flags=("--max-new-tokens", "-n"))
    temperature: float = setting(0.8, "Sampling temperature of the pool.")
    top_p: float = setting(0.95, "Nucleus sampling mass of the pool.")
    batch_size: int = setting(48, "Generations per batch.")
    max_prompt_words: int = setting(60, "Prompts longer than this (in words) are skipped.")
    seed: int = setting(0, "Seed of the pool's sampling and of the wordings drawn for each pair.")
    max_perplexity: float = setting(12.0, "Fluency filter: the base model's perplexity of an answer.")
    min_distinct_trigrams: float = setting(0.75, "Repetition filter: the share of an answer's trigrams that differ.")
    min_relevance: float = setting(0.15, "Relevance filter: MiniLM cosine of prompt and answer.")
    min_words: int = setting(8, "Answers shorter than this (after cutting to whole sentences) are dropped.")
    min_margin: dict[str, float] = field(default_factory=lambda: {"grade": 3.0})
    reading_level: str = setting(
        "contrast",
        "How elementary/sophisticated pairs are made: contrast (the pool answers furthest apart in reading grade: "
        "two different answers, as in the shipped pairs) or rewrite (one answer made plainer and fancier: everyday "
        "vs learned words, long sentences split vs short ones joined; the content held fixed).",
    )
    min_rewrite_grade: float = setting(
        1.0, "Reading-level rewrites: the least Flesch-Kincaid grade gap between the fancier and the plainer answer."
    )
    heldout_fraction: float = setting(0.2, "Prompts that also get held-out wordings and unseen dimensions.")
    split_salt: str = setting("padkit", "Salt of the prompt hash that splits train from held-out.")
    early_end_fraction: float = setting(
        0.125,
        "Share of the directions outside length that also get an early-end pair (the answer against its own first "
        "sentence, ended); 0 makes none.",
    )
    degenerate_fraction: float = setting(
        0.125,
        "Share of the directions outside length that also get a degenerate pair (the answer against a loop of its "
        "first line, or its bare form: markers, emoji, punctuation); 0 makes none.",
    )
    stutter_fraction: float = setting(
        0.125,
        "Share of the directions outside length that also get a stutter pair (the answer against itself with its "
        "lead, first emoji or one of its first lines said twice in a row); 0 makes none.",
    )
    evasion_fraction: float = setting(
        0.125,
        "Share of the directions that also get an evasion pair (the answer against the same form around a "
        "non-answer that fits any prompt); 0 makes none.",
    )
    title_stub_fraction: float = setting(
        0.25,
        "Share of the directions that also get a title-stub pair (the answer against its own first words as a "
        "title with nothing after it, 'Hops are added during the boil:'); 0 makes none.",
    )
    early_close_fraction: float = setting(
        0.0,
        "Share of the directions judged at the answer's end (sign-off, follow-up) that also get an early-close "
        "pair (the answer's first sentences closed there, ended, against the whole answer going on) and a "
        "bare-close pair (the same first sentences closed, against the closer alone); 0, the default, makes none.",
    )
    echo_fraction: float = setting(
        0.0,
        "Share of the directions that also get an echo pair (the answer against the same form around the request "
        "said back: the prompt's first sentence or a wording of the preference); 0, the default, makes none.",
    )

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s != "plain" and lookup(s) is None]
        if unknown:
            raise PadkitError(f"unknown pool source(s) {', '.join(unknown)}: use 'plain' or catalog dimensions")
        if self.reading_level not in READING_LEVELS:
            raise PadkitError(f"unknown reading level {self.reading_level!r}; use one of {', '.join(READING_LEVELS)}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise PadkitError("batch_size and max_new_tokens must be at least 1")
        for name in (group.fraction for group in REPAIR_GROUPS.values()):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise PadkitError(f"{name} must be between 0 and 1, got {getattr(self, name)}")

    def rewrite_margin(self, judge: str) -> float:
        """The least margin of ``judge`` a rewrite pair needs, beside :attr:`min_margin` for contrast pairs: any
        gain for the other judges, whose rewrites change the one thing they judge; ``min_rewrite_grade`` for
        reading grade, which a rewrite moves only by some words and sentence breaks."""
        return {"grade": self.min_rewrite_grade}.get(judge, 0.0)


def generate_pool(
    pad: PAD, prompts: Sequence[PromptRow], path: str | Path, config: SynthConfig, progress: bool = True
) -> int:
    """Append one sampled answer per prompt and source to ``path`` (JSONL); a rerun continues where it stopped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["id"] for r in read_resumable(path)}
    # long prompts would be clipped in training anyway, and they make every row of their batch slow to prefill;
    # similar lengths are batched together
    short = sorted(
        (row for row in prompts if len(row.prompt.split()) <= config.max_prompt_words), key=lambda row: len(row.prompt)
    )
    todo = [(row, s) for row in short for s in config.sources if f"{row.id}/{s}" not in done]
    bar = tqdm(total=len(todo), desc="synth pool", unit="answer", disable=not progress)
    for start in range(0, len(todo), config.batch_size):
        chunk = todo[start : start + config.batch_size]
        outs = pad.generate(
            [row.prompt for row, _ in chunk],
            preferences=[source_principle(s) for _, s in chunk],
            method="prompt",
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=config.seed + len(done) + start,
        )
        append_jsonl(
            path,
            [
                {
                    "id": f"{row.id}/{s}",
                    "prompt_id": row.id,
                    "prompt": row.prompt,
                    "source": s,
                    "text": o.text,
                    "finish_reason": o.finish_reason,
                }
                for (row, s), o in zip(chunk, outs, strict=True)
            ],
        )
        bar.update(len(chunk))
    bar.close()
    return len(done) + len(todo)


Rewrite = Callable[[str, random.Random], str]


class Answer(NamedTuple):
    """A pool answer cut to whole sentences; ``cut``: it stops where the sampler's token limit (or the cut to
    whole sentences) stopped it, not where the answer ended, so training gives it no end-of-sequence token."""

    text: str
    cut: bool


class Chosen(NamedTuple):
    """A direction's chosen answer on one prompt: what a repair group's pair is made from."""

    answer: Answer
    form: Rewrite
    """The rewrite that made the answer (:func:`_same` for one found by contrast)."""
    prompt: str
    direction: str
    source: Answer | None = None
    """The answer ``form`` was applied to (None for an answer found by contrast)."""


def _same(text: str, rng: random.Random) -> str:
    return text


@dataclass(frozen=True)
class Recipe:
    """How a dimension pair's answers are made for one prompt: by *contrast* (the pool answers of ``sources``
    scoring highest and lowest on the first direction's judge) and, where that finds no large margin or no
    sources are given, by *rewrite* (``rewrite[0]`` makes the first direction's answer from one source answer,
    ``rewrite[1]`` the second's)."""

    sources: tuple[str, ...] = ()
    rewrite: tuple[Rewrite, Rewrite] | None = None
    rewrite_sources: tuple[str, ...] | None = None
    """Pool sources the rewrite is tried on in turn until one makes a pair; None: only the first of
    :data:`REWRITE_SOURCES` the prompt has (how the shipped pairs were made)."""


RECIPES: dict[tuple[str, str], Recipe] = {
    ("concise", "detailed"): Recipe(rewrite=(rewrites.shortened, _same)),
    ("elementary", "sophisticated"): Recipe(("plain", "elementary", "sophisticated")),
    ("friendly", "unfriendly"): Recipe(rewrite=(rewrites.warm, rewrites.cold)),
    ("cautious", "confident"): Recipe(rewrite=(rewrites.with_caveat, _same)),
    ("formal", "casual"): Recipe(rewrite=(rewrites.formal, rewrites.casual)),
    ("bulleted", "prose"): Recipe(rewrite=(rewrites.bulleted, _same)),
    ("numbered", "paragraph"): Recipe(rewrite=(rewrites.numbered, _same)),
    ("follow-up", "no-follow-up"): Recipe(rewrite=(rewrites.with_follow_up, rewrites.lead)),
    ("summary-first", "no-summary"): Recipe(rewrite=(rewrites.summary_first, _same)),
    ("bold", "no-bold"): Recipe(rewrite=(rewrites.bold_terms, _same)),
    ("emoji", "no-emoji"): Recipe(rewrite=(rewrites.with_emoji, _same)),
    ("sign-off", "no-sign-off"): Recipe(rewrite=(rewrites.with_sign_off, _same)),
    ("headings", "no-headings"): Recipe(rewrite=(rewrites.with_headings, _same)),
    ("enthusiastic", "calm"): Recipe(rewrite=(rewrites.enthusiastic, rewrites.calm)),
    ("pirate", "plain-voice"): Recipe(rewrite=(rewrites.pirate, _same)),
}
READING_LEVELS = ("contrast", "rewrite")
"""How ``SynthConfig.reading_level`` makes the elementary/sophisticated pairs (:func:`recipe_for`)."""
READING_LEVEL_REWRITE = Recipe(
    rewrite=(rewrites.plainer, rewrites.fancier), rewrite_sources=("plain", "sophisticated", "elementary", "friendly")
)
"""Reading level by rewrite; any answer but an unfriendly one can be made plainer and fancier, and few answers
of one source have a gap of a grade (in the shipped pool, before its filters: 44 of the 355 plain answers;
167 prompts have one among the four sources)."""
REWRITE_SOURCES = ("plain", "elementary", "friendly")
CLOSING_REWRITES: frozenset[Rewrite] = frozenset(
    {
        rewrites.shortened,
        rewrites.lead,
        rewrites.with_sign_off,
        rewrites.with_follow_up,
        rewrites.pirate,
        rewrites.warm,
        rewrites.cold,
    }
)
"""Rewrites whose answer is complete (a concise answer or lead, or one closed by a sign-off, question or closing
line): it ends there even when its source was cut. Other rewrites keep the source's cut."""
LENGTH_DIMENSIONS = frozenset({"concise", "detailed"})
"""Dimensions about how long an answer is: the only ones whose two sides may differ in ending at all."""
EARLY_END = "early-end"
"""The group of the pairs that set an answer against its own first sentence, ended (:func:`_early_end`)."""
DEGENERATE = "degenerate"
"""The group of the pairs that set an answer against a degenerate version of itself (:func:`_degenerate`)."""
STUTTER = "stutter"
"""The group of the pairs that set an answer against itself with one unit said twice (:func:`_stutter`)."""
EVASION = "evasion"
"""The group of the pairs that set an answer against the same form around a non-answer (:func:`_evasion`)."""
TITLE_STUB = "title-stub"
"""The group of the pairs that set an answer against its own first words as an empty title (:func:`_title_stub`)."""
EARLY_CLOSE = "early-close"
"""The group of the pairs that set an answer's opening, closed, against the whole answer (:func:`_early_close`)."""
BARE_CLOSE = "bare-close"
"""The group of the pairs that set an answer's opening, closed, against the closer alone (:func:`_bare_close`)."""
ECHO = "echo"
"""The group of the pairs that set an answer against its form around the request said back (:func:`_echo`)."""


@dataclass
class SynthReport:
    """What the pairing step kept and why it dropped the rest."""

    prompts: int
    pool_answers: int
    removed: dict[str, int]
    pairs: int
    heldout_pairs: dict[str, int]
    per_dimension: dict[str, dict]
    cut_answers: int = 0
    """Kept pool answers that stop at the token limit (all of them in a pool without ``finish_reason``)."""
    early_end_pairs: int = 0
    """Pairs of the ``early-end`` group (training and held-out prompts together)."""
    degenerate_pairs: int = 0
    """Pairs of the ``degenerate`` group (training and held-out prompts together)."""
    stutter_pairs: int = 0
    """Pairs of the ``stutter`` group (training and held-out prompts together)."""
    evasion_pairs: int = 0
    """Pairs of the ``evasion`` group (training and held-out prompts together)."""
    title_stub_pairs: int = 0
    """Pairs of the ``title-stub`` group (training and held-out prompts together)."""
    echo_pairs: int = 0
    """Pairs of the ``echo`` group (training and held-out prompts together)."""
    early_close_pairs: int = 0
    """Pairs of the ``early-close`` group (training and held-out prompts together)."""
    bare_close_pairs: int = 0
    """Pairs of the ``bare-close`` group (training and held-out prompts together)."""


_TRIGRAM_WORD = re.compile(r"\w+")


def distinct_trigrams(text: str) -> float:
    """Share of distinct word trigrams (1.0 for no repetition; a looping answer scores low)."""
    return distinct_trigram_share(_TRIGRAM_WORD.findall(text.lower()))


def _rng(*parts: object) -> random.Random:
    return random.Random(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest())


def filter_pool(
    pad: PAD, records: Sequence[dict], config: SynthConfig, progress: bool = False
) -> tuple[dict[tuple[str, str], Answer], Counter]:
    """Pool answers cut to whole sentences that pass the length, repetition, fluency and relevance filters,
    keyed by (prompt id, source), and how many each filter removed. An answer is ``cut`` unless its record
    says the model stopped on its own (``finish_reason: "stop"``) and no trailing part-sentence was dropped."""
    removed: Counter = Counter()
    texts: dict[tuple[str, str], tuple[str, Answer]] = {}
    for r in records:
        text = rewrites.whole_sentences(r["text"])
        if len(text.split()) < config.min_words:
            removed["too short (after cutting to whole sentences)"] += 1
        elif distinct_trigrams(text) < config.min_distinct_trigrams:
            removed["repetition"] += 1
        else:
            cut = r.get("finish_reason") != "stop" or text != r["text"].strip()
            texts[(r["prompt_id"], r["source"])] = (r["prompt"], Answer(text, cut))
    keys = list(texts)
    ppl: list[float] = []
    for start in tqdm(range(0, len(keys), 64), desc="pool fluency", disable=not progress):
        chunk = [texts[k] for k in keys[start : start + 64]]
        ppl += perplexity(pad, [p for p, _ in chunk], [a.text for _, a in chunk])
    fluent = [k for k, v in zip(keys, ppl, strict=True) if v <= config.max_perplexity]
    removed["perplexity"] = len(keys) - len(fluent)
    relevance = RelevanceJudge().scores([texts[k][0] for k in fluent], [texts[k][1].text for k in fluent])
    kept = {k: texts[k][1] for k, rel in zip(fluent, relevance, strict=True) if rel >= config.min_relevance}
    removed["relevance"] = len(fluent) - len(kept)
    return kept, removed


def _contrast(
    prompt: str, answers: list[Answer], first: str, config: SynthConfig
) -> tuple[Answer, Answer, float] | None:
    """The answers scoring highest and lowest on ``first``'s judge, if the margin is large enough."""
    spec = DIMENSION_JUDGES[first]
    judge = get_judge(spec.judge)
    unique = {a.text: a for a in answers}.values()
    scored = sorted(((spec.direction * judge.score(prompt, a.text), a) for a in unique), key=lambda x: x[0])
    if len(scored) < 2:
        return None
    margin = scored[-1][0] - scored[0][0]
    return (scored[-1][1], scored[0][1], margin) if margin >= config.min_margin.get(spec.judge, 1e-9) else None


def recipe_for(pair: tuple[str, str], config: SynthConfig) -> Recipe:
    """The :data:`RECIPES` entry of a dimension pair, or :data:`READING_LEVEL_REWRITE` for the reading-level
    pair when ``config.reading_level`` is ``rewrite``."""
    if pair == ("elementary", "sophisticated") and config.reading_level == "rewrite":
        return READING_LEVEL_REWRITE
    return RECIPES[pair]


def _rewrite(
    prompt: str,
    source: Answer,
    first: str,
    fns: tuple[Rewrite, Rewrite],
    rng: random.Random,
    min_margin: float = 0.0,
) -> tuple[Answer, Answer, float] | None:
    """(first direction's answer, second direction's answer, judge margin) from one source, or None when the
    source does not fit (too few sentences, already a list) or the rewrite did not move the judge (at all, or by
    ``min_margin``)."""
    if len(rewrites.sentences(source.text)) < 2 or rewrites.is_list(source.text):
        return None
    a, b = (Answer(fn(source.text, rng), source.cut and fn not in CLOSING_REWRITES) for fn in fns)
    spec = DIMENSION_JUDGES[first]
    judge = get_judge(spec.judge)
    margin = spec.direction * (judge.score(prompt, a.text) - judge.score(prompt, b.text))
    return (a, b, margin) if margin > 0 and margin >= min_margin else None


def _end_alike(a: Answer, b: Answer, first: str) -> tuple[Answer, Answer]:
    """Both sides of a pair opened when one ends and the other is cut, unless the dimension is about length.

    Otherwise the end-of-sequence token alone tells the sides apart: a sign-off or a pirate's "Arr!" closer is
    complete while its source is cut, and a PersRM trained so (v11) ends answers under "sign-off" without
    signing off."""
    if a.cut == b.cut or first in LENGTH_DIMENSIONS:
        return a, b
    return a._replace(cut=True), b._replace(cut=True)


def _early_end(answer: Answer, rng: random.Random) -> tuple[Answer, Answer] | None:
    """``answer`` against its first sentence, ended (None for a one-sentence answer).

    Under a preference that is not about length the first sentence is the rejected side: the two share it, so
    the pair is decided by the end token against the rest of the answer. Without such pairs the PersRM learns the
    end token only from concise/detailed, and rewards ending after one sentence under other preferences too (v12
    under summary-first: +2 to +7 nats)."""
    first = rewrites.sentences(answer.text)
    if len(first) < 2 or not answer.text.startswith(first[0]):
        return None
    return answer, Answer(first[0], cut=False)


def _degenerate(answer: Answer, rng: random.Random) -> tuple[Answer, Answer] | None:
    """``answer`` against a loop of its first line or its bare form (None when it has neither), both open.

    With candidates from the PersRM (``topk+rm``) v11 steers the base into exactly these: "1. 1.\n2. 2.", runs of
    emoji, a summary line said over and over. Paired against the answer itself under the same preference, neither
    side ending, it teaches that the form without the content is worse than the answer.
    """
    made = [text for fn in (rewrites.looped, rewrites.hollowed) if (text := fn(answer.text, rng))]
    return (answer._replace(cut=True), Answer(rng.choice(made), cut=True)) if made else None


def _stutter(answer: Answer, rng: random.Random) -> tuple[Answer, Answer] | None:
    """``answer`` against itself with one early unit said twice (:func:`rewrites.stuttered`), cut to the answer's
    number of words; both open.

    The two sides differ only from the repeated unit on, so the pair is decided by the token after a form's first
    occurrence: the place where, under ``--prompted-base``, v11 and v15 said "In short:" a second time (whole-answer
    loops, the ``degenerate`` group, did not stop that in v15). The stuttered side is cut to the same length, so the
    two sides differ in the repeat and not in length: with the repeat added on top (v16, v17) it was always the
    longer one. That was not why those PersRMs fell behind v11 where the chosen answer is the longer: v18, trained
    on these length-matched pairs, did too (0.55 against v11's 0.62 on the same held-out pairs; session 26).
    """
    text = rewrites.first_words(rewrites.stuttered(answer.text, rng), len(answer.text.split()))
    return (answer._replace(cut=True), Answer(text, cut=True)) if text and text != answer.text else None


def _evasion(answer: Answer, rng: random.Random, form: Rewrite) -> tuple[Answer, Answer]:
    """``answer`` (made by ``form``) against ``form`` applied to a non-answer (:func:`rewrites.evasion`), ending
    alike.

    The repair pairs before it set a form against a broken copy of the same answer; PAD with v23 and v25c then
    won on form alone with answers that say nothing of the prompt (session 36: a third of the concise answers,
    "Alright, sorry for the mistake."; sign-off "Hope this helps!" alone). Here the form is the same on both
    sides, so the pair is decided by whether there is an answer in it.
    """
    return answer, Answer(form(rewrites.evasion(rng), rng), answer.cut)


def _title_stub(answer: Answer, rng: random.Random) -> tuple[Answer, Answer] | None:
    """``answer`` against its own first words as a title with nothing after it (:func:`rewrites.title_stub`),
    ended.

    The evasion pairs stopped the non-answers that fit any prompt, but under ``concise`` v26c still ended 13 of 50
    koala answers right after such a title (session 38); the colon guard of decoding makes those answers go on,
    and these pairs teach the PersRM that the title alone is no answer. Length directions get them too: a title
    is shorter than any concise answer. An answer that is little more than its title ("Dear [person name],") gets
    none: its stub would differ from it in punctuation alone.
    """
    stub = rewrites.title_stub(answer.text)
    return (answer, Answer(stub, cut=False)) if stub and len(answer.text.split()) > len(stub.split()) + 2 else None


def _echo(chosen: Chosen, rng: random.Random) -> tuple[Answer, Answer]:
    """The chosen answer against its form applied to the request said back (:func:`rewrites.echo`: the prompt's
    first sentence or a wording of the preference), ending alike.

    The evasion pairs taught that a non-answer that fits any prompt loses; v27 then wrote non-answers that fit
    this one, the question asked back or the instruction restated (session 40: 9 of 50 concise koala answers at
    w=0.6). v28 (256 of them, session 41) and v29 (128, session 42) asked back at most once but fell behind v27
    elsewhere, so none are made by default.
    """
    said = rewrites.echo(chosen.prompt, lookup(chosen.direction).train_wordings, rng)
    return chosen.answer, Answer(chosen.form(said, rng), chosen.answer.cut)


EARLY_CLOSERS: dict[Rewrite, tuple[str, ...]] = {
    rewrites.with_sign_off: rewrites.SIGN_OFFS,
    rewrites.with_follow_up: rewrites.FOLLOW_UPS,
}
"""The closing rewrites of the directions judged at the answer's end, and the closers each one adds."""


def _closed_early(chosen: Chosen, rng: random.Random) -> tuple[str, str] | None:
    """(the source's first sentences closed by one of the direction's closers, that closer), or None for a
    direction whose form does not close the answer, one found by contrast, or a source of fewer than three
    sentences. The answer keeps at least two sentences and about half its words (:func:`rewrites.lead_count`), so
    there is an answer before the closer."""
    if chosen.form not in EARLY_CLOSERS or chosen.source is None:
        return None
    text = chosen.source.text
    if len(rewrites.sentences(text)) < 3:
        return None
    head = rewrites.opening(text, max(2, rewrites.lead_count(text)))
    closer = rng.choice(EARLY_CLOSERS[chosen.form])
    return f"{head}\n\n{closer}", closer


def _early_close(chosen: Chosen, rng: random.Random) -> tuple[Answer, Answer] | None:
    """The answer's first sentences closed by the direction's closer, ended, against the whole answer going on
    without one (:func:`_closed_early`).

    The sign-off pairs put the closer after the whole answer, which at a 64-token limit lies past the end: three
    quarters of them are cut, so both sides are open and the PersRM never learns to end after signing off; v27
    signed off on 0.63 of the koala prompts. The follow-up pairs ask after half of it but against that half
    ended, so no pair sets asking against going on. Here the two sides share the first sentences, and the pair
    is decided by closing there against going on.
    """
    made = _closed_early(chosen, rng)
    return (Answer(made[0], cut=False), chosen.source) if made else None


def _bare_close(chosen: Chosen, rng: random.Random) -> tuple[Answer, Answer] | None:
    """The answer's first sentences closed by one of the direction's closers against that closer alone, both
    ended; the closer is drawn apart from the early-close pair's, so the two pairs' closed answers may differ.

    Trained on early-close pairs alone, v31 closed at once: 46 of 50 follow-up koala answers opened by asking
    back ("What would you like to know about nuclear physics?"), sign-off answers were a sentence or nothing
    before "Hope this helps!". Here the closer is the same on both sides, so the pair is decided by the answer
    before it."""
    made = _closed_early(chosen, rng)
    return (Answer(made[0], cut=False), Answer(made[1], cut=False)) if made else None


class RepairGroup(NamedTuple):
    """How a repair group's pairs are made from a direction's chosen answer."""

    fraction: str
    """The :class:`SynthConfig` field with the share of directions that get one of its pairs."""
    make: Callable[[Chosen, random.Random], tuple[Answer, Answer] | None]
    """(the chosen answer, rng) -> (better, worse), or None where it cannot be made."""
    lengths: bool
    """Whether length directions (concise, detailed) get it too: early-end, degenerate and stutter pairs would
    teach them the opposite of their own pairs."""


REPAIR_GROUPS: dict[str, RepairGroup] = {
    EARLY_END: RepairGroup("early_end_fraction", lambda chosen, rng: _early_end(chosen.answer, rng), False),
    DEGENERATE: RepairGroup("degenerate_fraction", lambda chosen, rng: _degenerate(chosen.answer, rng), False),
    STUTTER: RepairGroup("stutter_fraction", lambda chosen, rng: _stutter(chosen.answer, rng), False),
    EVASION: RepairGroup("evasion_fraction", lambda chosen, rng: _evasion(chosen.answer, rng, chosen.form), True),
    TITLE_STUB: RepairGroup("title_stub_fraction", lambda chosen, rng: _title_stub(chosen.answer, rng), True),
    ECHO: RepairGroup("echo_fraction", _echo, True),
    EARLY_CLOSE: RepairGroup("early_close_fraction", _early_close, False),
    BARE_CLOSE: RepairGroup("early_close_fraction", _bare_close, False),
}
"""The report groups whose pairs are made from a direction's chosen answer (see the functions)."""


def _group_pairs(common: dict, pid: str, chosen: Chosen, config: SynthConfig) -> list[dict]:
    """The repair pairs a direction's pair gets on one prompt, each group a share of the time
    (:data:`REPAIR_GROUPS`)."""
    name = chosen.direction
    length = name in LENGTH_DIMENSIONS
    out = []
    for group, repair in REPAIR_GROUPS.items():
        if length and not repair.lengths:
            continue
        rng = _rng(config.seed, pid, name, group)
        made = rng.random() < getattr(config, repair.fraction) and repair.make(chosen, rng)
        if made:
            better, worse = made
            out.append(
                {k: v for k, v in common.items() if k not in ("judge", "margin")}
                | {
                    "id": f"{pid}/{name}/{group}",
                    "preference": rng.choice(lookup(name).train_wordings),
                    "chosen": better.text,
                    "chosen_cut": better.cut,
                    "rejected": worse.text,
                    "rejected_cut": worse.cut,
                    "dimension": group,
                    "direction": name,
                    "kind": group,
                }
            )
    return out


def build_pairs(
    pad: PAD, pool_path: str | Path, output: str | Path, config: SynthConfig, progress: bool = False
) -> SynthReport:
    """Make the pair file ``output`` from a pool (see the module docstring); written atomically."""
    records = read_resumable(pool_path)
    if not records:
        raise PadkitError(f"the pool {pool_path} is empty: generate it first")
    by_prompt: dict[str, str] = {}
    for r in records:
        by_prompt.setdefault(r["prompt_id"], r["prompt"])
    sources = set(config.sources)
    records = [r for r in records if r["source"] in sources]
    present: dict[str, set[str]] = {}
    for r in records:
        present.setdefault(r["prompt_id"], set()).add(r["source"])
    complete = {pid for pid, got in present.items() if got == sources}
    records = [r for r in records if r["prompt_id"] in complete]
    kept, removed = filter_pool(pad, records, config, progress)
    out: list[dict] = []
    stats: dict[str, Counter] = {}
    pairs = [(p, "trained") for p in dimension_pairs(True) if p in RECIPES]
    pairs += [(p, "unseen") for p in dimension_pairs(False) if p in RECIPES]
    for pid, prompt in by_prompt.items():
        if pid not in complete:
            continue
        heldout = is_heldout(prompt, config.heldout_fraction, config.split_salt)
        for (first, second), status in pairs:
            if status == "unseen" and not heldout:
                continue
            rng = _rng(config.seed, pid, first)
            stat = stats.setdefault(first, Counter())
            recipe = recipe_for((first, second), config)
            answers = [kept[(pid, s)] for s in recipe.sources if (pid, s) in kept]
            made, kind, source = _contrast(prompt, answers, first, config), "contrast", None
            if not made and recipe.rewrite:
                least = config.rewrite_margin(DIMENSION_JUDGES[first].judge)
                tried = [kept[(pid, s)] for s in recipe.rewrite_sources or REWRITE_SOURCES if (pid, s) in kept]
                for source in tried if recipe.rewrite_sources else tried[:1]:
                    made = _rewrite(prompt, source, first, recipe.rewrite, rng, least)
                    if made:
                        break
                kind = "rewrite"
            if not made:
                stat["no pair"] += 1
                continue
            a, b, margin = made
            a, b = _end_alike(a, b, first)
            stat["pairs"] += 1
            stat[kind] += 1
            stat["margin"] += margin
            judge = DIMENSION_JUDGES[first].judge
            forms = recipe.rewrite if kind == "rewrite" else (_same, _same)
            for name, chosen, rejected, form in ((first, a, b, forms[0]), (second, b, a, forms[1])):
                entry = lookup(name)
                common = {
                    "prompt": prompt,
                    "chosen": chosen.text,
                    "rejected": rejected.text,
                    "chosen_cut": chosen.cut,
                    "rejected_cut": rejected.cut,
                    "dimension": name,
                    "kind": kind,
                    "judge": judge,
                    "margin": round(margin, 4),
                }
                if status == "unseen":
                    wording = rng.choice(entry.all_wordings)
                    out.append({"id": f"{pid}/{name}", "preference": wording, "holdout": "dimension", **common})
                    continue
                out.append({"id": f"{pid}/{name}", "preference": rng.choice(entry.train_wordings), **common})
                out += _group_pairs(common, pid, Chosen(chosen, form, prompt, name, source), config)
                if heldout:
                    wording = rng.choice(entry.heldout_wordings)
                    out.append({"id": f"{pid}/{name}/wording", "preference": wording, "holdout": "wording", **common})
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    per_dim = {
        name: {
            "by_contrast": c["contrast"],
            "by_rewrite": c["rewrite"],
            "judge": DIMENSION_JUDGES[name].judge,
            "prompts_with_pair": c["pairs"],
            "prompts_without_pair": c["no pair"],
            "mean_margin": round(c["margin"] / c["pairs"], 3) if c["pairs"] else 0.0,
        }
        for name, c in stats.items()
    }
    return SynthReport(
        prompts=len({r["prompt_id"] for r in records}),
        pool_answers=len(records),
        removed=dict(removed),
        pairs=sum(1 for r in out if "holdout" not in r),
        heldout_pairs=dict(Counter(r["holdout"] for r in out if "holdout" in r)),
        per_dimension=per_dim,
        cut_answers=sum(answer.cut for answer in kept.values()),
        **{f"{group.replace('-', '_')}_pairs": sum(r["dimension"] == group for r in out) for group in REPAIR_GROUPS},
    )


def synthesize_pairs(
    pad: PAD,
    prompts: Sequence[PromptRow],
    output: str | Path,
    config: SynthConfig | None = None,
    progress: bool = True,
) -> SynthReport:
    """Generate (or resume) the pool beside ``output`` (``NAME.pool.jsonl``), then build the pairs; the report
    is written beside it too (``NAME.report.json``)."""
    config = config or SynthConfig()
    output = Path(output)
    pool = output.with_name(output.stem + ".pool.jsonl")
    generate_pool(pad, prompts, pool, config, progress)
    report = build_pairs(pad, pool, output, config, progress)
    payload = {"config": asdict(config), **asdict(report)}
    atomic_write_text(output.with_name(output.stem + ".report.json"), json.dumps(payload, indent=2) + "\n")
    return report
