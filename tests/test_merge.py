"""``padkit merge``: the weighted sum of trained PersRMs' LoRA updates, on tiny models."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import fast_train_config
from safetensors.torch import load_file
from typer.testing import CliRunner

from padkit.cli.main import app
from padkit.errors import PadkitError
from padkit.models.loading import load_model, load_tokenizer, read_metadata, recorded_reward_margin
from padkit.training.data import PreferencePair, split_pairs
from padkit.training.dpo import decoding_record, train_persrm
from padkit.training.merge import merge_persrms

PROMPTS = [f"Question number {i}: tell me about item {i}." for i in range(8)]


def _pairs() -> list[PreferencePair]:
    return [PreferencePair(p, "concise and short.", "why why why why sky sky sky", "concise") for p in PROMPTS]


def _train(tiny_model_dir, out, **settings):
    config = fast_train_config(
        tiny_model_dir,
        heldout_fraction=0.5,
        batch_size=2,
        max_steps=5,  # the trainer logs the loss every 5 steps
        save_steps=5,
        **{"layers": (1,), **settings},
    )
    train_persrm(_pairs(), out, config, data_sources=["inline"], command=f"train {out.name}", progress=False)
    return out


@pytest.fixture
def two_persrms(tiny_model_dir, tmp_path):
    return _train(tiny_model_dir, tmp_path / "a"), _train(tiny_model_dir, tmp_path / "b", learning_rate=5e-3)


def _update(adapter_dir, module: str) -> torch.Tensor:
    """The adapter's full weight update of one module: (alpha / r) * B @ A."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    a, b = (weights[f"base_model.model.{module}.lora_{x}.weight"] for x in "AB")
    return config["lora_alpha"] / config["r"] * b @ a


def test_merge_is_the_exact_weighted_sum_of_the_updates(two_persrms, tmp_path):
    a, b = two_persrms
    out = tmp_path / "merged"
    result = merge_persrms([a, b], [0.3, 0.7], out, _pairs(), ["inline"], command="merge it")
    assert result.rank == 8 and not (out / ".saving").exists()
    for module in ("model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.o_proj"):
        expected = 0.3 * _update(a, module) + 0.7 * _update(b, module)
        assert not torch.allclose(_update(a, module), _update(b, module))
        assert torch.allclose(_update(out, module), expected, atol=1e-6)
    meta = read_metadata(out)
    assert [s["weight"] for s in meta["merged_from"]] == [0.3, 0.7] and meta["command"] == "merge it"
    assert [s["command"] for s in meta["merged_from"]] == ["train a", "train b"]
    _, heldout = split_pairs(_pairs(), 0.5)
    assert 0 < meta["heldout"]["n"] == len(heldout) == result.heldout.n  # the sources' held-out split
    card = (out / "README.md").read_text()
    assert "```\nmerge it\n```" in card and "```\ntrain b\n```" in card and "| 2 | `" in card and "| 0.7 |" in card
    assert "## Held-out accuracy" in card and (out / "loss_curve.png").stat().st_size > 1000


def test_merging_a_persrm_with_itself_gives_its_own_rewards(two_persrms, tmp_path):
    a, _ = two_persrms
    merge_persrms([a, a], [0.5, 0.5], tmp_path / "self")
    tok = load_tokenizer(str(a))
    ids = tok("Tell me about cats. concise and short.", return_tensors="pt").input_ids
    with torch.no_grad():
        alone = load_model(str(a))(ids).logits
        merged = load_model(str(tmp_path / "self"))(ids).logits
    assert torch.allclose(alone, merged, atol=1e-5)
    assert read_metadata(tmp_path / "self")["heldout"] is None  # no data given: nothing scored


def test_merge_rejects_what_cannot_be_merged(two_persrms, tiny_model_dir, tmp_path):
    a, b = two_persrms
    with pytest.raises(PadkitError, match="at least two"):
        merge_persrms([a], [1.0], tmp_path / "x")
    with pytest.raises(PadkitError, match="1 weight"):
        merge_persrms([a, b], [1.0], tmp_path / "x")
    with pytest.raises(PadkitError, match="must be positive"):
        merge_persrms([a, b], [1.0, -0.5], tmp_path / "x")
    with pytest.raises(PadkitError, match="not a trained PersRM directory"):
        merge_persrms([a, tiny_model_dir], [0.5, 0.5], tmp_path / "x")
    other_layers = _train(tiny_model_dir, tmp_path / "c", layers=(0,))
    with pytest.raises(PadkitError, match="different layers_to_transform"):
        merge_persrms([a, other_layers], [0.5, 0.5], tmp_path / "x")
    other_split = _train(tiny_model_dir, tmp_path / "d", split_salt="other")
    with pytest.raises(PadkitError, match="different split_salt"):
        merge_persrms([a, other_split], [0.5, 0.5], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_merge_cli_weighs_equally_by_default_and_names_bad_input(two_persrms, tmp_path, monkeypatch):
    a, b = two_persrms
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["merge", str(a), str(b), "--output", str(out), "--json"]
    monkeypatch.setattr(sys, "argv", ["padkit", *args])  # what the command records
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert [s["weight"] for s in meta["merged_from"]] == [0.5, 0.5]
    assert meta["command"] == "padkit " + " ".join(args) and read_metadata(out) == meta
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps({k: getattr(p, k) for k in ("prompt", "chosen", "rejected", "preference")}) + "\n"
            for p in _pairs()
        )
    )
    scored = runner.invoke(
        app, ["merge", str(a), str(b), "-o", str(tmp_path / "z"), "-w", "0.3", "-w", "0.7"] + ["--data", str(data)]
    )
    assert scored.exit_code == 0, scored.output
    assert "merged adapter (LoRA rank 8)" in scored.output and "held-out accuracy" in scored.output
    assert read_metadata(tmp_path / "z")["data"] == [f"pairs:{data} (8)"]
    bad = runner.invoke(app, ["merge", str(a), str(b), "-o", str(tmp_path / "y"), "-w", "1"])
    assert bad.exit_code == 2 and "1 weight(s) for 2 PersRMs" in bad.output


def test_decoding_record_records_the_given_margin_or_the_one_all_sources_share():
    three = {"decoding": {"reward_margin": 3.0}}
    assert decoding_record([three, {}], 2.5) == {"reward_margin": 2.5}
    assert decoding_record([three, three], None) == {"reward_margin": 3.0}
    assert decoding_record([three, {}], None) == {}  # one records none (margin 0): the sources disagree
    assert decoding_record([{}, {}], None) == {}
    for bad in (-1.0, 101.0, float("nan")):
        with pytest.raises(PadkitError, match=r"reward_margin must be a finite number in \[0, 100\]"):
            decoding_record([three, three], bad)


def test_merge_cli_records_a_reward_margin(two_persrms, tmp_path):
    a, b = two_persrms
    runner = CliRunner()
    result = runner.invoke(app, ["merge", str(a), str(b), "-o", str(tmp_path / "m"), "--reward-margin", "3"])
    assert result.exit_code == 0, result.output
    assert recorded_reward_margin(tmp_path / "m") == 3.0
    assert "recorded reward margin of 3 nats" in (tmp_path / "m" / "README.md").read_text()
    assert recorded_reward_margin(a) == 0.0 and "decoding" not in read_metadata(a)
    bad = runner.invoke(app, ["merge", str(a), str(b), "-o", str(tmp_path / "n"), "--reward-margin", "-2"])
    assert bad.exit_code == 2 and "reward_margin must be a finite number in [0, 100], got -2.0" in bad.output
    assert not (tmp_path / "n").exists()


def test_training_continues_from_a_merged_persrm(two_persrms, tiny_model_dir, tmp_path):
    """``init_adapter`` takes a merge (rank: the sources' ranks summed) as it takes a trained PersRM: the run keeps
    the merge's shape, starts from its update, and its card names the merge it started from."""
    a, b = two_persrms
    merged = tmp_path / "merged"
    merge_persrms([a, b], [0.75, 0.25], merged, command="merge a b")
    still = fast_train_config(
        tiny_model_dir, heldout_fraction=0.5, batch_size=2, max_steps=5, learning_rate=1e-9, init_adapter=str(merged)
    )
    meta = train_persrm(_pairs(), tmp_path / "continued", still, progress=False).metadata
    assert meta["config"]["lora_r"] == 8 and meta["config"]["init_adapter"] == str(merged)
    for module in ("model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"):
        assert torch.allclose(_update(tmp_path / "continued", module), _update(merged, module), atol=1e-5)
    assert f"Started from the trained PersRM `{merged}`" in (tmp_path / "continued" / "README.md").read_text()
