"""ReservedCache: in-place KV writes give the same attention inputs, logits and tokens as transformers' DynamicCache."""

import pytest
import torch
from transformers import LlamaConfig, MistralConfig
from transformers.cache_utils import DynamicLayer

import padkit.decoding.pad as pad_module
from padkit.decoding import PAD
from padkit.decoding.kv_cache import ReservedCache, ReservedLayer, reserved_cache

PROMPTS = ["Tell me a joke.", "Hi", "Explain how a bicycle stays upright in wind."]


def _states(steps, rows=3, heads=2, dim=4, seed=0):
    torch.manual_seed(seed)
    return [(torch.randn(rows, heads, n, dim), torch.randn(rows, heads, n, dim)) for n in steps]


def test_a_layer_returns_what_concatenation_returns_through_growth_and_crops():
    reserved, dynamic = ReservedLayer(capacity=6), DynamicLayer()
    for i, (k, v) in enumerate(_states([5, 1, 1, 3, 1, 1, 1, 1])):  # 5 + 1 fits, then doubles twice
        if i == 4:
            reserved.crop(-2)
            dynamic.crop(-2)
        got, want = reserved.update(k, v), dynamic.update(k, v)
        assert reserved.get_seq_length() == dynamic.get_seq_length()
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert reserved._key_buffer.shape[-2] >= reserved.get_seq_length() > 6


def test_a_step_writes_in_place_within_capacity():
    layer = ReservedLayer(capacity=10)
    (k0, v0), (k1, v1) = _states([4, 1])
    layer.update(k0, v0)
    buffer = layer._key_buffer
    keys, _ = layer.update(k1, v1)
    assert layer._key_buffer is buffer and keys.data_ptr() == buffer.data_ptr()


@pytest.mark.parametrize("op", ["select", "repeat"])
def test_batch_reshuffles_keep_the_contents(op):
    reserved, dynamic = ReservedLayer(capacity=8), DynamicLayer()
    for k, v in _states([3, 1]):
        reserved.update(k, v)
        dynamic.update(k, v)
    for layer in (reserved, dynamic):
        if op == "select":
            layer.batch_select_indices(torch.tensor([2, 0]))
        else:
            layer.batch_repeat_interleave(2)
    ((k, v),) = _states([1], rows=reserved.keys.shape[0], seed=5)
    for a, b in zip(reserved.update(k, v), dynamic.update(k, v), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_generate_with_a_reserved_cache_equals_the_default_cache(base_model, tokenizer):
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    options = dict(
        max_new_tokens=12, do_sample=False, min_new_tokens=12, output_logits=True, return_dict_in_generate=True
    )
    with torch.inference_mode():
        default = base_model.generate(**batch, **options)
        cache = reserved_cache(base_model.config, batch["input_ids"].shape[1] + 12)
        reserved = base_model.generate(**batch, cache=cache, **options)
    assert isinstance(cache, ReservedCache) and cache.get_seq_length() == reserved.sequences.shape[1] - 1
    assert torch.equal(default.sequences, reserved.sequences)
    torch.testing.assert_close(torch.stack(default.logits), torch.stack(reserved.logits))


def test_pad_generate_is_unchanged_by_the_reserved_cache(base_model, lora_rm, tokenizer, monkeypatch):
    pad = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True)
    kwargs = dict(preference="humorous", weight=2.0, max_new_tokens=10, ignore_eos=True)
    fused, unfused = pad.generate(PROMPTS, **kwargs), pad.generate(PROMPTS, fused=False, **kwargs)
    monkeypatch.setattr(pad_module, "reserved_cache", lambda *args: None)
    monkeypatch.setattr("padkit.decoding.reward.reserved_cache", lambda *args: None)
    assert [g.token_ids for g in fused] == [g.token_ids for g in pad.generate(PROMPTS, **kwargs)]
    assert [g.token_ids for g in unfused] == [g.token_ids for g in pad.generate(PROMPTS, fused=False, **kwargs)]


def test_models_with_sliding_window_layers_keep_their_own_cache():
    llama = LlamaConfig(num_hidden_layers=3)
    assert isinstance(reserved_cache(llama, 16), ReservedCache) and len(reserved_cache(llama, 16).layers) == 3
    assert reserved_cache(MistralConfig(num_hidden_layers=2, sliding_window=8), 16) is None
