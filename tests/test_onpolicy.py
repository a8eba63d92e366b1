"""On-policy pairs from an eval run's answers (`padkit data from-eval`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from padkit.cli.main import app
from padkit.errors import PadkitError
from padkit.evaluation.harness import BASE_PREFERENCE, answer_key
from padkit.preferences.catalog import lookup
from padkit.prompts import read_prompts
from padkit.training.data import is_heldout, read_pairs
from padkit.training.onpolicy import (
    RULES,
    OnPolicyConfig,
    PromptSelectConfig,
    onpolicy_pairs,
    training_prompts,
    write_onpolicy_pairs,
)


def answer(method, pid, text, ppl, score, weight=0.0, preference="sign-off", judge="sign-off", **marks):
    return {
        "method": method,
        "preference": preference,
        "weight": weight,
        "prompt_id": pid,
        "text": text,
        "perplexity": ppl,
        "judge": {judge: score},
        "looping": marks.get("looping", False),
        "hollow": False,
        "off_topic": marks.get("off_topic", False),
        "ended": marks.get("ended", True),
    }


def write_run(path: Path, answers: list[dict]) -> Path:
    """An eval directory as `padkit eval` writes it: texts in generations.jsonl, marks in answers.jsonl."""
    path.mkdir()
    gens, marks, seen = [], [], set()
    for a in answers:
        pref = BASE_PREFERENCE if a["method"] == "base" else a["preference"]
        key = answer_key(a["method"], pref, a["weight"], a["prompt_id"])
        if key not in seen:
            seen.add(key)
            gens.append(
                {"id": key, "method": a["method"]}
                | {"preference": pref, "weight": a["weight"], "prompt_id": a["prompt_id"]}
                | {"prompt": f"question {a['prompt_id']}?", "text": a["text"]}
            )
        marks.append({k: v for k, v in a.items() if k not in ("text", "judge")} | {"judges": a["judge"]})
    (path / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens))
    (path / "answers.jsonl").write_text("".join(json.dumps(m) + "\n" for m in marks))
    return path


def sides(pairs: list[dict]) -> dict[str, str]:
    return {p["sides"]: p["kind"] for p in pairs}


def test_each_rule_picks_the_answer_worth_decoding(tmp_path):
    run = write_run(
        tmp_path / "run",
        [
            # prompt 0: PAD closes at little cost -> PAD over base; prompting is as plain as base at a higher cost,
            # which is no pair (neither carries the preference); PAD closes at the higher weight too, at a cost
            answer("base", "0", "An answer.", 2.0, 0.0),
            answer("prompt", "0", "An answer, prompted.", 3.2, 0.0),
            answer("pad", "0", "An answer. Hope this helps!", 2.4, 1.0, weight=0.6),
            answer("pad", "0", "Answer! Hope this helps!", 3.8, 1.0, weight=0.8),
            # prompt 1: PAD closes at twice base's perplexity (no pair with base) and loops at the higher weight,
            # closing thrice: the closing answer is the sound one to prefer, base's (no closer) is not
            answer("base", "1", "Another answer.", 2.0, 0.0),
            answer("pad", "1", "Another. Hope this helps!", 4.0, 1.0, weight=0.6),
            answer("pad", "1", "Hope Hope Hope", 1.5, 3.0, weight=0.8, looping=True),
        ],
    )
    pairs, report = onpolicy_pairs(run, OnPolicyConfig(pairs_per_prompt=5))
    by_prompt = {pid: sides([p for p in pairs if p["prompt"] == f"question {pid}?"]) for pid in "01"}
    assert by_prompt["0"] == {
        "pad@0.6 > base": "judge-at-little-cost",
        "pad@0.6 > prompt": "judge-at-little-cost",
        "pad@0.6 > pad@0.8": "same-judge-less-cost",
        "pad@0.8 > prompt": "judge-at-little-cost",
    }
    assert by_prompt["1"] == {"pad@0.6 > pad@0.8": "sound-over-bad"}
    assert report.pairs == 5 and report.by_rule == {
        "sound-over-bad": 1,
        "judge-at-little-cost": 3,
        "same-judge-less-cost": 1,
    }
    closing = next(p for p in pairs if p["sides"] == "pad@0.6 > base")
    assert (closing["chosen"], closing["rejected"]) == ("An answer. Hope this helps!", "An answer.")
    assert closing["margin"] == 1.0
    assert closing["perplexity"] == [2.4, 2.0] and closing["dimension"] == "onpolicy"


def test_rules_keep_only_the_named_reasons(tmp_path):
    """Without sound-over-bad a looping answer is on neither side, not the loser of a judge pair."""
    run = write_run(
        tmp_path / "run",
        [
            answer("base", "0", "An answer.", 2.0, 0.0),
            answer("prompt", "0", "An answer, prompted.", 3.2, 0.0),
            answer("pad", "0", "An answer. Hope this helps!", 2.4, 1.0, weight=0.6),
            answer("pad", "0", "Hope Hope Hope", 1.5, 0.0, weight=0.8, looping=True),
        ],
    )
    judged, report = onpolicy_pairs(run, OnPolicyConfig(pairs_per_prompt=9, rules=("judge-at-little-cost",)))
    assert sides(judged) == {"pad@0.6 > base": "judge-at-little-cost", "pad@0.6 > prompt": "judge-at-little-cost"}
    assert report.by_rule == {"sound-over-bad": 0, "judge-at-little-cost": 2, "same-judge-less-cost": 0}
    every, _ = onpolicy_pairs(run, OnPolicyConfig(pairs_per_prompt=9))
    assert {"pad@0.6 > pad@0.8", "base > pad@0.8"} <= set(sides(every)) and "base > prompt" not in sides(every)
    with pytest.raises(PadkitError, match="rules are some of sound-over-bad"):
        OnPolicyConfig(rules=("judge-at-little-cost", "fluent"))
    assert OnPolicyConfig(rules="judge-at-little-cost, same-judge-less-cost").rules == RULES[1:]
    with pytest.raises(PadkitError, match="got none"):
        OnPolicyConfig(rules=())


def test_sound_over_bad_keeps_the_preference(tmp_path):
    """A sound answer that misses the preference over a bad one that has it is no pair (it would teach missing
    the preference, not the evasion); over a bad one that misses it too, or when it carries the preference, it is."""
    run = write_run(
        tmp_path / "run",
        [
            answer("base", "0", "An answer.", 2.0, 0.0),
            answer("prompt", "0", "A plain answer.", 2.2, 0.0),
            answer("pad", "0", "I can't say. Cheers!", 2.5, 1.0, weight=0.6, off_topic=True),
            answer("pad", "0", "Hmm hmm hmm", 3.0, 0.0, weight=0.8, looping=True),
            answer("base", "1", "Another answer.", 2.0, 0.0),
            answer("pad", "1", "Another answer. Cheers!", 2.4, 1.0, weight=0.6),
            answer("pad", "1", "Cheers! Cheers! Cheers! Cheers!", 1.5, 4.0, weight=0.8, looping=True),
        ],
    )
    pairs, report = onpolicy_pairs(run, OnPolicyConfig(pairs_per_prompt=9, rules="sound-over-bad"))
    by_prompt = {pid: sides([p for p in pairs if p["prompt"] == f"question {pid}?"]) for pid in "01"}
    assert set(by_prompt["0"]) == {"base > pad@0.8", "prompt > pad@0.8"}  # not over the evasion that signs off
    assert set(by_prompt["1"]) == {"pad@0.6 > pad@0.8"}  # carries it, though it signs off less than the loop
    assert report.by_rule["sound-over-bad"] == 3


def test_less_cost_pairs_need_an_answer_that_carries_the_preference(tmp_path):
    """Two answers that both miss the preference are no pair: the cheaper one would teach missing it."""
    missing = [
        answer("base", "0", "An answer.", 2.0, 0.0),
        answer("pad", "0", "An answer, costly.", 3.5, 0.0, weight=0.6),
        answer("pad", "1", "Closes. Cheers!", 2.0, 1.0, weight=0.6),
        answer("pad", "1", "Closes dearly. Cheers!", 3.5, 1.0, weight=0.8),
    ]
    pairs, report = onpolicy_pairs(write_run(tmp_path / "run", missing), OnPolicyConfig(rules="same-judge-less-cost"))
    assert pairs == [] and report.by_rule["same-judge-less-cost"] == 0  # prompt 1 has no base answer to beat
    carried = missing + [answer("base", "1", "Closes.", 1.8, 0.0)]
    pairs, _ = onpolicy_pairs(write_run(tmp_path / "run2", carried), OnPolicyConfig(rules="same-judge-less-cost"))
    assert sides(pairs) == {"pad@0.6 > pad@0.8": "same-judge-less-cost"}
    assert pairs[0]["chosen"] == "Closes. Cheers!"


def test_a_judge_gap_under_its_spread_is_no_gain(tmp_path):
    """Word counts that differ by less than half their standard deviation are the same length."""
    words = [
        answer("base", str(i), f"base {i}", 2.0, w, preference="concise", judge="words")
        for i, w in enumerate((40.0, 80.0, 120.0))
    ]
    pads = [
        answer("pad", str(i), f"pad {i}", 2.1, w, weight=0.6, preference="concise", judge="words")
        for i, w in enumerate((36.0, 20.0, 118.0))
    ]
    pairs, _ = onpolicy_pairs(write_run(tmp_path / "run", words + pads))
    # spread of all six word counts ~40, half of it ~20: only prompt 1 (80 -> 20 words, lower is concise) moves
    assert [(p["prompt"], p["sides"], p["kind"]) for p in pairs] == [
        ("question 1?", "pad@0.6 > base", "judge-at-little-cost")
    ]


def test_pad_pairs_come_first_and_the_cap_holds(tmp_path):
    run = write_run(
        tmp_path / "run",
        [
            answer("base", "0", "plain", 2.0, 0.0),
            answer("prompt", "0", "prompted, fluent", 1.0, 0.0),
            answer("pad", "0", "Hope this helps!", 2.2, 1.0, weight=0.6),
        ],
    )
    pairs, _ = onpolicy_pairs(run, OnPolicyConfig(pairs_per_prompt=1))
    # prompt > base saves half the perplexity, but the pair about PAD's own answer is the one kept
    assert [p["sides"] for p in pairs] == ["pad@0.6 > base"]


def test_wordings_are_training_wordings_and_follow_the_seed(tmp_path):
    rows = []
    for i in range(12):
        rows += [answer("base", str(i), f"a{i}", 2.0, 0.0), answer("pad", str(i), f"b{i}", 2.0, 1.0, weight=0.6)]
    run = write_run(tmp_path / "run", rows)
    first = [p["preference"] for p in onpolicy_pairs(run)[0]]
    again = [p["preference"] for p in onpolicy_pairs(run)[0]]
    other = [p["preference"] for p in onpolicy_pairs(run, OnPolicyConfig(seed=1))[0]]
    assert first == again and first != other
    assert set(first) <= set(lookup("sign-off").train_wordings) and len(set(first)) > 2


def test_unseen_dimensions_stay_unseen_unless_asked(tmp_path):
    run = write_run(
        tmp_path / "run",
        [
            answer("base", "0", "plain", 2.0, 0.0, preference="pirate", judge="pirate"),
            answer("pad", "0", "Arr, matey!", 2.0, 2.0, weight=0.6, preference="pirate", judge="pirate"),
        ],
    )
    pairs, report = onpolicy_pairs(run)
    assert pairs == [] and report.unseen_cells == 1 and (report.answers, report.cells) == (2, 0)
    pairs, report = onpolicy_pairs(run, OnPolicyConfig(include_unseen=True))
    assert [p["sides"] for p in pairs] == ["pad@0.6 > base"] and report.unseen_cells == 0


def test_written_pairs_train_as_read_with_their_cut_sides(tmp_path):
    run = write_run(
        tmp_path / "run",
        [
            answer("base", "0", "plain and cut", 2.0, 0.0, ended=False),
            answer("pad", "0", "closed. Hope this helps!", 2.2, 1.0, weight=0.6),
        ],
    )
    out = tmp_path / "pairs.jsonl"
    report = write_onpolicy_pairs(run, out)
    (pair,) = read_pairs(out)
    assert report.pairs == 1 and pair.dimension == "onpolicy" and pair.prompt == "question 0?"
    assert (pair.chosen, pair.rejected, pair.chosen_cut, pair.rejected_cut) == (
        "closed. Hope this helps!",
        "plain and cut",
        False,
        True,
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(PadkitError, match="no generations.jsonl"):
        onpolicy_pairs(tmp_path)
    with pytest.raises(PadkitError, match="max_cost is a perplexity ratio"):
        OnPolicyConfig(max_cost=0.5)
    run = write_run(tmp_path / "run", [answer("base", "0", "plain", 2.0, 0.0)])
    (run / "answers.jsonl").write_text(json.dumps({**json.loads((run / "answers.jsonl").read_text()), "judges": {}}))
    with pytest.raises(PadkitError, match="no sign-off judge score"):
        onpolicy_pairs(run)
    (run / "answers.jsonl").write_text(json.dumps({"method": "base", "prompt_id": "0"}) + "\n")
    with pytest.raises(PadkitError, match="answers.jsonl:1: no preference, weight, perplexity"):
        onpolicy_pairs(run)
    (run / "generations.jsonl").write_text(json.dumps({"method": "base", "weight": 0}) + "\n")
    with pytest.raises(PadkitError, match="generations.jsonl:1: not a `padkit eval` record"):
        onpolicy_pairs(run)


def test_cli_writes_the_pairs_and_reports_them(tmp_path):
    run = write_run(
        tmp_path / "run",
        [answer("base", "0", "plain", 2.0, 0.0), answer("pad", "0", "Hope this helps!", 2.2, 1.0, weight=0.6)],
    )
    out = tmp_path / "pairs.jsonl"
    result = CliRunner().invoke(app, ["data", "from-eval", str(run), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["by_rule"]["judge-at-little-cost"] == 1
    assert len(out.read_text().splitlines()) == 1
    only = CliRunner().invoke(
        app, ["data", "from-eval", str(run), "-o", str(out), "--rules", "same-judge-less-cost", "--json"]
    )
    assert only.exit_code == 0 and json.loads(only.stdout)["pairs"] == 0 and out.read_text() == ""
    bad = CliRunner().invoke(app, ["data", "from-eval", str(run), "-o", str(out), "--max-cost", "0.9"])
    assert bad.exit_code != 0 and "max_cost" in bad.output


def test_preferences_pair_only_the_named_ones(tmp_path):
    """A continuation aimed at some preferences pairs their answers alone; a name the run lacks is an error."""
    answers = [answer("base", "0", "plain", 2.0, 0.0), answer("pad", "0", "Hope this helps!", 2.2, 1.0, weight=0.6)]
    answers += [
        answer("base", "0", "plain", 2.0, 0.0, preference="follow-up", judge="follow-up"),
        answer("pad", "0", "Plain. Do you?", 2.2, 1.0, weight=0.6, preference="follow-up", judge="follow-up"),
    ]
    run = write_run(tmp_path / "run", answers)
    pairs, report = onpolicy_pairs(run, OnPolicyConfig(preferences="follow-up"))
    assert [p["chosen"] for p in pairs] == ["Plain. Do you?"] and (report.cells, report.other_cells) == (1, 1)
    every, report = onpolicy_pairs(run)
    assert len(every) == 2 and report.other_cells == 0
    with pytest.raises(PadkitError, match=r"no answers under 'cautious'; the run's preferences: follow-up, sign-off"):
        onpolicy_pairs(run, OnPolicyConfig(preferences=("follow-up", "cautious")))
    out = tmp_path / "pairs.jsonl"
    cli = ["data", "from-eval", str(run), "-o", str(out), "--preferences", " sign-off,", "--json"]
    result = CliRunner().invoke(app, cli)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["other_cells"] == 1
    assert [json.loads(x)["chosen"] for x in out.read_text().splitlines()] == ["Hope this helps!"]
    with pytest.raises(PadkitError, match="names pirate, held out of training"):
        OnPolicyConfig(preferences="follow-up,pirate")
    assert OnPolicyConfig(preferences="pirate", include_unseen=True).preferences == ("pirate",)


def task(tid: str, instruction: str, extra: str = "") -> str:
    return json.dumps({"id": tid, "instruction": instruction, "instances": [{"input": extra, "output": ""}]})


def test_training_prompts_are_the_training_side_in_hash_order(tmp_path):
    import hashlib

    questions = [f"How do I look after plant number {i}?" for i in range(40)]
    a = tmp_path / "a.jsonl"
    a.write_text("\n".join([task(f"t{i}", q) for i, q in enumerate(questions)] + [task("in", "Sort these.", "3 1 2")]))
    rows, report = training_prompts([a], PromptSelectConfig(heldout_fraction=0.3))
    train_side = [q for q in questions if not is_heldout(q, 0.3)]
    assert 0 < report.heldout == 40 - len(train_side) + is_heldout("Sort these.\n\n3 1 2", 0.3)
    kept = [r.prompt for r in rows]
    assert sorted(kept) == sorted(train_side + ["Sort these.\n\n3 1 2"] * (not is_heldout("Sort these.\n\n3 1 2", 0.3)))
    assert kept == sorted(kept, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    assert {r.id for r in rows} <= {f"t{i}" for i in range(40)} | {"in"}

    opened, report = training_prompts([a], PromptSelectConfig(heldout_fraction=0.3, no_input=True, limit=5))
    assert (
        report.with_input == 1
        and report.kept == 5
        and [r.prompt for r in opened] == [p for p in kept if "\n" not in p][:5]
    )
    assert report.past_limit == len(train_side) - 5

    short, report = training_prompts([a], PromptSelectConfig(heldout_fraction=0.3, no_input=True, max_chars=35))
    assert report.length > 0 and all(len(r.prompt) <= 35 for r in short)
    assert len(short) == sum(len(q) <= 35 for q in train_side)


def test_training_prompts_keep_one_of_a_repeat_and_ids_apart(tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("What is a good name for a cat?\nWhy is the sky blue?\n")
    second.write_text("Why is the sky blue?\nHow do bees make honey?\n")
    rows, report = training_prompts([first, second], PromptSelectConfig(heldout_fraction=0.0))
    assert report.read == 4 and report.repeated == 1 and report.kept == 3
    ids = {r.prompt: r.id for r in rows}
    assert ids == {
        "What is a good name for a cat?": "0",
        "Why is the sky blue?": "1",
        "How do bees make honey?": "second:1",
    }


def test_training_prompts_bad_settings_and_nothing_left(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("Hi?\n")
    with pytest.raises(PadkitError, match="max_chars"):
        PromptSelectConfig(min_chars=50, max_chars=10)
    with pytest.raises(PadkitError, match="heldout_fraction"):
        PromptSelectConfig(heldout_fraction=1.0)
    with pytest.raises(PadkitError, match="no prompt left of 1: .*1 out of the length range"):
        training_prompts([f], PromptSelectConfig(heldout_fraction=0.0, min_chars=10))


def test_cli_writes_training_prompts_that_eval_reads(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("".join(f"Tell me one fact about the number {i}.\n" for i in range(30)))
    out = tmp_path / "sel" / "prompts.json"
    result = CliRunner().invoke(app, ["data", "prompts", "--prompts", str(f), "-o", str(out), "--limit", "4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kept"] == 4 and report["read"] == 30 and report["heldout"] + report["past_limit"] == 26
    rows = read_prompts(out)
    assert [r.prompt for r in rows] == [r.prompt for r in training_prompts([f], PromptSelectConfig(limit=4))[0]]
    assert all(not is_heldout(r.prompt, 0.2) for r in rows)
    bad = CliRunner().invoke(app, ["data", "prompts", "--prompts", str(f), "-o", str(out), "--limit", "0"])
    assert bad.exit_code != 0 and "limit must be at least 1" in bad.output


def test_a_row_has_an_input_exactly_when_one_is_appended(tmp_path):
    """`--no-input` drops the rows whose prompt got an input appended, and only those (odd instances included)."""
    path = tmp_path / "tasks.jsonl"
    records = [
        {"id": "a", "instruction": "Sort these.", "instances": [{"input": " 3, 1, 2 "}]},
        {"id": "b", "instruction": "Say hi.", "instances": [{"input": 5}]},
        {"id": "c", "instruction": "Say bye.", "instances": ["not a dict"]},
        {"id": "d", "instruction": "Be brief.", "instances": [{"input": "  "}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = read_prompts(path)
    assert [(r.id, r.prompt, r.has_input) for r in rows] == [
        ("a", "Sort these.\n\n3, 1, 2", True),
        ("b", "Say hi.", False),
        ("c", "Say bye.", False),
        ("d", "Be brief.", False),
    ]
    assert [r.id for r in read_prompts(path, with_input=False)] == ["b", "c", "d"]
