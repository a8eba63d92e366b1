"""Continuous batching: requests join and leave a running batch between steps, and each greedy request gives
the tokens it gives alone."""

from __future__ import annotations

import pytest
import torch

from padkit import PAD, PADConfig
from padkit.decoding.continuous import ContinuousBatch, ContinuousRequest
from padkit.errors import GenerationError
from padkit.preferences import Preference

PROMPTS = [
    "Tell me about cats.",
    "Why is the sky blue? Answer in a poem about the sea, please.",
    "Hi",
    "Give me three ideas for a rainy weekend, with a short reason for each one.",
]
CASES = [  # (preference, method, max_new_tokens)
    ("concise", "pad", 12),
    (None, "base", 7),
    ("humorous=0.5,friendly=0.5", "pad", 10),
    ("humorous", "prompt", 9),
    ("friendly", "pad", 14),
    (None, "pad", 5),
    ("concise", "prompt-pad", 8),  # PAD whose base reads the preference too
    ("humorous=0.5,friendly=0.5", "guarded-pad", 24),  # PAD with its loop guard
    (None, "guarded-pad", 16),  # PAD without a preference still guards its answer
    ("friendly", "ngram-pad", 24),  # PAD with its n-gram guard
    ("humorous", "budget-pad", 14),  # PAD within a fluency budget
]
SETTINGS = {
    "prompt-pad": dict(method="pad", prompted_base=True),
    "guarded-pad": dict(method="pad", loop_guard=2, top_k=3, ignore_eos=True, prompted_base=False, candidates="topk"),
    "ngram-pad": dict(method="pad", ngram_guard=2, loop_guard=0, top_k=3, prompted_base=False, candidates="topk"),
    "budget-pad": dict(method="pad", fluency_budget=0.05, prompted_base=False),
}


def _pads(base_model, lora_rm, tokenizer) -> dict[str, PAD]:
    return {
        "self": PAD(base_model, tokenizer),
        "lora": PAD(lora_rm, tokenizer, lora_rm, tokenizer, rm_shares_base=True),
    }


def _requests(seen: dict[int, list[int]] | None = None) -> list[ContinuousRequest]:
    out = []
    for i, (pref, method, n) in enumerate(CASES):
        settings = SETTINGS.get(method, dict(method=method))
        config = PADConfig(**{"weight": 2.0, "max_new_tokens": n, "ignore_eos": i % 2 == 0, **settings})
        on_token = None if seen is None else (lambda t, i=i: seen.setdefault(i, []).append(t))
        out.append(
            ContinuousRequest(PROMPTS[i % 4], None if pref is None else Preference.parse(pref), config, on_token)
        )
    return out


@pytest.mark.parametrize("rm", ["self", "lora"])
def test_requests_joining_mid_batch_decode_as_alone(base_model, lora_rm, tokenizer, rm):
    pad = _pads(base_model, lora_rm, tokenizer)[rm]
    seen: dict[int, list[int]] = {}
    requests = _requests(seen)
    batch = ContinuousBatch(pad, max_rows=6)
    arrivals = {0: requests[:2], 2: requests[2:4], 5: requests[4:7], 9: requests[7:]}  # step -> submitted before it
    done, sizes = [], []
    for step in range(200):
        for r in arrivals.get(step, []):
            batch.submit(r)
        done += batch.step()
        sizes.append(batch.rows)
        if batch.idle and step > 5:
            break
    assert sorted(map(id, done)) == sorted(map(id, requests))  # each finished exactly once
    assert max(sizes) <= 6 and batch.rows == 0 and batch.cache is None
    for i, r in enumerate(requests):
        alone = pad.generate([r.prompt], preferences=[r.preference], config=r.config)[0]
        assert r.result.token_ids == alone.token_ids, (i, r.config.method)
        assert r.result.text == alone.text and r.result.finish_reason == alone.finish_reason
        assert seen.get(i, []) == r.token_ids[: len(seen.get(i, []))] and len(seen.get(i, [])) >= len(alone.token_ids)
    guarded = requests[7]  # the guard changed this answer, as it does on the static path
    free = pad.generate([guarded.prompt], preferences=[guarded.preference], config=guarded.config.replace(loop_guard=0))
    assert guarded.result.token_ids != free[0].token_ids
    said = [pad.token_classes[t] for t in requests[9].result.token_ids]  # the n-gram guard's answer
    assert len(set(zip(said, said[1:], strict=False))) == len(said) - 1  # says no two tokens again
    budget = requests[10]  # the budget changed this answer, as it does on the static path
    free = pad.generate(
        [budget.prompt], preferences=[budget.preference], config=budget.config.replace(fluency_budget=0)
    )
    assert budget.result.token_ids != free[0].token_ids


def test_cancelled_and_unserved_requests(base_model, tokenizer):
    pad = PAD(base_model, tokenizer)
    batch = ContinuousBatch(pad)
    flag = {"stop": False}
    config = PADConfig(max_new_tokens=20, ignore_eos=True)
    left = ContinuousRequest(PROMPTS[0], Preference.parse("concise"), config, cancelled=lambda: flag["stop"])
    stays = ContinuousRequest(PROMPTS[1], Preference.parse("concise"), config)
    batch.submit(left)
    batch.submit(stays)
    for _ in range(3):
        batch.step()
    flag["stop"] = True
    while not batch.idle:
        batch.step()
    assert left.result.finish_reason == "cancelled" and len(left.result.token_ids) == 3
    alone = pad.generate([PROMPTS[1]], "concise", config=config)[0]
    assert stays.result.token_ids == alone.token_ids
    assert "seeded sampled" in batch.serves(None, PADConfig(temperature=0.7, seed=1))
    assert batch.serves(None, PADConfig(method="amulet")) == "method 'amulet'"
    assert batch.serves(None, PADConfig(no_repeat_ngram_size=3)) == "no_repeat_ngram_size"
    assert batch.serves(None, PADConfig(loop_guard=8, ngram_guard=8)) is None
    with pytest.raises(GenerationError, match="does not serve"):
        batch.submit(ContinuousRequest("Hi", None, PADConfig(method="best-of-n")))
    with pytest.raises(GenerationError, match="exceeds max_rows"):
        ContinuousBatch(pad, max_rows=2).submit(
            ContinuousRequest("Hi", Preference.parse("concise,humorous"), PADConfig())
        )
    assert torch.is_inference_mode_enabled() is False
