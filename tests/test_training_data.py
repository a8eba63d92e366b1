"""Preference-pair readers and the deterministic split."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from padkit.errors import PadkitError
from padkit.training import PreferencePair, parse_hh_dialogue, read_hf_dataset, read_hh_rlhf, read_pairs, split_pairs

SHARED_HH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"
PAIR = {
    "prompt": "Tell me a joke.",
    "chosen": "Why did the cat sit on the laptop?",
    "rejected": "No.",
    "preference": "humorous",
}


def test_jsonl_and_json(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(json.dumps(PAIR) + "\n\n" + json.dumps(PAIR | {"preference": "concise"}) + "\n")
    pairs = read_pairs(jsonl)
    assert [p.preference for p in pairs] == ["humorous", "concise"]
    as_json = tmp_path / "pairs.json"
    as_json.write_text(json.dumps([PAIR]))
    assert read_pairs(as_json) == [PreferencePair(**PAIR)]
    no_pref = tmp_path / "nopref.jsonl"
    no_pref.write_text(json.dumps({k: v for k, v in PAIR.items() if k != "preference"}) + "\n")
    assert read_pairs(no_pref, preference="friendly")[0].preference == "friendly"
    cut = tmp_path / "cut.jsonl"
    cut.write_text(json.dumps(PAIR | {"rejected_cut": True}) + "\n")
    assert read_pairs(cut) == [PreferencePair(**PAIR, rejected_cut=True)]
    assert not read_pairs(as_json)[0].chosen_cut  # unmarked answers end where they end


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "pairs.jsonl:2: invalid JSON"),
        (json.dumps({"prompt": "x", "chosen": "a"}), "pairs.jsonl:2: missing field.*rejected"),
        (json.dumps(PAIR | {"chosen": ""}), "pairs.jsonl:2: field 'chosen'"),
        (json.dumps([1, 2]), "pairs.jsonl:2: expected an object"),
        (json.dumps(PAIR | {"chosen_cut": "yes"}), "pairs.jsonl:2: field 'chosen_cut' must be true or false"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIR) + "\n" + line + "\n")
    with pytest.raises(PadkitError, match=message):
        read_pairs(path)


def test_hh_dialogue_becomes_messages():
    text = (
        "\n\nHuman: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: I'm locked out.\n\nAssistant: Call a locksmith."
    )
    prompt, answer = parse_hh_dialogue(text)
    assert prompt == [
        {"role": "user", "content": "How do I pick a lock?"},
        {"role": "assistant", "content": "Why?"},
        {"role": "user", "content": "I'm locked out."},
    ]
    assert answer == "Call a locksmith."


def test_hh_file_with_a_broken_line(tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    good = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(good) + "\n" + json.dumps({"chosen": "no turns", "rejected": "x"}) + "\n")
    with pytest.raises(PadkitError, match="hh.jsonl.gz:2: a dialogue must start"):
        read_hh_rlhf(path)


@pytest.mark.skipif(not SHARED_HH.is_file(), reason="needs ../shared/data")
def test_real_hh_rlhf_file():
    pairs = read_hh_rlhf(SHARED_HH)
    assert 2000 < len(pairs) <= 2312
    assert all(p.preference == "harmless" and p.prompt[-1]["role"] == "user" for p in pairs)
    assert all(p.chosen != p.rejected for p in pairs)


def test_hf_dataset_with_column_mapping(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"q": "Tell me a joke.", "good": "Ha!", "bad": "No."}] * 3)
    ds.save_to_disk(str(tmp_path / "ds"))
    pairs = read_hf_dataset(
        str(tmp_path / "ds"), columns={"prompt": "q", "chosen": "good", "rejected": "bad"}, preference="humorous"
    )
    assert pairs == [PreferencePair("Tell me a joke.", "Ha!", "No.", "humorous")] * 3


def test_split_is_deterministic_and_keeps_prompts_on_one_side():
    pairs = [PreferencePair(f"prompt {i % 40}", "a", "b", d) for i in range(200) for d in ("concise", "friendly")]
    train, heldout = split_pairs(pairs, 0.25)
    assert (train, heldout) == split_pairs(list(pairs), 0.25)
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in heldout})
    assert 0.1 < len(heldout) / len(pairs) < 0.45
    assert split_pairs(pairs, 0.25, salt="other") != (train, heldout)


def test_spaced_sample_keeps_the_mix_and_groups_name_holdouts():
    from padkit.training.data import spaced_sample

    pairs = [PreferencePair(f"p{i}", "a", "b", w, d) for i in range(10) for w, d in (("Be brief.", "concise"),)]
    pairs += [PreferencePair(f"q{i}", "a", "b", "Keep it short.", "concise", "wording") for i in range(10)]
    sample = spaced_sample(pairs, 4)
    assert [p.prompt for p in sample] == ["p0", "p5", "q0", "q5"]
    # more than half of the pairs: still spread over all of them, not the first n (which would hold no q)
    assert [p.prompt for p in spaced_sample(pairs, 8)] == ["p0", "p2", "p5", "p7", "q0", "q2", "q5", "q7"]
    assert spaced_sample(pairs, None) is pairs and spaced_sample(pairs, 99) is pairs
    assert {p.group for p in sample} == {"concise", "concise (wording held out)"}
    assert PreferencePair("x", "a", "b", "terse").group == "terse"
    with pytest.raises(PadkitError, match="at least 1"):
        spaced_sample(pairs, 0)


def test_select_groups_keeps_a_report_group_and_names_the_known_ones():
    from padkit.training.data import select_groups

    pairs = [PreferencePair("p", "a b", "a", "Lead with the key point.", "early-end")]
    pairs += [
        PreferencePair("q", "a", "b", "Be brief.", "concise"),
        PreferencePair("r", "a", "b", "Tiny.", "concise", "wording"),
    ]
    assert select_groups(pairs, ["early-end"]) == pairs[:1]
    assert select_groups(pairs, ["concise (wording held out)", "concise"]) == pairs[1:]
    with pytest.raises(
        PadkitError, match=r"no pairs in group\(s\) bold; the data's groups: concise, concise \(wording"
    ):
        select_groups(pairs, ["concise", "bold"])
