"""Device and dtype selection, random-weight models of real shapes, and (on a CUDA machine) the same greedy tokens
on the GPU as on the CPU. The CUDA tests are skipped without a GPU; ``scripts/gpu_check.sh`` runs them there."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_lora, make_model
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from padkit import PAD
from padkit.cli.main import app
from padkit.errors import ModelLoadError
from padkit.models import dummy, loading
from padkit.models.loading import resolve_device, resolve_dtype

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")
PROMPTS = ["Tell me about cats.", "Why is the sky blue?", "Hi"]


def _gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_picks_the_first_gpu_when_there_is_one(monkeypatch):
    _gpus(monkeypatch, 0)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    _gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0) and resolve_device("CUDA:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_device_that_is_not_there_is_refused_with_the_reason(monkeypatch):
    _gpus(monkeypatch, 0)
    with pytest.raises(ModelLoadError, match="'cuda' asked for, but .*use --device cpu"):
        resolve_device("cuda")
    _gpus(monkeypatch, 1)
    with pytest.raises(ModelLoadError, match="only 1 CUDA GPU"):
        resolve_device("cuda:3")
    with pytest.raises(ModelLoadError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ModelLoadError, match="unsupported device 'xpu'"):
        resolve_device("xpu")


def test_auto_dtype_is_bf16_on_a_gpu_and_float32_on_the_cpu():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype(torch.float16, torch.device("cpu")) == torch.float16
    with pytest.raises(ModelLoadError, match="unknown dtype 'half'"):
        resolve_dtype("half", torch.device("cpu"))


def test_load_model_puts_a_saved_model_on_the_device_in_the_dtype(tiny_model_dir):
    model = loading.load_model(str(tiny_model_dir), "bfloat16", "cpu")
    assert model.device == torch.device("cpu") and model.dtype == torch.bfloat16
    assert loading.load_model(str(tiny_model_dir)).dtype == torch.float32  # auto on the CPU


# The shipped shapes are the real models' configs: their parameter counts say so (built on the meta device).
@pytest.mark.parametrize(
    ("shape", "billions"),
    [("smollm2-135m", 0.1345), ("llama-3.2-1b", 1.236), ("qwen2.5-7b", 7.616), ("llama-3.1-8b", 8.030)],
)
def test_shipped_shapes_have_the_real_models_sizes(shape, billions):
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(dummy.shape_config(shape))
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, rel=2e-3)


def _tiny_shape(tmp_path, tokenizer) -> str:
    config = {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tokenizer) + 16,
        "max_position_embeddings": 256,
    }
    (tmp_path / "shape.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(tmp_path / "tok")
    return str(tmp_path / "shape.json")


def test_dummy_pad_is_a_random_base_and_a_random_lora_on_it(tmp_path, tokenizer):
    shape = _tiny_shape(tmp_path, tokenizer)
    pad = PAD.from_dummy(shape, lora_rank=4, tokenizer=str(tmp_path / "tok"), device="cpu")
    assert pad.rm_shares_base and pad.rm_name == "random LoRA r4" and pad.base_name == "dummy:shape"
    kwargs = dict(max_new_tokens=12, ignore_eos=True)
    guided = pad.generate(PROMPTS[:1], "concise", weight=4.0, **kwargs)[0].token_ids
    plain = pad.generate(PROMPTS[:1], method="base", **kwargs)[0].token_ids
    assert guided != plain  # the random LoRA is not the identity
    again = PAD.from_dummy(shape, lora_rank=4, tokenizer=str(tmp_path / "tok"), device="cpu")
    assert again.generate(PROMPTS[:1], "concise", weight=4.0, **kwargs)[0].token_ids == guided  # seeded
    self_pad = PAD.from_dummy(shape, rm="self", tokenizer=str(tmp_path / "tok"), device="cpu")
    assert self_pad.rm_is_self and self_pad.generate(PROMPTS[:1], method="base", **kwargs)[0].token_ids == plain


def test_dummy_settings_that_cannot_work_are_refused(tmp_path, tokenizer):
    with pytest.raises(ModelLoadError, match="no model config 'llama-9b'.*llama-3.1-8b"):
        dummy.shape_config("llama-9b")
    shape = _tiny_shape(tmp_path, tokenizer)
    small = tmp_path / "small.json"
    small.write_text(json.dumps({**json.loads((tmp_path / "shape.json").read_text()), "vocab_size": 64}))
    with pytest.raises(ModelLoadError, match="more than the shape's vocabulary of 64"):
        PAD.from_dummy(str(small), tokenizer=str(tmp_path / "tok"), device="cpu")
    with pytest.raises(ModelLoadError, match="'lora'.*or 'self'"):
        PAD.from_dummy(shape, rm="trained", tokenizer=str(tmp_path / "tok"), device="cpu")


def test_bench_speed_measures_a_dummy_shape(tmp_path, tokenizer):
    shape = _tiny_shape(tmp_path, tokenizer)
    args = ["bench", "speed", "--load-format", "dummy", "--base", shape, "--tokenizer", str(tmp_path / "tok")]
    result = CliRunner().invoke(
        app, [*args, "--lora-rank", "4", "-n", "4", "--batch-size", "2", "--repeats", "1", "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["base"] == "dummy:shape" and report["rm"] == "random LoRA r4"
    assert report["device"] == "cpu" and report["dtype"] == "float32" and report["pad_tps"] > 0
    bad = CliRunner().invoke(app, ["bench", "speed", "--load-format", "fast", "--base", shape])
    assert bad.exit_code != 0 and "unknown --load-format 'fast'" in bad.output


def _gpu_gives_cpu_tokens(models, make_pad, max_new_tokens: int = 16, **kwargs) -> None:
    """Greedy tokens of ``make_pad()`` on the CPU, then again with ``models`` moved to CUDA: the same."""
    on_cpu = make_pad().generate(PROMPTS, "concise", max_new_tokens=max_new_tokens, ignore_eos=True, **kwargs)
    for model in models:
        model.to("cuda")
    on_gpu = make_pad().generate(PROMPTS, "concise", max_new_tokens=max_new_tokens, ignore_eos=True, **kwargs)
    assert [g.token_ids for g in on_gpu] == [g.token_ids for g in on_cpu]


@cuda
@pytest.mark.parametrize("method", ["base", "prompt", "pad", "policy", "amulet", "persona-judge"])
def test_cuda_gives_the_cpu_tokens_in_float32(tokenizer, method):
    """Tiny models in float32: greedy tokens on the GPU equal the CPU's (LoRA PersRM on the base, fused)."""
    lora = make_lora(make_model(tokenizer, seed=0, dtype=torch.float32))
    _gpu_gives_cpu_tokens([lora], lambda: PAD(lora, tokenizer, lora, tokenizer), method=method, weight=2.0)


@cuda
def test_cuda_two_model_pad_and_rm_init_reference(tokenizer):
    base, rm = (make_model(tokenizer, seed=s, dtype=torch.float32) for s in (0, 7))
    _gpu_gives_cpu_tokens([base, rm], lambda: PAD(base, tokenizer, rm, tokenizer), weight=2.0)
    lora = make_lora(make_model(tokenizer, seed=0, dtype=torch.float32))
    ref = dict(weight=2.0, reference="rm-init", fused=False)
    _gpu_gives_cpu_tokens([lora], lambda: PAD(lora, tokenizer, lora, tokenizer), **ref)


@cuda
def test_cuda_cross_tokenizer_pad(tokenizer):
    from conftest import make_tokenizer

    other = make_tokenizer(vocab_size=300)
    base, rm = make_model(tokenizer, seed=0, dtype=torch.float32), make_model(other, seed=7, dtype=torch.float32)
    _gpu_gives_cpu_tokens([base, rm], lambda: PAD(base, tokenizer, rm, other), weight=2.0, max_new_tokens=12)


@cuda
def test_cuda_continuous_batch_equals_its_lone_decodes(tokenizer):
    from padkit.decoding.config import PADConfig
    from padkit.decoding.continuous import ContinuousBatch, ContinuousRequest
    from padkit.preferences import Preference

    lora = make_lora(make_model(tokenizer, seed=0, dtype=torch.float32)).to("cuda")
    pad = PAD(lora, tokenizer, lora, tokenizer)
    config = PADConfig(weight=2.0, max_new_tokens=12, ignore_eos=True)
    batch = ContinuousBatch(pad, max_rows=16)
    requests = [ContinuousRequest(p, Preference.parse("concise"), config) for p in PROMPTS]
    for request in requests:
        batch.submit(request)
    while not batch.idle:
        batch.step()
    alone = [pad.generate([p], "concise", config=config)[0].token_ids for p in PROMPTS]
    assert [r.result.token_ids for r in requests] == alone


@cuda
def test_dummy_shapes_build_on_the_gpu_in_bf16(tokenizer, tmp_path):
    pad = PAD.from_dummy(_tiny_shape(tmp_path, tokenizer), tokenizer=str(tmp_path / "tok"))  # auto: cuda, bf16
    assert pad.base_model.device.type == "cuda" and pad.base_model.dtype == torch.bfloat16
    assert len(pad.generate(PROMPTS, "concise", max_new_tokens=8, ignore_eos=True)[0].token_ids) == 8
