"""PackedGemm: MKL-packed weights for a fixed row count give the same outputs as ``F.linear``, and only inside."""

import pytest
import torch
from conftest import make_model
from torch import nn

import padkit.models.packed_gemm as packed_gemm
from padkit.decoding import PAD
from padkit.errors import PadkitError
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


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_few_packed_rows_equal_plain_linear(rows, monkeypatch):
    """Packing may be chosen at any row count on some machine: its outputs must not depend on that choice."""
    monkeypatch.setattr(packed_gemm, "should_pack", lambda model, n: True)
    net, x = _net(), torch.randn(rows, 24)
    with torch.inference_mode():
        want = net(x)
        with PackedGemm(net, rows=rows) as packed:
            assert packed.active
            got = net(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


class _Clock:
    """A stand-in for :func:`time_packing`: packing pays at the given row counts; counts its calls."""

    def __init__(self, pays_at):
        self.pays_at, self.calls = set(pays_at), []

    def __call__(self, layers, rows):
        self.calls.append(rows)
        return packed_gemm.PackingTiming(rows, 10.0, 5.0 if rows in self.pays_at else 11.0)


def test_the_tuner_measures_each_row_count_once_and_keeps_it(tmp_path):
    net, path = _net(), tmp_path / "tune.json"
    clock = _Clock(pays_at={2})
    tuner = packed_gemm.PackingTuner(path, measure=clock)
    assert [tuner.pays(net, r) for r in (1, 2, 2, 8)] == [False, True, True, False]
    assert clock.calls == [1, 2, 8]
    again = packed_gemm.PackingTuner(path, measure=clock)  # a new process reads the file
    assert again.pays(net, 2) and clock.calls == [1, 2, 8]
    (timings,) = again.this_machine().values()
    assert timings[2] == packed_gemm.PackingTiming(2, 10.0, 5.0) and sorted(timings) == [1, 2, 8]
    other = nn.Sequential(nn.Linear(24, 16))  # other shapes: measured on their own
    again.pays(other, 2)
    assert clock.calls == [1, 2, 8, 2] and len(again.this_machine()) == 2
    assert again.pays(net, 2) and clock.calls == [1, 2, 8, 2]  # asked again in this process: not even read
    path.write_text("{not json")  # a damaged file is measured again (by the next process) and rewritten
    fresh = packed_gemm.PackingTuner(path, measure=clock)
    assert fresh.pays(net, 2) and clock.calls[-1] == 2 and len(fresh.this_machine()) == 1


def test_a_tie_keeps_the_plain_kernel():
    assert not packed_gemm.PackingTiming(2, 10.0, 9.9).pays
    assert packed_gemm.PackingTiming(2, 10.0, 9.0).pays


def test_time_packing_times_both_kernels_on_the_layers():
    net = _net()
    timing = packed_gemm.time_packing([net[0], net[2]], rows=2, rounds=2)
    assert timing.rows == 2 and timing.plain_ms > 0 and timing.packed_ms > 0


def test_policies(monkeypatch, tmp_path):
    net = _net()
    monkeypatch.setenv("PADKIT_GEMM_PACKING", "off")
    assert not PackedGemm(net, rows=8).active
    monkeypatch.setenv("PADKIT_GEMM_PACKING", "fixed")
    assert not PackedGemm(net, rows=PACK_MIN_ROWS - 1).active and PackedGemm(net, rows=PACK_MIN_ROWS).active
    monkeypatch.setenv("PADKIT_GEMM_PACKING", "auto")
    monkeypatch.setattr(packed_gemm, "TUNER", packed_gemm.PackingTuner(tmp_path / "t.json", measure=_Clock({2})))
    assert PackedGemm(net, rows=2).active and not PackedGemm(net, rows=PACK_MIN_ROWS).active
    monkeypatch.setenv("PADKIT_GEMM_PACKING", "sometimes")
    with pytest.raises(PadkitError, match="PADKIT_GEMM_PACKING='sometimes'"):
        packed_gemm.should_pack(net, 2)


def test_auto_packs_pads_two_row_step_where_measured_to_pay(tokenizer, monkeypatch, tmp_path):
    """Batch-1 PAD on a LoRA-free self PersRM: one fused forward of 2 rows, packed when the tuner says so."""
    model = make_model(tokenizer, seed=0, dtype=torch.float32)
    pad = PAD(model, tokenizer)
    kwargs = dict(weight=2.0, max_new_tokens=20, ignore_eos=True)
    calls = []
    model.lm_head.register_forward_pre_hook(lambda m, args: calls.append("forward" in vars(m)))
    monkeypatch.setenv("PADKIT_GEMM_PACKING", "auto")
    clock = _Clock(pays_at={2})
    monkeypatch.setattr(packed_gemm, "TUNER", packed_gemm.PackingTuner(tmp_path / "t.json", measure=clock))
    packed = pad.generate(["Tell me a joke."], "humorous", **kwargs)[0]
    assert clock.calls == [2] and calls and all(calls[1:])  # the prefill runs before the step count is known
    monkeypatch.setenv("PADKIT_GEMM_PACKING", "off")
    calls.clear()
    plain = pad.generate(["Tell me a joke."], "humorous", **kwargs)[0]
    assert not any(calls) and packed.token_ids == plain.token_ids
