"""PackedGemm: MKL-packed weights for a fixed row count give the same outputs as ``F.linear``, and only inside."""

import pytest
import torch
from conftest import make_model
from torch import nn

import padkit.models.packed_gemm as packed_gemm
from padkit.decoding import PAD
from padkit.models.packed_gemm import PACK_MIN_ROWS, PackedGemm

pytestmark = pytest.mark.skipif(not packed_gemm.mkl_packing_available(), reason="torch built without MKL")


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 8, bias=False))


def test_packed_rows_and_other_shapes_equal_plain_linear():
    net = _net()
    x, prefill = torch.randn(PACK_MIN_ROWS, 24), torch.randn(2, 7, 24)
    with torch.inference_mode():
        want, want_prefill = net(x), net(prefill)
        with PackedGemm(net, rows=PACK_MIN_ROWS) as packed:
            assert packed.active and all("forward" in vars(m) for m in (net[0], net[2]))
            got, got_prefill = net(x), net(prefill)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_prefill, want_prefill, rtol=1e-6, atol=1e-6)
    assert not any("forward" in vars(m) for m in net.modules())


def test_autograd_falls_back_to_plain_linear():
    net = _net()
    x = torch.randn(PACK_MIN_ROWS, 24, requires_grad=True)
    net(x).sum().backward()
    want = x.grad.clone()
    x.grad = None
    with PackedGemm(net, rows=PACK_MIN_ROWS):
        net(x).sum().backward()
    torch.testing.assert_close(x.grad, want)


@pytest.mark.parametrize(("rows", "steps"), [(PACK_MIN_ROWS - 1, None), (PACK_MIN_ROWS, 4)])
def test_few_rows_or_steps_change_nothing(rows, steps):
    net = _net()
    with PackedGemm(net, rows=rows, steps=steps) as packed:
        assert not packed.active and not any("forward" in vars(m) for m in net.modules())


def test_an_exception_inside_restores_the_layers():
    net = _net()
    with pytest.raises(RuntimeError, match="boom"), PackedGemm(net, rows=PACK_MIN_ROWS):
        raise RuntimeError("boom")
    assert not any("forward" in vars(m) for m in net.modules())


def test_generate_packs_a_float32_batch_and_keeps_its_tokens(tokenizer, monkeypatch):
    model = make_model(tokenizer, seed=0, dtype=torch.float32)
    pad = PAD(model, tokenizer)
    prompts = ["Tell me a joke.", "Hi", "Why is the sky blue?", "Name a color."]
    packed_calls = []
    model.lm_head.register_forward_pre_hook(lambda m, args: packed_calls.append("forward" in vars(m)))
    kwargs = dict(method="base", max_new_tokens=20, ignore_eos=True)
    packed = pad.generate(prompts, **kwargs)
    assert len(packed_calls) == 20 and all(packed_calls)
    monkeypatch.setattr(packed_gemm, "PACK_MIN_ROWS", 1000)
    packed_calls.clear()
    plain = pad.generate(prompts, **kwargs)
    assert not any(packed_calls)
    assert [g.token_ids for g in packed] == [g.token_ids for g in plain]


def test_a_persrm_beside_generate_is_packed_for_its_rows(tokenizer, monkeypatch):
    base, rm = (make_model(tokenizer, seed=s, dtype=torch.float32) for s in (0, 7))
    pad = PAD(base, tokenizer, rm, tokenizer)
    prompts = ["Tell me a joke.", "Hi", "Why is the sky blue?", "Name a color."]
    packed_calls = []
    rm.lm_head.register_forward_pre_hook(lambda m, args: packed_calls.append("forward" in vars(m)))
    kwargs = dict(weight=2.0, max_new_tokens=20, ignore_eos=True)
    packed = pad.generate(prompts, "humorous", **kwargs)
    assert len(packed_calls) == 20 and all(packed_calls)
    monkeypatch.setattr(packed_gemm, "PACK_MIN_ROWS", 1000)
    assert [g.token_ids for g in packed] == [g.token_ids for g in pad.generate(prompts, "humorous", **kwargs)]
