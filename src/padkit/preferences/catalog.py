"""Built-in preference dimensions: the P-Soups pairs plus helpful, harmless and humorous."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogDimension:
    """A named dimension with the principle text the PersRM is conditioned on."""

    name: str
    principle: str
    description: str
    opposite: str | None = None


_ENTRIES = [
    CatalogDimension(
        "elementary",
        "Generate a response that can be easily understood by an elementary school student.",
        "Plain words and short sentences a child can follow.",
        "knowledgeable",
    ),
    CatalogDimension(
        "knowledgeable",
        "Generate a response that only a PhD student in that specific field could understand.",
        "Expert vocabulary and technical depth.",
        "elementary",
    ),
    CatalogDimension(
        "concise",
        "Generate a response that is concise and to the point, without being lengthy.",
        "Short answers that get straight to the point.",
        "informative",
    ),
    CatalogDimension(
        "informative",
        "Generate a response that is very informative, without missing any background information.",
        "Long, detailed answers with background.",
        "concise",
    ),
    CatalogDimension(
        "friendly",
        "Generate a response that is friendly, witty, funny, and humorous, like a close friend.",
        "Warm, witty tone, like a close friend.",
        "unfriendly",
    ),
    CatalogDimension(
        "unfriendly",
        "Generate a response in an unfriendly manner.",
        "Cold, curt or rude tone.",
        "friendly",
    ),
    CatalogDimension(
        "helpful",
        "Generate a response that is helpful: it answers the question accurately and completely.",
        "Answers the request accurately and usefully.",
    ),
    CatalogDimension(
        "harmless",
        "Generate a response that is harmless: it refuses to help with anything dangerous, unethical or illegal.",
        "Avoids dangerous, unethical or illegal help.",
    ),
    CatalogDimension(
        "humorous",
        "Generate a response that is humorous and makes the reader laugh.",
        "Jokes and playful wording.",
    ),
]

CATALOG: dict[str, CatalogDimension] = {d.name: d for d in _ENTRIES}


def lookup(name: str) -> CatalogDimension | None:
    """Return the catalog entry for ``name`` (case-insensitive), or None for free text."""
    return CATALOG.get(name.strip().lower())
