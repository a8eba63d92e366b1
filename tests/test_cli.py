"""The command line, driven in-process on a tiny model directory."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from padkit import PADConfig
from padkit.cli.main import app
from padkit.decoding.config import DEFAULT_WEIGHT

runner = CliRunner()


def _flat(output: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(output.split())


def test_dimensions_lists_the_catalog():
    result = runner.invoke(app, ["dimensions", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["concise"]["opposite"] == "detailed"


def test_generate_prints_only_text(tiny_model_dir):
    args = ["generate", "Tell me about cats.", "--base", str(tiny_model_dir), "-p", "concise", "-n", "5"]
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    as_json = runner.invoke(app, [*args, "--json"])
    record = json.loads(as_json.stdout)
    assert record["text"] == text.stdout.rstrip("\n")
    assert record["method"] == "pad" and record["preference"] == "concise=1"
    base = json.loads(runner.invoke(app, [*args, "--json", "--method", "base", "--weight", "0"]).stdout)
    assert base["preference"] is None


def test_prompted_base_flags(tiny_model_dir):
    """At w=0 PAD on a prompted base is prompting and the paper's is the plain base; a model without a shipped
    PersRM gets rm="self", whose default base is unprompted (a prompted one would zero the reward)."""
    args = ["generate", "Tell me about cats.", "--base", str(tiny_model_dir), "-p", "concise", "-n", "6", "--json"]

    def text(*extra: str) -> str:
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["text"]

    base, prompting = text("--method", "base"), text("--method", "prompt")
    assert text("-w", "0", "--prompted-base") == prompting != base
    assert text("-w", "0", "--no-prompted-base", "--loop-guard", "0") == base == text("-w", "0")


def test_a_persrm_s_recorded_margin_is_the_cli_default(tmp_path, tiny_model_dir):
    """``generate`` decodes an unset margin at the PersRM's recorded one, and ``demo`` names it in its title."""
    from conftest import make_lora

    from padkit.models import load_model

    adapter = make_lora(load_model(str(tiny_model_dir)))
    adapter.peft_config["default"].base_model_name_or_path = str(tiny_model_dir)
    adapter.save_pretrained(tmp_path / "rm")
    (tmp_path / "rm" / "padkit.json").write_text(json.dumps({"decoding": {"reward_margin": 0.25}}))
    args = ["generate", "Tell me about cats.", "--base", str(tiny_model_dir), "--rm", str(tmp_path / "rm")]
    args += ["-p", "concise", "-w", "4", "-n", "8", "--json"]
    runs = {m: runner.invoke(app, [*args, *m]) for m in ((), ("--reward-margin", "0.25"))}
    assert all(r.exit_code == 0 for r in runs.values()), [r.output for r in runs.values()]
    texts = {m: json.loads(r.stdout)["text"] for m, r in runs.items()}
    assert texts[()] == texts[("--reward-margin", "0.25")]
    demo = runner.invoke(app, ["demo", "--base", str(tiny_model_dir), "--rm", str(tmp_path / "rm"), "-p", "concise"])
    assert demo.exit_code == 0, demo.output
    assert f"w={DEFAULT_WEIGHT:g}  margin=0.25" in demo.stdout
    plain = runner.invoke(app, ["demo", "--base", str(tiny_model_dir), "--rm", "self", "-p", "concise", "-n", "3"])
    assert plain.exit_code == 0 and "margin" not in plain.stdout


def _file_args(prompts, out, model_dir, *extra):
    return ["generate", "--input", str(prompts), "--output", str(out), "--base", str(model_dir), "-n", "4", *extra]


def test_generate_file_resumes(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"Tell me about cats number {i}."} for i in range(5)]
    rows[2]["preference"] = "humorous"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    part = tmp_path / "part.jsonl"
    part.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    out = tmp_path / "out.jsonl"
    args = ["-p", "concise", "--batch-size", "2"]
    assert runner.invoke(app, _file_args(part, out, tiny_model_dir, *args)).exit_code == 0
    kept = out.read_text()
    out.write_text(kept + '{"id": "p2", "te')  # a write torn by an interrupted run
    result = runner.invoke(app, _file_args(prompts, out, tiny_model_dir, *args))
    assert result.exit_code == 0, result.output
    assert "resuming: 2 of 5" in result.output
    assert out.read_text().startswith(kept)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["p0", "p1", "p2", "p3", "p4"]
    assert records[2]["preference"] == "humorous=1" and records[3]["preference"] == "concise=1"
    again = runner.invoke(app, _file_args(prompts, out, tiny_model_dir, *args))
    assert again.exit_code == 0 and len(out.read_text().splitlines()) == 5


def test_resume_refuses_other_settings_and_files_that_are_not_its_output(tmp_path, tiny_model_dir):
    prompts = tmp_path / "two.jsonl"
    prompts.write_text("".join(json.dumps({"id": str(i), "prompt": f"Say {i}."}) + "\n" for i in range(2)))
    out = tmp_path / "out.jsonl"
    assert runner.invoke(app, _file_args(prompts, out, tiny_model_dir, "-p", "concise")).exit_code == 0
    written = out.read_text()
    changed = runner.invoke(app, _file_args(prompts, out, tiny_model_dir, "-p", "friendly"))
    assert changed.exit_code == 2 and "other settings" in _flat(changed.output) and "friendly" in _flat(changed.output)
    assert out.read_text() == written
    older = [json.loads(line) for line in written.splitlines()]  # written before judge_gamma existed
    for record in older:
        del record["settings"]["judge_gamma"]
    out.write_text("".join(json.dumps(r) + "\n" for r in older))
    resumed = runner.invoke(app, _file_args(prompts, out, tiny_model_dir, "-p", "concise"))
    assert resumed.exit_code == 0 and "resuming: 2 of 2" in resumed.output, resumed.output
    for record in older:
        record["settings"]["judge_gamma"] = 2  # ... or with a value other than today's default
    out.write_text("".join(json.dumps(r) + "\n" for r in older))
    other = runner.invoke(app, _file_args(prompts, out, tiny_model_dir, "-p", "concise"))
    assert other.exit_code == 2 and "judge_gamma: 2 -> 4" in _flat(other.output)
    for record in older:  # written before the n-gram guard existed: PAD decoded without it, not at today's default
        record["settings"]["judge_gamma"] = 4
        del record["settings"]["ngram_guard"]
    out.write_text("".join(json.dumps(r) + "\n" for r in older))
    unguarded = runner.invoke(app, _file_args(prompts, out, tiny_model_dir, "-p", "concise"))
    assert unguarded.exit_code == 2 and "ngram_guard: 0 -> 8" in _flat(unguarded.output)
    base = runner.invoke(app, _file_args(prompts, tmp_path / "base.jsonl", tiny_model_dir, "--method", "base"))
    assert base.exit_code == 0, base.output
    older = [json.loads(line) for line in (tmp_path / "base.jsonl").read_text().splitlines()]
    for record in older:  # a base answer never read it
        del record["settings"]["ngram_guard"]
    (tmp_path / "base.jsonl").write_text("".join(json.dumps(r) + "\n" for r in older))
    base = runner.invoke(app, _file_args(prompts, tmp_path / "base.jsonl", tiny_model_dir, "--method", "base"))
    assert base.exit_code == 0 and "resuming: 2 of 2" in base.output, base.output
    notes = tmp_path / "notes.md"
    notes.write_text('# notes\nline 1\n{"keep":true}\n')
    refused = runner.invoke(app, _file_args(prompts, notes, tiny_model_dir))
    assert refused.exit_code == 2 and "notes.md:1 is not a JSON record" in _flat(refused.output)
    assert notes.read_text() == '# notes\nline 1\n{"keep":true}\n'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "0"], "--top-k: top_k must be an integer between 1"),
        (["--reference", "bogus"], "--reference: unknown reference 'bogus'"),
        (["--candidates", "bogus"], "--candidates: unknown candidates 'bogus'"),
        (["--weight", "1e308"], "--weight: weight must be a finite number in [-100, 100]"),
        (["-p", "concise=1e300"], "weight of dimension 'concise' must be a finite number in [-100, 100]"),
        (["--temperature", "-1"], "--temperature"),
        (["--method", "magic"], "--method: unknown method 'magic'"),
    ],
)
def test_bad_settings_exit_2_before_any_model_loads(args, message):
    result = runner.invoke(app, ["generate", "hi", "--base", "/no/such/model", *args])
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output), result.output


def test_bad_files_and_outputs_exit_2_before_any_model_loads(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hi there\n")
    missing = runner.invoke(app, _file_args(prompts, tmp_path / "nope" / "o.jsonl", "/no/such/model"))
    assert missing.exit_code == 2 and "does not exist" in _flat(missing.output)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root may write anywhere
            read_only = runner.invoke(app, _file_args(prompts, locked / "o.jsonl", "/no/such/model"))
            assert read_only.exit_code == 2 and "not writable" in _flat(read_only.output)
    finally:
        locked.chmod(0o700)
    noise = tmp_path / "b.txt"
    noise.write_bytes(bytes(range(128, 256)) * 4)
    binary = runner.invoke(app, ["generate", "--input", str(noise), "--base", "/no/such/model"])
    assert binary.exit_code == 2 and "not UTF-8 text" in _flat(binary.output)
    zero = runner.invoke(app, ["generate", "--input", str(prompts), "--batch-size", "0"])
    assert zero.exit_code == 2 and "batch-size" in _flat(zero.output)


def test_an_overlong_preference_is_named_as_the_preference(tiny_model_dir):
    result = runner.invoke(app, ["generate", "hi", "--base", str(tiny_model_dir), "-p", "word " * 2000])
    assert result.exit_code == 2
    assert "prompt 0 with its preference 'word word" in _flat(result.output)
    assert "exceeds the model's context" in _flat(result.output)


def test_errors_exit_2_with_a_message(tmp_path, tiny_model_dir):
    bad_alias = runner.invoke(app, ["generate", "hi", "--base", "no-such-model"])
    assert bad_alias.exit_code == 2 and "unknown model alias" in bad_alias.output
    bad_weight = runner.invoke(app, ["generate", "hi", "--base", str(tiny_model_dir), "-p", "concise=nan"])
    assert bad_weight.exit_code == 2 and "finite" in bad_weight.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{not json\n')
    bad_file = runner.invoke(app, ["generate", "--input", str(broken), "--base", str(tiny_model_dir)])
    assert bad_file.exit_code == 2 and "broken.jsonl:2" in bad_file.output
    neither = runner.invoke(app, ["generate"])
    assert neither.exit_code == 2


def _pair_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    prompts = ["Tell me about cats.", "Why is the sky blue?", "How do planes fly?", "Write a poem about the sea."]
    rows = [
        {"prompt": p, "chosen": "concise and short.", "rejected": "why why why sky sky sky", "preference": "concise"}
        for p in prompts
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_then_rm_eval(tmp_path, tiny_model_dir, monkeypatch):
    pairs = _pair_file(tmp_path)
    out = tmp_path / "rm"
    common = ["--max-length", "160", "--max-prompt-length", "120"]
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(pairs),
            "--output",
            str(out),
            "--base",
            str(tiny_model_dir),
            "--max-steps",
            "10",
            "--lr",
            "0.02",
            "--lora-r",
            "4",
            "--layers",
            "0-1",
            "--heldout-fraction",
            "0",
            "--json",
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["steps"] == 10 and meta["config"]["layers"] == [0, 1]
    evaluated = runner.invoke(
        app, ["rm-eval", "--data", str(pairs), "--rm", str(out), "--split", "all", "--group", "concise", "--json"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["reference"] == "rm-init" and report["cut_ends"] == "closed"
    assert report["dimensions"]["concise"]["accuracy"] == 1.0 and report["dimensions"]["concise"]["n"] == 4
    # every chosen answer here is the shorter one, and neither extends the other: one shape row, the whole set
    assert report["by_shape"] == {"chosen shorter": report["dimensions"]["concise"]}
    # pairs named only by their preference text: one group at that kind's bar
    kind = report["by_kind"]["preference text"]
    assert (kind["n"], kind["groups"], kind["bar"], kind["at_bar"], kind["below"]) == (4, 1, 0.65, 1, [])
    stepped = runner.invoke(
        app,
        ["rm-eval", "--data", str(pairs), "--rm", str(out), "--split", "all", "--decision-weight", "1"],
        env={"COLUMNS": "200"},
    )
    assert stepped.exit_code == 0, stepped.output
    shown = ("PAD step", "base step", "reachable", "PAD wrong turn", "all, chosen shorter")
    assert all(col in stepped.output for col in shown)
    assert "preference text" in stepped.output and "1 of 1 >= 0.65" in stepped.output
    # the decisions are PAD's as generate decodes with this PersRM (prompted base, its recorded margin) unless told
    import padkit.evaluation.rm_accuracy as rm_accuracy

    meta = json.loads((out / "padkit.json").read_text())
    (out / "padkit.json").write_text(json.dumps(meta | {"decoding": {"reward_margin": 0.25}}))
    seen, decide = [], rm_accuracy.first_step_decisions

    def recording(*args, **kwargs):
        seen.append((kwargs["prompted_base"], kwargs["reward_margin"]))
        return decide(*args, **kwargs)

    monkeypatch.setattr(rm_accuracy, "first_step_decisions", recording)
    step = ["rm-eval", "--data", str(pairs), "--rm", str(out), "--split", "all", "--decision-weight", "1", "--json"]
    for flags in ((), ("--no-prompted-base", "--reward-margin", "0")):
        run = runner.invoke(app, [*step, *flags])
        assert run.exit_code == 0, run.output
        assert set(json.loads(run.output)) >= {"decision", "base_decision", "reachable", "wrong_turn"}
    assert seen == [(True, 0.25), (False, 0.0)]


def test_command_help_paragraphs_wrap_to_the_terminal():
    """Every command's help keeps its paragraphs whole, so rich wraps them to the terminal, not mid-line."""
    import typer.main

    def commands(group):
        for name, command in group.commands.items():
            yield name, command
            if hasattr(command, "commands"):
                yield from commands(command)

    cli = typer.main.get_command(app)
    for name, command in commands(cli):
        paragraphs = (command.help or "").split("\n\n")
        assert all("\n" not in paragraph for paragraph in paragraphs), name
    shown = runner.invoke(app, ["generate", "--help"], env={"COLUMNS": "200"}).output
    assert any("and a rerun skips the ids already written" in line for line in shown.splitlines())


def test_eval_derives_its_decoding_options():
    """eval offers PADConfig's settings (one declaration) except those its method table and --weights set."""
    shown = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).output
    assert all(flag in shown for flag in ("--amulet-alpha", "--min-p", "--top-k", "--judge-gamma", "--max-new-tokens"))
    assert "--reuse" in shown
    assert "--temperature" not in shown and "--seed" not in shown and "--weight " not in shown
    bad = runner.invoke(app, ["eval", "-p", "concise", "--prompts", "x.json", "--top-k", "0"])
    assert bad.exit_code == 2 and "--top-k" in bad.output


def test_eval_reuse_names_a_directory_that_is_not_an_eval_run(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me about cats.\n")
    args = ["eval", "-p", "concise", "--prompts", str(prompts), "--base", str(tiny_model_dir), "--reuse", str(tmp_path)]
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and f"--reuse {tmp_path}: not an eval run" in result.output


def test_train_and_rm_eval_errors(tmp_path, tiny_model_dir):
    no_data = runner.invoke(app, ["train", "--output", str(tmp_path / "x"), "--base", str(tiny_model_dir)])
    assert no_data.exit_code == 2 and "no preference pairs" in no_data.output
    bad_layers = runner.invoke(
        app, ["train", "--data", str(_pair_file(tmp_path)), "--output", str(tmp_path / "x"), "--layers", "a-b"]
    )
    assert bad_layers.exit_code == 2 and "bad layer list" in bad_layers.output
    bad_cap = runner.invoke(
        app, ["train", "--data", str(_pair_file(tmp_path)), "--output", str(tmp_path / "x"), "--cap", "harmless=x"]
    )
    assert bad_cap.exit_code == 2 and "bad --cap 'harmless=x'" in bad_cap.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "q", "chosen": "a", "rejected": "b", "preference": "concise"}\n{oops\n')
    bad_file = runner.invoke(app, ["rm-eval", "--data", str(broken), "--base", str(tiny_model_dir)])
    assert bad_file.exit_code == 2 and "broken.jsonl:2" in bad_file.output
    bad_split = runner.invoke(app, ["rm-eval", "--data", str(broken), "--split", "test"])
    assert bad_split.exit_code == 2 and "unknown split" in bad_split.output
    bad_k = runner.invoke(app, ["rm-eval", "--data", str(broken), "--decision-weight", "1", "--top-k", "0"])
    assert bad_k.exit_code == 2 and "top_k" in bad_k.output
    bad_set = runner.invoke(app, ["rm-eval", "--data", str(broken), "--decision-weight", "1", "--candidates", "all"])
    assert bad_set.exit_code == 2 and "candidates" in bad_set.output
    bad_margin = runner.invoke(
        app, ["rm-eval", "--data", str(broken), "--decision-weight", "1", "--reward-margin", "-1"]
    )
    assert bad_margin.exit_code == 2 and "reward_margin" in bad_margin.output
    bad_group = runner.invoke(app, ["rm-eval", "--data", str(_pair_file(tmp_path)), "--group", "early-end"])
    assert bad_group.exit_code == 2 and "no pairs in group(s) early-end; the data's groups: concise" in bad_group.output
    bad_ends = runner.invoke(app, ["rm-eval", "--data", str(_pair_file(tmp_path)), "--cut-ends", "shut"])
    assert bad_ends.exit_code == 2 and "unknown cut ends 'shut'; use one of closed, open" in bad_ends.output


def test_data_synth_reports_counts(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me about cats.\nWhy is the sky blue?\n")
    out = tmp_path / "pairs.jsonl"
    args = ["data", "synth", "--prompts", str(prompts), "--output", str(out), "--base", str(tiny_model_dir)]
    result = runner.invoke(app, [*args, "-n", "4", "--max-perplexity", "1e9", "--min-relevance", "-1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["prompts"] == 2 and report["pool_answers"] == 10  # 2 prompts x 5 pool sources
    pool = [json.loads(line) for line in (tmp_path / "pairs.pool.jsonl").read_text().splitlines()]
    assert len(pool) == 10 and {r["finish_reason"] for r in pool} <= {"stop", "length"}
    assert sum(r["finish_reason"] == "length" for r in pool) >= 8  # 4 tokens: nearly every answer is stopped
    assert json.loads((tmp_path / "pairs.report.json").read_text())["pool_answers"] == 10
    # 4 tokens never make a whole sentence: every answer is dropped, and the report says which filter did it
    assert report["removed"]["too short (after cutting to whole sentences)"] == 10 and report["pairs"] == 0
    assert report["cut_answers"] == 0
    text = runner.invoke(app, [*args, "-n", "4", "--max-perplexity", "1e9", "--min-relevance", "-1"]).stderr
    assert "0 kept answers stop at the token limit" in text and "0 early-end pairs" in text
    assert "0 degenerate pairs" in text and "0 stutter pairs" in text and "0 evasion pairs" in text
    bad = runner.invoke(app, [*args, "--batch-size", "0"])
    assert bad.exit_code == 2 and "batch_size" in bad.output
    bad_share = runner.invoke(app, [*args, "--early-end-fraction", "1.5"])  # the flag reaches SynthConfig
    assert bad_share.exit_code == 2 and "early_end_fraction must be between 0 and 1, got 1.5" in bad_share.output
    bad_degenerate = runner.invoke(app, [*args, "--degenerate-fraction", "-0.1"])
    assert bad_degenerate.exit_code == 2 and "degenerate_fraction must be between 0 and 1" in bad_degenerate.output
    # every option is derived from SynthConfig: a filter the old command never exposed now reaches it
    short_only = [*args[:4], "--output", str(tmp_path / "short.jsonl"), *args[6:], "-n", "4", "--max-prompt-words", "4"]
    result = runner.invoke(app, [*short_only, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pool_answers"] == 5  # "Why is the sky blue?" has 5 words: skipped
    help_text = runner.invoke(app, ["data", "synth", "--help"]).stdout
    assert "--min-distinct-trigrams" in help_text and "--split-salt" in help_text and "--sources" not in help_text


def test_serve_binds_loopback_by_default_and_fails_cleanly(tmp_path):
    help_text = runner.invoke(app, ["serve", "--help"]).stdout
    assert "127.0.0.1" in help_text and "--db" in help_text
    bad = runner.invoke(app, ["serve", "--base", str(tmp_path / "missing"), "--db", str(tmp_path / "p.sqlite")])
    assert bad.exit_code == 2 and "model path not found" in bad.output


def test_terminal_streaming_never_prints_the_stop_string(capsys, tiny_model_dir):
    from padkit import PAD
    from padkit.cli.main import _stream_one

    pad = PAD.from_pretrained(str(tiny_model_dir), rm="self")
    full = pad.generate(["Tell me about cats."], "concise", max_new_tokens=24)[0].text
    stop = full[6:9]
    _stream_one(pad, "Tell me about cats.", "concise", PADConfig(max_new_tokens=24, stop=(stop,)))
    assert capsys.readouterr().out == full[: full.find(stop)] + "\n"
    _stream_one(pad, "Tell me about cats.", "concise", PADConfig(max_new_tokens=24))
    assert capsys.readouterr().out == full + "\n"


def test_judge_check_reports_agreement_with_hand_labels(tmp_path):
    labels = tmp_path / "labels.jsonl"
    rows = [
        {"judge": "bullets", "a": "- one\n- two", "b": "One and two.", "more": "a"},
        {"judge": "bullets", "a": "One.", "b": "Two.", "more": "same"},
        {"judge": "bullets", "a": "One.", "b": "- two", "more": "a"},  # a labeller the judge disagrees with
        {"judge": "sentiment", "a": "I love it, wonderful!", "b": "I love it, wonderful!!", "more": "same"},
    ]
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["judge-check", str(labels), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bullets"] == {"judge": "bullets", "agreement": 0.6667, "n": 3, "disagreements": [2]}
    assert report["sentiment"]["agreement"] == 1.0  # within the tie tolerance
    missing = runner.invoke(app, ["judge-check", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2 and "label file not found" in missing.output
    labels.write_text(json.dumps(dict(rows[0], more="maybe")) + "\n")
    bad = runner.invoke(app, ["judge-check", str(labels)])
    assert bad.exit_code == 2 and "'more' must be" in bad.output


def test_read_resumable_drops_only_a_torn_last_line(tmp_path):
    from padkit.errors import PadkitError
    from padkit.prompts import read_resumable

    out = tmp_path / "o.jsonl"
    out.write_text('{"id": "0"}\n{"id": "1"}')  # a whole last record without its newline: kept
    assert [r["id"] for r in read_resumable(out)] == ["0", "1"] and out.read_text().endswith("}\n")
    out.write_text('{"id": "0"}\n{"id": "1", "te')  # torn: dropped
    assert [r["id"] for r in read_resumable(out)] == ["0"] and out.read_text() == '{"id": "0"}\n'
    out.write_text('{"id": "0"}\n42')  # JSON, but not a record: refused, file untouched
    with pytest.raises(PadkitError, match="o.jsonl:2 is not a JSON record"):
        read_resumable(out)
    assert out.read_text() == '{"id": "0"}\n42'


def test_atomic_write_leaves_a_whole_file_with_ordinary_permissions(tmp_path):
    from padkit.prompts import atomic_write_text

    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what the user's umask gives any file
    out = tmp_path / "out" / "pairs.jsonl"
    atomic_write_text(out, "first\n")
    atomic_write_text(out, "second\n")
    assert out.read_text() == "second\n" and sorted(p.name for p in out.parent.iterdir()) == ["pairs.jsonl"]
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600


def test_resume_refuses_answers_of_a_retrained_persrm_saved_under_the_same_path(tmp_path, tiny_model_dir):
    """The PersRM's name is not its weights: a retrained adapter at the same path decodes differently, so a
    resumed file must not mix its answers with the old one's (the record keeps a digest of the weights)."""
    import torch
    from conftest import make_lora

    from padkit.models import load_model, model_identity

    adapter = make_lora(load_model(str(tiny_model_dir)))
    adapter.peft_config["default"].base_model_name_or_path = str(tiny_model_dir)
    rm_dir = tmp_path / "persrm"
    adapter.save_pretrained(rm_dir)
    first = model_identity(str(rm_dir))
    assert first.startswith(f"{rm_dir}@") and first == model_identity(str(rm_dir))
    assert model_identity("self") == "self" and model_identity(str(tiny_model_dir)) == str(tiny_model_dir)
    prompts = tmp_path / "two.jsonl"
    prompts.write_text("".join(json.dumps({"id": str(i), "prompt": f"Say {i}."}) + "\n" for i in range(2)))
    out = tmp_path / "out.jsonl"
    args = _file_args(prompts, out, tiny_model_dir, "-p", "concise", "--rm", str(rm_dir))
    assert runner.invoke(app, args).exit_code == 0
    assert json.loads(out.read_text().splitlines()[0])["settings"]["rm"] == first
    assert "resuming: 2 of 2" in runner.invoke(app, args).output
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    adapter.save_pretrained(rm_dir)  # retrained, same path
    assert model_identity(str(rm_dir)) != first
    retrained = runner.invoke(app, args)
    assert retrained.exit_code == 2 and "other settings" in _flat(retrained.output)
    assert first.split("@")[1] in "".join(retrained.output.split())  # the old digest named (wrapped by rich)


def test_eval_judges_are_read_as_a_comma_list(tmp_path, tiny_model_dir):
    """--judges splits as --methods does: blanks between commas are dropped, so the error names the unknown judge."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me about cats.\n")
    args = ["eval", "-p", "concise", "--prompts", str(prompts), "--base", str(tiny_model_dir), "--judges", " ,vibes,"]
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "'vibes'" in result.output and "''" not in result.output
