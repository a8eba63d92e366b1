"""Synthesized pairs: judge selection, the JSONL records, resume, and the judges themselves."""

from __future__ import annotations

import json

import pytest

from padkit import PAD
from padkit.errors import PadkitError
from padkit.evaluation.judges import BulletsJudge, GradeJudge, SentimentJudge, WordsJudge, get_judge, split_direction
from padkit.prompts import PromptRow, read_prompts
from padkit.training.data import read_pairs
from padkit.training.synth import SynthConfig, _group_records, summarize_synth, synthesize_pairs


def test_judges_score_in_the_expected_direction():
    assert WordsJudge().score("", "one two, three.") == 3
    easy = "The cat sat on the mat. It was fun."
    hard = "Thermodynamic equilibrium necessitates comprehensive consideration of stochastic fluctuations."
    assert GradeJudge().score("", easy) < 3 < 12 < GradeJudge().score("", hard)
    assert SentimentJudge().score("", "I love this, you are wonderful!") > 0.5
    assert SentimentJudge().score("", "I hate this. You are awful and stupid.") < -0.5
    with pytest.raises(PadkitError, match="unknown judge"):
        get_judge("vibes")
    listed = "Three ways:\n- walk\n* swim\n1. run\n2) jump\nA - dash inside a line does not count."
    assert BulletsJudge().score("", listed) == 4 and BulletsJudge().score("", "Plain prose, no list.") == 0


def test_judge_directions_can_be_stated():
    from padkit.evaluation.harness import EvalConfig

    assert split_direction("words:lower") == ("words", -1) and split_direction("rm:/x/y:higher") == ("rm:/x/y", 1)
    assert split_direction("rm:/x/y") == ("rm:/x/y", None)
    config = EvalConfig(preferences=("Answer in one short sentence.",), judges=("words:lower", "bullets"))
    assert config.judges_for("Answer in one short sentence.") == [("words", -1), ("bullets", 1)]
    assert EvalConfig(judges=("words",)).judges_for("concise") == [("words", -1)]  # the catalog's direction


def test_group_picks_most_extreme_answers_and_writes_both_directions():
    row = PromptRow("p1", "Tell me about cats.")
    answers = {"concise": ["one two three", "one", "a b c d e f g"], "informative": ["x " * 40, "y " * 10, "z " * 30]}
    config = SynthConfig(dimensions=("concise",), min_margin={"words": 25})
    first, second = _group_records(row, "concise", answers, config, {"seed": 0})
    assert (first["preference"], first["chosen"], first["rejected"].split()[0]) == ("concise", "one", "x")
    assert (
        first["margin"] == 39
        and first["kept"] is True
        and first["group"] == second["group"] == "p1/concise-informative"
    )
    assert (second["preference"], second["chosen"], second["rejected"]) == ("informative", first["rejected"], "one")
    assert second["chosen_score"] == 40 and second["rejected_score"] == 1
    strict = SynthConfig(dimensions=("concise",), min_margin={"words": 50})
    assert _group_records(row, "concise", answers, strict, {})[0]["kept"] is False


def test_config_rejects_dimensions_without_an_opposite():
    with pytest.raises(PadkitError, match="cannot synthesize pairs for 'humorous'"):
        SynthConfig(dimensions=("humorous",))


def test_synthesize_writes_records_and_resumes(base_model, tokenizer, tmp_path, monkeypatch):
    pad = PAD(base_model, tokenizer)
    rows = [PromptRow("a", "Tell me about cats."), PromptRow("b", "Why is the sky blue?")]
    config = SynthConfig(
        dimensions=("concise", "friendly"),
        samples=2,
        max_new_tokens=6,
        batch_size=8,
        min_margin={"words": 0, "sentiment": -2},
    )
    out = tmp_path / "pairs.jsonl"
    report = synthesize_pairs(pad, rows, out, config, progress=False)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 8 and report.groups == 4 and report.kept_groups == 4 and report.pairs == 8
    assert {r["preference"] for r in records} == {"concise", "informative", "friendly", "unfriendly"}
    assert all(r["settings"]["samples"] == 2 and r["settings"]["method"] == "prompt" for r in records)
    assert len(read_pairs(out)) == 8

    lines = out.read_text().splitlines()  # interrupted in the middle of the last group: one line of it, half torn
    out.write_text("\n".join(lines[:7]) + "\n" + lines[7][:20])
    calls = []
    real = pad.generate
    monkeypatch.setattr(pad, "generate", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    synthesize_pairs(pad, rows, out, config, progress=False)
    assert calls == [4]  # only the broken group is generated again: 2 sides x 2 samples
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(again) == 8 and [r["id"] for r in again[:6]] == [r["id"] for r in records[:6]]


def test_read_pairs_skips_rejected_synth_records(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b", "preference": "concise", "kept": k} for k in (True, False)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_pairs(path)) == 1


def test_summary_counts_per_dimension(tmp_path):
    path = tmp_path / "p.jsonl"
    recs = [
        {"group": f"g{i}", "preference": "concise", "judge": "words", "margin": m, "kept": m > 10}
        for i, m in enumerate((5, 20, 40))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    summary = summarize_synth(path)
    assert summary.per_dimension["concise"] == {
        "generated": 3,
        "kept": 2,
        "judge": "words",
        "mean_margin_kept": 30.0,
        "mean_margin_all": 21.667,
    }


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

    from padkit.evaluation.judges import ProfanityJudge

    assert ProfanityJudge().score("", "you are a stupid idiot") > 0.9 > 0.2 > ProfanityJudge().score("", "nice day")
    tok = make_tokenizer(chat_template=None)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, num_labels=1, pad_token_id=tok.pad_token_id
    )
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    judge = get_judge(f"rm:{tmp_path / 'rm'}")
    a, b = judge.score("Tell me about cats.", "cats are fun"), judge.score("Tell me about cats.", "why sky sea")
    assert a != b and a == judge.score("Tell me about cats.", "cats are fun")
    with pytest.raises(PadkitError, match="cannot load a reward model judge"):
        get_judge(f"rm:{tmp_path / 'missing'}")
