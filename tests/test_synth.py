"""Synthesized pairs: the judges, the rewrites, the pool filters, pair building, and resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from padkit import PAD
from padkit.errors import PadkitError
from padkit.evaluation import judges as J
from padkit.jsonio import iter_jsonl
from padkit.preferences.catalog import CATALOG, dimension_pairs
from padkit.prompts import PromptRow, read_prompts
from padkit.training import rewrites
from padkit.training.data import is_heldout, read_pairs
from padkit.training.synth import (
    BARE_CLOSE,
    EARLY_CLOSE,
    ECHO,
    EVASION,
    RECIPES,
    REPAIR_GROUPS,
    TITLE_STUB,
    Answer,
    Chosen,
    SynthConfig,
    build_pairs,
    distinct_trigrams,
    filter_pool,
    generate_pool,
)

TEXT = "Cats sleep a lot because they are predators. They do not need to hunt often. It is a way to save energy."


def test_judges_score_in_the_expected_direction():
    assert J.WordsJudge().score("", "one two, three.") == 3
    easy = "The cat sat on the mat. It was fun."
    hard = "Thermodynamic equilibrium necessitates comprehensive consideration of stochastic fluctuations."
    assert J.GradeJudge().score("", easy) < 3 < 12 < J.GradeJudge().score("", hard)
    assert J.SentimentJudge().score("", "I love this, you are wonderful!") > 0.5
    assert J.SentimentJudge().score("", "I hate this. You are awful and stupid.") < -0.5
    with pytest.raises(PadkitError, match="unknown judge"):
        J.get_judge("vibes")
    listed = "Three ways:\n- walk\n* swim\n1. run\n2) jump\nA - dash inside a line does not count."
    assert J.BulletsJudge().score("", listed) == 2 and J.NumberedJudge().score("", listed) == 2
    assert J.BulletsJudge().score("", "Plain prose, no list.") == J.NumberedJudge().score("", "In 1. place") == 0


def test_judges_keep_their_agreement_with_the_shipped_hand_labels():
    """``data/judges/labels.jsonl`` is the evidence that each judge measures its property (docs/results.md, "Judges
    against hand labels"): a change to a judge that moves its agreement, either way, must come with new figures."""
    path = Path(__file__).parents[1] / "data" / "judges" / "labels.jsonl"
    labels = [record for record, _ in iter_jsonl(path)]
    got = {name: (a.agreement, a.n) for name, a in J.judge_agreement(labels).items()}
    assert got == {
        "bold": (1.0, 5),
        "bullets": (0.9, 10),
        "caution": (0.963, 27),
        "exclaim": (0.6, 5),
        "follow-up": (0.9412, 17),
        "grade": (0.5, 10),
        "numbered": (1.0, 5),
        "pirate": (1.0, 17),
        "register": (0.9512, 41),
        "sentiment": (0.6, 15),
        "sign-off": (1.0, 38),
        "summary": (1.0, 5),
        "warmth": (0.8333, 36),
        "words": (1.0, 3),
    }


def test_judge_directions_can_be_stated():
    from padkit.evaluation.harness import EvalConfig

    assert J.split_direction("words:lower") == ("words", -1) and J.split_direction("rm:/x/y:higher") == ("rm:/x/y", 1)
    assert J.split_direction("rm:/x/y") == ("rm:/x/y", None)
    config = EvalConfig(preferences=("Answer in one short sentence.",), judges=("words:lower", "bullets"))
    assert config.judges_for("Answer in one short sentence.") == [("words", -1), ("bullets", 1)]
    assert EvalConfig(judges=("words",)).judges_for("concise") == [("words", -1)]  # the catalog's direction


@pytest.mark.parametrize(
    ("judge", "more", "less"),
    [
        ("register", "Hey, it's gonna be super easy! You'll love it.", "It is going to be easy. You will like it."),
        ("follow-up", "Cats sleep. Would you like to know more?", "Cats sleep. Why? Because they can."),
        ("summary", "In short: cats sleep.\n\nThey hunt at night.", "Cats sleep. In short, they hunt."),
        ("caution", "Be careful and consult a doctor; there are risks.", "Cats sleep all day."),
        ("bold", "Cats are **predators** that **sleep**.", "Cats are predators that sleep * a lot."),
        ("emoji", "Cats sleep 😊 a lot ✨", "Cats sleep :) a lot"),
        ("sign-off", "Cats sleep a lot.\n\nHope this helps!", "Cats sleep a lot, and I hope this helps them."),
        ("sign-off", "Enjoy your trip to Okinawa!\n\nBest,\nAlex", "Cats sleep.\n\nBest cats:\nAlex the cat wrote it"),
        ("sign-off", "Cats sleep a lot.\n\nHope you're having a great day!", "Cats sleep.\n\nI hope you know why."),
        ("sign-off", "Cats sleep a lot.\n\nJust let me know!", "Cats sleep.\n\nLet me know a cat: it is a long tale."),
        ("caution", "For your safety, wear gloves.", "Cash is a safety net, and safety standards matter."),
        ("headings", "## Overview\nCats sleep.", "Cats sleep. # is a hash."),
        ("exclaim", "Wow! Cats sleep!", "Cats sleep."),
        ("pirate", "Arr, matey, ye cats sleep a lot, aye.", "Your cats sleep a lot, yes."),
        (
            "pirate",
            "I've been a bit o' a chatty one, doin' fine, lads.",
            "I've been a bit chatty, doing fine, friends.",
        ),
        ("pirate", "I've heard it from many sailors, and a kraken too.", "Darwin's cabin is by the sea."),
        ("warmth", "I'm so glad you asked! Cats sleep a lot. You've got this!", "Cats sleep a lot."),
        ("warmth", "I'm sorry to hear that. Don't worry, my friend.", "The sleep cycle is a powerful tool."),
    ],
)
def test_marker_judges_tell_the_forms_apart(judge, more, less):
    j = J.get_judge(judge)
    assert j.score("", more) > j.score("", less) >= 0


def test_one_contraction_in_a_long_answer_is_a_register_difference_a_reader_sees():
    formal = "The method divides the problem into small elements and solves each of them in turn. " * 8
    casual = formal.replace("The method divides", "It's a method that divides", 1)
    words = len(casual.split())
    assert 100 < words < 200 and J.RegisterJudge().score("", formal) == 0
    label = {"judge": "register", "a": formal, "b": casual, "more": "b"}
    assert J.judge_agreement([label])["register"].agreement == 1.0
    assert J.judge_agreement([dict(label, b=formal, more="same")])["register"].agreement == 1.0


def test_relevance_judge_prefers_on_topic_answers():
    j = J.get_judge("relevance")
    on, off = j.scores(["Why do cats sleep so much?"] * 2, [TEXT, "The stock market closed higher on Tuesday."])
    assert on > 0.4 > off and abs(j.score("Why do cats sleep so much?", TEXT) - on) < 1e-5


def test_rewrites_make_the_target_form():
    rng = random.Random(0)
    assert rewrites.sentences(TEXT)[1] == "They do not need to hunt often."
    lead = "Cats sleep a lot because they are predators."
    assert rewrites.bulleted(TEXT) == f"{lead}\n- They do not need to hunt often.\n- It is a way to save energy."
    steps = ["1. They do not need to hunt often.", "2. It is a way to save energy."]
    assert rewrites.numbered(TEXT).splitlines() == [lead, *steps]
    assert rewrites.bulleted("Short one. Short two.") == "- Short one.\n- Short two."  # too short for a lead-in
    assert rewrites.shortened(TEXT) == "Cats sleep a lot because they are predators."
    four = "Cats nap. They hunt. They save energy. They sleep."
    assert (rewrites.lead(four), rewrites.shortened(four)) == ("Cats nap. They hunt.", "Cats nap.")  # a half, a third
    caveat, answer = rewrites.with_caveat(TEXT, rng).split("\n\n")
    assert caveat in rewrites.CAVEATS and answer == TEXT  # the caveat first, within any token limit
    lead, question = rewrites.with_follow_up(TEXT, rng).split("\n\n")
    assert lead == rewrites.lead(TEXT) and question in rewrites.FOLLOW_UPS
    assert rewrites.summary_first(TEXT, rng).split("\n\n")[0].endswith(": Cats sleep a lot because they are predators.")
    assert rewrites.bold_terms(TEXT) == TEXT.replace("predators", "**predators**").replace("energy", "**energy**")
    assert rewrites.casual(TEXT, rng).count("'") >= 2 and "do not" not in rewrites.casual(TEXT, rng)
    for seed in range(4):  # the answer after a casual opener starts mid-sentence, but "I" and acronyms keep capitals
        bodies = {t: rewrites.casual(t, random.Random(seed)) for t in ("I'm glad.", "TCP is fast.", "It is fine.")}
        opener = next(o for o in rewrites.CASUAL_OPENERS if bodies["It is fine."].startswith(o))
        assert [b[len(opener) :] for b in bodies.values()] == ["I'm glad!", "TCP is fast!", "it's fine!"]
    assert rewrites.formal("It's fine, don't worry!") == "It is fine, do not worry."
    assert rewrites.with_headings(TEXT).startswith("## Overview\nCats sleep")
    assert rewrites.calm("Wow! Fine!") == "Wow. Fine."
    assert rewrites.whole_sentences("One thing. Two things are cut") == "One thing."
    assert rewrites.whole_sentences("Only a fragment") == ""
    assert rewrites.is_list("Intro:\n1. a\n2. b") and not rewrites.is_list(TEXT)
    for make in (
        rewrites.with_emoji,
        rewrites.with_follow_up,
        rewrites.with_caveat,
        rewrites.with_sign_off,
        rewrites.warm,
        rewrites.cold,
    ):
        assert make(TEXT, random.Random(3)) == make(TEXT, random.Random(3)) != TEXT  # deterministic under a seed


def test_warmth_judge_counts_warm_phrases_against_cold_ones():
    warmth = J.WarmthJudge()
    assert warmth.score("", "Happy to help! Feel free to ask again, and good luck.") == 3
    assert warmth.score("", "Obviously, cats sleep. Figure out the rest yourself.") == -2
    assert warmth.score("", "A powerful, wonderful algorithm for great results.") == 0  # positive is not warm
    assert J.DIMENSION_JUDGES["friendly"] == J.DimensionJudge("warmth", +1)


def test_degenerate_rewrites_loop_the_first_line_or_keep_the_bare_form():
    listed = "Cats sleep a lot.\n- They hunt at night 😊\n- **Naps** save energy."
    assert rewrites.looped(listed) == "Cats sleep a lot.\nCats sleep a lot.\nCats sleep a lot.\nCats sleep a lot."
    assert rewrites.looped("Cats sleep. They hunt. Naps help.") == "Cats sleep. Cats sleep. Cats sleep."
    assert rewrites.looped("One sentence only.") == ""  # a single unit cannot loop
    assert rewrites.hollowed(listed) == ".\n- 😊\n- ** ** ."
    assert rewrites.hollowed("1. Boil water.\n2. Add 200 g pasta.") == "1. .\n2. 200 ."
    assert rewrites.hollowed(TEXT) == ""  # prose has no form besides punctuation


def test_stutter_rewrite_says_one_early_unit_twice_and_keeps_the_rest():
    summary = "In short: Cats sleep a lot.\n\nThey hunt at night. Naps save energy."
    made = {rewrites.stuttered(summary, random.Random(seed)) for seed in range(20)}
    assert made == {"In short: In short: Cats sleep a lot.\n\nThey hunt at night. Naps save energy."}  # the lead
    listed = "Cats sleep a lot.\n- They hunt 😊\n- Naps help.\n- Dens are warm."
    made = {rewrites.stuttered(listed, random.Random(seed)) for seed in range(30)}
    assert made == {
        "Cats sleep a lot.\n- They hunt 😊😊\n- Naps help.\n- Dens are warm.",  # the first emoji
        "Cats sleep a lot.\nCats sleep a lot.\n- They hunt 😊\n- Naps help.\n- Dens are warm.",
        "Cats sleep a lot.\n- They hunt 😊\n- They hunt 😊\n- Naps help.\n- Dens are warm.",
        "Cats sleep a lot.\n- They hunt 😊\n- Naps help.\n- Naps help.\n- Dens are warm.",
    }  # never the fourth line: a repeat past the first lines may fall beyond the trained length
    assert rewrites.stuttered("Cats sleep. They hunt.", random.Random(0)) in (
        "Cats sleep. Cats sleep. They hunt.",
        "Cats sleep. They hunt. They hunt.",
    )
    assert rewrites.stuttered("One sentence only.") == ""  # nothing to repeat without changing the whole answer


def test_first_words_keeps_spacing_and_lines():
    text = "In short: cats.\n\n- They hunt\n- Naps help."
    assert rewrites.first_words(text, 3) == "In short: cats."
    assert rewrites.first_words(text, 5) == "In short: cats.\n\n- They"
    assert rewrites.first_words(text, 99) == text and rewrites.first_words(text, 0) == ""


def test_warm_and_cold_rewrites_keep_the_answer():
    rng = random.Random(5)
    warm, cold = rewrites.warm(TEXT, rng), rewrites.cold(TEXT, random.Random(5))
    assert TEXT in warm and warm.split("\n\n")[-1] in rewrites.WARM_CLOSERS
    assert TEXT[1:] in cold and cold.split("\n\n")[-1] in rewrites.COLD_CLOSERS
    assert any(cold.startswith(o.strip()) for o in rewrites.COLD_OPENERS)
    register = J.get_judge("register")  # warmth is not taught as casual register, nor coldness as formal
    framings = [rewrites.warm(TEXT, random.Random(i)) for i in range(20)]
    framings_cold = [rewrites.cold(TEXT, random.Random(i)) for i in range(20)]
    gap = sum(register.score("", w) - register.score("", c) for w, c in zip(framings, framings_cold, strict=True)) / 20
    assert abs(gap) < 2.0, gap
    assert rewrites.cold("I think so.", random.Random(1)).count(" I think so.") == 1  # "I" keeps its capital


def test_every_recipe_moves_its_judge():
    for (first, _second), recipe in RECIPES.items():
        if recipe.rewrite is None:
            continue
        spec = J.DIMENSION_JUDGES[first]
        judge = J.get_judge(spec.judge)
        a, b = (fn(TEXT, random.Random(1)) for fn in recipe.rewrite)
        assert spec.direction * (judge.score("", a) - judge.score("", b)) > 0, (first, a, b)
    assert set(RECIPES) == set(dimension_pairs(True)) | set(dimension_pairs(False))


def test_reading_level_rewrites_change_words_and_sentences_not_content():
    text = (
        "Many people use a timer, and they make sure the water is hot enough. "
        "You can find out more about the method, but it takes a lot of practice to get right."
    )
    fancy, plain = rewrites.fancier(text), rewrites.plainer(text)
    assert fancy == (
        "Numerous individuals utilize a timer, and they ensure the water is hot enough. "
        "You can determine more about the method; however, it takes a lot of practice to get right."
    )
    assert plain == (
        "Many people use a timer. They make sure the water is hot enough. "
        "You can find out more about the method. But it takes a lot of practice to get right."
    )
    assert rewrites.plainer(fancy) == plain  # the same content at two levels: one is the other, plainer
    grade = J.get_judge("grade")
    assert grade.score("", fancy) - grade.score("", plain) > 3


@pytest.mark.parametrize(
    "text",
    [
        "You're used to it.",  # "used to" is not "utilized to"
        "How many people get better with practice?",  # "how many" and "get better" stay
        "It is so much fun to help you learn.",  # "so much" and "help you" (not "assist you learn") stay
        "I think the key is patience.",  # "key" only before a noun it qualifies: "a key step"
        "You will need to provide examples.",  # not "require to provide"
        "I am here to help. What brings you here tonight?",  # a question is not joined to a statement
        "The use of salt depends on people's tastes.",  # the noun "use"; not "individuals's"
        "It is not only cheap but also quick to make.",  # "but also" stays
        "The dough rests for an hour. For example: a bread dough.",  # no ", and for example:"
    ],
)
def test_fancier_swaps_a_word_only_where_the_grammar_stays_right(text):
    assert rewrites.fancier(text).replace("individuals", "people") == text


def test_reading_level_rewrites_leave_code_alone():
    text = "Use a loop here.\n```python\nuse = many_people()\n```\nMany people use it."
    assert (
        rewrites.fancier(text)
        == "Utilize a loop here.\n```python\nuse = many_people()\n```\nNumerous individuals utilize it."
    )
    assert rewrites.plainer(rewrites.fancier(text)) == text


def test_plainer_splits_only_where_the_second_half_is_a_sentence():
    listed = "You will need flour, sugar, eggs and milk, and a large bowl with a whisk for mixing."
    assert rewrites.plainer(listed) == listed  # "a large bowl ..." is a list's tail, not a sentence
    odd = "Take the largest numbers that are multiples of ten, which in this case is two million and six."
    assert rewrites.plainer(odd) == odd  # "This in this case is ..." would be no sentence
    which = "The oven must be preheated for ten minutes, which is the step most people forget when baking bread."
    assert rewrites.plainer(which) == (
        "The oven must be preheated for ten minutes. This is the step most people forget when baking bread."
    )


def test_reading_level_pairs_by_rewrite_hold_the_content_fixed(base_model, tokenizer, tmp_path):
    pad = PAD(base_model, tokenizer)
    prompts = {f"p{i}": f"Why do cats sleep so much, question {i}?" for i in range(4)}
    answers = ANSWERS | {
        "plain": "Many people use a timer, and they make sure the water is hot enough. You can find out more "
        "about the method, but it takes a lot of practice to get right."
    }
    pool = _pool(tmp_path, prompts, answers)
    loose = {"max_perplexity": 1e9, "min_relevance": -1.0, **NO_GROUP_PAIRS}
    build_pairs(pad, pool, tmp_path / "rewrite.jsonl", SynthConfig(**loose, reading_level="rewrite"))
    by_id = {r["id"]: r for r in map(json.loads, (tmp_path / "rewrite.jsonl").read_text().splitlines())}
    elementary, sophisticated = by_id["p0/elementary"], by_id["p0/sophisticated"]
    assert elementary["kind"] == "rewrite" and elementary["judge"] == "grade" and elementary["margin"] > 3
    assert elementary["chosen"] == rewrites.plainer(answers["plain"]) == sophisticated["rejected"]
    assert elementary["rejected"] == rewrites.fancier(answers["plain"]) == sophisticated["chosen"]
    build_pairs(
        pad, pool, tmp_path / "strict.jsonl", SynthConfig(**loose, reading_level="rewrite", min_rewrite_grade=50)
    )
    strict = {r["id"] for r in map(json.loads, (tmp_path / "strict.jsonl").read_text().splitlines())}
    assert "p0/elementary" not in strict and "p0/bulleted" in strict  # too small a gap makes no pair
    assert SynthConfig(min_rewrite_grade=50).rewrite_margin("grade") == 50
    assert SynthConfig(min_rewrite_grade=50).rewrite_margin(by_id["p0/bulleted"]["judge"]) == 0.0
    one_sentence = answers | {
        "plain": "Cats sleep for most of the day in warm places.",
        "sophisticated": answers["plain"],
    }
    (tmp_path / "other").mkdir()
    other = _pool(tmp_path / "other", prompts, one_sentence)
    build_pairs(pad, other, tmp_path / "other.jsonl", SynthConfig(**loose, reading_level="rewrite"))
    tried = {r["id"]: r for r in map(json.loads, (tmp_path / "other.jsonl").read_text().splitlines())}
    assert tried["p0/elementary"]["chosen"] == elementary["chosen"]  # one plain sentence: the next source
    assert "p0/bulleted" not in tried  # the other rewrites still take only the first source, as before
    build_pairs(pad, pool, tmp_path / "contrast.jsonl", SynthConfig(**loose))
    contrast = {r["id"]: r for r in map(json.loads, (tmp_path / "contrast.jsonl").read_text().splitlines())}
    assert contrast["p0/elementary"]["kind"] == "contrast"  # the default is the shipped pairs' contrast
    assert contrast["p0/bulleted"] == by_id["p0/bulleted"]  # the other directions are made as before
    with pytest.raises(PadkitError, match="unknown reading level 'vibes'; use one of contrast, rewrite"):
        SynthConfig(reading_level="vibes")


def test_distinct_trigrams_flags_loops():
    assert distinct_trigrams(TEXT) == 1.0
    assert distinct_trigrams("the cat sat " * 10) < 0.2


def _pool(tmp_path, prompts: dict[str, str], answers: dict[str, str], finish: dict[str, str] | None = None):
    path = tmp_path / "pool.jsonl"
    rows = [
        {"id": f"{pid}/{s}", "prompt_id": pid, "prompt": p, "source": s, "text": answers[s]}
        | ({"finish_reason": finish[s]} if finish else {})
        for pid, p in prompts.items()
        for s in answers
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


NO_GROUP_PAIRS = {group.fraction: 0.0 for group in REPAIR_GROUPS.values()}
"""SynthConfig fields that make no early-end, degenerate, stutter or evasion pairs: only the directions' own."""

ANSWERS = {
    "plain": TEXT + " Predators rest a great deal between meals",  # cut mid-sentence: the tail goes
    "elementary": "Cats sleep a lot. They are tired. They like naps.",
    "sophisticated": "Felines exhibit considerable somnolence, attributable to evolutionary predatory adaptations.",
    "friendly": "Great question, friend! Cats love sleeping, and it is wonderful and sweet. Enjoy your happy cat!",
    "unfriendly": "Obviously cats sleep. It is a stupid question and I hate answering it. Go away.",
}


def test_build_pairs_writes_both_directions_with_wordings(base_model, tokenizer, tmp_path):
    pad = PAD(base_model, tokenizer)
    prompts = {f"p{i}": f"Why do cats sleep so much, question {i}?" for i in range(12)}
    pool = _pool(tmp_path, prompts, ANSWERS)
    config = SynthConfig(max_perplexity=1e9, min_relevance=-1.0, **NO_GROUP_PAIRS)
    report = build_pairs(pad, pool, tmp_path / "pairs.jsonl", config)
    records = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    heldout_prompts = {p for p in prompts.values() if is_heldout(p, 0.2)}
    assert 0 < len(heldout_prompts) < len(prompts)
    trained = [r for r in records if "holdout" not in r]
    assert report.pairs == len(trained) == 24 * len(prompts)  # every trained direction on every prompt
    by_id = {r["id"]: r for r in trained}
    bullets, prose = by_id["p0/bulleted"], by_id["p0/prose"]
    assert bullets["chosen"] == prose["rejected"] and bullets["rejected"] == prose["chosen"]
    assert bullets["chosen"].startswith("Cats sleep a lot because they are predators.\n- ")
    assert bullets["kind"] == "rewrite"
    assert "Predators rest" not in prose["chosen"]  # cut to whole sentences
    assert by_id["p0/elementary"]["chosen"] == ANSWERS["elementary"] and by_id["p0/elementary"]["kind"] == "contrast"
    friendly = by_id["p0/friendly"]  # warmth is a rewrite of the plain answer: the same content, warm or cold
    assert friendly["kind"] == "rewrite" and friendly["judge"] == "warmth" and TEXT in friendly["chosen"]
    assert by_id["p0/unfriendly"]["chosen"] == friendly["rejected"]
    for r in trained:
        assert r["preference"] in CATALOG[r["dimension"]].train_wordings
    wording = [r for r in records if r.get("holdout") == "wording"]
    unseen = [r for r in records if r.get("holdout") == "dimension"]
    assert {r["prompt"] for r in wording} == {r["prompt"] for r in unseen} == heldout_prompts
    assert all(r["preference"] in CATALOG[r["dimension"]].heldout_wordings for r in wording)
    assert {r["dimension"] for r in unseen} == {d for pair in dimension_pairs(False) for d in pair}
    assert report.heldout_pairs == {"wording": len(wording), "dimension": len(unseen)}
    pairs = read_pairs(tmp_path / "pairs.jsonl")
    assert {p.holdout for p in pairs} == {None, "wording", "dimension"}
    assert pairs[0].dimension == records[0]["dimension"]

    again = build_pairs(pad, pool, tmp_path / "again.jsonl", config)  # deterministic under the seed
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "pairs.jsonl").read_text() and again == report
    build_pairs(pad, pool, tmp_path / "seed1.jsonl", SynthConfig(max_perplexity=1e9, min_relevance=-1.0, seed=1))
    assert (tmp_path / "seed1.jsonl").read_text() != (tmp_path / "pairs.jsonl").read_text()


def _built_with(base_model, tokenizer, tmp_path, group: str):
    """Pairs of 12 prompts built with ``group``'s share of directions at 0, at its default (0.25 for a group off by
    default) and at 1. Checks what every such group shares (none at 0, some at the default, every record of the
    full build counted, the other pairs untouched, a trained wording of a trained direction outside length, the
    share validated) and returns the full build's report, the group's records and the full build by id."""
    fraction = REPAIR_GROUPS[group].fraction
    pad = PAD(base_model, tokenizer)
    pool = _pool(tmp_path, {f"p{i}": f"Why do cats sleep so much, question {i}?" for i in range(12)}, ANSWERS)
    loose = {"max_perplexity": 1e9, "min_relevance": -1.0}
    none = build_pairs(pad, pool, tmp_path / "none.jsonl", SynthConfig(**loose, **{fraction: 0.0}))
    share = getattr(SynthConfig(), fraction) or 0.25
    some = build_pairs(pad, pool, tmp_path / "some.jsonl", SynthConfig(**loose, **{fraction: share}))
    every = build_pairs(pad, pool, tmp_path / "every.jsonl", SynthConfig(**loose, **{fraction: 1.0}))
    records = [json.loads(line) for line in (tmp_path / "every.jsonl").read_text().splitlines()]
    made = [r for r in records if r["dimension"] == group]
    count = f"{group.replace('-', '_')}_pairs"
    assert getattr(none, count) == 0 and getattr(every, count) == len(made) > 0
    plain = [json.loads(line) for line in (tmp_path / "none.jsonl").read_text().splitlines()]
    sharing = {name for name, repair in REPAIR_GROUPS.items() if repair.fraction == fraction}
    assert [r for r in records if r["dimension"] not in sharing] == plain  # the other pairs are untouched
    assert 0 < getattr(some, count) < getattr(every, count)  # the default share
    assert group in {p.group for p in read_pairs(tmp_path / "every.jsonl")}
    for r in made:
        assert r["preference"] in CATALOG[r["direction"]].train_wordings and "holdout" not in r
    directions = {r["direction"] for r in made}
    lengths = directions & {"concise", "detailed"}
    assert bool(lengths) == REPAIR_GROUPS[group].lengths  # length preferences may end early, and be short
    assert not directions & {d for pair in dimension_pairs(False) for d in pair}  # unseen ones are never trained
    with pytest.raises(PadkitError, match=fraction):
        SynthConfig(**{fraction: 1.5})
    return every, made, {r["id"]: r for r in records}


def test_early_end_pairs_set_an_answer_against_its_own_first_sentence(base_model, tokenizer, tmp_path):
    every, early, by_id = _built_with(base_model, tokenizer, tmp_path, "early-end")
    for r in early:
        source = by_id[r["id"].removesuffix("/early-end")]
        assert r["chosen"] == source["chosen"] and r["chosen_cut"] == source["chosen_cut"]
        assert r["rejected"] == rewrites.sentences(source["chosen"])[0] and source["chosen"].startswith(r["rejected"])
        assert r["rejected_cut"] is False  # the first sentence, ended: the end token decides the pair
    assert by_id["p0/bulleted/early-end"]["rejected"] == "Cats sleep a lot because they are predators."
    assert "p0/sophisticated/early-end" not in by_id  # its chosen answer is one sentence
    assert {"bulleted", "prose", "summary-first", "sign-off", "elementary"} <= {r["direction"] for r in early}


def test_degenerate_pairs_set_an_answer_against_its_loop_or_bare_form(base_model, tokenizer, tmp_path):
    every, bad, by_id = _built_with(base_model, tokenizer, tmp_path, "degenerate")
    for r in bad:
        source = by_id[r["id"].removesuffix("/degenerate")]
        assert r["chosen"] == source["chosen"] and r["chosen_cut"] is True and r["rejected_cut"] is True
        assert r["rejected"] in (rewrites.looped(source["chosen"]), rewrites.hollowed(source["chosen"]))
        assert r["rejected"]
    looped = {r["rejected"] == rewrites.looped(by_id[r["id"].removesuffix("/degenerate")]["chosen"]) for r in bad}
    assert looped == {True, False}  # both kinds are drawn
    bulleted = by_id["p0/bulleted/degenerate"]
    assert bulleted["rejected"] in (".\n- .\n- .", "\n".join([TEXT.split(". ")[0] + "."] * 3))
    assert {"bulleted", "numbered", "emoji", "bold"} <= {r["direction"] for r in bad}


def test_stutter_pairs_set_an_answer_against_itself_with_a_unit_said_twice(base_model, tokenizer, tmp_path):
    every, stutters, by_id = _built_with(base_model, tokenizer, tmp_path, "stutter")
    for r in stutters:
        source = by_id[r["id"].removesuffix("/stutter")]
        assert r["chosen"] == source["chosen"] and r["chosen_cut"] is True and r["rejected_cut"] is True
        words = len(source["chosen"].split())
        stuttered = {
            rewrites.first_words(rewrites.stuttered(source["chosen"], random.Random(seed)), words) for seed in range(50)
        }
        assert r["rejected"] in stuttered and r["rejected"] != r["chosen"]
        assert len(r["rejected"].split()) == words  # no side is longer: length does not decide the pair
    assert {"bulleted", "summary-first", "emoji", "elementary"} <= {r["direction"] for r in stutters}


def test_evasion_pairs_set_an_answer_against_its_form_around_a_non_answer(base_model, tokenizer, tmp_path):
    every, evasions, by_id = _built_with(base_model, tokenizer, tmp_path, EVASION)
    forms = {
        d: fn for pair, recipe in RECIPES.items() if recipe.rewrite for d, fn in zip(pair, recipe.rewrite, strict=True)
    }
    made: dict[str, set[str]] = {}  # every text each direction's form makes of the non-answers
    for r in evasions:
        source = by_id[r["id"].removesuffix("/evasion")]
        assert r["chosen"] == source["chosen"] and r["chosen_cut"] == r["rejected_cut"] == source["chosen_cut"]
        if r["direction"] not in made:
            form = forms.get(r["direction"], lambda text, rng: text)  # reading level: by contrast, no rewrite
            made[r["direction"]] = {form(e, random.Random(seed)) for e in rewrites.EVASIONS for seed in range(300)}
        assert r["rejected"] in made[r["direction"]] and "sleep" not in r["rejected"]
    by_direction = {r["direction"]: r for r in evasions}
    assert {"concise", "detailed", "sign-off", "bulleted"} <= set(by_direction)  # length directions too
    sign_off = by_direction["sign-off"]["rejected"]
    assert any(sign_off.endswith(s) for s in rewrites.SIGN_OFFS) and sign_off.split("\n\n")[0] in rewrites.EVASIONS
    assert by_direction["concise"]["rejected"] in {rewrites.shortened(e) for e in rewrites.EVASIONS}


def test_title_stub_pairs_set_an_answer_against_its_first_words_as_an_empty_title(base_model, tokenizer, tmp_path):
    every, stubs, by_id = _built_with(base_model, tokenizer, tmp_path, TITLE_STUB)
    assert SynthConfig().title_stub_fraction == 0.25  # the shipped pair file's share
    for r in stubs:
        source = by_id[r["id"].removesuffix("/title-stub")]
        assert r["chosen"] == source["chosen"] and r["chosen_cut"] == source["chosen_cut"]
        assert r["rejected"] == rewrites.title_stub(source["chosen"]) and r["rejected_cut"] is False
        assert r["rejected"].endswith(":") and source["chosen"].startswith(r["rejected"][:-1].split()[0])
        assert len(r["chosen"].split()) > len(r["rejected"].split()) + 2  # the answer says more than its title
    assert {"concise", "detailed"} & {r["direction"] for r in stubs}  # a title is shorter than a concise answer
    make = REPAIR_GROUPS[TITLE_STUB].make
    dear = Chosen(Answer("Dear [person name], thanks.", cut=False), str, "Write a letter.", "concise")
    assert make(dear, random.Random(0)) is None  # a title and a word
    long = Answer("Hops go in during the boil, early for bitterness.", cut=True)
    made = make(Chosen(long, str, "When do hops go in?", "concise"), random.Random(0))
    assert made == (long, Answer("Hops go in during the boil:", cut=False))


def test_echo_pairs_set_an_answer_against_its_form_around_the_request_said_back(base_model, tokenizer, tmp_path):
    every, echoes, by_id = _built_with(base_model, tokenizer, tmp_path, ECHO)
    forms = {
        d: fn for pair, recipe in RECIPES.items() if recipe.rewrite for d, fn in zip(pair, recipe.rewrite, strict=True)
    }
    said_back = {"prompt": 0, "wording": 0}
    keep_words = {"concise", "detailed", "elementary", "sophisticated", "sign-off", "follow-up", "bulleted", "numbered"}
    for r in echoes:
        source = by_id[r["id"].removesuffix("/echo")]
        assert r["chosen"] == source["chosen"] and r["chosen_cut"] == r["rejected_cut"] == source["chosen_cut"]
        assert "predators" not in r["rejected"]  # no answer in it
        if r["direction"] not in keep_words:  # forms that change words (register, voice, bold) are not traced back
            continue
        asked = "Why do cats sleep so much, question" in r["rejected"]
        wordings = [w for w in CATALOG[r["direction"]].train_wordings if len(w.split()) >= 3]
        restated = any(w[1:].rstrip(".!?") in r["rejected"] for w in wordings)
        assert asked != restated, (r["direction"], r["rejected"])  # one request said back
        said_back["prompt" if asked else "wording"] += 1
        if r["direction"] == "sign-off":
            assert any(r["rejected"].endswith(s) for s in rewrites.SIGN_OFFS)  # in the direction's own form
        if forms.get(r["direction"]) is rewrites.bulleted:
            assert r["rejected"].startswith("- ")
    assert min(said_back.values()) > 0.3 * sum(said_back.values())  # about half each
    assert {"concise", "detailed"} & {r["direction"] for r in echoes}  # the request said back is no concise answer


CLOSERS = {"sign-off": rewrites.SIGN_OFFS, "follow-up": rewrites.FOLLOW_UPS}
"""The closers of the directions judged at the answer's end, by direction."""


def test_early_close_pairs_set_the_first_sentences_closed_against_the_whole_answer(base_model, tokenizer, tmp_path):
    every, closes, by_id = _built_with(base_model, tokenizer, tmp_path, EARLY_CLOSE)
    assert {r["direction"] for r in closes} == set(CLOSERS)  # only the directions judged at the answer's end
    for r in closes:
        head, closer = r["chosen"].rsplit("\n\n", 1)
        assert closer in CLOSERS[r["direction"]] and r["chosen_cut"] is False  # closed, and ended there
        assert len(rewrites.sentences(head)) >= 2 and r["rejected"].startswith(head)  # an answer before it
        assert len(head.split()) < len(r["rejected"].split()) and r["rejected_cut"] is True  # the whole answer goes on
        assert not any(r["rejected"].endswith(c) for c in CLOSERS[r["direction"]])
    make = REPAIR_GROUPS[EARLY_CLOSE].make
    answer = Answer(TEXT, cut=True)
    plain = Chosen(answer, rewrites.bulleted, "Why do cats sleep?", "bulleted", answer)
    assert make(plain, random.Random(0)) is None  # a form that does not close the answer
    signed_text = rewrites.with_sign_off(TEXT, random.Random(0))
    signed = Chosen(Answer(signed_text, cut=True), rewrites.with_sign_off, "Why do cats sleep?", "sign-off")
    assert make(signed, random.Random(0)) is None  # found without a source: nothing to close early
    better, worse = make(signed._replace(source=answer), random.Random(0))
    two = "Cats sleep a lot because they are predators. They do not need to hunt often."
    assert worse == answer and better.text.startswith(two + "\n\n") and not better.cut
    lines = Answer("Cats sleep a lot.\n\nThey hunt at night.\nThey rest by day.", cut=True)
    better, worse = make(signed._replace(source=lines), random.Random(0))
    assert better.text.startswith("Cats sleep a lot.\n\nThey hunt at night.\n\n")  # its own line breaks kept
    rest = "They rest by day to keep their strength up for the long night ahead."
    titled = Answer(f"Sleeping cats\nCats sleep a lot. They hunt at night. {rest}", cut=True)
    better, worse = make(signed._replace(source=titled), random.Random(0))
    assert better.text.startswith("Sleeping cats\nCats sleep a lot. They hunt at night.\n\n")  # a title counts as one
    short = Answer("Cats sleep a lot. They hunt at night.", cut=True)
    assert make(signed._replace(source=short), random.Random(0)) is None  # two sentences: no answer goes on


def test_bare_close_pairs_set_the_closed_answer_against_the_closer_alone(base_model, tokenizer, tmp_path):
    every, bares, by_id = _built_with(base_model, tokenizer, tmp_path, BARE_CLOSE)
    assert {r["direction"] for r in bares} == set(CLOSERS)
    for r in bares:
        head, closer = r["chosen"].rsplit("\n\n", 1)
        assert r["rejected"] == closer and closer in CLOSERS[r["direction"]]  # the same closer, nothing before it
        assert len(rewrites.sentences(head)) >= 2 and not r["chosen_cut"] and not r["rejected_cut"]


def test_echo_says_back_the_prompt_or_a_wording_after_a_lead():
    wordings = ("concise", "Keep it short.", "I prefer brief answers.")
    prompt = "is online casino legal in India? I ask for a friend."
    said = {rewrites.echo(prompt, wordings, random.Random(seed)) for seed in range(200)}
    assert "Is online casino legal in India?" in said and "Short and sweet: Is online casino legal in India?" in said
    assert "I prefer brief answers." in said and "Sure: Keep it short." in said
    assert not any("concise" in s or "friend" in s for s in said)  # no one-word label, the first sentence alone
    assert {s for s in said if s.startswith("You asked:")} <= {
        "You asked: Is online casino legal in India?",
        "You asked: Keep it short.",
        "You asked: I prefer brief answers.",
    }
    long = rewrites.echo(" ".join(["word"] * 40), (), random.Random(0))  # no wording long enough: the prompt
    assert long.endswith("Word " + " ".join(["word"] * 24) + ".") and "word " * 25 not in long
    assert rewrites.echo("Hi", wordings, random.Random(1)) == rewrites.echo("Hi", wordings, random.Random(1))


def test_title_stub_is_the_first_words_of_the_first_line_without_marks():
    hops = "Hops are added during the boil, usually in stages."
    assert rewrites.title_stub(hops) == "Hops are added during the boil:"
    assert rewrites.title_stub("# Five days in Basel\nDay 1: the old town.") == "Five days in Basel:"
    assert rewrites.title_stub("1. Practice regularly, ideally every day.") == "Practice regularly:"
    assert rewrites.title_stub("In short: cook more often.") == "In short:"  # a lead alone is no answer either
    assert rewrites.title_stub("- **Microsoft**: pro-consumer") == ""  # one word is no title
    assert rewrites.title_stub("Yes.") == rewrites.title_stub("") == ""
    assert rewrites.title_stub(" ".join(["word"] * 20)) == " ".join(["word"] * 8) + ":"


def test_pairs_mark_answers_the_token_limit_cut(base_model, tokenizer, tmp_path):
    pad = PAD(base_model, tokenizer)
    prompts = {f"p{i}": f"Why do cats sleep so much, question {i}?" for i in range(4)}
    answers = dict(ANSWERS, plain=TEXT, elementary=ANSWERS["elementary"] + " Naps are")
    finish = dict.fromkeys(ANSWERS, "stop") | {"plain": "length"}  # plain hit the token limit
    config = SynthConfig(max_perplexity=1e9, min_relevance=-1.0, **NO_GROUP_PAIRS)
    report = build_pairs(pad, _pool(tmp_path, prompts, answers, finish), tmp_path / "pairs.jsonl", config)
    assert report.cut_answers == 2 * len(prompts)  # plain (the limit) and elementary (a part-sentence dropped)
    by_id = {r["id"]: r for r in map(json.loads, (tmp_path / "pairs.jsonl").read_text().splitlines())}
    names = ("bulleted", "prose", "concise", "detailed", "sign-off", "follow-up", "cautious", "friendly")
    names += ("unfriendly", "elementary")
    cut = {name: (by_id[f"p0/{name}"]["chosen_cut"], by_id[f"p0/{name}"]["rejected_cut"]) for name in names}
    assert cut["bulleted"] == cut["prose"] == (True, True)  # a rewrite of the cut plain answer stays cut
    assert cut["concise"] == (False, True) and cut["detailed"] == (True, False)  # the short answer is complete
    # closed by the rewrite, but opened with its cut source: the end token alone must not tell them apart
    assert cut["sign-off"] == (True, True)
    assert cut["cautious"] == (True, True)  # the caveat opens the answer, which stays cut
    assert cut["follow-up"] == (False, False)  # the answer's lead, with or without a question: both complete
    assert cut["friendly"] == cut["unfriendly"] == (False, False)  # warm and cold closers end both sides
    assert cut["elementary"] == (True, True)  # one side's part-sentence was dropped: both sides are opened
    uneven = {r["dimension"] for r in by_id.values() if r["chosen_cut"] != r["rejected_cut"]}
    assert uneven == {"concise", "detailed"}  # only the length pairs differ in ending
    pairs = read_pairs(tmp_path / "pairs.jsonl")
    marks = {(p.chosen_cut, p.rejected_cut) for p in pairs}
    assert marks == {(True, True), (False, True), (True, False), (False, False)}

    old_pool = _pool(tmp_path, prompts, answers)  # a pool without the field
    assert build_pairs(pad, old_pool, tmp_path / "old.jsonl", config).cut_answers == 5 * len(prompts)
    old = {r["id"]: r for r in map(json.loads, (tmp_path / "old.jsonl").read_text().splitlines())}
    assert old["p0/sophisticated"]["chosen_cut"] and old["p0/bulleted"]["rejected_cut"]  # unknown: cut


def test_filters_remove_and_count(base_model, tokenizer, tmp_path):
    pad = PAD(base_model, tokenizer)
    answers = dict(ANSWERS, unfriendly="word " * 30 + ".", friendly="Too short.")
    pool = _pool(tmp_path, {"p0": "Why do cats sleep so much?"}, answers)
    records = [json.loads(line) for line in pool.read_text().splitlines()]
    kept, removed = filter_pool(pad, records, SynthConfig(max_perplexity=1e9, min_relevance=-1.0))
    assert removed["repetition"] == 1 and removed["too short (after cutting to whole sentences)"] == 1
    assert set(kept) == {("p0", "plain"), ("p0", "elementary"), ("p0", "sophisticated")}
    kept, removed = filter_pool(pad, records, SynthConfig(max_perplexity=1.0, min_relevance=-1.0))
    assert kept == {} and removed["perplexity"] == 3  # a random tiny model is never that fluent
    kept, removed = filter_pool(pad, records, SynthConfig(max_perplexity=1e9, min_relevance=0.99))
    assert kept == {} and removed["relevance"] == 3


def test_pool_resumes_and_skips_long_prompts(base_model, tokenizer, tmp_path, monkeypatch):
    pad = PAD(base_model, tokenizer)
    rows = [PromptRow("a", "Tell me about cats."), PromptRow("b", "Why is the sky blue?"), PromptRow("c", "x " * 99)]
    config = SynthConfig(sources=("plain", "concise"), max_new_tokens=4, batch_size=3)
    path = tmp_path / "pool.jsonl"
    assert generate_pool(pad, rows, path, config, progress=False) == 4
    lines = path.read_text().splitlines()
    assert {json.loads(line)["prompt_id"] for line in lines} == {"a", "b"}
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])  # interrupted: a torn line
    calls = []
    real = pad.generate
    monkeypatch.setattr(pad, "generate", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    generate_pool(pad, rows, path, config, progress=False)
    assert calls == [2] and len(path.read_text().splitlines()) == 4


def test_config_rejects_unknown_sources():
    with pytest.raises(PadkitError, match="unknown pool source"):
        SynthConfig(sources=("plain", "vibes"))


def test_read_pairs_skips_rejected_synth_records(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b", "preference": "concise", "kept": k} for k in (True, False)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_pairs(path)) == 1
    path.write_text(json.dumps(dict(rows[0], holdout="sometimes")) + "\n")
    with pytest.raises(PadkitError, match="holdout"):
        read_pairs(path)


def test_read_prompts_open_questions_only(tmp_path):
    path = tmp_path / "si.jsonl"
    rows = [
        {"id": "t1", "instruction": "Rewrite this.", "instances": [{"input": "bad text", "output": ""}]},
        {"id": "t2", "instruction": "Suggest games.", "instances": [{"input": "", "output": ""}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r.prompt for r in read_prompts(path)] == ["Rewrite this.\n\nbad text", "Suggest games."]
    assert [r.id for r in read_prompts(path, with_input=False)] == ["t2"]


def test_profanity_and_reward_model_judges(tmp_path):
    import torch
    from conftest import make_tokenizer
    from transformers import GPT2Config, GPT2ForSequenceClassification

    assert J.ProfanityJudge().score("", "you are a stupid idiot") > 0.9 > 0.2 > J.ProfanityJudge().score("", "nice day")
    tok = make_tokenizer(chat_template=None)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, num_labels=1, pad_token_id=tok.pad_token_id
    )
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    judge = J.get_judge(f"rm:{tmp_path / 'rm'}")
    a, b = judge.score("Tell me about cats.", "cats are fun"), judge.score("Tell me about cats.", "why sky sea")
    assert a != b and a == judge.score("Tell me about cats.", "cats are fun")
    with pytest.raises(PadkitError, match="cannot load a reward model judge"):
        J.get_judge(f"rm:{tmp_path / 'missing'}")
