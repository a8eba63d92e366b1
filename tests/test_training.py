"""PersRM training (TRL DPO + LoRA) and rm-eval on tiny models."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import pytest
import torch
from conftest import fast_train_config

from padkit.errors import PadkitError
from padkit.evaluation.rm_accuracy import evaluate_rm, pair_rewards
from padkit.models.loading import load_model, load_tokenizer, read_metadata, recorded_reward_margin
from padkit.training.data import PreferencePair
from padkit.training.dpo import REF_COLUMNS, REF_LOGPS_DIR, PersRMTrainConfig, train_persrm

PROMPTS = ["Tell me about cats.", "Why is the sky blue?", "How do planes fly?", "Write a poem about the sea."]


def _pairs() -> list[PreferencePair]:
    return [
        PreferencePair(p, "concise and short.", "why why why why why why why why sky sky sky", "concise")
        for p in PROMPTS
    ]


def test_train_smoke_gives_adapter_preferring_chosen(tiny_model_dir, tmp_path):
    out = tmp_path / "persrm"
    config = fast_train_config(tiny_model_dir, max_steps=12, save_steps=6)
    held = [PreferencePair(p, "no.", "yes yes", "Keep it short.", "concise", "wording") for p in PROMPTS]
    result = train_persrm(_pairs() + held, out, config, data_sources=["inline"], command="pytest", progress=False)
    assert result.steps == 12 and result.train_pairs == 4  # held-out wordings never train
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / ".saving").exists()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    meta = read_metadata(out)
    assert meta["pairs"]["train_per_dimension"] == {"concise": 4} and meta["command"] == "pytest"
    card = (out / "README.md").read_text()
    assert "```\npytest\n```" in card and "| concise | 4 | 0 |" in card and "12 steps" in card
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    curve = meta["loss_curve"]
    assert [step for step, _ in curve] == [5, 10] and curve[-1][1] < min(curve[0][1], math.log(2))  # it learnt
    assert (out / "loss_curve.png").stat().st_size > 1000 and "![training loss](loss_curve.png)" in card

    rm = load_model(str(out))  # the adapter loads onto the base named in its config
    tok = load_tokenizer(str(out))
    report = evaluate_rm(rm, tok, _pairs(), "rm-init", max_length=160, max_prompt_length=120)
    assert report.accuracy == 1.0 and report.dimensions["concise"].margin > 0
    untrained = evaluate_rm(load_model(str(tiny_model_dir)), tok, _pairs(), "base", max_length=160)
    assert untrained.dimensions["concise"].margin < report.dimensions["concise"].margin


def test_sft_weight_keeps_the_chosen_answers_likely(tiny_model_dir, tmp_path):
    """Plain DPO may lower both sides' log-probs (the token reward then punishes what the sides share); the
    next-token term on the chosen side keeps the chosen answers' reward higher, and the pair still ranks."""
    chosen_reward = {}
    for weight in (0.0, 1.0):
        config = fast_train_config(tiny_model_dir, max_steps=10, save_steps=10, sft_weight=weight)
        meta = train_persrm(_pairs(), tmp_path / f"sft{weight}", config, progress=False).metadata
        assert [row[0] for row in meta["reward_curve"]] == [5, 10]
        step, chosen, rejected, accuracy = meta["reward_curve"][-1]
        assert chosen > rejected and accuracy == 1.0
        chosen_reward[weight] = chosen
    assert chosen_reward[1.0] > chosen_reward[0.0] + 0.1
    assert PersRMTrainConfig(sft_weight=0.5).dpo_kwargs()["loss_weights"] == [1.0, 0.5]
    assert "loss_type" not in PersRMTrainConfig().dpo_kwargs()  # TRL's default, plain DPO
    with pytest.raises(PadkitError, match="sft_weight"):
        PersRMTrainConfig(sft_weight=-1)


def test_cut_answers_train_without_an_end_of_sequence_token(tiny_model_dir, tmp_path):
    """Synthesized answers stop at the sampler's token limit; trained with an EOS after them, the PersRM
    learns to end answers there. Marked cut, they train without it, in the reference log-probs and in the
    loss alike."""
    from datasets import Dataset, load_from_disk

    from padkit.training.dpo import open_cut_ends

    rows = Dataset.from_list(
        [
            {"chosen_ids": [5, 6, 2], "rejected_ids": [7, 2], "chosen_cut": True, "rejected_cut": False},
            {"chosen_ids": [5, 6], "rejected_ids": [7, 2], "chosen_cut": True, "rejected_cut": True},
        ]
    )
    opened = open_cut_ends(rows, eos_token_id=2)
    assert opened.column_names == ["chosen_ids", "rejected_ids"]
    assert opened["chosen_ids"] == [[5, 6], [5, 6]] and opened["rejected_ids"] == [[7, 2], [7]]
    assert open_cut_ends(opened, eos_token_id=2) is opened  # nothing marked: unchanged

    ref = {}  # TRL's reference log-probs of each answer, as padkit keeps them: the sums over its tokens
    for cut in (False, True):
        pairs = [replace(p, chosen_cut=cut, rejected_cut=cut) for p in _pairs()]
        out = tmp_path / f"cut{cut}"
        meta = train_persrm(
            pairs, out, fast_train_config(tiny_model_dir, max_steps=1, save_steps=1), progress=False
        ).metadata
        assert meta["pairs"]["train_cut_answers"] == 8 * cut
        assert ("8 of the 8 training answers stop at a length limit" in (out / "README.md").read_text()) == cut
        (kept,) = (out / REF_LOGPS_DIR).glob("train-*")
        ref[cut] = load_from_disk(str(kept))
    for side in ("ref_chosen_logps", "ref_rejected_logps"):  # one token fewer: the EOS, whose log-prob is < 0
        assert all(o > c + 1e-3 for o, c in zip(ref[True][side], ref[False][side], strict=True))


def test_train_reads_back_reference_logps_row_by_row(tiny_model_dir, tmp_path, monkeypatch):
    """A run on more pairs than an earlier one computes the reference log-probs of its new pairs alone, and the
    rows both share carry the earlier run's values."""
    from datasets import load_from_disk
    from trl import DPOTrainer

    config = fast_train_config(tiny_model_dir, max_steps=1, save_steps=1)
    first, second = tmp_path / "first", tmp_path / "second"
    train_persrm(_pairs(), first, config, progress=False)
    (store,) = (first / REF_LOGPS_DIR).glob("train-*")
    keyed = load_from_disk(str(store))
    keyed.remove_columns("ref_key").save_to_disk(str(tmp_path / "keyless"))  # as saved before keys were kept
    shutil.rmtree(store)
    shutil.move(tmp_path / "keyless", store)
    train_persrm(_pairs(), first, replace(config, max_steps=2), progress=False)  # reading it back adds the keys
    assert load_from_disk(str(store))["ref_key"] == keyed["ref_key"]
    extra = [PreferencePair(p, "a plain short answer.", "long long long long long", "concise") for p in PROMPTS[:2]]
    computed = []
    compute = DPOTrainer.compute_ref_log_probs

    def counted(self, model, batch):
        out = compute(self, model, batch)
        computed.append(len(out[0]))
        return out

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", counted)
    with pytest.raises(PadkitError, match="--reuse-ref-logps .*: no reference log-probs there"):
        train_persrm(_pairs(), second, replace(config, reuse_ref_logps=(str(tmp_path / "nowhere"),)), progress=False)
    reuse = replace(config, reuse_ref_logps=(str(first),))
    meta = train_persrm(_pairs() + extra, second, reuse, progress=False).metadata
    assert sum(computed) == 2 and meta["reference_logps"] == {"reused": 4, "computed": 2}
    assert "(reference log-probs: 4 rows read back from earlier runs, 2 computed)" in (second / "README.md").read_text()
    old, new = (load_from_disk(str(next((d / REF_LOGPS_DIR).glob("train-*")))) for d in (first, second))
    rows = {k: (c, r) for k, c, r in zip(*(new[col] for col in ("ref_key", *REF_COLUMNS)), strict=True)}
    assert len(rows) == 6
    for key, chosen, rejected in zip(*(old[col] for col in ("ref_key", *REF_COLUMNS)), strict=True):
        assert rows[key] == (chosen, rejected)


def test_a_run_stopped_during_reference_logps_keeps_the_parts_it_finished(tiny_model_dir, tmp_path, monkeypatch):
    """Reference log-probs are saved part by part: a run killed between parts (a session's end) leaves the parts
    it finished, and the rerun computes the rest alone, then keeps one whole store and no parts."""
    from datasets import load_from_disk
    from trl import DPOTrainer

    from padkit.training import dpo

    monkeypatch.setattr(dpo, "REF_LOGPS_PART_ROWS", 2)
    compute, computed = DPOTrainer.compute_ref_log_probs, []

    def stopped_after_one_part(self, model, batch):
        if computed:
            raise KeyboardInterrupt
        out = compute(self, model, batch)
        computed.append(len(out[0]))
        return out

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", stopped_after_one_part)
    out, config = tmp_path / "persrm", fast_train_config(tiny_model_dir, max_steps=1, save_steps=1)
    with pytest.raises(KeyboardInterrupt):
        train_persrm(_pairs(), out, config, progress=False)
    (part,) = (out / REF_LOGPS_DIR).iterdir()
    assert ".part-" in part.name and computed == [2]
    finished = load_from_disk(str(part))
    assert len(finished) == 2

    def counted(self, model, batch):
        out = compute(self, model, batch)
        computed.append(len(out[0]))
        return out

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", counted)
    meta = train_persrm(_pairs(), out, config, progress=False).metadata
    assert computed == [2, 2] and meta["reference_logps"] == {"reused": 2, "computed": 2}
    (store,) = (out / REF_LOGPS_DIR).iterdir()
    assert ".part-" not in store.name
    whole = load_from_disk(str(store))
    rows = {k: (c, r) for k, c, r in zip(*(whole[col] for col in ("ref_key", *REF_COLUMNS)), strict=True)}
    assert len(whole) == 4 and len(rows) == 4
    for key, chosen, rejected in zip(*(finished[col] for col in ("ref_key", *REF_COLUMNS)), strict=True):
        assert rows[key] == (chosen, rejected)


def test_train_resumes_from_last_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "persrm"
    config = PersRMTrainConfig(
        base=str(tiny_model_dir),
        max_steps=4,
        batch_size=4,
        lora_r=2,
        max_length=160,
        max_prompt_length=120,
        heldout_fraction=0.0,
        save_steps=2,
    )
    first = train_persrm(_pairs(), out, config, progress=False)
    kept = list((out / "ref_logps").iterdir())
    assert [p.name.split("-")[0] for p in kept] == ["train"]  # the reference log-probs, saved once
    config.max_steps = 6

    def recomputed(*args, **kwargs):
        raise AssertionError("a resumed run computed the reference log-probs again")

    from trl import DPOTrainer

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", recomputed)
    result = train_persrm(_pairs(), out, config, progress=False)
    assert result.steps == 6
    assert "checkpoint-6" in {p.name for p in (out / "checkpoints").iterdir()}
    assert list((out / "ref_logps").iterdir()) == kept
    # the training time of both runs, carried in the checkpoint
    assert result.metadata["timed_from_step"] == 0  # a clock that restarted at the resume would say 4
    assert result.metadata["train_seconds"] >= first.metadata["train_seconds"]

    def clock(step: int) -> float:
        state = json.loads((out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())
        return state["stateful_callbacks"]["TrainingClock"]["args"]["seconds"]

    assert clock(6) > clock(4) > 0  # the resumed run added its steps' time to the first run's
    with pytest.raises(AssertionError, match="computed the reference"):  # other data: computed anew
        train_persrm(_pairs()[:-2], tmp_path / "other", config, progress=False)


def test_training_clock_counts_from_the_resumed_step_when_a_checkpoint_carries_no_clock():
    from types import SimpleNamespace

    from padkit.training.dpo import TrainingClock, model_card

    clock = TrainingClock()  # resumed at step 410 from a checkpoint written before the clock existed
    clock.on_train_begin(None, SimpleNamespace(global_step=410), None)
    clock.on_step_end(None, None, None)
    assert clock.since_step == 410 and clock.seconds >= 0
    restored = TrainingClock(**clock.state()["args"])  # how the Trainer rebuilds it from a checkpoint
    restored.seconds = 600.0
    restored.on_train_begin(None, SimpleNamespace(global_step=500), None)
    restored.on_step_end(None, None, None)
    assert restored.since_step == 410 and 600.0 <= restored.seconds < 660.0
    metadata = {
        "base": "b",
        "data": [],
        "pairs": {"train_per_dimension": {}, "heldout_per_dimension": {}},
        "steps": 615,
        "train_seconds": 2382.0,
        "timed_from_step": 410,
        "final_loss": 0.3,
        "config": {
            "lora_r": 16,
            "lora_alpha": 32,
            "target_modules": ["q_proj"],
            "layers": None,
            "beta": 0.1,
            "learning_rate": 5e-4,
            "batch_size": 8,
            "max_length": 160,
            "max_prompt_length": 80,
            "bf16": False,
        },
    }
    card = model_card(metadata)
    assert "615 steps; the 205 from step 410 on in 39.7 min" in card
    assert "615 steps in 39.7 min" in model_card({**metadata, "timed_from_step": 0})
    heldout = {
        "reference": "rm-init",
        "accuracy": 0.75,
        "n": 4,
        "dimensions": {"concise": {"accuracy": 0.75, "margin": 1.5, "n": 4}},
        "by_shape": {"chosen shorter": {"accuracy": 0.5, "token_accuracy": 1.0, "margin": -0.25, "n": 2}},
    }
    assert "| all, chosen shorter | 0.500 | 1.000 | -0.250 | 2 |" in model_card({**metadata, "heldout": heldout})
    assert "longer answer" not in card
    balanced = model_card({**metadata, "config": {**metadata["config"], "balance_length": ["harmless"]}})
    assert "Training pairs of harmless were kept half with the longer answer (in words)" in balanced


def test_train_config_rejects_bad_lengths():
    with pytest.raises(PadkitError, match="max_prompt_length"):
        PersRMTrainConfig(max_length=64, max_prompt_length=64)


def test_train_settings_are_built_on_dpo_config_and_the_cli_derives_its_options():
    """Each ``dpo`` field names a real ``DPOConfig`` setting with a matching type, and ``padkit train`` offers
    one option per field, each parsed into the config (nothing copied by hand)."""
    import dataclasses

    from trl import DPOConfig
    from typer.testing import CliRunner

    from padkit.cli.main import app
    from padkit.cli.options import build_settings

    dpo_fields = {f.name: f for f in dataclasses.fields(DPOConfig)}
    config = PersRMTrainConfig()
    for name, value in config.dpo_kwargs().items():
        assert name in dpo_fields, name
        DPOConfig(output_dir="unused", use_cpu=True, **{name: value})  # TRL accepts the value
    help_text = " ".join(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output.split())
    for f in dataclasses.fields(PersRMTrainConfig):
        flags = f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),)
        assert flags[0].split("/")[0] in help_text, f.name
        assert f.metadata["help"].split()[0] in help_text
    built = build_settings(
        PersRMTrainConfig,
        {
            "layers": "2-4,7",
            "dimension_caps": ["harmless=40", "concise=3"],
            "target_modules": "q_proj, v_proj",
            "beta": 0.2,
        },
    )
    assert built.layers == (2, 3, 4, 7) and built.dimension_caps == {"harmless": 40, "concise": 3}
    assert built.target_modules == ("q_proj", "v_proj") and built.dpo_kwargs()["beta"] == 0.2
    bad = CliRunner().invoke(app, ["train", "--output", "x", "--cap", "harmless"])
    assert bad.exit_code == 2 and "bad --cap 'harmless'" in bad.output


def test_training_selection_caps_and_balances_chosen_length():
    """Caps keep each dimension's first pairs; a balanced dimension keeps as many chosen-longer pairs as
    chosen-shorter ones (half the cap each), the others are untouched."""
    from padkit.training.dpo import training_selection

    def pair(i: int, dim: str, chosen_longer: bool) -> PreferencePair:
        short, long = "no.", "a longer answer."  # 1 and 3 words
        return PreferencePair(
            f"q{i}", long if chosen_longer else short, short if chosen_longer else long, preference=dim
        )

    harmless = [pair(i, "harmless", i % 4 == 0) for i in range(12)]  # 3 chosen-longer, 9 shorter
    concise = [pair(100 + i, "concise", False) for i in range(5)]
    train = harmless + concise
    kept = training_selection(train, PersRMTrainConfig(balance_length=("harmless",)))
    kept_harmless = [p for p in kept if p.group == "harmless"]
    assert [p.prompt for p in kept_harmless] == ["q0", "q1", "q2", "q3", "q4", "q8"]
    assert sum(len(p.chosen) > len(p.rejected) for p in kept_harmless) == 3
    assert [p for p in kept if p.group == "concise"] == concise
    capped = training_selection(
        train,
        PersRMTrainConfig(
            balance_length=("harmless",), dimension_caps={"harmless": 4}, max_train_pairs_per_dimension=2
        ),
    )
    assert [p.prompt for p in capped] == ["q0", "q1", "q2", "q4", "q100", "q101"]
    assert training_selection(train, PersRMTrainConfig()) == train
    with pytest.raises(
        PadkitError, match="cannot balance 'concise' by length: it has no training pair whose chosen answer is longer"
    ):
        training_selection(train, PersRMTrainConfig(balance_length=("concise",)))
    with pytest.raises(PadkitError, match="cannot balance 'harmles' by length: it has no training pair$"):
        training_selection(train, PersRMTrainConfig(balance_length=("harmles",)))
    with pytest.raises(
        PadkitError, match=r"--cap names 'sign_off', which no training pair has \(they have: concise, harmless\)"
    ):
        training_selection(train, PersRMTrainConfig(dimension_caps={"sign_off": 4, "concise": 1}))
    assert training_selection(train, PersRMTrainConfig(max_train_pairs_per_dimension=0)) == []
    with pytest.raises(PadkitError, match="max_train_pairs_per_dimension must be 0 or more, got -1"):
        PersRMTrainConfig(max_train_pairs_per_dimension=-1)
    with pytest.raises(PadkitError, match=r"dimension caps must be 0 or more, got \{'concise': -2\}"):
        PersRMTrainConfig(dimension_caps={"concise": -2, "harmless": 3})


def test_rm_eval_known_answer(base_model, tokenizer):
    """With reference 'none' the reward is the log-likelihood: a repeated, likely answer beats a random one."""
    likely = tokenizer.decode(
        base_model.generate(
            **tokenizer(
                [
                    tokenizer.apply_chat_template(
                        [{"role": "user", "content": "Why is the sky blue?"}],
                        tokenize=False,
                        add_generation_prompt=True,
                    )
                ],
                return_tensors="pt",
                add_special_tokens=False,
            ),
            max_new_tokens=6,
            do_sample=False,
            min_new_tokens=6,
        )[0, -6:]
    )
    pairs = [
        PreferencePair("Why is the sky blue?", likely, "zq xv planes sea poem cats", "concise"),
        PreferencePair("Why is the sky blue?", "zq xv planes sea poem cats", likely, "friendly"),
    ]
    report = evaluate_rm(base_model, tokenizer, pairs, "none")
    assert report.accuracy == 0.5
    assert report.dimensions["concise"].accuracy == 1.0 and report.dimensions["friendly"].accuracy == 0.0
    assert report.dimensions["concise"].margin > 0 > report.dimensions["friendly"].margin


def test_shape_split_reports_each_shape_of_pair_apart():
    from padkit.evaluation.rm_accuracy import DimensionAccuracy, RMReport, shape_split

    pairs = [
        PreferencePair("q", "one two three", "one", "concise"),  # chosen longer and extends rejected; won
        PreferencePair("q", "one", "one two", "concise"),  # chosen shorter, rejected extends it; lost
        PreferencePair("q", "one two", "three four", "concise"),  # equal length, no extension: in no row
        PreferencePair("q", "four three two one", "one", "concise"),  # chosen longer, not an extension; won
    ]
    table = shape_split(pairs, torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([2.0, -1.0, 0.5, 4.0]))
    assert table == {
        "chosen longer": DimensionAccuracy(1.0, 3.0, 2),
        "chosen shorter": DimensionAccuracy(0.0, -1.0, 1),
        "chosen extends rejected": DimensionAccuracy(1.0, 2.0, 1),
        "rejected extends chosen": DimensionAccuracy(0.0, -1.0, 1),
    }
    report = RMReport("base", 0.75, 4, by_shape=table)
    assert report.as_dict()["by_shape"]["chosen shorter"] == {"accuracy": 0.0, "margin": -1.0, "n": 1}
    assert "by_shape" not in RMReport("base", 0.75, 4).as_dict()


def test_per_token_accuracy_ranks_by_mean_reward_where_the_sum_ranks_by_length():
    from padkit.decoding.sequence_reward import ResponseScores
    from padkit.evaluation.rm_accuracy import token_wins

    # chosen: 12 tokens at -0.5 each (sum -6); rejected: 2 tokens at -1 each (sum -2). The sum prefers the short
    # rejected answer only because it is short; per token the chosen answer is the better one.
    chosen = ResponseScores(torch.tensor([-6.0, 3.0]), torch.tensor([12, 10]))
    rejected = ResponseScores(torch.tensor([-2.0, 1.0]), torch.tensor([2, 1]))
    assert token_wins(chosen, rejected).tolist() == [1.0, 0.0]
    assert (chosen.total > rejected.total).double().tolist() == [0.0, 1.0]


def test_rm_eval_counts_the_scored_tokens_and_reports_per_token_accuracy(base_model, tokenizer):
    from padkit.decoding.sequence_reward import encode_response
    from padkit.evaluation.rm_accuracy import token_wins
    from padkit.preferences import Dimension, render_input

    long_answer = "cats sleep a lot in the sun and hunt at night"
    pairs = [
        PreferencePair("Tell me about cats.", long_answer, "sky", "detailed", chosen_cut=True),
        PreferencePair("Tell me about cats.", "sky", long_answer, "concise"),
    ]
    answer_tokens = len(tokenizer(long_answer, add_special_tokens=False)["input_ids"])
    sky_tokens = len(tokenizer("sky", add_special_tokens=False)["input_ids"])
    closed = pair_rewards(base_model, tokenizer, pairs, "none")
    assert closed[0].tokens.tolist() == [answer_tokens + 1, sky_tokens + 1]  # each ends in the end token
    assert closed[1].tokens.tolist() == [sky_tokens + 1, answer_tokens + 1]
    opened = pair_rewards(base_model, tokenizer, pairs, "none", cut_ends="open")
    assert opened[0].tokens.tolist() == [answer_tokens, sky_tokens + 1]  # the cut answer is scored without it
    context = render_input(tokenizer, "Tell me about cats.", Dimension("detailed").principle)
    context_tokens = len(encode_response(tokenizer, context, "")[0])
    clipped = pair_rewards(base_model, tokenizer, pairs[:1], "none", max_length=context_tokens + 3)
    assert clipped[0].tokens.tolist() == [3]  # the max_length cut counts too
    assert clipped[0].total[0] > closed[0].total[0]  # fewer log-probabilities (all negative) summed

    expected = token_wins(*closed)
    chosen, rejected = closed
    by_hand = [
        c / n > r / m for c, n, r, m in zip(chosen.total, chosen.tokens, rejected.total, rejected.tokens, strict=True)
    ]
    assert expected.tolist() == [float(w) for w in by_hand]
    report = evaluate_rm(base_model, tokenizer, pairs, "none")
    assert report.token_accuracy == expected.mean().item()
    rows = report.as_dict()["dimensions"]
    assert rows["detailed"]["token_accuracy"] == expected[0].item()
    assert rows["concise"]["token_accuracy"] == expected[1].item()
    assert report.as_dict()["token_accuracy"] == report.token_accuracy
    assert report.by_shape["chosen longer"].token_accuracy == expected[0].item()


def test_kind_split_counts_the_groups_of_each_kind_at_its_bar():
    from padkit.evaluation.rm_accuracy import ACCURACY_BARS, RMReport, group_split, kind_split, pair_kind

    def pair(preference, dimension=None, holdout=None):
        return PreferencePair("q", "a", "b", preference, dimension, holdout)

    pairs = [
        pair("Keep it short.", "concise"),  # trained dimension, won
        pair("Keep it short.", "concise"),  # won
        pair("Use bullets.", "bulleted"),  # trained dimension, lost: 0.5 with the next
        pair("Use bullets.", "bulleted"),
        pair("Brief, please.", "concise", "wording"),  # held-out wording, won
        pair("Talk like a pirate.", "pirate", "dimension"),  # held-out dimension, lost: no bar
        pair("harmless"),  # preference text (HH-RLHF), won
        pair("Keep it short.", "early-end"),  # repair group, lost: no bar
    ]
    assert [pair_kind(p) for p in pairs[4:]] == ["wording held out", "dimension held out", "preference text", "repair"]
    wins = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    kinds = kind_split(pairs, wins, wins, group_split(pairs, wins, wins))
    assert list(kinds) == ["trained dimension", "wording held out", "dimension held out", "preference text", "repair"]
    trained = kinds["trained dimension"]
    assert (trained.accuracy, trained.n, trained.groups, trained.at_bar, trained.below) == (
        0.75,
        4,
        2,
        1,
        ["bulleted 0.500"],
    )
    assert trained.bar == ACCURACY_BARS["trained dimension"] == 0.85
    assert (kinds["wording held out"].at_bar, kinds["preference text"].at_bar) == (1, 1)
    assert kinds["repair"].bar is None and kinds["repair"].accuracy == 0.0
    row = RMReport("rm-init", 0.625, 8, by_kind=kinds).as_dict()["by_kind"]
    assert row["repair"] == {"accuracy": 0.0, "token_accuracy": 0.0, "n": 1, "groups": 1, "below": []}


def test_heldout_table_shows_the_per_token_column_and_a_dash_for_older_reports():
    from padkit.training.dpo import heldout_table

    row = {"accuracy": 0.4, "margin": -1.25, "n": 42}
    new = {"accuracy": 0.4, "token_accuracy": 0.9, "n": 42, "dimensions": {"detailed": {**row, "token_accuracy": 0.9}}}
    assert heldout_table(new)[2] == "| detailed | 0.400 | 0.900 | -1.250 | 42 |"
    assert heldout_table(new)[3] == "| all | 0.400 | 0.900 | | 42 |"
    old = {"accuracy": 0.4, "n": 42, "dimensions": {"detailed": row}}
    assert heldout_table(old)[2] == "| detailed | 0.400 | - | -1.250 | 42 |"
    assert len(heldout_table(old)) == 4  # no by_kind rows in a report written before them
    kinds = {
        "trained dimension": {
            "accuracy": 0.4,
            "token_accuracy": 0.9,
            "n": 42,
            "groups": 2,
            "bar": 0.85,
            "at_bar": 1,
            "below": ["detailed 0.400"],
        },
        "repair": {"accuracy": 1.0, "token_accuracy": 1.0, "n": 3, "groups": 1, "below": []},
    }
    lines = heldout_table({**new, "by_kind": kinds})
    assert lines[-2] == "| trained dimension | 0.400 | 0.900 | 42 | 1 of 2 >= 0.85 | detailed 0.400 |"
    assert lines[-1] == "| repair | 1.000 | 1.000 | 3 | - |  |"


def test_rm_eval_reference_base_subtracts_plain_prompt(base_model, tokenizer):
    pair = [PreferencePair("Tell me about cats.", "cats", "sky", "concise")]
    with_pref = pair_rewards(base_model, tokenizer, pair, "none")[0].total
    from padkit.decoding.sequence_reward import response_logprobs
    from padkit.preferences import render_input

    plain = response_logprobs(base_model, tokenizer, [render_input(tokenizer, "Tell me about cats.")], ["cats"])
    rewarded = pair_rewards(base_model, tokenizer, pair, "base")[0].total
    assert rewarded[0] == pytest.approx((with_pref - plain.total)[0].item())
    assert torch.isfinite(rewarded).all()


def test_rm_eval_open_cut_ends_drop_the_end_token_of_cut_responses_only(base_model, tokenizer):
    from padkit.decoding.sequence_reward import encode_response, response_logprobs
    from padkit.evaluation.rm_accuracy import end_tokens
    from padkit.preferences import Dimension, render_input

    pairs = [
        PreferencePair("Tell me about cats.", "cats sleep", "sky", "detailed", chosen_cut=True),
        PreferencePair("Tell me about cats.", "sky", "cats sleep", "concise", rejected_cut=True),
    ]
    assert end_tokens(pairs, "closed") == ([True, True], [True, True])
    assert end_tokens(pairs, "open") == ([False, True], [True, False])
    closed = [side.total for side in pair_rewards(base_model, tokenizer, pairs, "none")]
    opened = [side.total for side in pair_rewards(base_model, tokenizer, pairs, "none", cut_ends="open")]
    context = render_input(tokenizer, "Tell me about cats.", Dimension("detailed").principle)
    ids = sum(encode_response(tokenizer, context, "cats sleep", add_eos=False), [])
    logits = base_model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    eos = torch.log_softmax(logits, dim=-1)[tokenizer.eos_token_id].item()
    assert closed[0][0] - opened[0][0] == pytest.approx(eos, abs=1e-4)  # the cut chosen loses its end token
    assert opened[1][0] == closed[1][0]  # the complete rejected keeps it
    assert opened[0][1] == closed[0][1] and opened[1][1] != closed[1][1]
    single = response_logprobs(base_model, tokenizer, [context], ["cats sleep"], add_eos=[False]).total
    assert single[0] == pytest.approx(opened[0][0].item())
    with pytest.raises(PadkitError, match="unknown cut ends 'shut'; use one of closed, open"):
        end_tokens(pairs, "shut")
    with pytest.raises(ValueError, match="2 end-token flags for 1 responses"):
        response_logprobs(base_model, tokenizer, [context], ["cats"], add_eos=[True, False])
    assert evaluate_rm(base_model, tokenizer, pairs, "none", cut_ends="open").as_dict()["cut_ends"] == "open"


def test_train_bf16_autocast_and_layer_subset(tiny_model_dir, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "persrm"
    config = PersRMTrainConfig(
        base=str(tiny_model_dir),
        max_steps=2,
        batch_size=4,
        lora_r=2,
        max_length=160,
        max_prompt_length=120,
        heldout_fraction=0.0,
        bf16=True,
        layers=(1,),
    )
    train_persrm(_pairs(), out, config, progress=False)
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and all(".layers.1." in n for n in names)


def test_init_adapter_continues_a_trained_persrm_against_the_base(tiny_model_dir, tmp_path):
    """A run with ``init_adapter`` starts from that adapter's weights and LoRA shape (not the config's), and its
    reference is still the base: the first logged margin is the first adapter's, not zero."""
    from safetensors.torch import load_file

    first = tmp_path / "first"
    config = fast_train_config(tiny_model_dir, max_steps=12, layers=(1,), reward_margin=2.5)
    train_persrm(_pairs(), first, config, progress=False)
    trained = load_file(str(first / "adapter_model.safetensors"))
    still = fast_train_config(tiny_model_dir, max_steps=5, learning_rate=1e-9, lora_r=2, init_adapter=str(first))
    meta = train_persrm(_pairs(), tmp_path / "continued", still, progress=False).metadata
    continued = load_file(str(tmp_path / "continued" / "adapter_model.safetensors"))
    assert continued.keys() == trained.keys() and all(".layers.1." in name for name in continued)
    assert all(torch.allclose(continued[k], trained[k], atol=1e-5) for k in trained)  # started from it
    assert meta["config"]["lora_r"] == 4 and meta["config"]["layers"] == (1,)  # its shape, not lora_r=2
    assert meta["config"]["init_adapter"] == str(first)
    _, chosen, rejected, _ = meta["reward_curve"][0]
    assert chosen - rejected > 0.5  # measured against the base, not against a copy of itself (0)
    card = (tmp_path / "continued" / "README.md").read_text()
    assert f"Started from the trained PersRM `{first}`" in card
    assert meta["decoding"] == {"reward_margin": 2.5}  # the init's decoding margin, unless told another
    assert "decode it with its recorded reward margin of 2.5 nats by default" in card
    assert recorded_reward_margin(tmp_path / "continued") == 2.5
    fresh = fast_train_config(tiny_model_dir, max_steps=5, learning_rate=1e-9, lora_r=4, layers=(1,))
    meta = train_persrm(_pairs(), tmp_path / "fresh", fresh, progress=False).metadata
    assert abs(meta["reward_curve"][0][1] - meta["reward_curve"][0][2]) < 0.01  # a fresh LoRA starts at the base
    assert "decoding" not in meta and recorded_reward_margin(tmp_path / "fresh") == 0.0
    with pytest.raises(PadkitError, match=r"reward_margin must be a finite number in \[0, 100\]"):
        replace(still, reward_margin=-1.0)

    with pytest.raises(PadkitError, match="not a trained PersRM directory"):
        train_persrm(_pairs(), tmp_path / "x", replace(still, init_adapter=str(tiny_model_dir)), progress=False)
    with pytest.raises(PadkitError, match="was trained on"):
        train_persrm(_pairs(), tmp_path / "y", replace(still, init_adapter="persrm-smollm2"), progress=False)


def test_mirrored_order_keeps_each_pair_beside_its_mirror():
    from padkit.training.dpo import mirrored_order

    pairs = []
    for p in PROMPTS:
        pairs += [PreferencePair(p, f"- {p}", p, "bulleted"), PreferencePair(p, p, f"- {p}", "prose")]
    pairs += [PreferencePair([{"role": "user", "content": f"q{i}"}], "no", "yes", "harmless") for i in range(3)]
    order = mirrored_order(pairs, seed=0)
    assert sorted(map(repr, order)) == sorted(map(repr, pairs)) and order == mirrored_order(pairs, seed=0)
    assert order != mirrored_order(pairs, seed=1)
    blocks = [order[i : i + 2] for i in range(0, len(order), 2)]
    mirrored = [b for b in blocks if b[0].preference != "harmless"]
    assert len(mirrored) == len(PROMPTS)  # every block of two is a pair and its mirror (or two singles)
    assert all(a.prompt == b.prompt and (a.chosen, a.rejected) == (b.rejected, b.chosen) for a, b in mirrored)


def test_first_step_decisions_known_answers(base_model, rm_model, tokenizer):
    """PAD's pick at the first differing token: the base's greedy token at w=0; the top-k + EOS candidate with the
    best ``log pi_base + w * (log pi_rm(.|p) - log pi_base)`` at w=5; no decision when the two responses match."""
    from padkit.decoding.sequence_reward import encode_response
    from padkit.evaluation.rm_accuracy import first_step_decisions
    from padkit.preferences import Dimension, render_input

    prompt = "Why is the sky blue?"
    plain = encode_response(tokenizer, render_input(tokenizer, prompt), "")[0]
    with_pref = encode_response(tokenizer, render_input(tokenizer, prompt, Dimension("friendly").principle), "")[0]
    with torch.inference_mode():
        base = torch.log_softmax(base_model(input_ids=torch.tensor([plain])).logits[0, -1].float(), -1)
        rm = torch.log_softmax(rm_model(input_ids=torch.tensor([with_pref])).logits[0, -1].float(), -1)
    cands = torch.cat([base.topk(10).indices, torch.tensor([tokenizer.eos_token_id])])
    greedy = base.argmax().item()
    word = tokenizer.decode([greedy])  # the seeded models: the base goes on with it, PAD at w=5 ends (EOS)
    assert cands[(base[cands] + 5 * (rm[cands] - base[cands])).argmax()].item() == tokenizer.eos_token_id
    assert tokenizer(word, add_special_tokens=False)["input_ids"] == [greedy]
    rare = next(  # the base's least likely token that survives a decode/encode round trip: outside top-k + EOS
        t
        for t in base.argsort().tolist()
        if tokenizer(tokenizer.decode([t]), add_special_tokens=False)["input_ids"] == [t]
    )
    assert rare not in cands.tolist()

    pairs = [
        PreferencePair(prompt, word, "", "friendly"),
        PreferencePair(prompt, "", word, "friendly"),
        PreferencePair(prompt, "same", "same", "friendly"),
        PreferencePair(prompt, tokenizer.decode([rare]), word, "friendly"),
    ]
    pad0, base0, reach0, wrong0, base_wrong0 = first_step_decisions(
        rm_model, tokenizer, pairs, 0.0, base_model=base_model
    )
    pad5, base5, reach5, wrong5, base_wrong5 = first_step_decisions(
        rm_model, tokenizer, pairs, 5.0, base_model=base_model
    )
    assert pad0[:2].tolist() == base0[:2].tolist() == base5[:2].tolist() == [1.0, 0.0]
    assert pad5[:2].tolist() == [0.0, 1.0]
    assert reach0[:2].tolist() == reach5[:2].tolist() == [1.0, 1.0]  # the greedy token and EOS are candidates
    # a pick of the rejected token is the wrong turn: the mirror of the chosen picks on these two pairs
    assert wrong0[:2].tolist() == base_wrong0[:2].tolist() == base_wrong5[:2].tolist() == [0.0, 1.0]
    assert wrong5[:2].tolist() == [1.0, 0.0]
    assert [t[3].item() for t in (pad0, base0, reach0, pad5, base5, reach5)] == [0.0] * 6  # out of reach
    assert (wrong0[3].item(), base_wrong0[3].item(), wrong5[3].item()) == (1.0, 1.0, 0.0)  # the greedy, then EOS
    assert all(t[2].isnan() for t in (pad0, base0, reach0, wrong0, base_wrong0, pad5, base5, reach5, wrong5))
    report = evaluate_rm(rm_model, tokenizer, pairs, "base", decision_weight=5.0, base_model=base_model)
    assert report.decision == report.dimensions["friendly"].decision == round(1 / 3, 4)
    assert report.as_dict()["dimensions"]["friendly"]["base_decision"] == round(1 / 3, 4)
    assert report.reachable == round(2 / 3, 4)
    assert report.wrong_turn == round(1 / 3, 4) and report.as_dict()["base_wrong_turn"] == round(2 / 3, 4)
    assert "decision" not in evaluate_rm(rm_model, tokenizer, pairs, "base", base_model=base_model).as_dict()
    rm_top = next(  # a token the PersRM ranks in its top-k and the base does not: reachable only with topk+rm
        t
        for t in rm.topk(10).indices.tolist()
        if t not in cands.tolist() and tokenizer(tokenizer.decode([t]), add_special_tokens=False)["input_ids"] == [t]
    )
    own = [PreferencePair(prompt, tokenizer.decode([rm_top]), word, "friendly")]
    reach = {
        c: first_step_decisions(rm_model, tokenizer, own, 5.0, base_model=base_model, candidates=c)[2].item()
        for c in ("topk+eos", "topk+rm")
    }
    assert reach == {"topk+eos": 0.0, "topk+rm": 1.0}
    # a margin no reward gain passes: PAD keeps the base's first choice, as at w=0
    kept = first_step_decisions(rm_model, tokenizer, pairs, 5.0, base_model=base_model, reward_margin=1e6)[0]
    assert kept[:2].tolist() == [1.0, 0.0]

    # PAD's prompted base: "the base alone" is the base reading the preference, and its first choice decides
    def first_token(principle: str | None) -> int:
        ids = encode_response(tokenizer, render_input(tokenizer, prompt, principle), "")[0]
        with torch.inference_mode():
            return base_model(input_ids=torch.tensor([ids])).logits[0, -1].argmax().item()

    name = next(
        n
        for n in ("friendly", "concise", "formal", "pirate", "bulleted")
        if first_token(Dimension(n).principle) != greedy
    )
    firsts = [greedy, first_token(Dimension(name).principle)]  # the seeded base: reading it changes the first token
    either = [PreferencePair(prompt, tokenizer.decode([t]), "", name) for t in firsts]
    for read, expected in ((False, [1.0, 0.0]), (True, [0.0, 1.0])):
        picks = first_step_decisions(rm_model, tokenizer, either, 0.0, base_model=base_model, prompted_base=read)
        assert picks[0].tolist() == picks[1].tolist() == expected
    from conftest import make_tokenizer

    other = make_tokenizer(vocab_size=300)  # another vocabulary: refused before any pair is scored
    with pytest.raises(PadkitError, match="share a tokenizer"):
        evaluate_rm(
            rm_model, tokenizer, pairs, "base", decision_weight=5.0, base_model=base_model, base_tokenizer=other
        )


def test_loss_plot_shows_both_sides_rewards_when_logged(tmp_path):
    """The reward panel is where plain DPO's drift (both sides falling) shows; it appears only with a reward curve."""
    from PIL import Image

    from padkit.training.dpo import plot_loss

    meta = {"loss_curve": [[5, 0.7], [10, 0.5]], "config": {"sft_weight": 0.1}}
    plot_loss(meta, tmp_path / "loss.png")
    plot_loss({**meta, "reward_curve": [[5, 0.1, -0.2, 0.5], [10, 0.0, -1.0, 1.0]]}, tmp_path / "both.png")
    assert Image.open(tmp_path / "loss.png").size == (600, 320)
    assert Image.open(tmp_path / "both.png").size == (1000, 320)
