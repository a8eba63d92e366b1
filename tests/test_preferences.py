"""Preference parsing, the catalog, and rendering into model input."""

from __future__ import annotations

import math

import pytest

from padkit import CATALOG, Dimension, Preference, render_input
from padkit.errors import PreferenceError
from padkit.preferences import GUIDELINES
from padkit.preferences.catalog import TRAIN_WORDINGS, dimension_pairs


def test_parse_single_catalog_name():
    pref = Preference.parse("concise")
    assert pref.dimensions == (Dimension("concise", 1.0),)
    assert pref.dimensions[0].principle == CATALOG["concise"].principle


def test_parse_weighted_string():
    pref = Preference.parse("concise=0.7, humorous = 0.3")
    assert [(d.text, d.weight) for d in pref.dimensions] == [("concise", 0.7), ("humorous", 0.3)]
    assert str(pref) == "concise=0.7,humorous=0.3"


def test_parse_lists_and_mappings():
    assert Preference.parse(["concise", ("friendly", 0.5)]).dimensions == (
        Dimension("concise", 1.0),
        Dimension("friendly", 0.5),
    )
    assert Preference.parse([{"dimension": "harmless", "weight": 2}]).dimensions == (Dimension("harmless", 2.0),)
    assert Preference.parse({"concise": 0.2}).dimensions == (Dimension("concise", 0.2),)
    assert Preference.parse("concise,humorous").dimensions == (Dimension("concise"), Dimension("humorous"))


def test_free_text_keeps_commas_and_becomes_a_principle():
    pref = Preference.parse("like a pirate, with lots of arrr")
    assert len(pref.dimensions) == 1
    assert pref.dimensions[0].principle == "like a pirate, with lots of arrr"
    assert Dimension("rhyming").principle == "Generate a response that follows this preference: rhyming."


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("concise=nan", "finite"),
        ("concise=inf", "finite"),
        ("concise=fast", "not a number"),
        ("concise=1,humorous", "expected TEXT=WEIGHT"),
        ([], "at least one dimension"),
        ([{"weight": 1}], "needs a 'dimension'"),
        (42, "cannot read a preference"),
    ],
)
def test_bad_preferences_are_named(spec, message):
    with pytest.raises(PreferenceError, match=message):
        Preference.parse(spec)


def test_catalog_has_twelve_trained_pairs_and_three_unseen_ones():
    trained, unseen = dimension_pairs(True), dimension_pairs(False)
    assert len(trained) == 12 and len(unseen) == 3
    assert ("concise", "detailed") in trained and ("pirate", "plain-voice") in unseen
    for a, b in trained + unseen:
        assert CATALOG[a].opposite == b and CATALOG[b].opposite == a
        assert CATALOG[a].trained == CATALOG[b].trained
    for name in ("helpful", "harmless", "humorous", "knowledgeable"):
        assert CATALOG[name].description


def test_every_paired_direction_has_train_and_heldout_wordings_and_a_judge():
    from padkit.evaluation.judges import DIMENSION_JUDGES

    for a, b in dimension_pairs(True) + dimension_pairs(False):
        for name in (a, b):
            entry = CATALOG[name]
            assert len(entry.train_wordings) == TRAIN_WORDINGS and len(entry.heldout_wordings) >= 2
            assert len(set(entry.all_wordings)) == len(entry.all_wordings) >= 10
            assert entry.all_wordings[0] == entry.principle
            assert name in DIMENSION_JUDGES


def test_prompt_principle_uses_opposites_for_negative_weights():
    text = Preference.parse("concise=-1,humorous=0.5").prompt_principle()
    assert CATALOG["detailed"].principle in text and CATALOG["humorous"].principle in text
    assert CATALOG["concise"].principle not in text
    assert not math.isnan(Preference.parse("concise").dimensions[0].weight)


def test_render_with_chat_template_uses_a_system_message(tokenizer):
    text = render_input(tokenizer, "Why is the sky blue?", "Be brief.")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    plain = render_input(tokenizer, "Why is the sky blue?")
    assert "You are a tiny assistant." in plain and "Be brief." not in plain


def test_render_paper_form(tokenizer):
    text = render_input(tokenizer, "Why?", "Be brief.", style="paper")
    assert f"{GUIDELINES}\n[Principles] Be brief.\n[Instruction] Why?" in text


def test_render_without_chat_template_is_plain_question_answer():
    from conftest import make_tokenizer

    tok = make_tokenizer(chat_template=None)
    assert render_input(tok, "Why?") == "Question: Why?\nAnswer:"
    assert render_input(tok, "Why?", "Be brief.").startswith(f"Question: {GUIDELINES}")


def test_a_free_text_or_unseen_preference_is_not_trained():
    assert Preference.parse("concise").trained and Preference.parse("concise=0.5,bulleted=0.5").trained
    assert not Preference.parse("pirate").trained and not Preference.parse("concise=0.5,pirate=0.5").trained
    assert not Preference.parse("Answer like a medieval bard.").trained
