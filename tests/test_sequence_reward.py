"""Summed response log-probabilities: the batched, prefix-sharing scorer against one full forward per row."""

from __future__ import annotations

import pytest
import torch
from conftest import make_lora, make_model, make_tokenizer

from padkit.decoding.sequence_reward import encode_response, response_logprobs
from padkit.preferences import render_input


def full_forward(model, tokenizer, context: str, response: str, add_eos: bool) -> float:
    """One row, no cache, no padding: the definition the batched scorer must reproduce."""
    return full_forward_and_greedy(model, tokenizer, context, response, add_eos)[0]


def full_forward_and_greedy(model, tokenizer, context: str, response: str, add_eos: bool) -> tuple[float, int]:
    """The row's summed log-prob and how many of its response tokens are the model's argmax."""
    c, r = encode_response(tokenizer, context, response, add_eos=add_eos)
    ids = torch.tensor([c + r])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    targets = ids[0, 1:]
    picked = logps.gather(-1, targets[:, None]).squeeze(-1)
    start = max(len(c), 1) - 1
    greedy = (logps.argmax(dim=-1) == targets)[start:]
    return picked[start:].sum().item(), int(greedy.sum())


def rows(tokenizer):
    cats, dogs = render_input(tokenizer, "Tell me about cats."), render_input(tokenizer, "Tell me about dogs, please.")
    return [
        (cats, "Cats sleep a lot.", True),
        (dogs, "Dogs bark.", False),
        (cats, "They purr and sleep most of the day.", False),  # shares all of its context with row 0
        (cats + " Briefly.", "Short.", True),  # shares only a prefix of it
        (dogs, "", True),  # the end token alone
        (cats, "Cats.", True),
    ]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_batched_scores_match_one_full_forward_per_row(base_model, tokenizer, batch_size):
    sky = render_input(tokenizer, "Why is the sky blue?")
    context = encode_response(tokenizer, sky, "", add_eos=False)[0]
    own = base_model.generate(torch.tensor([context]), max_new_tokens=3, do_sample=False)[0, len(context) :]
    data = [*rows(tokenizer), (sky, tokenizer.decode(own), False)]  # the model's own greedy answer (its 3 tokens)
    contexts, responses, ends = map(list, zip(*data, strict=True))
    scores = response_logprobs(base_model, tokenizer, contexts, responses, batch_size=batch_size, add_eos=ends)
    expected, greedy = zip(*(full_forward_and_greedy(base_model, tokenizer, c, r, e) for c, r, e in data), strict=True)
    assert scores.total.tolist() == pytest.approx(expected, abs=1e-8)
    assert scores.greedy.tolist() == list(greedy) and greedy[-1] == scores.tokens[-1] == 3
    lengths = [len(encode_response(tokenizer, c, r, add_eos=e)[1]) for c, r, e in data]
    assert scores.tokens.tolist() == lengths and lengths[4] == 1


@pytest.mark.parametrize("batch_size", [2, 4])
def test_lora_model_and_contexts_without_a_shared_prefix(base_model, batch_size):
    plain = make_tokenizer(chat_template=None)  # no template: contexts share no prefix, the first token has none
    model = make_lora(base_model)
    # an empty context and a one-token one have no head to cache, batched beside contexts that have one
    data = [("cats", "sleep", True), ("dogs", "bark loudly", False), ("", "nothing before", True), ("a", "b c", True)]
    contexts, responses, ends = map(list, zip(*data, strict=True))
    scores = response_logprobs(model, plain, contexts, responses, batch_size=batch_size, add_eos=ends)
    expected = [full_forward(model, plain, c, r, e) for c, r, e in data]
    assert scores.total.tolist() == pytest.approx(expected, abs=1e-8)
    assert all(s != 0 for s in expected)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scores_stay_finite_and_exact_under_each_attention(tokenizer, attention, dtype):
    """Heads of different lengths share one padded forward: under either attention kernel and dtype no padding
    slot may put a NaN into the cache the real tokens read. (Heads padded on the left would give each padding
    query no key at all: eager float64 then returns NaN scores, which is why the heads are padded on the right.)"""
    model = make_model(tokenizer, seed=3, dtype=dtype)
    model.set_attn_implementation(attention)
    data = rows(tokenizer)
    contexts, responses, ends = map(list, zip(*data, strict=True))
    scores = response_logprobs(model, tokenizer, contexts, responses, batch_size=8, add_eos=ends)
    expected = [full_forward(model, tokenizer, c, r, e) for c, r, e in data]
    assert torch.isfinite(scores.total).all()
    # transformers' eager kernel takes its softmax in float32 even for a float64 model, and how a float32 sum over a
    # padded row rounds depends on the CPU: 1.5e-6 apart on an AVX-512 Xeon, under 1e-8 on the AMD EPYC of sessions
    # 43-74
    tolerance = 1e-3 if dtype == torch.float32 else 1e-5 if attention == "eager" else 1e-8
    assert scores.total.tolist() == pytest.approx(expected, abs=tolerance)


def test_sliding_window_model_scores_each_context_within_its_window(tokenizer):
    """A sliding window counts cache slots, so contexts of different lengths cannot share one padded head cache
    once a row outgrows the window (Gemma-3's local layers); the scorer then runs one context at a time."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=6,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = Gemma3ForCausalLM(config).double().eval()
    data = rows(tokenizer)
    contexts, responses, ends = map(list, zip(*data, strict=True))
    scores = response_logprobs(model, tokenizer, contexts, responses, batch_size=8, add_eos=ends)
    expected = [full_forward(model, tokenizer, c, r, e) for c, r, e in data]
    assert scores.total.tolist() == pytest.approx(expected, abs=1e-8)
