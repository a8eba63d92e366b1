"""LoRARows: a LoRA adapter on one block of a batch's rows equals PEFT's mixed-adapter batches and per-row runs."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from padkit.models.row_lora import LoRARows

TEXTS = ["Tell me a joke.", "Why is the sky blue?", "Hi", "Explain how a bicycle stays upright in wind."]


@pytest.fixture(scope="module")
def batch(tokenizer):
    return tokenizer(TEXTS, return_tensors="pt", padding=True)


def _logits(model, batch, **kwargs):
    with torch.inference_mode():
        return model(**batch, **kwargs).logits


@pytest.mark.parametrize("rows", [slice(1, 3), slice(0, 2), slice(2, 4), slice(0, 4)])
def test_adapted_rows_equal_the_lora_model_and_the_rest_the_base(base_model, lora_rm, batch, rows):
    lora_rows = LoRARows(lora_rm, rows, len(TEXTS))
    assert lora_rows.fast
    with lora_rows:
        mixed = _logits(lora_rm, batch, **lora_rows.forward_kwargs())
    peft_mixed = _logits(lora_rm, batch, adapter_names=lora_rows.adapter_names())
    adapted, base = _logits(lora_rm, batch), _logits(base_model, batch)
    assert not torch.allclose(adapted, base, atol=1e-3)  # the adapter does change the outputs
    inside = torch.zeros(len(TEXTS), dtype=torch.bool)
    inside[rows] = True
    torch.testing.assert_close(mixed[inside], adapted[inside], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[~inside], base[~inside], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed, peft_mixed, atol=1e-5, rtol=1e-5)


def test_the_context_restores_the_model(lora_rm, batch):
    before = _logits(lora_rm, batch)
    with LoRARows(lora_rm, slice(0, 1), len(TEXTS)):
        pass
    torch.testing.assert_close(_logits(lora_rm, batch), before)
    with lora_rm.disable_adapter():
        off = _logits(lora_rm, batch)
        with LoRARows(lora_rm, slice(0, 1), len(TEXTS)):
            pass
        torch.testing.assert_close(_logits(lora_rm, batch), off)  # still off: the context kept the user's state


def test_an_exception_inside_leaves_no_hooks(lora_rm, batch):
    before = _logits(lora_rm, batch)
    with pytest.raises(RuntimeError, match="boom"), LoRARows(lora_rm, slice(0, 2), len(TEXTS)):
        raise RuntimeError("boom")
    torch.testing.assert_close(_logits(lora_rm, batch), before)


def test_a_lora_beyond_linear_layers_falls_back_to_peft_mixed_batches(base_model, batch):
    torch.manual_seed(3)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "embed_tokens"], init_lora_weights=False)
    lora = get_peft_model(copy.deepcopy(base_model), config).eval()
    lora_rows = LoRARows(lora, slice(1, 3), len(TEXTS))
    assert not lora_rows.fast
    assert lora_rows.forward_kwargs() == {"adapter_names": ["__base__", "default", "default", "__base__"]}
    with lora_rows:
        mixed = _logits(lora, batch, **lora_rows.forward_kwargs())
    adapted, base = _logits(lora, batch), _logits(base_model, batch)
    torch.testing.assert_close(mixed[1:3], adapted[1:3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[[0, 3]], base[[0, 3]], atol=1e-5, rtol=1e-5)


def test_adapter_switch_nests_and_restores_flags_and_layer_forwards(base_model, lora_rm, batch):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from padkit.models.row_lora import AdapterSwitch

    layers = [m for m in lora_rm.modules() if isinstance(m, BaseTunerLayer)]
    base, adapted = _logits(base_model, batch), _logits(lora_rm, batch)
    assert not torch.allclose(base, adapted, atol=1e-4)
    with AdapterSwitch(lora_rm, False):
        assert torch.allclose(_logits(lora_rm, batch), base, atol=1e-5)
        with AdapterSwitch(lora_rm, True):  # a PersRM forward inside a base decode
            assert torch.allclose(_logits(lora_rm, batch), adapted, atol=1e-5)
            assert not any("forward" in vars(layer) for layer in layers)
        assert torch.allclose(_logits(lora_rm, batch), base, atol=1e-5)
        with LoRARows(lora_rm, slice(1, 3), len(TEXTS)) as rows:  # rows switched on inside an off switch
            mixed = _logits(lora_rm, batch, **rows.forward_kwargs())
        assert torch.allclose(mixed[1:3], adapted[1:3], atol=1e-4) and torch.allclose(mixed[0], base[0], atol=1e-4)
    assert all(not layer._disable_adapters and "forward" not in vars(layer) for layer in layers)
    assert torch.allclose(_logits(lora_rm, batch), adapted, atol=1e-5)


def test_base_weights_only_takes_the_lora_layers_out_and_puts_them_back(base_model, lora_rm, batch):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from padkit.models.row_lora import BaseWeightsOnly

    base, adapted = _logits(base_model, batch), _logits(lora_rm, batch)
    before = dict(lora_rm.named_modules())
    with BaseWeightsOnly(lora_rm) as bare:
        assert bare is lora_rm.get_base_model()
        assert not any(isinstance(m, BaseTunerLayer) for m in lora_rm.modules())
        assert torch.allclose(_logits(bare, batch), base, atol=1e-5)
    assert dict(lora_rm.named_modules()).keys() == before.keys()
    assert all(m is before[n] for n, m in lora_rm.named_modules())
    assert torch.allclose(_logits(lora_rm, batch), adapted, atol=1e-5)
    with BaseWeightsOnly(base_model) as same:
        assert same is base_model
