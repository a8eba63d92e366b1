"""PAD decoding on tiny random models, checked against a slow no-cache re-implementation."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import check_fluency_budget

from padkit import PAD, PAPER_PAD, Preference, render_input
from padkit.decoding.config import ConfigError, PADConfig
from padkit.decoding.pad import token_texts
from padkit.decoding.processor import (
    BanTokensLogitsProcessor,
    ColonEndGuard,
    LoopGuard,
    NGramGuard,
    _PADRule,
    class_members,
    colon_endings,
    vocabulary_texts,
    whitespace_classes,
)
from padkit.errors import GenerationError

PROMPTS = ["Tell me about cats.", "Why is the sky blue? Answer in a poem about the sea, please."]


def _logp(model, ids: list[int], **kwargs) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids]), **kwargs).logits[0, -1]
    return torch.log_softmax(logits.double(), dim=-1)


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def slow_pad(base, rm, tok, prompt, preference, weight, top_k, reference, n, candidates="topk+rm", eos=None):
    """PAD without any cache, one prompt at a time: every step re-runs both models over the whole prefix
    (``candidates`` defaults to PAD's with a trained PersRM)."""
    pref = Preference.parse(preference)
    eos = eos if eos is not None else [tok.eos_token_id]
    base_ids = _ids(tok, render_input(tok, prompt))
    rm_ids = [_ids(tok, render_input(tok, prompt, d.principle)) for d in pref.dimensions]
    out: list[int] = []
    for _ in range(n):
        lb = _logp(base, base_ids + out)
        rm_logps = [_logp(rm, ids + out) for ids in rm_ids]
        cand = lb.topk(top_k).indices.tolist()
        if candidates == "topk+eos":
            cand += eos
        elif candidates == "topk+rm":
            combined = sum(d.weight * lr for d, lr in zip(pref.dimensions, rm_logps, strict=True))
            cand += combined.topk(top_k).indices.tolist()
        if reference == "base":
            ref = lb
        elif reference == "rm-init":
            with rm.disable_adapter():
                ref = _logp(rm, base_ids + out)
        else:
            ref = torch.zeros_like(lb)
        reward = torch.zeros(len(cand), dtype=torch.float64)
        for d, lr in zip(pref.dimensions, rm_logps, strict=True):
            reward += d.weight * (lr[cand] - ref[cand])
        score = lb[cand] + weight * reward
        token = cand[int(score.argmax())]
        out.append(token)
        if token in eos:
            break
    return out


def _tokens_with_eos(gen, eos_id):
    return gen.token_ids + ([eos_id] if gen.finish_reason == "stop" else [])


def test_weight_zero_equals_greedy_base(base_model, rm_model, tokenizer):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    guided = pad.generate(PROMPTS, "humorous", weight=0.0, max_new_tokens=12, **PAPER_PAD)
    greedy = pad.generate(PROMPTS, method="base", max_new_tokens=12)
    assert [g.token_ids for g in guided] == [g.token_ids for g in greedy]
    inputs = tokenizer(
        [render_input(tokenizer, p) for p in PROMPTS], return_tensors="pt", padding=True, add_special_tokens=False
    )
    raw = base_model.generate(**inputs, do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
    raw_new = raw[:, inputs["input_ids"].shape[1] :].tolist()
    for gen, row in zip(greedy, raw_new, strict=True):
        assert row[: len(gen.token_ids)] == gen.token_ids


def test_self_rm_weight_one_decodes_persrm_within_base_topk(base_model, tokenizer):
    pad = PAD(base_model, tokenizer)
    top_k = 4
    got = pad.generate(
        PROMPTS[:1], "concise", weight=1.0, top_k=top_k, candidates="topk", max_new_tokens=10, **PAPER_PAD
    )[0]
    base_ids = _ids(tokenizer, render_input(tokenizer, PROMPTS[0]))
    rm_ids = _ids(tokenizer, render_input(tokenizer, PROMPTS[0], Preference.parse("concise").dimensions[0].principle))
    want: list[int] = []
    for _ in range(10):
        allowed = _logp(base_model, base_ids + want).topk(top_k).indices
        rm_logp = _logp(base_model, rm_ids + want)
        token = int(allowed[rm_logp[allowed].argmax()])
        want.append(token)
        if token == tokenizer.eos_token_id:
            break
    assert _tokens_with_eos(got, tokenizer.eos_token_id) == want
    assert rm_ids != base_ids


@pytest.mark.parametrize(
    ("preference", "weight", "reference", "candidates"),
    [
        ("concise", 1.5, "base", "topk+eos"),
        ("concise=0.7,humorous=0.3", 2.0, "none", "topk"),
        ("friendly=1,concise=-0.5", 0.8, "base", "topk+eos"),
    ],
)
def test_cached_equals_slow_reimplementation(
    base_model, rm_model, tokenizer, preference, weight, reference, candidates
):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    got = pad.generate(
        PROMPTS,
        preference,
        weight=weight,
        reference=reference,
        candidates=candidates,
        top_k=5,
        max_new_tokens=12,
        **PAPER_PAD,
    )
    for prompt, gen in zip(PROMPTS, got, strict=True):
        want = slow_pad(base_model, rm_model, tokenizer, prompt, preference, weight, 5, reference, 12, candidates)
        assert _tokens_with_eos(gen, tokenizer.eos_token_id) == want


def test_rm_init_reference_with_lora_equals_slow(base_model, rm_model, tokenizer):
    from conftest import make_lora

    lora_rm = make_lora(rm_model)
    pad = PAD(base_model, tokenizer, lora_rm, tokenizer)
    pref = "humorous=1,concise=0.5"
    got = pad.generate(PROMPTS, pref, weight=1.0, reference="rm-init", top_k=6, max_new_tokens=10, **PAPER_PAD)
    for prompt, gen in zip(PROMPTS, got, strict=True):
        want = slow_pad(base_model, lora_rm, tokenizer, prompt, pref, 1.0, 6, "rm-init", 10)
        assert _tokens_with_eos(gen, tokenizer.eos_token_id) == want
    plain = pad.generate(PROMPTS, pref, weight=1.0, reference="base", top_k=6, max_new_tokens=10)
    assert [g.token_ids for g in plain] != [g.token_ids for g in got]


def test_rm_init_of_a_lora_on_the_base_is_the_base_reference(base_model, lora_rm, tokenizer):
    pad = PAD(base_model, tokenizer, lora_rm, tokenizer)
    kwargs = dict(weight=1.0, top_k=6, max_new_tokens=10, **PAPER_PAD)  # a prompted base is no LoRA-off PersRM
    init = pad.generate(PROMPTS, "concise", reference="rm-init", **kwargs)
    base = pad.generate(PROMPTS, "concise", reference="base", **kwargs)
    assert [g.token_ids for g in init] == [g.token_ids for g in base]


def test_mixed_preferences_in_a_batch_equal_rows_alone(base_model, rm_model, tokenizer):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    prompts = PROMPTS + ["How do planes fly?"]
    prefs = ["concise", "humorous=0.6,friendly=0.4", None]
    batch = pad.generate(prompts, preferences=prefs, weight=[1.0, 2.5, 1.0], max_new_tokens=12)
    for prompt, pref, w, gen in zip(prompts, prefs, [1.0, 2.5, 1.0], batch, strict=True):
        alone = pad.generate([prompt], pref, weight=w, max_new_tokens=12)[0]
        assert gen.token_ids == alone.token_ids
        assert gen.finish_reason == alone.finish_reason
    assert batch[2].token_ids == pad.generate(prompts[2:], method="base", max_new_tokens=12)[0].token_ids


def test_eos_stops_rows_independently(base_model, rm_model, tokenizer):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    free = pad.generate(PROMPTS, "concise", max_new_tokens=12, ignore_eos=True, **PAPER_PAD)
    assert all(len(g.token_ids) == 12 and tokenizer.eos_token_id not in g.token_ids for g in free)
    first, other = free[0].token_ids, free[1].token_ids[:8]
    # the first token of row 0 (after its first) that neither row 0 said before nor row 1 says in its first 8
    cut, stop_token = next((i, t) for i, t in enumerate(first) if i and t not in first[:i] and t not in other)
    original = base_model.generation_config.eos_token_id
    base_model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop_token]
    try:
        got = pad.generate(PROMPTS, "concise", max_new_tokens=12, **PAPER_PAD)
    finally:
        base_model.generation_config.eos_token_id = original
    assert got[0].finish_reason == "stop"
    assert got[0].token_ids == first[:cut]
    assert got[1].token_ids[:8] == free[1].token_ids[:8]


def test_methods_are_parameters(base_model, lora_rm, tokenizer):
    pad = PAD(base_model, tokenizer, lora_rm, tokenizer)
    principle = Preference.parse("concise").prompt_principle()
    for method, model, text in [
        ("prompt", base_model, render_input(tokenizer, PROMPTS[0], principle)),
        ("policy", lora_rm, render_input(tokenizer, PROMPTS[0], principle)),
        ("base", base_model, render_input(tokenizer, PROMPTS[0])),
    ]:
        got = pad.generate(PROMPTS[:1], "concise", method=method, max_new_tokens=8)[0]
        want: list[int] = []
        ids = _ids(tokenizer, text)
        for _ in range(8):
            token = int(_logp(model, ids + want).argmax())
            want.append(token)
            if token == tokenizer.eos_token_id:
                break
        assert _tokens_with_eos(got, tokenizer.eos_token_id) == want, method


def test_diagnostics_report_scores_consistently(base_model, rm_model, tokenizer):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    gen = pad.generate(PROMPTS[:1], "humorous", weight=2.0, max_new_tokens=6, diagnostics=True)[0]
    assert gen.tokens is not None and len(gen.tokens) >= len(gen.token_ids)
    for info, token in zip(gen.tokens, gen.token_ids, strict=False):
        assert info.token_id == token
        assert math.isclose(info.score, info.base_logprob + 2.0 * info.reward, rel_tol=1e-4, abs_tol=1e-4)
        assert info.score == max(a.score for a in info.alternatives)
        assert len({a.token_id for a in info.alternatives}) == len(info.alternatives) >= 10


def test_sampling_is_reproducible_with_seed(base_model, rm_model, tokenizer):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    kwargs = dict(weight=1.0, temperature=1.5, top_p=0.95, max_new_tokens=12)
    a = pad.generate(PROMPTS, "humorous", seed=3, **kwargs)
    b = pad.generate(PROMPTS, "humorous", seed=3, **kwargs)
    c = [pad.generate(PROMPTS, "humorous", seed=s, **kwargs) for s in (4, 5, 6)]
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert any([g.token_ids for g in x] != [g.token_ids for g in a] for x in c)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prompts=["  "]), "prompt 0 is empty"),
        (dict(prompts=[]), "no prompts"),
        (dict(weight=float("nan")), "finite"),
        (dict(weight=float("inf")), "finite"),
        (dict(method="magic"), "unknown method"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(prompts=["word " * 400]), "exceeds the model's context"),
        (dict(temperature=-1.0), "temperature"),
        (dict(preference="concise=abc"), "not a number"),
    ],
)
def test_bad_generation_input_is_named(base_model, rm_model, tokenizer, kwargs, message):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    args = dict(prompts=PROMPTS[:1], preference="concise", max_new_tokens=4) | kwargs
    with pytest.raises((GenerationError, ValueError), match=message):
        pad.generate(**args)


def test_rm_init_needs_an_adapter(base_model, rm_model, tokenizer):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    with pytest.raises(GenerationError, match="needs a LoRA PersRM"):
        pad.generate(PROMPTS[:1], "concise", reference="rm-init", max_new_tokens=2)


@pytest.mark.parametrize(
    ("prefs", "weights", "candidates"),
    [
        (["concise", "humorous=0.6,friendly=0.4", None], [1.0, 2.5, 1.0], "topk+eos"),
        (["friendly=1,concise=-0.5", "concise", "humorous"], [0.7, 1.0, 3.0], "topk+rm"),
    ],
)
def test_fused_self_guidance_equals_the_two_model_path(base_model, tokenizer, prefs, weights, candidates):
    pad = PAD(base_model, tokenizer)
    prompts = [*PROMPTS, "How do planes fly?"]
    kwargs = dict(preferences=prefs, weight=weights, candidates=candidates, top_k=5, max_new_tokens=12)
    fused = pad.generate(prompts, fused=True, diagnostics=True, **kwargs)
    stream = pad.generate(prompts, fused=False, diagnostics=True, **kwargs)
    assert [g.token_ids for g in fused] == [g.token_ids for g in stream]
    assert [g.finish_reason for g in fused] == [g.finish_reason for g in stream]
    for f, s in zip(fused, stream, strict=True):
        assert [t.reward for t in f.tokens] == pytest.approx([t.reward for t in s.tokens], abs=1e-5)


def test_fused_sampling_is_seeded_and_stays_in_candidates(base_model, tokenizer):
    pad = PAD(base_model, tokenizer)
    kwargs = dict(weight=1.0, temperature=1.2, top_p=0.9, top_k=3, max_new_tokens=10, diagnostics=True, fused=True)
    a = pad.generate(PROMPTS, "humorous", seed=11, **kwargs)
    b = pad.generate(PROMPTS, "humorous", seed=11, **kwargs)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    for gen in a:
        for info in gen.tokens[: len(gen.token_ids)]:
            assert info.token_id in {alt.token_id for alt in info.alternatives}


def test_fused_needs_self(base_model, rm_model, tokenizer):
    with pytest.raises(GenerationError, match="fused decoding needs"):
        PAD(base_model, tokenizer, rm_model, tokenizer).generate(PROMPTS, "concise", fused=True, max_new_tokens=2)


def test_streamer_receives_the_same_text(base_model, rm_model, tokenizer):
    from transformers import TextIteratorStreamer

    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    gen = pad.generate(PROMPTS[:1], "concise", max_new_tokens=8, streamer=streamer)[0]
    assert "".join(streamer).strip() == gen.text.strip()


def _repeats(ids: list[int], n: int) -> int:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


def test_no_repeat_ngram_guard_keeps_every_path_free_of_repeats(base_model, lora_rm, tokenizer):
    """The loop guard bans a repeated n-gram in the answers only, the same way fused and beside generate (with
    the default ``topk+rm`` candidates and EOS banned on the answer rows only, so the PersRM's top-k agree)."""
    pad = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True)
    assert pad.default_candidates == "topk+rm" and PAD(base_model, tokenizer).default_candidates == "topk+eos"
    kwargs = dict(max_new_tokens=30, ignore_eos=True)
    plain = pad.generate(PROMPTS, method="base", **kwargs)
    assert any(_repeats(g.token_ids, 2) for g in plain)  # the tiny random model loops
    guarded = pad.generate(PROMPTS, method="base", no_repeat_ngram_size=2, **kwargs)
    assert all(_repeats(g.token_ids, 2) == 0 for g in guarded)
    guided = dict(weight=1.5, top_k=5, no_repeat_ngram_size=2, **kwargs)
    fused = pad.generate(PROMPTS, "concise", fused=True, **guided)
    stream = pad.generate(PROMPTS, "concise", fused=False, **guided)
    assert [g.token_ids for g in fused] == [g.token_ids for g in stream]
    assert all(_repeats(g.token_ids, 2) == 0 for g in fused)
    with pytest.raises(ConfigError, match="no_repeat_ngram_size"):
        PADConfig(no_repeat_ngram_size=-1)


def _banned_after(
    answer: list[int],
    max_run: int,
    prompt: tuple[int, ...] = (5, 6, 7),
    classes: list[int] | None = None,
    max_copy: int | None = None,
) -> set[int]:
    """The tokens a fresh :class:`LoopGuard` bans once ``answer`` has been generated after ``prompt``."""
    guard, vocab = LoopGuard(max_run, rows=1, token_classes=classes, max_copy=max_copy), 12
    for t in range(len(answer) + 1):
        out = guard(torch.tensor([[*prompt, *answer[:t]]]), torch.zeros(1, vocab))
    return set(torch.isneginf(out[0]).nonzero().flatten().tolist())


def _longest_run(ids: list[int], max_period: int = 64) -> int:
    """Tokens in the longest back-to-back repetition of a unit (two copies or more) in ``ids``."""
    best = 0
    for p in range(1, min(max_period, len(ids) - 1) + 1):
        run = 0
        for i in range(p, len(ids)):
            run = run + 1 if ids[i] == ids[i - p] else 0
            if run >= p:
                best = max(best, run + p)
    return best


def test_loop_guard_bans_only_back_to_back_runs_past_the_limit():
    assert _banned_after([7, 7, 7, 7], max_run=4) == {7}  # a fifth 7 in a row
    assert _banned_after([7, 7, 7], max_run=4) == set()
    assert _banned_after([1, 2, 3, 1, 2, 3], max_run=6) == {1}  # "1 2 3" a third time
    assert _banned_after([1, 2, 3, 1, 2], max_run=6) == set()
    assert _banned_after([1, 2, 3, 4, 8, 1, 2, 3, 4], max_run=8) == {8}  # a five-token unit said twice
    assert _banned_after([1, 2, 3, 9, 1, 2], max_run=2) == set()  # a repeat, but not back to back
    sentence = list(range(12))  # a 12-token unit, said again: its copy stops after 2 * max_run tokens
    assert _banned_after(sentence + sentence[:8], max_run=4) == {sentence[8]}
    assert _banned_after(sentence + sentence[:7], max_run=4) == set()
    assert _banned_after(sentence + sentence[:5], max_run=4, max_copy=5) == {sentence[5]}  # a cap set by hand
    assert _banned_after(sentence + sentence[:11], max_run=4, max_copy=0) == {sentence[11]}  # off: the last token
    assert _banned_after(sentence + sentence[:10], max_run=4, max_copy=0) == set()
    assert _banned_after([7], max_run=3, prompt=(7, 7, 7)) == set()  # the prompt does not count
    assert _longest_run([1, 2, 3, 1, 2, 3, 1, 9]) == 7 and _longest_run([1, 2, 3, 9]) == 0
    with pytest.raises(ValueError, match="at least 2"):
        LoopGuard(1, rows=1)
    with pytest.raises(ValueError, match="copy cap"):
        LoopGuard(4, rows=1, max_copy=-1)
    with pytest.raises(ConfigError, match="loop_guard"):
        PADConfig(loop_guard=1)


def test_loop_guard_follows_an_answer_its_caller_keeps():
    """The continuous batch hands the guard each answer so far (``follow``) instead of ``input_ids``: the same
    bans, whether the answer arrives a token at a time or at once."""
    sentence = list(range(12))
    for answer, max_run in [([7, 7, 7, 7], 4), ([1, 2, 3, 1, 2, 3], 6), (sentence + sentence[:8], 4), ([1, 2], 2)]:
        stepwise, at_once = LoopGuard(max_run, rows=1), LoopGuard(max_run, rows=1)
        for t in range(len(answer) + 1):
            stepwise.follow(0, answer[:t])
        at_once.follow(0, answer)
        for guard in (stepwise, at_once):
            out = guard.ban(torch.zeros(1, 12))
            assert set(torch.isneginf(out[0]).nonzero().flatten().tolist()) == _banned_after(answer, max_run)
    assert _banned_after(sentence + sentence[:8], 4) == {8}


def test_loop_guard_treats_tokens_of_one_class_as_the_same():
    """With 9 in 1's class ("In" and " In"), "1 2 3 9 2 3" repeats "1 2 3"; a third copy is banned in either
    spelling. Without classes it is no repetition."""
    classes = list(range(12))
    classes[9] = 1
    assert _banned_after([1, 2, 3, 9, 2, 3], max_run=6, classes=classes) == {1, 9}
    assert _banned_after([1, 2, 3, 9, 2, 3], max_run=6) == set()
    assert _banned_after([9], max_run=2, classes=classes) == set()
    assert _banned_after([9, 1], max_run=2, classes=classes) == {1, 9}  # "9 1" is "1 1": no third in a row
    assert _banned_after([4, 4], max_run=2, classes=classes[:3]) == {4}  # ids past the table are their own class


def _ngram_banned(answer: list[int], n: int, classes: list[int] | None = None, prompt=(5, 6, 7)) -> set[int]:
    """The tokens a fresh :class:`NGramGuard` bans on row 0 once ``answer`` follows ``prompt``; row 1 (a PersRM
    row past ``rows``) must keep its scores."""
    guard = NGramGuard(n, rows=1, token_classes=classes)
    for t in range(len(answer) + 1):
        out = guard(torch.tensor([[*prompt, *answer[:t]], [*prompt, *([1] * t)]]), torch.zeros(2, 12))
    assert not torch.isneginf(out[1]).any()
    return set(torch.isneginf(out[0]).nonzero().flatten().tolist())


def test_ngram_guard_bans_saying_an_answer_s_ngram_again():
    assert _ngram_banned([1, 2, 3, 4, 8, 9, 1, 2], n=3) == {3}  # "1 2 3" again, two tokens apart
    assert _ngram_banned([1, 2, 3, 4, 8, 9, 1, 2], n=4) == set()  # "1 2" alone is no 4-gram
    assert _ngram_banned([1, 2, 3, 4, 8, 1, 2, 3], n=4) == {4}
    assert _ngram_banned([1, 2, 3, 1, 2, 5, 1, 2], n=3) == {3, 5}  # every token that followed "1 2"
    assert _ngram_banned([7, 7, 7], n=3) == {7} and _ngram_banned([7, 7], n=3) == set()
    assert _ngram_banned([6, 7], n=3, prompt=(5, 6, 7, 8)) == set()  # the prompt's n-grams do not count
    classes = list(range(12))
    classes[9] = 1  # 9 is 1 spelled with a space
    assert _ngram_banned([1, 2, 3, 4, 9, 2], n=3, classes=classes) == {3}
    assert _ngram_banned([1, 2, 9, 4, 1], n=2, classes=classes) == {2, 4}
    assert _ngram_banned([3, 1, 4, 9], n=2, classes=classes) == {4}
    assert _ngram_banned([4, 1, 3, 4], n=2, classes=classes) == {1, 9}  # a banned token bans its whole class
    with pytest.raises(ValueError, match="at least 2"):
        NGramGuard(1, rows=1)
    for bad in (1, 65, -1):
        with pytest.raises(ConfigError, match="ngram_guard"):
            PADConfig(ngram_guard=bad)
    stepwise, at_once, answer = NGramGuard(3, rows=1), NGramGuard(3, rows=1), [1, 2, 3, 4, 1, 2]
    for t in range(len(answer) + 1):  # the continuous batch hands the guard each answer so far
        stepwise.follow(0, answer[:t])
    at_once.follow(0, answer)
    for guard in (stepwise, at_once):
        assert torch.isneginf(guard.ban(torch.zeros(1, 12))[0]).nonzero().flatten().tolist() == [3]


def test_ngram_guard_changes_a_pad_answer_that_repeats_itself(base_model, tokenizer):
    pad = PAD(base_model, tokenizer)
    config = PADConfig(weight=2.0, top_k=3, loop_guard=0, max_new_tokens=32, ignore_eos=True, candidates="topk")
    free, guarded = (
        pad.generate("Tell me about cats.", "friendly", config=config.replace(ngram_guard=n))[0] for n in (0, 2)
    )
    pairs = lambda ids: list(zip(ids, ids[1:], strict=False))  # noqa: E731
    assert len(set(pairs(free.token_ids))) < len(pairs(free.token_ids))  # the unguarded answer says a pair again
    said = [pad.token_classes[t] for t in guarded.token_ids]
    assert len(set(pairs(said))) == len(pairs(said)) == 31


def test_whitespace_classes_join_a_token_and_its_spaced_spelling_only(tokenizer):
    vocab = tokenizer.get_vocab()
    classes = whitespace_classes(tokenizer)
    assert len(classes) == len(tokenizer)
    for word in ("a", "is", "wit"):
        assert classes[vocab["Ġ" + word]] == classes[vocab[word]] == min(vocab[word], vocab["Ġ" + word])
    assert classes[vocab["a"]] != classes[vocab["b"]]
    for own in ("Ġ", "Ċ", "Ã"):  # a space, a line break, a byte that is part of a character
        assert classes[vocab[own]] == vocab[own]


ENDINGS = [-1, -1, 1, 0, -1, -1, 1, 0, -1, -1]  # tokens 2 and 6 end with a colon, 3 and 7 are whitespace


def _colon_banned(answer: list[int], top_k: int = 0, scores: torch.Tensor | None = None) -> set[int]:
    """The tokens a fresh :class:`ColonEndGuard` (ends: 0 and 1) bans on row 0 once ``answer`` follows a prompt."""
    guard = ColonEndGuard(ENDINGS, end_token_ids=[0, 1], rows=1, top_k=top_k)
    scores = torch.zeros(2, 10) if scores is None else scores
    for t in range(len(answer) + 1):
        out = guard(torch.tensor([[9, 9, *answer[:t]], [9, 9, *([4] * t)]]), scores)
    assert not torch.isneginf(out[1]).any()  # the row past ``rows`` (a PersRM row) keeps its scores
    return set(torch.isneginf(out[0]).nonzero().flatten().tolist())


def test_colon_guard_bans_ending_the_turn_right_after_a_colon():
    assert _colon_banned([4, 2]) == {0, 1}  # "... Title:" cannot end
    assert _colon_banned([4, 2, 3, 7]) == {0, 1}  # nor after line breaks that follow it
    assert _colon_banned([4, 2, 3, 5]) == set()  # once text follows, it can
    assert _colon_banned([6, 4]) == set() and _colon_banned([]) == set()
    assert _colon_banned([2, 12]) == set()  # an id past the table counts as ordinary text
    ranked = torch.arange(10, dtype=torch.float).repeat(2, 1)  # the base ranks 9 first, then 8, ...
    assert _colon_banned([4, 2], top_k=3, scores=ranked) == set(range(7))  # only the base's top 3 may follow
    assert _colon_banned([4, 5], top_k=3, scores=ranked) == set()
    stepwise, at_once = ColonEndGuard(ENDINGS, [0], rows=1), ColonEndGuard(ENDINGS, [0], rows=1)
    for t in range(4):  # the continuous batch hands the guard each answer so far
        stepwise.follow(0, [4, 2, 3][:t])
    at_once.follow(0, [4, 2, 3])
    for guard in (stepwise, at_once):
        assert torch.isneginf(guard.ban(torch.zeros(1, 10))[0]).nonzero().flatten().tolist() == [0]


def test_colon_endings_read_each_token_as_the_guard_needs(base_model, tokenizer):
    vocab, endings = tokenizer.get_vocab(), colon_endings(tokenizer)
    assert len(endings) == len(tokenizer)
    assert endings[vocab[":"]] == 1 and endings[vocab["a"]] == -1
    assert endings[vocab["Ġ"]] == endings[vocab["Ċ"]] == endings[tokenizer.eos_token_id] == 0
    ends = PAD(base_model, tokenizer).turn_end_ids  # EOS first, then every other special token once
    assert ends[0] == tokenizer.eos_token_id and len(ends) == len(set(ends))
    assert set(tokenizer.all_special_ids) <= set(ends) and vocab[":"] not in ends


def test_both_guard_tables_come_from_one_decode_of_the_vocabulary(base_model, tokenizer):
    texts = vocabulary_texts(tokenizer)
    assert len(texts) == len(tokenizer) and texts[tokenizer.get_vocab()[":"]] == ":"
    assert texts[tokenizer.eos_token_id] == tokenizer.eos_token  # as written: colon_endings sets specials to 0
    pad = PAD(base_model, tokenizer)
    assert pad.colon_endings == colon_endings(tokenizer, texts) == colon_endings(tokenizer)
    assert pad.token_classes == whitespace_classes(tokenizer, texts) == whitespace_classes(tokenizer)
    assert pad.vocabulary_texts is pad.vocabulary_texts  # decoded once


def test_answer_guards_follow_the_config(base_model, tokenizer):
    pad = PAD(base_model, tokenizer)
    kinds = lambda config: [type(g) for g in pad.answer_guards(config, rows=2)]  # noqa: E731
    config = PADConfig()
    assert kinds(config) == [LoopGuard, NGramGuard, ColonEndGuard]
    assert all(g.rows == 2 for g in pad.answer_guards(config, rows=2))
    assert pad.answer_guards(config, rows=2)[1].n == 8
    loop, ngram, _ = pad.answer_guards(config, rows=2)  # one class table for both, built once per PAD
    assert loop.members is ngram.members is pad.class_members == class_members(pad.token_classes)
    assert kinds(config.replace(ignore_eos=True)) == [LoopGuard, NGramGuard]  # no answer ends, none on a colon
    assert kinds(config.replace(loop_guard=0, ngram_guard=0)) == [ColonEndGuard]
    assert kinds(config.replace(colon_guard=False, ngram_guard=0)) == [LoopGuard]
    assert kinds(config.replace(method="prompt")) == []  # PAD's settings: other methods decode as before
    assert kinds(config.replace(**PAPER_PAD)) == kinds(config.replace(method="base")) == []


def test_colon_guard_keeps_an_open_answer_going(base_model, tokenizer):
    """Told that every token ends with a colon, PAD never ends an answer (EOS or another special token) before
    ``max_new_tokens``, on the static path and in the continuous batch alike; with the guard off, or as the
    paper's PAD, the same answers end at EOS."""
    from padkit.decoding.continuous import ContinuousBatch, ContinuousRequest

    pad = PAD(base_model, tokenizer)
    pad.__dict__["colon_endings"] = [1] * len(tokenizer)
    config = PADConfig(weight=2.0, max_new_tokens=20)
    guarded = pad.generate(PROMPTS, "concise", config=config)
    assert [g.finish_reason for g in guarded] == ["length"] * 2
    assert not {t for g in guarded for t in g.token_ids} & set(pad.turn_end_ids)
    for free in (config.replace(colon_guard=False), config.replace(**PAPER_PAD)):
        assert [g.finish_reason for g in pad.generate(PROMPTS, "concise", config=free)] == ["stop"] * 2
    batch = ContinuousBatch(pad)
    requests = [ContinuousRequest(p, Preference.parse("concise"), config) for p in PROMPTS]
    for r in requests:
        batch.submit(r)
    while not batch.idle:
        batch.step()
    assert [r.result.token_ids for r in requests] == [g.token_ids for g in guarded]


def test_the_base_reads_the_preference_by_default_unless_the_persrm_is_the_base(base_model, lora_rm, tokenizer):
    """With rm="self" a prompted base reads exactly what the PersRM reads: the reward is zero and PAD is prompting,
    so the default keeps that base unprompted; a trained PersRM steers a prompted base by default."""

    def ids(pad, **kwargs):
        return [g.token_ids for g in pad.generate(PROMPTS, "concise", max_new_tokens=10, ignore_eos=True, **kwargs)]

    guided = dict(weight=2.0, loop_guard=0)
    lora = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True)
    assert ids(lora, **guided) == ids(lora, prompted_base=True, **guided) != ids(lora, prompted_base=False, **guided)
    self_pad = PAD(base_model, tokenizer)
    prompting = ids(self_pad, method="prompt")
    assert ids(self_pad, prompted_base=True, **guided) == prompting
    assert ids(self_pad, **guided) == ids(self_pad, prompted_base=False, **guided) != prompting


def test_token_texts_join_to_the_answer_across_split_characters(base_model, tokenizer):
    """Diagnostics give each token the text it adds: byte pieces of one character join into it, not into U+FFFDs."""
    pad = PAD(base_model, tokenizer)
    kwargs = dict(weight=2.0, max_new_tokens=8, diagnostics=True, prompted_base=True)
    gen = pad.generate(["Tell me about cats."], "concise", **kwargs)[0]
    assert "\u06b1" in gen.text  # two byte tokens make this one character
    assert "".join(t.text for t in gen.tokens) == gen.text
    assert "".join(tokenizer.decode([t]) for t in gen.token_ids) != gen.text  # what decoding each token alone gives


def test_token_texts_decode_short_windows_with_the_same_pieces(tokenizer):
    """Windowed decoding gives each token the same text as decoding every prefix would, on text whose characters
    span several byte tokens and whose words start with spaces."""
    text = "Cook slowly 🍳🍳, taste often ڱڱ — and   don't rush!\n\n1. Salt early. 🌍 Café au lait, naïve 日本語."
    ids = tokenizer.encode(text * 3, add_special_tokens=False)
    prefixes = [tokenizer.decode(ids[:k], skip_special_tokens=True) for k in range(len(ids) + 1)]
    by_prefix, done = [], ""
    for k in range(1, len(ids) + 1):
        if prefixes[k].endswith("\ufffd") and k < len(ids):
            by_prefix.append("")
            continue
        by_prefix.append(prefixes[k][len(done) :])
        done = prefixes[k]
    for context in (1, 4):
        assert token_texts(tokenizer, ids, context=context) == by_prefix
    assert "".join(by_prefix) == tokenizer.decode(ids) and "" in by_prefix  # some tokens end inside a character


def test_loop_guard_keeps_pad_answers_free_of_long_runs(base_model, lora_rm, tokenizer):
    """Unguarded, strong guidance on the tiny model loops; guarded, no run passes the limit, fused or not."""
    pad = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True)
    kwargs = dict(weight=1.0, top_k=3, max_new_tokens=40, ignore_eos=True, prompted_base=False, candidates="topk")
    free = pad.generate(PROMPTS, "bulleted", fused=True, loop_guard=0, **kwargs)
    assert max(_longest_run(g.token_ids) for g in free) > 2
    fused = pad.generate(PROMPTS, "bulleted", fused=True, loop_guard=2, **kwargs)
    stream = pad.generate(PROMPTS, "bulleted", fused=False, loop_guard=2, **kwargs)
    assert [g.token_ids for g in fused] == [g.token_ids for g in stream]
    classes = pad.token_classes
    assert all(_longest_run([classes[t] for t in g.token_ids]) <= 2 for g in fused)  # "a" and " a" alike
    base = dict(method="base", max_new_tokens=30, ignore_eos=True)
    assert [g.token_ids for g in pad.generate(PROMPTS, loop_guard=2, **base)] == [
        g.token_ids for g in pad.generate(PROMPTS, **base)
    ]  # other methods are not guarded


@pytest.mark.parametrize("candidates", ["topk+eos", "topk+rm"])
def test_fused_lora_on_shared_base_equals_the_two_model_path(base_model, lora_rm, tokenizer, candidates):
    """A LoRA PersRM on the base's weights: base rows run in its batch with the adapter off, one forward a step."""
    pad = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True)
    prompts = [*PROMPTS, "How do planes fly?"]
    kwargs = dict(
        preferences=["concise", "humorous=0.5,concise=0.5", None],
        weight=[1.5, 1.0, 2.0],
        candidates=candidates,
        top_k=5,
        max_new_tokens=12,
        diagnostics=True,
    )
    fused = pad.generate(prompts, fused=True, **kwargs)
    stream = pad.generate(prompts, fused=False, **kwargs)
    assert [g.token_ids for g in fused] == [g.token_ids for g in stream]
    for f, s in zip(fused, stream, strict=True):
        assert [t.reward for t in f.tokens] == pytest.approx([t.reward for t in s.tokens], abs=1e-5)
    plain = PAD(base_model, tokenizer).generate(prompts, method="base", max_new_tokens=12)
    assert [g.token_ids for g in pad.generate(prompts, method="base", max_new_tokens=12)] == [
        g.token_ids for g in plain
    ]
    with pytest.raises(GenerationError, match="fused decoding needs"):
        pad.generate(prompts, "concise", reference="rm-init", fused=True, max_new_tokens=2)


@pytest.mark.parametrize("fused", [True, False])
def test_prompted_base_pad_steers_the_prompted_base(base_model, lora_rm, tokenizer, fused):
    """With ``prompted_base`` the base reads the preference as prompting does: at w=0 PAD is prompting (greedy),
    rows without a preference decode as the base, and at w>0 the PersRM steers the prompted base."""
    pad = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True)
    prompts = [*PROMPTS, "How do planes fly?"]
    prefs = ["concise", "humorous", None]
    kwargs = dict(preferences=prefs, max_new_tokens=10, ignore_eos=True, fused=fused, prompted_base=True, loop_guard=0)

    def ids(gens):
        return [g.token_ids for g in gens]

    prompting = pad.generate(prompts, preferences=prefs, method="prompt", max_new_tokens=10, ignore_eos=True)
    assert ids(pad.generate(prompts, weight=0.0, **kwargs)) == ids(prompting)
    steered = pad.generate(prompts, weight=3.0, **kwargs)
    plain_pad = pad.generate(prompts, weight=3.0, **(kwargs | PAPER_PAD))
    assert (
        ids(steered)[2]
        == ids(plain_pad)[2]
        == ids(pad.generate(prompts[2:], method="base", max_new_tokens=10, ignore_eos=True))[0]
    )
    assert ids(steered)[:2] != ids(plain_pad)[:2] and ids(steered)[:2] != ids(prompting)[:2]
    assert ids(steered) == ids(pad.generate(prompts, weight=3.0, **(kwargs | dict(fused=not fused))))
    assert PADConfig(method="base", prompted_base=True).decisive() == PADConfig(method="base")


def test_best_of_n_keeps_the_sample_with_the_highest_implicit_reward(base_model, rm_model, tokenizer):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    kwargs = dict(max_new_tokens=8, temperature=1.0, seed=3)
    samples = pad.generate([PROMPTS[0]] * 4, method="base", **kwargs)
    best = pad.generate(PROMPTS[:1], "concise", method="best-of-n", best_of=4, **kwargs)[0]
    from padkit.preferences import Dimension

    rewards = pad.sequence_rewards(PROMPTS[0], Dimension("concise").principle, [s.text for s in samples])
    assert best.text == samples[int(torch.argmax(rewards))].text and best.method == "best-of-n"
    assert len({s.text for s in samples}) > 1  # the pick was a real choice
    one = pad.generate(PROMPTS[:1], "concise", method="best-of-n", best_of=1, **kwargs)[0]
    assert one.text == pad.generate(PROMPTS[:1], method="base", **kwargs)[0].text


def test_args_processor_rescores_topk_with_a_sequence_reward():
    from padkit.decoding.processor import ARGSLogitsProcessor

    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    ids = torch.tensor([[9, 9, 1]])
    seen = []

    def reward(row, seqs):
        seen.append(seqs)
        return torch.tensor([5.0 if s[-1] == 2 else 0.0 for s in seqs], dtype=torch.float64)

    out = ARGSLogitsProcessor(reward, prompt_length=2, weight=1.0, top_k=3)(ids, scores.clone())
    assert int(out.argmax()) == 2 and out[0, 3] == float("-inf")
    assert sorted(seen[0]) == [[1, 0], [1, 1], [1, 2]]  # generated prefix + each candidate
    assert out[0, 2] == pytest.approx(math.log(0.15) + 5.0)


def test_args_method_weight_zero_is_greedy_and_guided_stays_in_topk(base_model, rm_model, tokenizer):
    pad = PAD(base_model, tokenizer, rm_model, tokenizer)
    plain = pad.generate(PROMPTS, method="base", max_new_tokens=6)
    assert [g.token_ids for g in pad.generate(PROMPTS, "concise", method="args", weight=0.0, max_new_tokens=6)] == [
        g.token_ids for g in plain
    ]
    guided = pad.generate(PROMPTS, "concise", method="args", weight=5.0, top_k=3, max_new_tokens=6)
    assert [g.token_ids for g in guided] != [g.token_ids for g in plain]
    assert all(g.method == "args" for g in guided)


@pytest.mark.parametrize("method", ["base", "pad"])
def test_stop_strings_cut_the_answer(base_model, tokenizer, method):
    pad = PAD(base_model, tokenizer)
    kwargs = dict(method=method, preference=None if method == "base" else "concise", max_new_tokens=24)
    full = pad.generate(["Tell me about cats."], **kwargs)[0]
    assert len(full.text) > 8
    stop = full.text[5:8]
    cut = pad.generate(["Tell me about cats."], stop=[stop], **kwargs)[0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)] and len(cut.token_ids) < len(full.token_ids)
    assert tokenizer.decode(cut.token_ids).startswith(cut.text)  # the tokens cover the text, no more than needed
    assert not tokenizer.decode(cut.token_ids[:-1]).startswith(cut.text) or not cut.text
    assert pad.generate(["Tell me about cats."], stop=["no such text"], **kwargs)[0].text == full.text


def test_a_base_model_without_chat_template_stops_at_the_next_question():
    from conftest import make_tokenizer

    plain = make_tokenizer(chat_template=None)
    assert PAD.stop_strings(plain) == ["\nQuestion:"]
    assert PAD.stop_strings(make_tokenizer()) == []


def test_ban_tokens_processor_bans_only_those_and_leaves_its_input_alone():
    scores = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    out = BanTokensLogitsProcessor([1, 4])(torch.zeros(2, 3, dtype=torch.long), scores)
    assert torch.equal(scores, torch.arange(12, dtype=torch.float32).reshape(2, 6))
    assert torch.isneginf(out[:, [1, 4]]).all() and torch.equal(
        out[:, [0, 2, 3, 5]], torch.tensor([[0.0, 2, 3, 5], [6, 8, 9, 11]])
    )
    answers_only = BanTokensLogitsProcessor([1, 4], rows=1)(None, scores)  # row 1 a PersRM row of a fused batch
    assert torch.isneginf(answers_only[0, [1, 4]]).all() and torch.equal(answers_only[1], scores[1])


def test_output_logits_stay_unprocessed_with_the_eos_ban(base_model, tokenizer):
    """transformers documents ``output_logits`` as the raw logits: a processor must not write into them."""
    batch = tokenizer([render_input(tokenizer, PROMPTS[0])], return_tensors="pt")
    ban = BanTokensLogitsProcessor([tokenizer.eos_token_id])
    with torch.inference_mode():
        out = base_model.generate(
            **batch,
            max_new_tokens=4,
            do_sample=False,
            logits_processor=[ban],
            output_logits=True,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=tokenizer.pad_token_id,
        )
    assert all(torch.isfinite(step[:, tokenizer.eos_token_id]).all() for step in out.logits)
    assert all(torch.isneginf(step[:, tokenizer.eos_token_id]).all() for step in out.scores)


def test_ignore_eos_equals_transformers_min_new_tokens(base_model, lora_rm, tokenizer):
    pad = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True)
    ours = pad.generate(PROMPTS, method="base", max_new_tokens=16, ignore_eos=True)
    batch = tokenizer([render_input(tokenizer, p) for p in PROMPTS], return_tensors="pt", padding=True)
    with torch.inference_mode():
        theirs = base_model.generate(**batch, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert [g.token_ids for g in ours] == theirs[:, batch["input_ids"].shape[1] :].tolist()
    for fused in (True, False):
        kwargs = dict(weight=2.0, max_new_tokens=16, fused=fused, candidates="topk+eos")
        assert any(g.finish_reason == "stop" for g in pad.generate(PROMPTS, "concise", **kwargs))  # EOS is picked
        guided = pad.generate(PROMPTS, "concise", ignore_eos=True, **kwargs)
        assert all(len(g.token_ids) == 16 and tokenizer.eos_token_id not in g.token_ids for g in guided)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(fused=True),
        dict(fused=False),
        dict(reference="rm-init"),
        dict(reference="none", candidates="topk+rm"),
        dict(method="policy"),
        dict(method="prompt"),
        dict(method="base"),
        dict(method="best-of-n", best_of=3, seed=2),
        dict(method="args", top_k=3),
        dict(temperature=1.3, seed=5),
    ],
)
def test_one_copy_of_the_weights_decodes_as_two(base_model, lora_rm, tokenizer, kwargs):
    """The base and its LoRA PersRM as one PEFT model (adapters off by default, on for the PersRM's forwards)
    give the same tokens as a plain base beside a separate LoRA copy, for every method."""
    from conftest import make_lora

    from padkit.models.row_lora import set_adapters

    shared = make_lora(base_model)  # the same LoRA weights as ``lora_rm`` (same seed), a separate object
    set_adapters(shared, False)
    one = PAD(shared, tokenizer, shared, tokenizer)
    two = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True)
    args = dict(preferences=["concise", "humorous=0.5,concise=0.5"], weight=[1.5, 1.0], max_new_tokens=8) | kwargs
    assert [g.token_ids for g in one.generate(PROMPTS, **args)] == [g.token_ids for g in two.generate(PROMPTS, **args)]
    assert all(layer._disable_adapters for layer in _lora_layers(shared))  # the default state is restored


def test_rm_self_on_a_base_that_carries_a_lora_runs_the_base(base_model, tokenizer):
    from conftest import make_lora

    from padkit.models.row_lora import set_adapters

    shared = make_lora(base_model)
    set_adapters(shared, False)
    kwargs = dict(max_new_tokens=8, fused=False)
    assert [g.token_ids for g in PAD(shared, tokenizer).generate(PROMPTS, "concise", **kwargs)] == [
        g.token_ids for g in PAD(base_model, tokenizer).generate(PROMPTS, "concise", **kwargs)
    ]


def _lora_layers(model):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


@pytest.mark.parametrize("fused", [True, False])
def test_a_cancelled_row_stops_and_the_others_decode_as_alone(base_model, tokenizer, fused):
    pad = PAD(base_model, tokenizer)
    kwargs = dict(max_new_tokens=12, ignore_eos=True, fused=fused)
    steps = {"n": 0}

    def cancelled():  # row 1's client leaves after three steps
        steps["n"] += 1
        return [False, steps["n"] > 3]

    gens = pad.generate(PROMPTS, "concise", cancelled=cancelled, **kwargs)
    alone = pad.generate(PROMPTS, "concise", **kwargs)
    assert gens[0].token_ids == alone[0].token_ids and gens[0].finish_reason == "length"
    assert gens[1].finish_reason == "cancelled" and gens[1].token_ids == alone[1].token_ids[: len(gens[1].token_ids)]
    assert 0 < len(gens[1].token_ids) < 12


def slow_amulet(model, tok, prompt, preference, n, iterations=60, alpha=2.0, lam=2.0, eta=10.0):
    """Amulet as the authors' code writes it (a Q matrix and a memory of every round), without any cache."""
    principle = Preference.parse(preference).prompt_principle()
    plain = _ids(tok, render_input(tok, prompt))
    player = _ids(tok, render_input(tok, prompt, principle))
    out: list[int] = []
    for _ in range(n):
        log_ref, log_player = _logp(model, plain + out).float(), _logp(model, player + out).float()
        lp0, vocab = log_player.clone(), log_player.shape[0]
        q = torch.zeros(iterations + 1, vocab)
        mem = torch.zeros(iterations + 1, vocab)
        mem[0] = lp0
        for it in range(1, iterations + 1):
            q[it] = alpha * (log_player - log_ref)
            log_player = (lam * lp0 + q.sum(0) / it + mem[it - 1] / (eta * it)) / (lam + 1 / (it * eta))
            if it == iterations:
                break
            log_player = torch.log(torch.softmax(log_player, dim=-1))
            mem[it] = log_player
        token = int(log_player.argmax())
        out.append(token)
        if token == tok.eos_token_id:
            break
    return out


@pytest.mark.parametrize(("preference", "iterations"), [("concise", 60), ("humorous=0.5,friendly=0.5", 5)])
def test_amulet_equals_the_authors_loop(base_model, tokenizer, preference, iterations):
    pad = PAD(base_model, tokenizer)
    gens = pad.generate(PROMPTS, preference, method="amulet", amulet_iterations=iterations, max_new_tokens=10)
    for prompt, gen in zip(PROMPTS, gens, strict=True):
        want = slow_amulet(base_model, tokenizer, prompt, preference, 10, iterations=iterations)
        assert _tokens_with_eos(gen, tokenizer.eos_token_id) == want
        assert gen.method == "amulet"


def test_amulet_without_a_preference_is_greedy_base_and_it_moves_with_one(base_model, tokenizer):
    pad = PAD(base_model, tokenizer)
    kwargs = dict(max_new_tokens=12)
    base = pad.generate(PROMPTS, method="base", **kwargs)
    plain = pad.generate(PROMPTS, preferences=[None, None], method="amulet", **kwargs)
    assert [g.token_ids for g in plain] == [g.token_ids for g in base]
    strong = pad.generate(PROMPTS, "humorous", method="amulet", amulet_alpha=50.0, **kwargs)
    assert [g.token_ids for g in strong] != [g.token_ids for g in base]
    sampled = [pad.generate(PROMPTS, "humorous", method="amulet", temperature=1.0, seed=7, **kwargs) for _ in "ab"]
    assert [g.token_ids for g in sampled[0]] == [g.token_ids for g in sampled[1]]


def test_amulet_policy_equals_the_authors_rounds_value_for_value():
    from padkit.decoding.processor import amulet_policy

    torch.manual_seed(0)
    player, ref = torch.randn(3, 50) * 3, torch.randn(3, 50) * 3
    iterations, alpha, lam, eta = 7, 2.0, 2.0, 10.0
    lp0, log_ref = torch.log_softmax(player, -1), torch.log_softmax(ref, -1)
    q = torch.zeros(3, iterations + 1, 50)
    mem = torch.zeros(3, iterations + 1, 50)
    mem[:, 0], log_player = lp0, lp0.clone()
    for it in range(1, iterations + 1):
        q[:, it] = alpha * (log_player - log_ref)
        log_player = (lam * lp0 + q.sum(1) / it + mem[:, it - 1] / (eta * it)) / (lam + 1 / (it * eta))
        if it == iterations:
            break
        log_player = torch.log(torch.softmax(log_player, dim=-1))
        mem[:, it] = log_player
    assert torch.allclose(amulet_policy(player, ref, iterations, alpha, lam, eta), log_player, atol=1e-5)
    assert torch.allclose(amulet_policy(player, player, iterations, alpha, lam, eta), lp0, atol=1e-5)


def slow_persona_judge(model, tok, prompt, preference, n, gamma=4):
    """Greedy Persona-judge as the authors' loop runs it, without any cache: the draft side proposes ``gamma``
    tokens, the judge side verifies them in one pass, a mismatch or the end of the round gives the judge's
    token; with two dimensions the sides trade roles every round."""
    pref = Preference.parse(preference) if preference is not None else None
    if pref is not None and len(pref.dimensions) == 2:
        judge = Preference(pref.dimensions[:1]).prompt_principle()
        draft = Preference(pref.dimensions[1:]).prompt_principle()
        swap = True
    else:
        judge, draft, swap = (None if pref is None else pref.prompt_principle()), None, False
    out: list[int] = []
    while len(out) < n:
        judge_ids, draft_ids = _ids(tok, render_input(tok, prompt, judge)), _ids(tok, render_input(tok, prompt, draft))
        proposal: list[int] = []
        for _ in range(gamma):
            proposal.append(int(_logp(model, draft_ids + out + proposal).argmax()))
        with torch.no_grad():
            logits = model(torch.tensor([judge_ids + out + proposal])).logits[0, len(judge_ids) + len(out) - 1 :]
        wanted = logits.argmax(dim=-1).tolist()
        accepted = next((i for i in range(gamma) if proposal[i] != wanted[i]), gamma)
        out += proposal[:accepted] + [wanted[accepted]]
        if tok.eos_token_id in out:
            return out[: out.index(tok.eos_token_id) + 1]
        if swap:
            judge, draft = draft, judge
    return out[:n]


@pytest.mark.parametrize(
    ("preference", "gamma"), [("concise", 4), ("humorous=0.5,friendly=0.5", 4), ("humorous=1,concise=1", 1)]
)
def test_persona_judge_equals_the_authors_loop(base_model, tokenizer, preference, gamma):
    pad = PAD(base_model, tokenizer)
    gens = pad.generate(PROMPTS, preference, method="persona-judge", judge_gamma=gamma, max_new_tokens=12)
    for prompt, gen in zip(PROMPTS, gens, strict=True):
        want = slow_persona_judge(base_model, tokenizer, prompt, preference, 12, gamma)
        assert _tokens_with_eos(gen, tokenizer.eos_token_id) == want
        assert gen.method == "persona-judge"


def test_persona_judge_without_a_preference_is_plain_decoding(base_model, tokenizer):
    pad = PAD(base_model, tokenizer)
    kwargs = dict(max_new_tokens=12)
    base = pad.generate(PROMPTS, method="base", **kwargs)
    judged = pad.generate(PROMPTS, preferences=[None, None], method="persona-judge", **kwargs)
    assert [g.token_ids for g in judged] == [g.token_ids for g in base]
    prompted = pad.generate(PROMPTS, "humorous", method="prompt", **kwargs)
    one = pad.generate(PROMPTS, "humorous", method="persona-judge", **kwargs)
    assert [g.token_ids for g in one] == [g.token_ids for g in prompted]  # greedy: always the judge's argmax
    sampled = [
        pad.generate(PROMPTS, "humorous", method="persona-judge", temperature=0.9, top_p=0.9, seed=3, **kwargs)
        for _ in "ab"
    ]
    assert [g.token_ids for g in sampled[0]] == [g.token_ids for g in sampled[1]]


def test_persona_judge_step_samples_the_judges_distribution():
    """Speculative sampling's identity: whatever the draft, each token follows the judge's distribution."""
    from padkit.decoding.processor import judge_probs, persona_judge_step

    torch.manual_seed(0)
    draft = judge_probs(torch.randn(1, 8) * 2, 0.9, 6, 0.95).expand(40000, -1)
    judge = judge_probs(torch.randn(1, 8) * 2, 0.9, 6, 0.95).expand(40000, -1)
    tokens, accepted = persona_judge_step(draft, judge, torch.zeros(40000, dtype=torch.bool))
    freq = torch.bincount(tokens[:, 0], minlength=8).float() / 40000
    assert (freq - judge[0]).abs().max() < 0.01
    assert abs(accepted.float().mean() - torch.minimum(draft[0], judge[0]).sum()) < 0.01  # acceptance = overlap
    bonus_tokens, bonus_accepted = persona_judge_step(draft, judge, torch.ones(40000, dtype=torch.bool))
    assert not bonus_accepted.any()
    assert (torch.bincount(bonus_tokens[:, 0], minlength=8).float() / 40000 - judge[0]).abs().max() < 0.01


def test_a_reward_gain_within_the_margin_counts_as_none():
    one_row = dict(combine=torch.ones(1, 1), source_rows=torch.zeros(1, dtype=torch.long), weight=1.0)
    base = torch.log_softmax(torch.tensor([[2.0, 1.5, 0.0, -1.0, -9.0]]), dim=-1)
    cand = torch.tensor([[1, 0, 2, 3]])  # the base's first choice (id 0) is not first in the candidate list
    rm = base.gather(1, cand) + torch.tensor([[2.9, 0.5, 4.0, -2.0]])  # rewards against reference "base"
    step = _PADRule(**one_row, reward_margin=3.0).combine_rewards(base, cand, rm)
    assert step.rewards[0].tolist() == pytest.approx([0.5, 0.5, 4.0, -2.0])  # +2.4 over id 0 is within 3: none
    assert cand[0, step.scores.argmax()].item() == 2  # a gain of 3.5 still displaces the first choice
    plain = _PADRule(**one_row).combine_rewards(base, cand, rm)
    assert cand[0, plain.scores.argmax()].item() == 1  # without the margin, the +2.4 of id 1 wins
    away = _PADRule(**{**one_row, "weight": -1.0}, reward_margin=3.0).combine_rewards(
        base, cand, 2 * base.gather(1, cand) - rm
    )
    assert away.rewards[0].tolist() == pytest.approx([-0.5, -0.5, -4.0, 2.0])  # a negative weight: gains are drops
    with pytest.raises(ValueError, match="reward_margin"):
        _PADRule(**one_row, reward_margin=-1.0)


def test_a_request_without_a_reward_margin_gets_the_persrms_own(base_model, lora_rm, tokenizer):
    """A margin is in nats of one PersRM's reward, so an unset ``reward_margin`` is the PAD's
    ``default_reward_margin`` (0 unless given), and 0 across tokenizers."""
    plain = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True)
    assert plain.reward_margin(PADConfig()) == 0.0 and PAD(base_model, tokenizer).reward_margin(PADConfig()) == 0.0
    own = PAD(base_model, tokenizer, lora_rm, tokenizer, rm_shares_base=True, default_reward_margin=3.0)
    assert own.reward_margin(PADConfig()) == 3.0 and own.reward_margin(PADConfig(reward_margin=0.5)) == 0.5
    crossing = PAD(base_model, tokenizer, lora_rm, tokenizer, cross_tokenizer=True, default_reward_margin=3.0)
    assert crossing.reward_margin(PADConfig()) == 0.0
    kwargs = dict(weight=8.0, max_new_tokens=10, ignore_eos=True)
    default = [g.token_ids for g in own.generate(PROMPTS, "humorous", **kwargs)]
    assert default == [g.token_ids for g in plain.generate(PROMPTS, "humorous", reward_margin=3.0, **kwargs)]
    assert default != [g.token_ids for g in own.generate(PROMPTS, "humorous", reward_margin=0.0, **kwargs)]
    with pytest.raises(ValueError, match="default_reward_margin"):
        PAD(base_model, tokenizer, default_reward_margin=-1.0)


@pytest.mark.parametrize("fused", [True, False])
def test_reward_margin_lets_only_large_gains_displace_the_base(base_model, rm_model, tokenizer, fused):
    pad = PAD(base_model, tokenizer) if fused else PAD(base_model, tokenizer, rm_model, tokenizer)
    kwargs = dict(PAPER_PAD, weight=8.0, max_new_tokens=10, ignore_eos=True, fused=fused)
    base = pad.generate(PROMPTS, method="base", max_new_tokens=10, ignore_eos=True)
    assert [g.token_ids for g in pad.generate(PROMPTS, "humorous", **{**kwargs, "reward_margin": 100.0})] == [
        g.token_ids for g in base
    ]
    free = pad.generate(PROMPTS, "humorous", diagnostics=True, **kwargs)
    gains = sorted(t.reward - max(t.alternatives, key=lambda a: a.base_logprob).reward for g in free for t in g.tokens)
    margin = gains[len(gains) // 2]  # half of the free answer's steps gained less than this
    guarded = pad.generate(PROMPTS, "humorous", diagnostics=True, **{**kwargs, "reward_margin": margin})
    displaced = 0
    for gen in guarded:
        for token in gen.tokens:
            first = max(token.alternatives, key=lambda a: a.base_logprob)
            if first.token_id != token.token_id:
                displaced += 1
                assert token.reward - first.reward > margin
    assert displaced > 0


def test_a_candidate_past_the_fluency_budget_is_dropped_and_the_chosen_cost_is_charged():
    one_row = dict(combine=torch.eye(2), source_rows=torch.arange(2), weight=1.0)  # two answers, a PersRM row each
    base = torch.log_softmax(torch.tensor([[4.0, 3.0, 0.0, 0.0], [4.0, 3.0, 0.0, 0.0]]), dim=-1)
    cand = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])  # id 1 costs 1 nat, ids 2 and 3 cost 4; id 3 is EOS
    rm = base.gather(1, cand) + torch.tensor([[0.0, 2.0, 9.0, 9.0]])
    rule = _PADRule(**one_row, fluency_budget=0.2, eos_token_ids=[3])  # 0.2 x (1 + 16) = 3.4 nats allowed now
    step = rule.combine_rewards(base, cand, rm)
    assert torch.isinf(step.scores[:, 2]).all() and torch.isfinite(step.scores[:, [0, 1, 3]]).all()
    rule.charge(torch.tensor([[1], [0]]))
    assert rule.spent.tolist() == pytest.approx([1.0, 0.0]) and rule.written == 1
    rule.fluency_budget = 0.13  # 0.13 x 18 = 2.34: row 0 (1 spent) cannot pay 1 more plus 4, row 1 still pays 1
    step = rule.combine_rewards(base, cand, rm)
    assert torch.isfinite(step.scores[:, 1]).all()
    rule.charge(torch.tensor([[1], [1]]))
    assert rule.spent.tolist() == pytest.approx([2.0, 1.0])
    rule.fluency_budget = 0.12  # 0.12 x 19 = 2.28: row 0 may not pay 1 nat more, row 1 may; the first choice stays
    step = rule.combine_rewards(base, cand, rm)
    assert (
        torch.isinf(step.scores[0, 1]) and torch.isfinite(step.scores[1, 1]) and torch.isfinite(step.scores[:, 0]).all()
    )
    rule.charge(torch.tensor([[3], [3]]))  # EOS costs nothing
    assert rule.spent.tolist() == pytest.approx([2.0, 1.0]) and rule.written == 3
    with pytest.raises(ValueError, match="fluency_budget"):
        _PADRule(**one_row, fluency_budget=-1.0)


@pytest.mark.parametrize("fused", [True, False])
def test_the_fluency_budget_bounds_what_an_answer_costs_the_base(base_model, rm_model, tokenizer, fused):
    """The budget's bound, fused and beside the base (:func:`conftest.check_fluency_budget`)."""
    pad = PAD(base_model, tokenizer) if fused else PAD(base_model, tokenizer, rm_model, tokenizer)
    check_fluency_budget(pad, PROMPTS, "humorous", fused=fused)


@pytest.mark.parametrize("fused", [True, False])
def test_min_p_keeps_pad_to_tokens_the_base_finds_plausible(base_model, rm_model, tokenizer, fused):
    pad = PAD(base_model, tokenizer) if fused else PAD(base_model, tokenizer, rm_model, tokenizer)
    kwargs = dict(weight=8.0, max_new_tokens=10, ignore_eos=True, fused=fused, **PAPER_PAD)
    base = pad.generate(PROMPTS, method="base", max_new_tokens=10, ignore_eos=True)
    free = pad.generate(PROMPTS, "humorous", **kwargs)
    assert [g.token_ids for g in free] != [g.token_ids for g in base]
    only_top = pad.generate(PROMPTS, "humorous", min_p=1.0, **kwargs)
    assert [g.token_ids for g in only_top] == [g.token_ids for g in base]
    guarded = pad.generate(PROMPTS, "humorous", min_p=0.3, diagnostics=True, **kwargs)
    for gen in guarded:
        for token in gen.tokens:
            top = max(a.base_logprob for a in token.alternatives)
            assert token.base_logprob >= top + math.log(0.3) - 1e-5
