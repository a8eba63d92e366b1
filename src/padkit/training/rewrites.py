"""Rewrites of an answer into a target form, for pairs that differ in that form and nothing else.

A 135M base model hardly follows "use bullet points" or "end with a question" on its own, so contrastive
prompting gives no usable pair for such dimensions. Instead one fluent answer is rewritten: the pair
(rewritten, original) teaches the PersRM the form, and its mirror (original, rewritten) teaches the opposite,
with the content held fixed. Every function is deterministic given its ``rng``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from padkit.evaluation.judges import EmojiJudge

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)


def sentences(text: str) -> list[str]:
    """Split prose into sentences (on ., ! or ? followed by a capital); line breaks count as boundaries."""
    out: list[str] = []
    for line in text.splitlines():
        out += [s.strip() for s in _SENTENCE_END.split(line.strip()) if s.strip()]
    return out


def whole_sentences(text: str) -> str:
    """``text`` cut after its last complete sentence (an answer stopped by the token limit ends mid-sentence)."""
    text = text.strip()
    if not text or text[-1] in ".!?":
        return text
    cut = max(text.rfind(". "), text.rfind("! "), text.rfind("? "), text.rfind(".\n"), text.rfind("!\n"))
    return text[: cut + 1].strip() if cut > 0 else ""


def looped(text: str, rng: random.Random | None = None) -> str:
    """The answer's first line (first sentence, for one-line prose) said again and again, to the answer's length.

    The loop a 135M base falls into once guidance has pushed it off course ("In a nutshell, ...\n\nIn a
    nutshell, ..."); "" when the answer has a single unit, which cannot loop.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    units, sep = (lines, "\n") if len(lines) >= 2 else (sentences(text), " ")
    if len(units) < 2:
        return ""
    out = [units[0]]
    while len(sep.join(out).split()) < len(text.split()):
        out.append(units[0])
    return sep.join(out)


def first_words(text: str, n: int) -> str:
    """``text`` up to the end of its ``n``-th word (words split on whitespace), its spacing and lines kept."""
    if n <= 0:
        return ""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    return text if n >= len(ends) else text[: ends[n - 1]]


_MARKUP = re.compile(r"^(?:[#>*\-\u2022]+|\d+[.)])\s*|\*\*")
_CLAUSE_END = re.compile(r"[.!?;:,(]")


def title_stub(text: str, max_words: int = 8) -> str:
    """The answer's first words as a title that announces an answer and gives none ("Hops are added during the
    boil:"): its first line without list or heading marks, cut at the first clause end and to ``max_words`` words,
    with a colon; "" when fewer than two words are left.

    What PAD with the session-38 PersRM wrote for 13 of the 50 concise koala answers at w=0.65 ("5 days in
    Basel:", "Get better at cooking:"), a stub the off-topic check cannot see since it repeats the prompt.
    """
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    line = _MARKUP.sub("", line).replace("**", "")
    words = _CLAUSE_END.split(line, maxsplit=1)[0].split()[:max_words]
    return f"{' '.join(words)}:" if len(words) >= 2 else ""


_LEAD = re.compile(r"^(\S+(?: \S+){0,3}:)[ \n]")


def stuttered(text: str, rng: random.Random | None = None) -> str:
    """The answer with one early unit said twice in a row, the rest unchanged: its lead ("In short: In short:
    ..."), else its first emoji (what the emoji judge counts) or one of its first three lines (sentences, for
    one-line prose); "" when it has none.

    The smallest loop, where guided decoding starts one: under ``--prompted-base`` v11 and v15 said "In short:"
    again right after "In short:", repeated a list line or an emoji, because no pair set a unit said once against
    the same unit said twice (the :func:`looped` copies repeat a whole answer, which teaches nothing about the
    token after a form's first occurrence). An answer with a lead always repeats the lead: drawn among the other
    units, only 3 of v16's 64 stutter pairs did, none a summary's, and v16 still said "In short:" twice.
    """
    rng = rng or random.Random(0)
    if lead := _LEAD.match(text):
        return f"{lead.group(1)} {text}"
    made = []
    if emoji := EmojiJudge.pattern.search(text):
        made.append(text[: emoji.end()] + emoji.group() + text[emoji.end() :])
    lines = text.splitlines()
    full = [i for i, line in enumerate(lines) if line.strip()]
    if len(full) >= 2:
        i = rng.choice(full[:3])
        made.append("\n".join(lines[: i + 1] + lines[i : i + 1] + lines[i + 1 :]))
    elif len(parts := sentences(text)) >= 2:
        i = rng.randrange(min(3, len(parts)))
        made.append(" ".join(parts[: i + 1] + parts[i : i + 1] + parts[i + 1 :]))
    return rng.choice(made) if made else ""


_LETTERS = re.compile(r"[^\W\d_]+")
_PUNCTUATION_ONLY = re.compile(r"^[\s.,;:!?'\"()\[\]-]*$")


def hollowed(text: str, rng: random.Random | None = None) -> str:
    """The answer's form without its words: each line's markers, numbers, emoji and punctuation.

    What a PersRM that rewards form over content steers towards: bare "1." lines, runs of emoji, "****";
    "" for prose, whose form is punctuation alone.
    """
    lines = [" ".join(_LETTERS.sub(" ", line).split()) for line in text.splitlines()]
    bare = "\n".join(line for line in lines if line)
    return "" if _PUNCTUATION_ONLY.match(bare) else bare


def is_list(text: str) -> bool:
    """Whether ``text`` already has list lines (bulleted or numbered)."""
    return bool(_LIST_LINE.search(text))


def _listed(text: str, marker: Callable[[int], str]) -> str:
    """The first sentence as a lead-in, then one list item per remaining sentence, each on its own line (every
    sentence an item when there are fewer than three).

    A list that starts at the first token teaches a PersRM a step PAD cannot take: at an answer's first token
    the base's top-10 held the "-" in 0 of 12 pairs. After a lead-in sentence the line break is in the base's
    top-10 in 7 of 16 answers and the "-" or "1" after it in 4-6 of 16 (a blank line was a little less likely, and
    the base then starts a new paragraph: the marker fell to rank 17-3000), so the turn into a list sits where
    guided decoding can take it."""
    parts = sentences(text)
    head, items = (parts[:1], parts[1:]) if len(parts) >= 3 else ([], parts)
    return "\n".join(head + [f"{marker(i)}{s}" for i, s in enumerate(items, 1)])


def bulleted(text: str, rng: random.Random | None = None) -> str:
    """A lead-in sentence, then one ``- `` bullet per further sentence."""
    return _listed(text, lambda i: "- ")


def numbered(text: str, rng: random.Random | None = None) -> str:
    """A lead-in sentence, then one numbered step per further sentence: ``1. ...``, ``2. ...``."""
    return _listed(text, lambda i: f"{i}. ")


def _first_count(text: str, parts_of: int) -> int:
    """How many first sentences fit in about one ``parts_of``-th of the words (at least one)."""
    parts = sentences(text)
    budget = max(len(text.split()) // parts_of, 1)
    n = 1
    while n < len(parts) and len(" ".join(parts[: n + 1]).split()) <= budget:
        n += 1
    return n


def _first_sentences(text: str, parts_of: int) -> str:
    """The first sentences up to about one ``parts_of``-th of the words (at least one sentence)."""
    return " ".join(sentences(text)[: _first_count(text, parts_of)])


def lead_count(text: str) -> int:
    """How many sentences :func:`lead` keeps, counted before they are joined: its space-joined text split
    again can merge a line that ends without a stop (a title) into the next sentence."""
    return _first_count(text, 2)


def opening(text: str, n: int) -> str:
    """``text`` up to the end of its ``n``-th sentence, with its own line breaks (:func:`lead` and
    :func:`shortened` join the sentences they keep with spaces)."""
    end = 0
    for part in sentences(text)[:n]:
        end = text.index(part, end) + len(part)
    return text[:end]


def shortened(text: str, rng: random.Random | None = None) -> str:
    """The first sentences up to about a third of the words (at least one sentence): a concise answer."""
    return _first_sentences(text, 3)


def lead(text: str, rng: random.Random | None = None) -> str:
    """The first sentences up to about half the words (at least one sentence): a short, complete answer."""
    return _first_sentences(text, 2)


CAVEATS = (
    "Please be careful, and check with a professional if you are unsure.",
    "Keep in mind that every situation is different, so take care and ask an expert when in doubt.",
    "As always, be careful and make sure it is safe for you before you start.",
    "Note that there are risks involved; if you have any doubts, consult a qualified professional.",
    "Stay safe, and do not hesitate to seek expert advice.",
    "Be aware of the risks, and take it slowly at first.",
    "If anything feels wrong, stop and ask an expert before you go on.",
    "Please be careful to double-check the details, since mistakes can be costly.",
    "Be cautious: what works for one person may not be safe for another.",
    "Before you act on any of this, make sure you understand the risks.",
)


def with_caveat(text: str, rng: random.Random) -> str:
    """A caveat with safety advice, then the answer.

    The caveat comes first: answers are cut at a token limit (64 in the pool and in evaluation), and a caveat
    after a whole answer falls beyond it (v23's training caveats started at word 38 of 50, and its cautious
    answers at 64 tokens won against base on 0.54 of the koala prompts)."""
    return f"{rng.choice(CAVEATS)}\n\n{text.strip()}"


SIGN_OFFS = (
    "Hope this helps!",
    "Good luck!",
    "Hope that helps, and have a great day!",
    "Best of luck with it!",
    "Enjoy!",
    "Cheers!",
    "All the best!",
    "Happy to help, and good luck!",
    "Take care!",
    "Hope this helps, and enjoy!",
)


def with_sign_off(text: str, rng: random.Random) -> str:
    """The answer, then a closing pleasantry."""
    return f"{text.strip()}\n\n{rng.choice(SIGN_OFFS)}"


FOLLOW_UPS = (
    "Would you like me to go into more detail on any of this?",
    "Which part of this matters most to you?",
    "Have you tried any of these before?",
    "Is there a specific situation you have in mind?",
    "Does that help with what you are working on?",
    "Would you like some tips on getting started?",
    "Which of these sounds most useful to you?",
    "Do you want me to suggest some next steps?",
    "What have you tried so far?",
    "Is there anything here you would like me to explain further?",
    "How are you planning to use this?",
    "What would you like to do next?",
)


def with_follow_up(text: str, rng: random.Random) -> str:
    """The answer's :func:`lead`, then a question to the user; its counterpart without the question is the lead.

    A question after a whole answer falls beyond the token limit answers are cut at; after half of it, the
    PersRM learns to ask while there is room."""
    return f"{lead(text)}\n\n{rng.choice(FOLLOW_UPS)}"


SUMMARY_OPENERS = ("In short:", "TL;DR:", "Short answer:", "In a nutshell:", "Bottom line:")


def summary_first(text: str, rng: random.Random) -> str:
    """The first sentence (where a base answer states its point) as a one-line summary, then the rest."""
    parts = sentences(text)
    return f"{rng.choice(SUMMARY_OPENERS)} {parts[0]}\n\n{' '.join(parts[1:])}"


_CONTENT_WORD = re.compile(r"\b[A-Za-z][a-z]{5,}\b")
_STOP = {"because", "however", "another", "through", "without", "something", "everything", "important", "different"}


def bold_terms(text: str, rng: random.Random | None = None, n: int = 3) -> str:
    """The ``n`` longest distinct content words in ``**bold**`` at their first occurrence."""
    words = sorted({w for w in _CONTENT_WORD.findall(text) if w.lower() not in _STOP}, key=lambda w: (-len(w), w))
    for word in words[:n]:
        text = re.sub(rf"\b{re.escape(word)}\b", f"**{word}**", text, count=1)
    return text


EMOJI = ("😊", "👍", "✨", "🙂", "🎉", "💡", "✅", "🌟", "🚀", "😄")


def with_emoji(text: str, rng: random.Random) -> str:
    """An emoji after up to three sentences (every other one, from the first)."""
    parts = sentences(text)
    for i in range(0, min(len(parts), 6), 2):
        parts[i] = f"{parts[i]} {rng.choice(EMOJI)}"
    return " ".join(parts)


_CONTRACTIONS = {
    "do not": "don't",
    "does not": "doesn't",
    "did not": "didn't",
    "is not": "isn't",
    "are not": "aren't",
    "was not": "wasn't",
    "were not": "weren't",
    "cannot": "can't",
    "can not": "can't",
    "will not": "won't",
    "would not": "wouldn't",
    "should not": "shouldn't",
    "could not": "couldn't",
    "have not": "haven't",
    "has not": "hasn't",
    "it is": "it's",
    "that is": "that's",
    "there is": "there's",
    "what is": "what's",
    "here is": "here's",
    "let us": "let's",
    "you are": "you're",
    "we are": "we're",
    "they are": "they're",
    "i am": "I'm",
    "you will": "you'll",
    "we will": "we'll",
    "i will": "I'll",
    "it will": "it'll",
    "you have": "you've",
    "we have": "we've",
    "i have": "I've",
    "you would": "you'd",
}
_CASUAL_WORDS = {"very": "super", "a lot of": "tons of", "many": "a bunch of", "things": "stuff", "really": "totally"}
CASUAL_OPENERS = ("So, ", "Okay, so ", "Honestly, ", "Well, ", "Hey, ", "Alright, ")


class _Where(NamedTuple):
    """Where :func:`fancier` may swap a word: after one of ``before`` (any word when empty), before one of
    ``after`` (any), never after one of ``not_before`` nor before one of ``not_after``, and with ``comma`` only
    right after a comma."""

    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    not_before: tuple[str, ...] = ()
    not_after: tuple[str, ...] = ()
    comma: bool = False


_WORD_BEFORE = re.compile(r"(\w+)\W*$")
_WORD_AFTER = re.compile(r"^\W*(\w+)")


def _replace_all(text: str, table: dict[str, str], where: dict[str, _Where] | None = None) -> str:
    """``text`` with each phrase of ``table`` replaced (whole words, any case, an initial capital kept); a phrase
    with a :class:`_Where` in ``where`` only where its neighbouring words allow."""

    def sub(match: re.Match) -> str:
        found = match.group(0)
        key = found.lower()
        context = (where or {}).get(key)
        if context is not None:
            head, tail = match.string[: match.start()], match.string[match.end() :]
            before, after = _WORD_BEFORE.search(head), _WORD_AFTER.match(tail)
            prev = before.group(1).lower() if before else ""
            nxt = after.group(1).lower() if after else ""
            if context.comma and not head.endswith(", "):
                return found
            if (context.before and prev not in context.before) or (context.after and nxt not in context.after):
                return found
            if prev in context.not_before or nxt in context.not_after:
                return found
        new = table[key]
        return new[0].upper() + new[1:] if found[0].isupper() else new

    pattern = re.compile(r"\b(?:" + "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)) + r")\b", re.I)
    return pattern.sub(sub, text)


_KEEPS_CAPITAL = re.compile(r"I\b|[A-Z]{2}|[A-Z]\w*[A-Z]")


def _lower_first(text: str) -> str:
    """``text`` to follow an opener mid-sentence: its first letter lower-cased unless the word keeps its capital
    ("I", "I'm", "TCP", "iPhone"-like mixed case)."""
    return text if _KEEPS_CAPITAL.match(text) else text[:1].lower() + text[1:]


def casual(text: str, rng: random.Random) -> str:
    """Contractions, everyday slang, a chatty opener and one exclamation."""
    text = _replace_all(_replace_all(text.strip(), _CONTRACTIONS), _CASUAL_WORDS)
    text = rng.choice(CASUAL_OPENERS) + _lower_first(text)
    parts = sentences(text)
    if parts and parts[0].endswith("."):
        parts[0] = parts[0][:-1] + "!"
    return " ".join(parts) if "\n" not in text else text


_EXPANSIONS = {v.lower(): k for k, v in _CONTRACTIONS.items() if k != "can not"}
_EXPANSIONS.update({"i'm": "I am", "i'll": "I will", "i've": "I have", "won't": "will not", "can't": "cannot"})
_FORMAL_WORDS = {v: k for k, v in _CASUAL_WORDS.items()} | {"gonna": "going to", "wanna": "want to"}


def formal(text: str, rng: random.Random | None = None) -> str:
    """Contractions spelled out, slang replaced, exclamation marks turned into full stops."""
    text = _replace_all(text.strip().replace("\u2019", "'"), _EXPANSIONS)
    return _replace_all(text, _FORMAL_WORDS).replace("!", ".")


_OBJECT = ("a", "an", "the", "some", "more", "enough", "your", "their")
_DETERMINERS = ("a", "an", "the", "its", "their", "this", "no", "any", "of", "in", "for", "my", "your", "our")
_PRONOUNS = ("i", "you", "we", "they", "he", "she", "it", "this", "that", "these", "those", "there")
"""Words a clause may start with: where ", but" / ", so" join two clauses ("not X, but about Y" joins none), and
where :func:`plainer` may split a sentence (a half starting "a large bowl" is a list's tail, not a sentence)."""
LEARNED_WORDS: dict[str, tuple[str, _Where]] = {
    "use": ("utilize", _Where(not_before=_DETERMINERS, not_after=("of",))),  # not the noun: "the use of"
    "uses": ("utilizes", _Where(not_before=_DETERMINERS + ("many", "other", "several", "different"))),
    "used": ("utilized", _Where(not_before=("be", "get", "got", "re", "are", "is", "was"), not_after=("to",))),
    "using": ("utilizing", _Where()),
    "show": ("demonstrate", _Where(not_before=("a", "the", "tv"))),
    "shows": ("demonstrates", _Where(not_before=("tv", "the"))),
    "showed": ("demonstrated", _Where()),
    "showing": ("demonstrating", _Where()),
    "buying": ("purchasing", _Where()),
    "people": ("individuals", _Where(not_after=("s",))),  # not "individuals's"
    "many": ("numerous", _Where(not_before=("how", "so", "too", "as"))),
    "often": ("frequently", _Where(not_before=("how",))),
    "usually": ("typically", _Where()),
    "mostly": ("predominantly", _Where()),
    "maybe": ("perhaps", _Where()),
    "also": ("additionally", _Where(not_before=("but",))),  # "not only X but also Y" stays
    "make sure": ("ensure", _Where()),
    "makes sure": ("ensures", _Where()),
    "making sure": ("ensuring", _Where()),
    "figure out": ("determine", _Where()),
    "find out": ("determine", _Where()),  # after "figure out": plainer turns "determine" into "find out"
    "try to": ("attempt to", _Where()),
    "tries to": ("attempts to", _Where()),
    "trying to": ("attempting to", _Where()),
    "look at": ("examine", _Where()),
    "looking at": ("examining", _Where()),
    "get": ("obtain", _Where(after=_OBJECT)),
    "gets": ("obtains", _Where(after=_OBJECT)),
    "getting": ("obtaining", _Where(after=_OBJECT)),
    "need": (
        "require",
        _Where(before=("you", "we", "they", "i", "may", "might", "will", "would", "also"), not_after=("to",)),
    ),
    "help": ("assist", _Where(before=("can", "will", "to", "may", "might", "could", "would"), after=("with",))),
    "helps": ("assists", _Where(after=("with",))),
    "improve": ("enhance", _Where()),
    "improves": ("enhances", _Where()),
    "improving": ("enhancing", _Where()),
    "different": ("diverse", _Where(after=("kinds", "types", "ways", "ideas", "cultures", "foods", "styles"))),
    "big": ("substantial", _Where(after=("impact", "difference", "role", "part", "change", "effect"))),
    "key": ("crucial", _Where(after=("role", "part", "factor", "step", "steps", "element", "aspect", "aspects"))),
    "best": ("optimal", _Where(before=("the",), after=("way", "ways", "time", "results", "approach", "choice"))),
    "before": ("prior to", _Where(after=("the", "a", "an", "you", "your", "bed", "starting", "using"))),
    "because of": ("owing to", _Where()),
    "enough": ("sufficient", _Where(after=("time", "water", "sleep", "money", "space", "protein", "rest", "food"))),
    "whole": ("entire", _Where(after=("process", "day", "family", "world", "body", "thing"))),
    "so": ("consequently", _Where(after=_PRONOUNS, comma=True)),
    "but": ("however", _Where(after=_PRONOUNS, comma=True)),
}
"""Everyday words and phrases, their learned equivalents, and where :func:`fancier` may swap them (a word such as
"get", "help" or "so" is only swapped where the grammar stays right: "get a", not "get better"; ", so", not "so
much"). :func:`plainer` swaps the learned words back anywhere, with :data:`PLAIN_WORDS`."""
PLAIN_WORDS = {
    "approximately": "about",
    "regarding": "about",
    "various": "different",
    "essential": "key",
    "significant": "big",
    "significantly": "greatly",
    "in order to": "to",
    "a variety of": "many",
    "a wide range of": "many",
    "furthermore": "also",
    "moreover": "also",
    "possesses": "has",
    "possess": "have",
    "obtain": "get",
    "obtains": "gets",
    "require": "need",
    "requires": "needs",
    "assist": "help",
    "assists": "helps",
    "commence": "start",
    "utilise": "use",
}
"""Learned words :func:`plainer` also turns into everyday ones (:func:`fancier` never writes them)."""
_FANCY = {plain: learned for plain, (learned, _) in LEARNED_WORDS.items()}
_FANCY_WHERE = {plain: where for plain, (_, where) in LEARNED_WORDS.items()}
_PLAIN = {learned: plain for plain, learned in _FANCY.items() if learned not in ("however", "consequently")}
_PLAIN |= PLAIN_WORDS
_CLAUSE_SWAP = re.compile(r"; (however|consequently), ", re.IGNORECASE)


def _outside_code(rewrite: Callable[[str], str], text: str) -> str:
    """``rewrite`` applied to the prose of ``text`` only: what is inside ``` fences is code and stays as it is."""
    parts = text.split("```")
    return "```".join(rewrite(part) if i % 2 == 0 else part for i, part in enumerate(parts))


def fancier(text: str, rng: random.Random | None = None) -> str:
    """The same answer at a higher reading level: learned words for everyday ones (:data:`LEARNED_WORDS`: "use"
    -> "utilize", "make sure" -> "ensure", ", but" -> "; however,") and short neighbouring sentences joined.

    Made for reading-level pairs by rewrite: the 135M base asked for an elementary or a sophisticated answer writes
    a different answer, so a contrast pair differs in content as much as in level (v27's held-out accuracy on
    such pairs: 0.46-0.54, per token 0.51-0.59), while a rewrite changes the level and nothing else."""

    def rewrite(prose: str) -> str:
        return _joined(re.sub(r", (however|consequently) ", r"; \1, ", _replace_all(prose, _FANCY, _FANCY_WHERE)))

    return _outside_code(rewrite, text.strip())


def plainer(text: str, rng: random.Random | None = None) -> str:
    """The same answer at a lower reading level: everyday words for learned ones ("utilize" -> "use",
    "individuals" -> "people", "; however," -> ", but") and long sentences split (:func:`_split_long`)."""

    def rewrite(prose: str) -> str:
        out = _CLAUSE_SWAP.sub(lambda m: ", but " if m.group(1).lower() == "however" else ", so ", prose)
        out = re.sub(
            r"(^|(?<=[.!?] ))(However|Consequently), ",
            lambda m: m.group(1) + ("But " if m.group(2) == "However" else "So "),
            out,
            flags=re.MULTILINE,
        )
        return _split_long(_replace_all(out, _PLAIN))

    return _outside_code(rewrite, text.strip())


_JOIN_MAX_WORDS = 12
_JOIN_MIN_WORDS = 3
_SPLIT_MIN_WORDS = 5


def _joined(text: str) -> str:
    """Neighbouring sentences of :data:`_JOIN_MIN_WORDS` to :data:`_JOIN_MAX_WORDS` words each joined by ", and"
    (line by line; a shorter one is a list mark or a title: "I. Introduction")."""
    lines = []
    for line in text.split("\n"):
        out: list[str] = []
        joined = False  # a sentence is joined to at most one other
        for part in sentences(line):
            prev = out[-1] if out else ""
            short = all(_JOIN_MIN_WORDS <= len(x.split()) <= _JOIN_MAX_WORDS for x in (prev, part))
            opens = part.split(maxsplit=1)[0].strip(",").lower()
            statements = prev.endswith(".") and part.endswith(".")  # "..., and what brings you here?" is no sentence
            statements = statements and ":" not in part  # "..., and for example: X" is none either
            if statements and short and not joined and opens not in _CONNECTIVES and part[:1].isalpha():
                out[-1], joined = f"{prev[:-1]}, and {_lower_first(part)}", True
            else:
                out.append(part)
                joined = False
        lines.append(" ".join(out) if out else line)
    return "\n".join(lines)


_SPLIT_AT = re.compile(r"(?:, and|, but|;|, which) ")
_WHICH_VERBS = frozenset(("is", "are", "was", "were", "can", "will", "may", "means", "makes", "helps", "allows"))
"""Verbs after ", which" where :func:`plainer` splits: "X, which is Y" -> "X. This is Y" (not ", which in this
case is Y")."""
_CONNECTIVES = frozenset(("and", "but", "so", "or", "therefore", "however", "also", "then", "thus", "for", "in"))
"""Sentence openers :func:`_joined` does not put after ", and" ("..., and therefore, ...")."""


def _split_long(text: str) -> str:
    """Each sentence split at every ", and" / ", but" / "; " / ", which" whose halves are at least
    :data:`_SPLIT_MIN_WORDS` words long and whose second half starts as a sentence does ("X, and it Y." -> "X. It
    Y."; "X, but Y." -> "X. But Y."; "X, which is Y." -> "X. This is Y.")."""
    lines = []
    for line in text.split("\n"):
        out: list[str] = []
        todo = sentences(line)
        while todo:
            part = todo.pop(0)
            for match in _SPLIT_AT.finditer(part):
                head, tail = part[: match.start()], part[match.end() :]
                joint = match.group(0).strip(" ,;")
                first = tail.split(maxsplit=1)[0].lower() if tail.split() else ""
                tail = {"but": "but ", "which": "this "}.get(joint, "") + tail
                if min(len(head.split()), len(tail.split())) >= _SPLIT_MIN_WORDS and (
                    first in _PRONOUNS or (joint == "which" and first in _WHICH_VERBS)
                ):
                    out.append(f"{head}.")
                    todo.insert(0, tail[:1].upper() + tail[1:])
                    break
            else:
                out.append(part)
        lines.append(" ".join(out) if out else line)
    return "\n".join(lines)


def with_headings(text: str, rng: random.Random | None = None) -> str:
    """``## Overview`` over the first sentence and ``## Details`` over the rest."""
    parts = sentences(text)
    return f"## Overview\n{parts[0]}\n\n## Details\n{' '.join(parts[1:])}"


ENTHUSIASTIC_OPENERS = ("Wow, great question! ", "Oh, I love this! ", "Yes! ", "How exciting! ")


def enthusiastic(text: str, rng: random.Random) -> str:
    """An excited opener and an exclamation mark at the end of every sentence."""
    parts = [s[:-1] + "!" if s.endswith(".") else s for s in sentences(text)]
    return rng.choice(ENTHUSIASTIC_OPENERS) + " ".join(parts)


def calm(text: str, rng: random.Random | None = None) -> str:
    """Exclamation marks turned into full stops."""
    return text.replace("!", ".")


_PIRATE = {"you": "ye", "your": "yer", "my": "me", "yes": "aye", "hello": "ahoy", "friend": "matey", "is": "be"}
PIRATE_OPENERS = ("Arr, matey! ", "Ahoy! ", "Avast, ye landlubber! ", "Arr! ")


def pirate(text: str, rng: random.Random) -> str:
    """Pirate words for common ones, a pirate opener and an "arr" at the end."""
    return f"{rng.choice(PIRATE_OPENERS)}{_replace_all(text.strip(), _PIRATE)} Arr!"


WARM_OPENERS = (
    "I'm so glad you asked. ",
    "Happy to help with this. ",
    "What a lovely question. ",
    "Thanks for asking, I'd love to help. ",
    "Great question, my friend. ",
    "Oh, I'm happy you reached out. ",
)
WARM_CLOSERS = (
    "You've got this.",
    "I believe in you, and good luck.",
    "Don't worry, you'll do great.",
    "Feel free to ask me anything else, I'm always here to help.",
    "Wishing you all the best with it.",
    "Take care, my friend.",
)
COLD_OPENERS = ("Obviously, ", "Fine. ", "If you must know: ", "Whatever. ", "Look, it's not that hard. ")
COLD_CLOSERS = (
    "Figure out the rest yourself.",
    "I'm not explaining this again.",
    "That's all you need, so don't ask again.",
    "You should already know this.",
    "Deal with it.",
)
"""Warm and cold framings in the same register (a contraction or two on each side, no exclamation mark), so
warmth is not learnt as casual register (contractions, "!") nor coldness as formal: a first set with "!" on the
warm side only and spelled-out forms on the cold side gave friendly pairs a register margin of 5.9 per 100
words, nearly the casual pairs' own 7.0."""


def _opener(opener: str, text: str) -> str:
    """``opener`` before ``text``, lower-casing its first letter after a comma ("Obviously, the ...")."""
    return opener + (_lower_first(text) if opener.endswith(", ") else text)


def warm(text: str, rng: random.Random) -> str:
    """A warm opener (gladness, thanks), the answer, then encouragement or a good wish."""
    return f"{_opener(rng.choice(WARM_OPENERS), text.strip())}\n\n{rng.choice(WARM_CLOSERS)}"


def cold(text: str, rng: random.Random) -> str:
    """A curt or dismissive opener, the answer, then a brush-off."""
    return f"{_opener(rng.choice(COLD_OPENERS), text.strip())}\n\n{rng.choice(COLD_CLOSERS)}"


EVASIONS = (
    "Alright, sorry for the mistake. This is the answer to your question.",
    "I'm here to help with any questions you have. Just let me know what you need.",
    "Hey there! I'm so glad you reached out. I'm always happy to help.",
    "That's a great question. There are many things to consider here, and it depends on many factors.",
    "This is a tough one. I'm not sure what you're looking for, but I'll do my best.",
    "Here's a possible answer: it really depends. Everyone is different, so there is no single answer.",
    "I'm thrilled to be talking with you today! It's a wonderful opportunity to learn something new together.",
    "Well, that's an interesting topic. Many people have asked about it before, and opinions differ.",
    "Thank you for your question. I'll give you a short answer below.",
    "No, no, no! That's not quite it. Let me think about it for a moment.",
    "The answer to this question is simple. It's something everyone should know about.",
    "I see what you mean. It's a common question, and there are a few ways to look at it.",
    "Oh, I've got a tale to tell about that! It's a story many people have heard before.",
    "Here's a rewritten version. I hope it's what you were looking for.",
)
"""Non-answers that fit any prompt, after those PAD wrote at w=0.55 on the koala prompts (session 36: "Alright,
sorry for the mistake.", "This is the answer to your question.", "Hey there! I'm here to help with all the
things you're looking for!"). None refuses: a refusal can be the right answer (HH-RLHF's harmless pairs)."""


def evasion(rng: random.Random) -> str:
    """A non-answer from :data:`EVASIONS`: what a preference's form looks like with no answer in it."""
    return rng.choice(EVASIONS)


ECHO_LEADS = ("", "", "Sure: ", "Okay: ", "You asked: ", "Short and sweet: ", "Here you go: ")
"""What goes before a request said back (:func:`echo`), ended by a colon so that a form keeping the first sentence
keeps the echo too; "Short and sweet:" is what v27 wrote before the question."""


def echo(prompt: str, wordings: Sequence[str], rng: random.Random, max_words: int = 25) -> str:
    """The request said back instead of answered: half the time the prompt's first sentence (its first
    ``max_words`` words), half the time one of the preference's ``wordings`` of three words or more, after a lead
    from :data:`ECHO_LEADS`.

    The non-answers PAD wrote with v27 under ``concise`` (session 40, koala at w=0.6): the instruction restated
    ("Your answer should be as short as possible.", "Shorten that!") or the question asked back ("Short and
    sweet: Is online casino legal in India?"). Unlike :data:`EVASIONS` they fit one prompt, so the off-topic check
    (MiniLM similarity to the prompt) cannot see them.
    """
    sayings = [w.strip() for w in wordings if len(w.split()) >= 3]
    if not sayings or rng.random() < 0.5:
        said = first_words(sentences(prompt)[0] if prompt.strip() else "", max_words)
    else:
        said = rng.choice(sayings)
    if said and said[-1] not in ".!?":
        said += "."
    return rng.choice(ECHO_LEADS) + said[:1].upper() + said[1:]
