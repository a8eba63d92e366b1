"""PAD with a PersRM whose tokenizer differs from the base's: the reward is scored on text."""

from __future__ import annotations

import pytest
import torch
from conftest import check_fluency_budget, make_lora, make_model, make_tokenizer

from padkit import PAD
from padkit.decoding.crossing import TextRewardStream, committed_text, continuation_texts
from padkit.errors import GenerationError

PROMPTS = ["Tell me about cats.", "Why is the sky blue? How do planes fly?"]


@pytest.fixture(scope="module")
def char_tokenizer():
    """One token per (ASCII) character and EOS the only special token: every text has one tokenization."""
    return make_tokenizer(10, all_bytes=False, specials=("<|im_end|>",))


@pytest.fixture(scope="module")
def cross_pair():
    """Two ASCII-only BPE tokenizers with different merges, and a tiny model for each."""
    base_tok, rm_tok = make_tokenizer(120, all_bytes=False), make_tokenizer(400, all_bytes=False)
    return base_tok, make_model(base_tok, seed=0), rm_tok, make_model(rm_tok, seed=3)


def test_partial_utf8_waits_for_the_token_that_completes_the_character(tokenizer):
    text = "héllo 日本"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text)  # the non-ASCII characters are several byte tokens
    cut = ids[:-1]  # the last byte of 本 is missing
    assert committed_text(tokenizer, cut) == "héllo 日"
    assert committed_text(tokenizer, ids) == text
    eos = tokenizer.eos_token_id
    first_byte = tokenizer("本", add_special_tokens=False)["input_ids"][0]
    conts = continuation_texts(tokenizer, cut, "héllo 日", [ids[-1], eos, first_byte], {eos})
    assert conts == ["本", "", None]  # completes the character / EOS / another partial byte


def _records(pad: PAD, **kwargs):
    gens = pad.generate(PROMPTS, "concise", diagnostics=True, max_new_tokens=12, weight=1.5, **kwargs)
    return gens, [[(t.token_id, [(a.token_id, a.reward) for a in t.alternatives]) for t in g.tokens] for g in gens]


@pytest.mark.parametrize("reference", ["base", "rm-init", "none"])
def test_text_reward_equals_token_reward_when_the_tokenizers_are_equal(char_tokenizer, reference):
    base = make_model(char_tokenizer, seed=0)
    rm = make_lora(make_model(char_tokenizer, seed=5), seed=2)
    token_path = PAD(base, char_tokenizer, rm, char_tokenizer, rm_name="rm", cross_tokenizer=False)
    text_path = PAD(base, char_tokenizer, rm, char_tokenizer, rm_name="rm", cross_tokenizer=True)
    gens_a, rec_a = _records(token_path, reference=reference, candidates="topk+eos")
    gens_b, rec_b = _records(text_path, reference=reference, candidates="topk+eos")
    assert [g.token_ids for g in gens_a] == [g.token_ids for g in gens_b]
    assert sum(len(g.token_ids) for g in gens_a) > 10
    for row_a, row_b in zip(rec_a, rec_b, strict=True):
        for (tok_a, alts_a), (tok_b, alts_b) in zip(row_a, row_b, strict=True):
            assert tok_a == tok_b
            assert [t for t, _ in alts_a] == [t for t, _ in alts_b]
            assert [r for _, r in alts_a] == pytest.approx([r for _, r in alts_b], abs=1e-5)


def _brute_force_text_logp(model, prompt_ids: list[int], context: list[int], segment: list[int]) -> float:
    """log p(segment | prompt, context) from one uncached forward."""
    ids = torch.tensor([prompt_ids + context + segment])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    start = len(prompt_ids) + len(context)
    return float(sum(logp[start + i - 1, t] for i, t in enumerate(segment)))


def test_cached_packed_scoring_equals_uncached_forwards_across_tokenizers(cross_pair, monkeypatch):
    base_tok, base, rm_tok, rm = cross_pair
    pad = PAD(base, base_tok, rm, rm_tok, rm_name="rm")
    assert pad.cross_tokenizer
    checked, dropped = [], []
    original = TextRewardStream.score

    def checking_score(self, input_ids, candidates):
        logps, has_text = original(self, input_ids, candidates)
        width = self.input_ids.shape[1]
        prompts = [ids[m.bool()].tolist() for ids, m in zip(self.input_ids, self.mask[:, :width], strict=True)]
        for j, b in enumerate(self.source_rows.tolist()):
            ids = input_ids[b, self.prompt_length :].tolist()
            text = committed_text(base_tok, ids)
            open_text = text[len(rm_tok.decode(self.stable[j])) :]
            conts = continuation_texts(base_tok, ids, text, candidates[b].tolist(), self.base_eos)
            seg0 = rm_tok(open_text, add_special_tokens=False)["input_ids"]
            ref = _brute_force_text_logp(rm, prompts[j], self.stable[j], seg0)
            for c, cont in enumerate(conts):
                if cont is None:
                    assert logps[j, c] == 0
                    continue
                seg = rm_tok(open_text + cont, add_special_tokens=False)["input_ids"]
                seg += [rm_tok.eos_token_id] * (cont == "")
                want = _brute_force_text_logp(rm, prompts[j], self.stable[j], seg) - ref
                assert float(logps[j, c]) == pytest.approx(want, abs=1e-4)
                checked.append(c)
        dropped.append(self.mask.shape[1] - int(self.mask.sum(dim=1).min()))
        return logps, has_text

    monkeypatch.setattr(TextRewardStream, "score", checking_score)
    pad.generate(PROMPTS, ["concise", "friendly"], weight=1.0, max_new_tokens=16, ignore_eos=True)
    assert len(checked) > 100
    assert max(dropped) > 0  # re-tokenization changed earlier tokens: the cache was masked or cropped


def test_cross_tokenizer_batch_rows_equal_each_prompt_alone(cross_pair):
    base_tok, base, rm_tok, rm = cross_pair
    pad = PAD(base, base_tok, rm, rm_tok, rm_name="rm")
    kwargs = dict(preference="concise", weight=2.0, max_new_tokens=16)
    together = pad.generate(PROMPTS, **kwargs)
    alone = [pad.generate([p], **kwargs)[0] for p in PROMPTS]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    plain = pad.generate(PROMPTS, method="base", max_new_tokens=16)
    at_zero = dict(weight=0.0, max_new_tokens=16, loop_guard=0)
    assert pad.generate(PROMPTS, "concise", **at_zero, prompted_base=False)[0].token_ids == plain[0].token_ids
    prompting = pad.generate(PROMPTS, "concise", method="prompt", max_new_tokens=16)
    assert pad.generate(PROMPTS, "concise", **at_zero)[0].token_ids == prompting[0].token_ids
    assert [g.token_ids for g in together] != [g.token_ids for g in plain]


def test_cross_tokenizer_with_a_lora_persrm_and_the_rm_init_reference(cross_pair):
    base_tok, base, rm_tok, rm = cross_pair
    pad = PAD(base, base_tok, make_lora(rm), rm_tok, rm_name="rm")
    gens = pad.generate(PROMPTS, "concise", reference="rm-init", weight=2.0, max_new_tokens=8, diagnostics=True)
    rewards = [t.reward for g in gens for t in g.tokens]
    assert rewards and all(torch.isfinite(torch.tensor(rewards)))
    assert any(abs(r) > 1e-3 for r in rewards)


def test_cross_tokenizer_errors_and_policy_decoding(cross_pair):
    base_tok, base, rm_tok, rm = cross_pair
    pad = PAD(base, base_tok, rm, rm_tok, rm_name="rm")
    with pytest.raises(GenerationError, match="topk\\+rm"):
        pad.generate(PROMPTS[:1], "concise", candidates="topk+rm")
    with pytest.raises(GenerationError, match="fused"):
        pad.generate(PROMPTS[:1], "concise", fused=True)
    policy = pad.generate(PROMPTS[:1], "concise", method="policy", max_new_tokens=6)[0]
    assert policy.text == rm_tok.decode(policy.token_ids, skip_special_tokens=True)
    with pytest.raises(Exception, match="different tokenizer"):
        PAD(base, base_tok, rm, rm_tok, rm_name="rm", cross_tokenizer=False)


def test_the_fluency_budget_bounds_a_cross_tokenizer_answer(cross_pair):
    """Across tokenizers the chosen token is charged at the next step, from the token ``generate`` appended; the
    bound holds as on one tokenizer (:func:`conftest.check_fluency_budget`)."""
    base_tok, base, rm_tok, rm = cross_pair
    check_fluency_budget(PAD(base, base_tok, rm, rm_tok, rm_name="rm"), PROMPTS, "concise")
