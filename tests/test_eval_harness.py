"""The evaluation harness on a tiny model: generations, resume, judges, report files."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from padkit import PAD, PAPER_PAD, PADConfig
from padkit.decoding.sequence_reward import encode_response, response_logprobs
from padkit.errors import PadkitError
from padkit.evaluation.harness import (
    EvalConfig,
    EvalReport,
    ReportRow,
    bootstrap_ci,
    build_report,
    fluency,
    hollow,
    loops,
    off_topic,
    perplexity,
    run_eval,
    run_generations,
    win_outcome,
)
from padkit.preferences.render import render_input
from padkit.prompts import PromptRow

ROWS = [
    PromptRow("a", "Tell me about cats."),
    PromptRow("b", "Why is the sky blue?"),
    PromptRow("c", "How do planes fly?"),
]


def test_eval_runs_resumes_and_reports(base_model, rm_model, tokenizer, tmp_path, monkeypatch):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    pads = {"main": pad, "self": PAD(base_model, tokenizer)}
    config = EvalConfig(
        methods=("base", "prompt", "pad", "pad-self"),
        preferences=("concise",),
        weights=(1.0, 3.0),
        decoding=PADConfig(max_new_tokens=6),
        batch_size=2,
    )
    report = run_eval(pads, ROWS, tmp_path, config, progress=False)
    records = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 3 * (1 + 1 + 2 + 2)
    pad_w3 = next(r for r in records if r["method"] == "pad" and r["weight"] == 3.0 and r["prompt_id"] == "a")
    assert pad_w3["text"] == pad.generate(["Tell me about cats."], "concise", weight=3.0, max_new_tokens=6)[0].text

    rows = {(r.method, r.weight): r for r in report.rows}
    assert set(rows) == {
        ("base", 0.0),
        ("prompt", 0.0),
        ("pad", 1.0),
        ("pad", 3.0),
        ("pad-self", 1.0),
        ("pad-self", 3.0),
    }
    assert all(r.judge == "words" for r in report.rows) and rows[("base", 0.0)].win_rate is None
    for r in report.rows:
        assert r.ci_low <= r.mean <= r.ci_high and r.n == 3 and r.tokens_per_s > 0 and r.perplexity > 1
        assert r.mean == pytest.approx(
            sum(len(x["text"].split()) for x in records if x["method"] == r.method and x["weight"] == r.weight) / 3,
            abs=2,
        )
        assert r.win_rate is None or 0 <= r.win_rate <= 1
    same = [x for x in records if x["method"] == "prompt"]
    base = {x["prompt_id"]: x for x in records if x["method"] == "base"}
    from padkit.evaluation.judges import WordsJudge

    judge = WordsJudge()
    expected = (
        sum(
            1.0
            if judge.score("", x["text"]) < judge.score("", base[x["prompt_id"]]["text"])
            else 0.5
            if judge.score("", x["text"]) == judge.score("", base[x["prompt_id"]]["text"])
            else 0.0
            for x in same
        )
        / 3
    )
    assert rows[("prompt", 0.0)].win_rate == pytest.approx(expected)

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"method", "preference", "judge", "mean", "ci_low", "ci_high", "win_rate", "tokens_per_s"} <= set(
        summary["rows"][0]
    )
    assert rows[("prompt", 0.0)].shift is not None and rows[("base", 0.0)].shift is None
    assert (tmp_path / "report.md").read_text().count("\n") == 2 + len(report.rows)
    assert (tmp_path / "report.csv").read_text().startswith("method,preference,weight,judge,mean")
    assert (tmp_path / "bar_concise_words.png").stat().st_size > 1000
    header = (tmp_path / "comparison.md").read_text().splitlines()[0]
    assert (
        header == "| preference | judge | base | prompt | pad w=1 | pad w=3 | pad-self w=1 | pad-self w=3 | furthest |"
    )
    assert [r.method for r in report.rows] == ["base", "prompt", "pad", "pad", "pad-self", "pad-self"]  # as asked
    sections = [line for line in (tmp_path / "scorecard.md").read_text().splitlines() if line.startswith("## ")]
    assert sections == ["## prompt", "## pad w=1", "## pad w=3", "## pad-self w=1", "## pad-self w=3"]
    assert rows[("base", 0.0)].direction == -1  # concise: fewer words is more of it
    assert not list(tmp_path.glob(".*.tmp"))

    sheets = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(sheets) == len(records) and sheets == report.answers
    by_key = {(x["method"], x["weight"], x["prompt_id"]): x for x in records}
    for sheet in sheets:
        record = by_key[(sheet["method"], sheet["weight"], sheet["prompt_id"])]
        ended = record["finish_reason"] != "length"
        assert sheet["ended"] == ended and sheet["preference"] == "concise"
        assert sheet["judges"] == {"words": judge.score("", record["text"])}
        expected_ppl = perplexity(pad, [record["prompt"]], [record["text"]], [ended])[0]
        assert sheet["perplexity"] == pytest.approx(expected_ppl, rel=1e-4)
        context, answer = encode_response(tokenizer, render_input(tokenizer, record["prompt"]), record["text"])
        answer = answer if ended else answer[:-1]
        with torch.no_grad():
            logits = base_model(torch.tensor([context + answer])).logits[0, len(context) - 1 : -1]
        overridden = (logits.argmax(-1) != torch.tensor(answer)).sum().item()
        assert sheet["swapped"] == pytest.approx(overridden / max(len(answer), 1))
    pad_w3 = [s for s in sheets if s["method"] == "pad" and s["weight"] == 3.0]
    assert any(s["swapped"] > 0 for s in pad_w3)
    assert rows[("pad", 3.0)].swapped == pytest.approx(sum(s["swapped"] for s in pad_w3) / 3)
    pad_w3_ppl = sorted(s["perplexity"] for s in pad_w3)
    assert rows[("pad", 3.0)].perplexity == pad_w3_ppl[1]  # a row's perplexity is its answers' median

    calls = []
    monkeypatch.setattr(pad, "generate", lambda *a, **k: calls.append(a) or [])
    run_eval(pads, ROWS, tmp_path, config, progress=False)
    assert calls == []  # everything was already generated


def test_reuse_copies_the_answers_another_run_made_alike(base_model, rm_model, tokenizer, tmp_path, monkeypatch):
    config = EvalConfig(
        methods=("base", "prompt", "pad"), preferences=("concise",), decoding=PADConfig(max_new_tokens=5), batch_size=3
    )

    def pads(rm_name: str) -> dict[str, PAD]:
        return {
            "main": PAD(base_model, tokenizer, rm_model, tokenizer, base_name="tiny", rm_name=rm_name),
            "self": PAD(base_model, tokenizer, base_name="tiny"),
        }

    run_eval(pads("rm-a"), ROWS, tmp_path / "a", config, progress=False)
    theirs = {r["id"]: r for r in map(json.loads, (tmp_path / "a" / "generations.jsonl").read_text().splitlines())}
    made = []

    def run_with(rm_name: str, out: str, rows=ROWS, cfg=config) -> list[dict]:
        new = pads(rm_name)
        real = new["main"].generate
        monkeypatch.setattr(new["main"], "generate", lambda p, **k: made.append(k["config"].method) or real(p, **k))
        run_eval(new, rows, tmp_path / out, cfg, progress=False, reuse=[tmp_path / "a"])
        return [json.loads(line) for line in (tmp_path / out / "generations.jsonl").read_text().splitlines()]

    mine = run_with("rm-b", "b")  # another PersRM: base and prompting carry over, PAD is decoded again
    assert made == ["pad"]
    for r in mine:
        if r["method"] == "pad":
            assert "reused_from" not in r and r["settings"]["main"] == ["tiny", "rm-b"]
        else:
            assert r["text"] == theirs[r["id"]]["text"] and r["reused_from"] == str(tmp_path / "a")
            assert r["settings"] == {**theirs[r["id"]]["settings"], "main": ["tiny", "rm-b"]}
    made.clear()
    run_with("rm-b", "b")  # the copies resume as this run's own
    assert made == []
    assert {r["id"] for r in run_with("rm-a", "c")} == set(theirs) and made == []  # same PersRM: all of it
    made.clear()
    other_prompt = [PromptRow("a", "Tell me about dogs."), *ROWS[1:]]
    run_with("rm-b", "d", other_prompt)
    assert made == ["base", "prompt", "pad"]  # prompt id "a" now asks something else: decoded again, 1 each
    made.clear()
    shorter = run_with("rm-b", "e", cfg=dataclasses.replace(config, decoding=PADConfig(max_new_tokens=4)))
    assert made == ["base", "prompt", "pad"] and not any("reused_from" in r for r in shorter)
    torn = (tmp_path / "a" / "generations.jsonl").read_text() + '{"id": "pad|conc'
    (tmp_path / "a" / "generations.jsonl").write_text(torn)
    made.clear()
    run_with("rm-b", "g")
    assert made == ["pad"] and (tmp_path / "a" / "generations.jsonl").read_text() == torn  # read, never repaired
    with pytest.raises(PadkitError, match="not an eval run"):
        run_eval(pads("rm-b"), ROWS, tmp_path / "f", config, progress=False, reuse=[tmp_path / "nothing"])


def test_base_answers_are_made_once_and_judged_per_preference(base_model, tokenizer, tmp_path, monkeypatch):
    import padkit.evaluation.harness as harness

    pad = PAD(base_model, tokenizer)
    config = EvalConfig(
        methods=("base", "prompt"), preferences=("concise", "friendly"), decoding=PADConfig(max_new_tokens=4)
    )
    read = []
    real_fluency = harness.fluency
    monkeypatch.setattr(
        harness,
        "fluency",
        lambda p, prompts, texts, ends: (
            read.extend(zip(prompts, texts, strict=True)) or real_fluency(p, prompts, texts, ends)
        ),
    )
    report = run_eval({"main": pad, "self": pad}, ROWS[:2], tmp_path, config, progress=False)
    records = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert sum(r["method"] == "base" for r in records) == 2 and len(records) == 2 + 4
    assert len(read) == len({(r["prompt"], r["text"], r["finish_reason"]) for r in records}) <= 6  # base read once
    assert [p for p, _ in read] == sorted(p for p, _ in read)  # one prompt's answers together, sharing its encoding
    base = [r for r in records if r["method"] == "base"]
    expected = harness.perplexity(
        pad, [r["prompt"] for r in base], [r["text"] for r in base], [r["finish_reason"] != "length" for r in base]
    )
    for row in (r for r in report.rows if r.method == "base"):  # one base answer, one fluency, under each preference
        assert row.perplexity == pytest.approx(sorted(expected)[len(expected) // 2], rel=1e-4)
    assert {(r.method, r.preference, r.judge) for r in report.rows} == {
        ("base", "concise", "words"),
        ("base", "friendly", "warmth"),
        ("prompt", "concise", "words"),
        ("prompt", "friendly", "warmth"),
    }
    for row in report.rows:  # the share of answers that ended before the token limit, from the records
        group = [r for r in records if r["method"] == row.method and r["preference"] in ("-", row.preference)]
        assert row.ended == sum(r["finish_reason"] != "length" for r in group) / len(group)


def test_weight_sweep_draws_a_tradeoff_curve(base_model, tokenizer, tmp_path):
    pad = PAD(base_model, tokenizer)
    config = EvalConfig(
        methods=("pad",), preferences=("friendly",), weights=(0.0, 1.0, 4.0), decoding=PADConfig(max_new_tokens=4)
    )
    report = run_eval({"main": pad, "self": pad}, ROWS[:2], tmp_path, config, progress=False)
    assert {r.judge for r in report.rows} == {"warmth"}
    assert (tmp_path / "sweep_friendly_warmth.png").is_file()


def test_decoding_settings_reach_every_method(base_model, tokenizer, tmp_path):
    """--amulet-alpha, --min-p and the like start every method's config; the method table and the sweep win."""
    pad = PAD(base_model, tokenizer)
    decoding = PADConfig(max_new_tokens=5, amulet_alpha=0.5, amulet_iterations=3, min_p=0.2)
    config = EvalConfig(methods=("amulet", "pad-self"), preferences=("concise",), weights=(2.0,), decoding=decoding)
    run_eval({"main": pad, "self": pad}, ROWS[:1], tmp_path, config, progress=False)
    records = {r["method"]: r for r in map(json.loads, (tmp_path / "generations.jsonl").read_text().splitlines())}
    amulet, guided = records["amulet"], records["pad-self"]
    assert amulet["settings"]["amulet_alpha"] == 0.5 and amulet["settings"]["method"] == "amulet"
    assert guided["settings"]["min_p"] == 0.2 and guided["settings"]["weight"] == 2.0
    prompt = ROWS[0].prompt
    assert (
        amulet["text"]
        == pad.generate([prompt], "concise", method="amulet", max_new_tokens=5, amulet_alpha=0.5, amulet_iterations=3)[
            0
        ].text
    )
    assert guided["text"] == pad.generate([prompt], "concise", weight=2.0, max_new_tokens=5, min_p=0.2)[0].text
    # a setting a method does not read never blocks resuming its rows; one it reads does
    changed = dataclasses.replace(decoding, amulet_alpha=1.0)
    run_eval(
        {"main": pad, "self": pad},
        ROWS[:1],
        tmp_path,
        dataclasses.replace(config, methods=("pad-self",), decoding=changed),
        progress=False,
    )
    with pytest.raises(PadkitError, match="amulet_alpha: 0.5 -> 1.0"):
        run_eval(
            {"main": pad, "self": pad},
            ROWS[:1],
            tmp_path,
            dataclasses.replace(config, decoding=changed),
            progress=False,
        )


def test_bad_configs_are_refused_early():
    with pytest.raises(PadkitError, match="unknown method"):
        EvalConfig(methods=("magic",))
    with pytest.raises(PadkitError, match="unknown judge"):
        EvalConfig(judges=("vibes",))
    with pytest.raises(PadkitError, match="finite"):
        EvalConfig(weights=(float("nan"),))


def test_comparison_puts_the_methods_side_by_side():
    def row(method, pref, judge, mean, shift, win, ppl, tps=10.0, weight=0.0, loops=0.0, ended=1.0, direction=1):
        return ReportRow(
            method,
            pref,
            weight,
            judge,
            mean,
            mean - 1,
            mean + 1,
            win,
            20.0,
            tps,
            ppl,
            5,
            shift,
            loops,
            ended,
            direction=direction,
        )

    report = EvalReport(
        [
            row("prompt", "concise", "words", 40.0, 0.2, 0.6, 3.5, direction=-1),
            row("base", "concise", "words", 50.0, None, None, 3.0, loops=0.1, direction=-1),
            row("pad", "concise", "words", 30.0, 1.5, 0.9, 4.0, loops=0.2, direction=-1),
            row("prompt", "formal", "register", 1.0, -0.1, 0.4, 3.1),
            row("base", "formal", "register", 1.0, None, None, 3.0, loops=0.1),
            row("pad", "formal", "register", 1.0, -0.3, 0.3, 5.0, loops=0.4),
        ]
    )
    table, summary = report.comparison().split("\n\n")
    lines = table.splitlines()
    assert lines[0] == "| preference | judge | base | prompt | pad | furthest |"
    assert lines[2] == "| concise | words | 50.00 [49.00, 51.00] | 40.00 [39.00, 41.00] | 30.00 [29.00, 31.00] | pad |"
    assert lines[3].endswith("| none |")  # nothing moved towards formal
    per_method = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines()[2:]}
    assert per_method["pad"] == "| pad | 4.50 | 0.30 | 0.60 | 0.60 | 10.00 | 1 |"
    assert per_method["prompt"] == "| prompt | 3.30 | 0.00 | 0.05 | 0.50 | 10.00 | 0 |"
    assert per_method["base"] == "| base | 3.00 | 0.10 | - | - | 10.00 | - |"
    assert report.markdown().splitlines()[4].endswith("| 4.0 | 0.20 | 0.00 | 0.00 | 1.00 | 5 |")
    assert "Cut short" not in report.markdown()
    report.rows.append(row("pad", "sign-off", "sign-off", 0.0, 0.0, 0.5, 4.0, weight=0.5, ended=0.1))
    report.rows.append(row("pad", "concise", "words", 30.0, 1.5, 0.9, 4.0, ended=0.0))  # reads no ending
    note = report.markdown().splitlines()[-1]
    assert note.startswith("Cut short: pad sign-off (w=0.5) ended 10%.") and "concise" not in note


def test_furthest_is_the_mean_that_moved_most_not_the_steadiest():
    """A method with more emoji per answer but a wider spread has the smaller standardized shift; it still moved
    the judge furthest."""

    def row(method, mean, shift, direction=1):
        return ReportRow(
            method, "emoji", 0.0, "emoji", mean, mean, mean, None, 20.0, 10.0, 3.0, 50, shift, direction=direction
        )

    report = EvalReport([row("base", 0.0, None), row("pad", 4.88, 1.88), row("policy", 3.36, 3.60)])
    assert report.comparison().splitlines()[2].endswith("| pad |")
    report = EvalReport([row("base", 50.0, None, -1), row("pad", 12.5, 4.9, -1), row("policy", 6.6, 6.6, -1)])
    assert report.comparison().splitlines()[2].endswith("| policy |")  # fewer words is further for concise


def test_fluent_weight_is_the_largest_within_the_perplexity_budget():
    def row(method, pref, weight, ppl):
        return ReportRow(method, pref, weight, "words", 1.0, 0.0, 2.0, 0.5, 20.0, 10.0, ppl, 5, 0.1, 0.0, 1.0)

    rows = [row("base", p, 0.0, 3.0) for p in ("concise", "formal")]
    rows += [row("pad", "concise", 0.5, 4.0), row("pad", "formal", 0.5, 4.4)]  # median 4.2: 1.40x
    rows += [row("pad", "concise", 0.6, 4.4), row("pad", "formal", 0.6, 4.8)]  # median 4.6: 1.53x
    rows += [row("pad", "concise", 1.0, 6.0), row("pad", "formal", 1.0, 6.2)]
    report = EvalReport(rows)
    assert report.median_perplexity("pad", 0.6) == pytest.approx(4.6)
    assert report.fluent_weight("pad") == 0.5
    assert report.fluent_weight("pad", budget=1.6) == 0.6
    assert report.fluent_weight("pad", budget=1.2) is None
    assert report.comparison().splitlines()[-1] == (
        "Fluency budget 1.5x the base's median perplexity (3.00): the largest pad weight within it is w=0.5 "
        "(4.20, 1.40x)."
    )
    over = EvalReport([r for r in rows if r.weight != 0.5])
    assert over.comparison().splitlines()[-1].endswith("no pad weight is within it (the lowest, w=0.6, is at 1.53x).")
    assert EvalReport([r for r in rows if r.method == "pad"]).fluent_weight("pad") is None  # no base to compare


def test_scorecard_counts_the_targets_per_method_and_weight():
    def row(method, pref, judge, mean, shift, win, ppl, weight=0.0, direction=1, off=0.0, ci=1.0):
        return ReportRow(
            method,
            pref,
            weight,
            judge,
            mean,
            mean - ci,
            mean + ci,
            win,
            20.0,
            10.0,
            ppl,
            50,
            shift,
            0.0,
            1.0,
            0.0,
            off,
            direction,
        )

    rows = [
        row("base", "concise", "words", 50.0, None, None, 2.0, direction=-1),
        row("prompt", "concise", "words", 45.0, 0.3, 0.6, 2.2, direction=-1),
        row("pad", "concise", "words", 30.0, 1.8, 0.9, 3.0, weight=0.6, direction=-1, off=0.1),
        row("base", "pirate", "pirate", 0.0, None, None, 2.0, ci=0.5),
        row("prompt", "pirate", "pirate", 3.0, 0.5, 0.5, 2.4, ci=0.5),
        row("pad", "pirate", "pirate", 2.0, 1.2, 0.7, 3.4, weight=0.6, ci=0.5, off=0.3),  # apart from base only
        row("base", "bulleted", "bullets", 0.0, None, None, 2.2),
        row("prompt", "bulleted", "bullets", 1.0, 0.1, 0.55, 2.2),
        row("pad", "bulleted", "bullets", 5.0, 2.0, 0.8, 2.8, weight=0.6),
    ]
    prompt, pad = EvalReport(rows).scorecard().split("\n\n## ")
    assert prompt.startswith("## prompt\n") and "- win rate >= 0.75: 0 of 3 (below: concise 0.60" in prompt
    assert "- better than base, 95% intervals apart: 2 of 3" in prompt  # concise 45 +- 1 against 50 +- 1; pirate 3
    lines = pad.splitlines()
    assert lines[0] == "pad w=0.6"
    assert lines[4] == "| concise | words | yes | 0.90 | +1.80 | yes | yes | 0.10 | 3.00 |"
    assert lines[5] == "| pirate | pirate | no | 0.70 | +1.20 | yes | no | 0.30 | 3.40 |"
    assert "- win rate >= 0.75: 2 of 3 (below: pirate 0.70)" in lines
    assert (
        "- better than base and prompt, 95% intervals apart: 2 of 3 (not: pirate); shift further than "
        "prompt's: 3 of 3" in lines
    )
    assert "- median shift 1.80 sd" in lines
    assert (
        "- unseen preferences: median shift 1.20 sd against the trained ones' 1.90: 0.63 of trained "
        "(target >= 0.5)" in lines
    )
    assert "- median perplexity 3.00, 1.50x the base's 2.00 (budget 1.5x)" in lines
    assert lines[-1] == "- off topic 0.133, looping 0.000 (means over preferences)"


def test_loops_flags_repetition_that_perplexity_cannot_see(base_model, tokenizer):
    pad = PAD(base_model, tokenizer)
    texts = [
        "Cats sleep a lot because they hunt at night, and a long rest saves the energy a chase needs.",
        "\U0001f30d" * 30,  # an emoji run: no words at all
        "-\n" * 20,
        "The foundation is the foundation. " * 6,
        "",
    ]
    assert loops(pad, texts) == [False, True, True, True, False]


def test_hollow_flags_form_without_words():
    texts = [
        "To create a message, please follow these steps:\n" + "".join(f"{i}. {i}.\n" for i in range(1, 9)),
        "\U0001f440\U0001f44f\U0001f44f\U0001f44e\U0001f44e\U0001f44f\U0001f450",  # varied emoji, no loop
        "This is a welcome message.\n\n****\n\n******\n\n### ****\n\n### [****\n\n### [###\n\n### [**",
        "- TCP (Transmission Control Protocol)\n- IP (Internet Protocol)\n- UDP (User Datagram Protocol)",
        "Great question! \U0001f60a Cats sleep a lot because they hunt at night.",
        "1. Boil 2 litres of water.\n2. Add 200 g of pasta.",
        "",
    ]
    assert hollow(texts) == [True, True, True, False, False, False, False]


def test_pad_methods_are_the_default_the_papers_and_a_prompted_base(base_model, rm_model, tokenizer, tmp_path):
    """``pad`` decodes with the library's defaults, ``paper-pad`` as the paper (:data:`PAPER_PAD`) and
    ``prompt-pad`` on a prompted base whatever the defaults."""
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    methods = ("pad", "paper-pad", "prompt-pad")
    config = EvalConfig(methods=methods, weights=(2.0,), decoding=PADConfig(max_new_tokens=6), batch_size=3)
    run_eval({"main": pad}, ROWS, tmp_path, config, progress=False)
    records = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    texts = {m: [r["text"] for r in records if r["method"] == m] for m in methods}
    prompts = [r.prompt for r in ROWS]
    kwargs = dict(weight=2.0, max_new_tokens=6)
    assert texts["pad"] == [g.text for g in pad.generate(prompts, "concise", **kwargs)]
    assert texts["paper-pad"] == [g.text for g in pad.generate(prompts, "concise", **kwargs, **PAPER_PAD)]
    assert texts["prompt-pad"] == [g.text for g in pad.generate(prompts, "concise", **kwargs, prompted_base=True)]
    assert texts["pad"] != texts["paper-pad"]


def test_eval_records_the_reward_margin_each_pad_row_decoded_with(base_model, rm_model, tokenizer, tmp_path):
    """An unset margin is the PersRM's own (``PAD.default_reward_margin``): the records say which, so a later
    PersRM record of another margin cannot resume into the same file unnoticed."""
    pad = PAD(base_model, tokenizer, rm_model, tokenizer, default_reward_margin=0.5)
    methods = ("base", "pad", "paper-pad")
    config = EvalConfig(methods=methods, weights=(2.0,), decoding=PADConfig(max_new_tokens=4), batch_size=3)
    run_generations({"main": pad}, ROWS[:2], tmp_path / "g.jsonl", config, progress=False)
    records = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    margins = {r["method"]: r["settings"]["reward_margin"] for r in records}
    assert margins == {"base": None, "pad": 0.5, "paper-pad": 0.0}
    other = PAD(base_model, tokenizer, rm_model, tokenizer, default_reward_margin=1.0)
    with pytest.raises(PadkitError, match="reward_margin"):
        run_generations({"main": other}, ROWS[:2], tmp_path / "g.jsonl", config, progress=False)


def scored_record(method: str, pid: str, prompt: str, text: str, preference: str) -> dict:
    """A generation record as ``run_generations`` writes it, for :func:`build_report`."""
    return {
        "method": method,
        "preference": preference,
        "weight": 0.0,
        "prompt_id": pid,
        "prompt": prompt,
        "text": text,
        "n_tokens": 5,
        "batch_seconds": 1.0,
        "batch_tokens": 5,
        "finish_reason": "stop",
    }


def test_degenerate_answers_lose_to_sound_base_answers(base_model, tokenizer):
    """Fewer words is a win for concise, but not by lines of bare numbers; two degenerate answers are judged."""
    assert [win_outcome(1.0, False, False), win_outcome(0.0, False, False), win_outcome(-1.0, False, False)] == [
        1.0,
        0.5,
        0.0,
    ]
    assert win_outcome(5.0, True, False) == 0.0 and win_outcome(5.0, True, True) == 1.0
    assert win_outcome(-5.0, False, True) == 0.0

    def record(method, pid, text):
        return scored_record(method, pid, "Cats?", text, "concise")

    sound = "Cats are small furry animals that like to sleep a lot during the day."
    records = [
        record("base", "a", sound),
        record("base", "b", sound),
        record("prompt", "a", "Cats sleep a lot."),
        record("prompt", "b", "1. 1.\n2. 2."),  # four "words", hollow
    ]
    report = build_report(PAD(base_model, tokenizer), records, EvalConfig(methods=("base", "prompt")))
    row = next(r for r in report.rows if r.method == "prompt")
    assert row.win_rate == 0.5 and row.hollow == 0.5


def test_bootstrap_and_perplexity(base_model, tokenizer):
    assert bootstrap_ci([2.0] * 10) == (2.0, 2.0)
    low, high = bootstrap_ci([0.0, 10.0] * 20)
    assert 2 < low < 5 < high < 8
    pad = PAD(base_model, tokenizer)
    likely = pad.generate(["Tell me about cats."], method="base", max_new_tokens=5, ignore_eos=True)[0].text
    ppl_likely, ppl_noise = perplexity(pad, ["Tell me about cats."] * 2, [likely, "zq sky sea poem planes why"])
    assert math.isfinite(ppl_likely) and 1 < ppl_likely < ppl_noise


def test_a_cut_answer_is_not_charged_for_an_end_token(base_model, tokenizer):
    """An answer cut by the token limit never produced EOS: its perplexity scores its own tokens only, while an
    answer that ended is charged for its end token; the report passes each record's ending through."""
    pad = PAD(base_model, tokenizer)
    text = "Cats sleep a lot."
    context = render_input(tokenizer, "Cats?")
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    body, with_end = (
        response_logprobs(base_model, tokenizer, [context], [text], add_eos=e).total.item() for e in (False, True)
    )
    cut, ended = perplexity(pad, ["Cats?"] * 2, [text] * 2, [False, True])
    assert cut == pytest.approx(math.exp(-body / n)) and ended == pytest.approx(math.exp(-with_end / (n + 1)))
    assert perplexity(pad, ["Cats?"], [text]) == [pytest.approx(ended)]
    assert perplexity(pad, ["Cats?"], [""], [False]) == [1.0]  # nothing to score, nothing charged
    assert fluency(pad, ["Cats?"], [""], [False]) == [(1.0, 0.0)]  # and no token overrode the base
    records = [
        scored_record("base", "a", "Cats?", text, "concise"),
        scored_record("prompt", "a", "Cats?", text, "concise"),
    ]
    records[1]["finish_reason"] = "length"
    rows = {r.method: r for r in build_report(pad, records, EvalConfig(methods=("base", "prompt"))).rows}
    assert rows["base"].perplexity == pytest.approx(ended) and rows["prompt"].perplexity == pytest.approx(cut)


def test_prompt_sets_from_a_saved_dataset(tmp_path):
    import datasets

    from padkit.prompts import read_prompt_dataset

    datasets.Dataset.from_list(
        [{"question": "Why is the sky blue?", "id": "q1"}, {"question": "Cats?", "id": "q2"}]
    ).save_to_disk(str(tmp_path / "ds"))
    rows = read_prompt_dataset(str(tmp_path / "ds"), column="question")
    assert [(r.id, r.prompt) for r in rows] == [("q1", "Why is the sky blue?"), ("q2", "Cats?")]
    with pytest.raises(PadkitError, match="no column 'prompt'"):
        read_prompt_dataset(str(tmp_path / "ds"))


def test_two_dimension_mix_draws_a_scatter(base_model, tokenizer, tmp_path):
    pad = PAD(base_model, tokenizer)
    prefs = ("concise=1,friendly=0.2", "concise=0.5,friendly=0.5", "concise=0.2,friendly=1")
    config = EvalConfig(methods=("pad",), preferences=prefs, weights=(2.0,), decoding=PADConfig(max_new_tokens=4))
    report = run_eval({"main": pad, "self": pad}, ROWS[:2], tmp_path, config, progress=False)
    assert {r.judge for r in report.rows} == {"words", "warmth"} and len(report.rows) == 6
    assert (tmp_path / "scatter_concise_friendly.png").stat().st_size > 1000


def test_standardized_shift_is_in_pooled_standard_deviations():
    from padkit.evaluation.harness import standardized_shift

    assert standardized_shift([2.0, 4.0], [0.0, 2.0], +1) == pytest.approx(2 / 2**0.5)
    assert standardized_shift([2.0, 4.0], [0.0, 2.0], -1) == pytest.approx(-(2**0.5))
    assert standardized_shift([0.0, 0.0], [0.0, 0.0], +1) == 0.0
    # every answer moved and neither side varies: the spread of both together, sd of [1, 1, 0, 0] = 1/sqrt(3)
    assert standardized_shift([1.0, 1.0], [0.0, 0.0], +1) == pytest.approx(3**0.5)


TCP = "List the layers of the TCP/IP model and for each layer identify one protocol."


def test_off_topic_flags_answers_that_leave_the_prompt():
    """Evasions that game the count judges (PersRM v25c's, on a koala prompt) against real answers to it."""
    texts = [
        "What would you like to know next?",
        "I'd be happy to help with that.\n\nWhat would you like to do next?",
        "Hope this helps!",
        "The TCP/IP model has four layers: link (Ethernet), internet (IP), transport (TCP) and application (HTTP).",
        "Arrr, the TCP/IP model be four layers, matey: link, internet, transport and application, with IP and TCP.",
    ]
    assert off_topic([TCP] * 5, texts, 0.25) == [True, True, True, False, False]
    assert off_topic([TCP] * 5, texts, -1.0) == [False] * 5


def test_off_topic_answers_lose_the_win_rate(base_model, tokenizer):
    """A question back with no answer "asks a follow-up"; it counts as a loss unless the check is off."""
    answer = "The TCP/IP model has four layers: link (Ethernet), internet (IP), transport (TCP) and application."

    def record(method, pid, text):
        return scored_record(method, pid, TCP, text, "follow-up")

    records = [
        record("base", "a", answer),
        record("base", "b", answer),
        record("prompt", "a", answer + " Which protocol would you like to know more about?"),
        record("prompt", "b", "What would you like to know next?"),
    ]
    pad = PAD(base_model, tokenizer)
    config = EvalConfig(methods=("base", "prompt"), preferences=("follow-up",))
    row = next(r for r in build_report(pad, records, config).rows if r.method == "prompt")
    assert (row.mean, row.win_rate, row.off_topic) == (1.0, 0.5, 0.5)
    unguarded = dataclasses.replace(config, min_relevance=-1.0)
    row = next(r for r in build_report(pad, records, unguarded).rows if r.method == "prompt")
    assert (row.win_rate, row.off_topic) == (1.0, 0.0)
    with pytest.raises(PadkitError, match="min_relevance"):
        EvalConfig(min_relevance=1.5)
