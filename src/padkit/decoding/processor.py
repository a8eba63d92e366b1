"""PAD as a ``transformers`` logits processor."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, NoRepeatNGramLogitsProcessor, PreTrainedTokenizerBase

from padkit.decoding.config import CANDIDATES, FLUENCY_BUDGET_AHEAD, REFERENCES, Candidates, Reference
from padkit.decoding.crossing import TextRewardStream
from padkit.decoding.reward import RewardStream


@dataclass
class StepRecord:
    """What one decoding step saw: candidate ids with their base log-probs, rewards and scores."""

    candidates: torch.Tensor
    base_logprobs: torch.Tensor
    rewards: torch.Tensor
    scores: torch.Tensor


class _PADRule:
    """The PAD scoring rule shared by both processors: candidates, token-level reward, combined score."""

    def __init__(
        self,
        combine: torch.Tensor,
        source_rows: torch.Tensor,
        weight: float | torch.Tensor = 1.0,
        reference: Reference = "base",
        top_k: int = 10,
        candidates: Candidates = "topk",
        eos_token_ids: list[int] | None = None,
        record: bool = False,
        min_p: float = 0.0,
        reward_margin: float = 0.0,
        fluency_budget: float = 0.0,
    ) -> None:
        if reference not in REFERENCES:
            raise ValueError(f"unknown reference {reference!r}; use one of {', '.join(REFERENCES)}")
        if candidates not in CANDIDATES:
            raise ValueError(f"unknown candidate set {candidates!r}; use one of {', '.join(CANDIDATES)}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.combine = combine.float()
        self.source_rows = source_rows[: combine.shape[1]]
        self.weight = torch.as_tensor(weight, dtype=torch.float32).reshape(-1, 1)
        self.reference = reference
        self.top_k = top_k
        self.candidates = candidates
        self.eos = torch.tensor(eos_token_ids or [], dtype=torch.long)
        self.record = record
        self.records: list[StepRecord] = []
        self.log_min_p = math.log(min_p) if min_p > 0 else None
        if reward_margin < 0:
            raise ValueError(f"reward_margin must be 0 or more, got {reward_margin}")
        self.reward_margin = reward_margin
        if fluency_budget < 0:
            raise ValueError(f"fluency_budget must be 0 or more, got {fluency_budget}")
        self.fluency_budget = fluency_budget
        self.spent: torch.Tensor | None = None  # per row: the summed cost of the tokens chosen so far
        self.written = 0
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None  # last step's candidates and their costs

    def _follow(self, device: torch.device) -> None:
        """Keep the rule's own tensors on the device of the scores (moved once, on the first step)."""
        if self.combine.device != device:
            self.combine, self.weight, self.eos = (t.to(device) for t in (self.combine, self.weight, self.eos))

    def _candidate_ids(self, base_logp: torch.Tensor, rm_logp: torch.Tensor | None = None) -> torch.Tensor:
        self._follow(base_logp.device)
        k = min(self.top_k, base_logp.shape[-1])
        ids = base_logp.topk(k, dim=-1).indices
        if self.candidates == "topk+eos" and self.eos.numel():
            ids = torch.cat([ids, self.eos.expand(ids.shape[0], -1)], dim=1)
        elif self.candidates == "topk+rm":
            ids = torch.cat([ids, (self.combine @ rm_logp).topk(k, dim=-1).indices], dim=1)
        return ids

    def score_candidates(
        self, base_logp: torch.Tensor, rm_logp: torch.Tensor, ref_logp: torch.Tensor | None = None
    ) -> StepRecord:
        """Score each row's candidates from the base's, the PersRM rows' and the reference rows' log-probs."""
        vocab = min(base_logp.shape[-1], rm_logp.shape[-1])
        base_logp, rm_logp = base_logp[:, :vocab], rm_logp[:, :vocab]
        cand = self._candidate_ids(base_logp, rm_logp)
        n_rm = rm_logp.shape[0]
        rm_cand = rm_logp[torch.arange(n_rm)[:, None], cand[self.source_rows]]
        ref_cand = ref_logp[:, :vocab].gather(1, cand) if self.reference == "rm-init" else None
        return self.combine_rewards(base_logp, cand, rm_cand, ref_cand)

    def combine_rewards(
        self,
        base_logp: torch.Tensor,
        cand: torch.Tensor,
        rm_cand: torch.Tensor,
        ref_cand: torch.Tensor | None = None,
        neutral: torch.Tensor | None = None,
    ) -> StepRecord:
        """Sum the PersRM rows' candidate log-probs per prompt, subtract the reference's and add to the base's.

        ``rm_cand`` is ``(n_rm_rows, k)``; ``ref_cand`` the ``rm-init`` rows' ``(batch, k)``; ``neutral``
        marks candidates whose reward is fixed at 0.
        """
        self._follow(base_logp.device)
        reward = self.combine @ rm_cand if rm_cand.shape[0] else torch.zeros_like(cand, dtype=base_logp.dtype)
        if self.reference == "base":
            ref = base_logp.gather(1, cand)
        elif self.reference == "rm-init":
            ref = ref_cand
        else:
            ref = torch.zeros_like(cand, dtype=base_logp.dtype)
        reward = reward - self.combine.sum(dim=1, keepdim=True) * ref
        if neutral is not None:
            reward = reward.masked_fill(neutral, 0.0)
        cand_base = base_logp.gather(1, cand)
        if self.reward_margin > 0:
            reward = _within_margin(reward, cand_base, self.weight, self.reward_margin)
        cand_scores = cand_base + self.weight * reward
        # A token another processor banned (-inf) stays banned, whatever its reward (and -inf - -inf is NaN).
        dropped = torch.isneginf(cand_base)
        if self.log_min_p is not None:  # the fluency guard: only tokens the base finds plausible; EOS stays
            implausible = cand_base < base_logp.max(dim=-1, keepdim=True).values + self.log_min_p
            dropped = dropped | (implausible & ~torch.isin(cand, self.eos))
        if self.fluency_budget > 0:
            dropped = dropped | self._over_budget(cand, cand_base, dropped)
        cand_scores = cand_scores.masked_fill(dropped, float("-inf"))
        step = StepRecord(cand, cand_base, reward, cand_scores)
        if self.record:
            self.records.append(StepRecord(*(t.cpu() for t in (cand, cand_base, reward, cand_scores))))
        return step

    def _over_budget(self, cand: torch.Tensor, cand_base: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """The candidates whose cost would take their row past its fluency budget (EOS never is).

        A candidate's cost is the base's log-prob of its first choice (its most likely candidate no processor
        banned, as in :func:`_within_margin`; ``min_p`` never drops it) minus the candidate's own; a row may have
        spent ``fluency_budget`` per token written so far plus :data:`FLUENCY_BUDGET_AHEAD` tokens' worth. The
        first choice costs nothing, so it always stays. The step's costs are kept for :meth:`charge`, which adds
        the chosen candidate's to its row.
        """
        first = cand_base.max(dim=1, keepdim=True).values
        cost = torch.where(dropped | torch.isin(cand, self.eos), 0.0, first - cand_base).clamp(min=0.0)
        if self.spent is None:
            self.spent = torch.zeros(cand.shape[0], device=cand.device)
        self._pending = (cand, cost)
        allowed = self.fluency_budget * (self.written + 1 + FLUENCY_BUDGET_AHEAD)
        return (self.spent[:, None] + cost > allowed) & (cost > 0)

    def charge(self, chosen: torch.Tensor) -> None:
        """Add the cost of each row's ``chosen`` token (``(batch, 1)``, the token the step picked) to its spent
        budget; a token that was no candidate costs nothing. A no-op without a fluency budget."""
        if self._pending is None:
            return
        cand, cost = self._pending
        self.spent += cost.masked_fill(cand != chosen.to(cand.device), 0.0).max(dim=1).values
        self.written += 1
        self._pending = None


def _within_margin(reward: torch.Tensor, cand_base: torch.Tensor, weight: torch.Tensor, margin: float) -> torch.Tensor:
    """``reward`` with each gain of at most ``margin`` over the base's first candidate set to no gain.

    The base's first choice is its most likely candidate that no other processor banned; a gain is a reward
    higher than its reward where the row's ``weight`` is positive, lower where it is negative (the direction the
    score favours). A candidate whose gain is at most ``margin`` gets the first choice's reward, so it scores
    below it whatever the weight; a larger gain, and every loss, is kept as it is (sampling still sees how much
    worse a candidate is).

    Example:

    ```python
    >>> reward = torch.tensor([[0.0, 2.0, 9.0, -1.0]])
    >>> _within_margin(reward, torch.tensor([[-0.5, -1.0, -3.0, -4.0]]), torch.tensor([[1.0]]), margin=3.0)
    tensor([[ 0.,  0.,  9., -1.]])
    ```
    """
    first = reward.gather(1, cand_base.argmax(dim=1, keepdim=True))
    gain = (reward - first) * torch.sign(weight)
    return torch.where((gain > 0) & (gain <= margin), first.expand_as(reward), reward)


class PADLogitsProcessor(_PADRule, LogitsProcessor):
    r"""Personalized Alignment at Decoding-time: rescore the base model's top-k with a token-level reward.

    For each candidate token ``a`` the score is ``log pi_base(a|s) + w * r(s, a)`` with
    ``r(s, a) = sum_i w_i (log pi_rm(a | s, p_i) - log pi_ref(a | s))`` summed over the preference's
    dimensions ``p_i``. Tokens outside the candidate set get ``-inf``, so greedy search picks the best
    candidate and sampling draws among candidates (put temperature / top-p warpers *after* this processor).

    The PersRM runs through ``stream`` (a :class:`RewardStream` with its own KV cache); its first
    ``combine.shape[1]`` rows are PersRM rows, and with ``reference="rm-init"`` the next ``batch`` rows hold
    the reference (the PersRM with its adapter disabled, without the preference).

    Args:
        stream: the PersRM rows, already tokenized.
        combine: ``(batch, n_rm_rows)`` matrix of dimension weights ``w_i``; row ``b`` sums the rewards of
            the PersRM rows that belong to prompt ``b``. A prompt without rows is decoded as plain base.
        weight: alignment strength ``w``, a float or one value per prompt.
        reference: ``"base"`` (the base model's own distribution, as in the paper's code), ``"rm-init"``
            (the DPO reference) or ``"none"``.
        top_k: how many of the base's top tokens are candidates.
        candidates: ``"topk"`` (the paper), ``"topk+eos"`` (EOS is always a candidate, so a PersRM that wants
            to stop can; :class:`padkit.PAD`'s default with ``rm="self"``) or ``"topk+rm"`` (adds the PersRM's
            own top-k; its default with a trained PersRM on the base's tokenizer).
        eos_token_ids: the ids added by ``"topk+eos"``.
        record: keep a :class:`StepRecord` per step in ``self.records`` for diagnostics.
        min_p: keep only candidates the base gives at least ``min_p`` times its top token's probability (EOS
            always stays): a fluency guard that lets the reward choose among plausible tokens only; 0 is off.
        reward_margin: a candidate displaces the base's most likely one only when its reward is higher by more
            than this many nats (``PADConfig.reward_margin``); 0 is off.
        fluency_budget: nats per answer token the chosen candidates may cost against the base's first choice,
            summed over the answer (``PADConfig.fluency_budget``; :meth:`_over_budget`); 0 is off.

    Example:

    ```python
    >>> from padkit import PAD
    >>> pad = PAD.from_pretrained("smollm2-135m-instruct", rm="self")
    >>> inputs, processor = pad.logits_processor(["Tell me about cats."], preference="humorous", weight=2.0)
    >>> out = pad.base_model.generate(**inputs, logits_processor=[processor], do_sample=False,
    ...                               max_new_tokens=20)
    ```
    """

    def __init__(self, stream: RewardStream, combine: torch.Tensor, **kwargs) -> None:
        super().__init__(combine, stream.source_rows, **kwargs)
        self.stream = stream
        self._started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.charge(input_ids[:, -1:])  # the token the previous step's scores chose
        logp = self.stream.start() if not self._started else self.stream.step(input_ids[:, -1])
        self._started = True
        n_rm = self.combine.shape[1]
        ref = logp[n_rm:] if self.reference == "rm-init" else None
        step = self.score_candidates(torch.log_softmax(scores.float(), dim=-1), logp[:n_rm], ref)
        out = torch.full_like(scores, float("-inf"), dtype=torch.float32)
        return out.scatter_(1, step.candidates, step.scores)


class CrossTokenizerPADLogitsProcessor(_PADRule, LogitsProcessor):
    r"""PAD with a PersRM whose tokenizer differs from the base model's.

    The rule is :class:`PADLogitsProcessor`'s, but ``log pi_rm(a | s, p)`` is the PersRM's log-probability of
    candidate ``a``'s *text* as a continuation of the text decoded so far (several PersRM tokens where
    needed), computed by a :class:`~padkit.decoding.crossing.TextRewardStream`; the ``rm-init`` reference is
    the same text scored with the adapter off. A candidate without text of its own yet (part of a UTF-8
    character, a special token) gets a reward of 0. With ``reference="base"`` the reference is the base's
    log-probability of the token, so the reward compares the two models on the same string.
    ``candidates="topk+rm"`` is not available: PersRM tokens are not base tokens.

    Example:

    ```python
    >>> pad = PAD.from_pretrained("gemma3-270m", rm="persrm-smollm2")   # different vocabularies
    >>> inputs, processor = pad.logits_processor(["Tell me about cats."], preference="concise")
    >>> out = pad.base_model.generate(**inputs, logits_processor=[processor], do_sample=False,
    ...                               max_new_tokens=20)
    ```
    """

    def __init__(self, stream: TextRewardStream, combine: torch.Tensor, **kwargs) -> None:
        super().__init__(combine, stream.source_rows, **kwargs)
        if self.candidates == "topk+rm":
            raise ValueError("candidates 'topk+rm' needs a shared vocabulary; use topk or topk+eos")
        self.stream = stream

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.charge(input_ids[:, -1:])  # the token the previous step's scores chose
        base_logp = torch.log_softmax(scores.float(), dim=-1)
        cand = self._candidate_ids(base_logp)
        text_logp, has_text = self.stream.score(input_ids, cand.cpu())
        n_rm = self.combine.shape[1]
        ref = text_logp[n_rm:].to(base_logp.device) if self.reference == "rm-init" else None
        step = self.combine_rewards(
            base_logp, cand, text_logp[:n_rm].to(base_logp.device), ref, ~has_text.to(base_logp.device)
        )
        out = torch.full_like(scores, float("-inf"), dtype=torch.float32)
        return out.scatter_(1, step.candidates, step.scores)


class SelfGuidedPADLogitsProcessor(_PADRule, LogitsProcessor):
    r"""PAD in a single forward per step, for a PersRM that *is* the base model (``rm="self"``).

    ``generate`` runs one batch holding the ``batch`` prompt rows followed by the PersRM rows (the same
    prompts rendered with each preference dimension), so the weights are read once per step for both models.
    This processor scores each prompt row's candidates from the two blocks of logits, picks the token itself
    (greedy, or sampled with ``temperature`` / ``top_p``) and forces that token on the prompt row and on every
    PersRM row that follows it, which keeps all caches in step. Outputs are the first ``batch`` rows.

    Example:

    ```python
    >>> pad = PAD.from_pretrained("smollm2-135m-instruct", rm="self")
    >>> gens = pad.generate(["Tell me about cats."], "humorous", weight=2.0, fused=True)
    ```
    """

    def __init__(
        self, combine: torch.Tensor, source_rows: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0, **kwargs
    ) -> None:
        super().__init__(combine, source_rows, **kwargs)
        self.temperature = temperature
        self.top_p = top_p

    def _choose(self, step: StepRecord) -> torch.Tensor:
        cand = step.candidates
        repeated = (cand[:, :, None] == cand[:, None, :]).tril(diagonal=-1).any(dim=-1)
        scores = step.scores.masked_fill(repeated, float("-inf"))
        return step.candidates.gather(1, _pick(scores, self.temperature, self.top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch = self.combine.shape[0]
        logp = torch.log_softmax(scores.float(), dim=-1)
        step = self.score_candidates(logp[:batch], logp[batch:])
        chosen = self._choose(step)
        self.charge(chosen)
        chosen = torch.cat([chosen, chosen[self.source_rows]], dim=0)
        out = torch.full_like(scores, float("-inf"), dtype=torch.float32)
        return out.scatter_(1, chosen, 0.0)


def _pick(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row from ``scores`` (log-space): greedy at temperature 0, else sampled with top-p."""
    if temperature <= 0:
        return scores.argmax(dim=-1, keepdim=True)
    return torch.multinomial(_nucleus(torch.softmax(scores / temperature, dim=-1), top_p), 1)


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` with everything outside each row's top-p nucleus set to 0 (not renormalised)."""
    if top_p >= 1:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    drop = sorted_p.cumsum(dim=-1) - sorted_p > top_p
    return probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))


def amulet_policy(
    player: torch.Tensor, reference: torch.Tensor, iterations: int, alpha: float, lam: float, eta: float
) -> torch.Tensor:
    r"""Amulet's next-token scores (Zhang et al., ICLR 2025): a few rounds of online optimisation per step.

    With ``pi_0 = log p(.|x, pref)`` (``player``) and ``log p(.|x)`` (``reference``), each round ``t`` adds the
    utility ``Q_t = alpha * (pi_{t-1} - log p(.|x))`` and sets
    ``pi_t = (lam * pi_0 + mean(Q_1..Q_t) + pi_{t-1} / (eta t)) / (lam + 1 / (eta t))``, normalised except in
    the last round (as in the authors' code, whose defaults are 60 rounds, alpha 2, lambda 2, eta 10). Without a
    preference (``player == reference``) ``pi_0`` is a fixed point: the base's own distribution.
    """
    lp0 = torch.log_softmax(player.float(), dim=-1)
    ref = torch.log_softmax(reference.float(), dim=-1)
    lp, q_sum = lp0, torch.zeros_like(lp0)
    for t in range(1, iterations + 1):
        q_sum = q_sum + alpha * (lp - ref)
        scores = (lam * lp0 + q_sum / t + lp / (eta * t)) / (lam + 1 / (eta * t))
        if t == iterations:
            return scores
        lp = torch.log_softmax(scores, dim=-1)
    return lp0


class AmuletLogitsProcessor(LogitsProcessor):
    r"""Amulet in one batch: ``rows`` answer rows (the base with the preference in its prompt) followed by the
    same prompts without it. Each step :func:`amulet_policy` turns the two blocks of logits into the answer's
    next-token scores; the processor picks the token (greedy, or sampled with ``temperature`` / ``top_p``) and
    forces it on the answer row and its preference-free twin, which keeps both caches in step.

    Example:

    ```python
    >>> pad = PAD.from_pretrained(rm="self")
    >>> pad.generate(["Tell me about cats."], "concise", method="amulet", amulet_iterations=60)
    ```
    """

    def __init__(
        self,
        rows: int,
        iterations: int = 60,
        alpha: float = 2.0,
        lam: float = 2.0,
        eta: float = 10.0,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> None:
        self.rows, self.iterations, self.alpha, self.lam, self.eta = rows, iterations, alpha, lam, eta
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        policy = amulet_policy(
            scores[: self.rows], scores[self.rows :], self.iterations, self.alpha, self.lam, self.eta
        )
        chosen = _pick(policy, self.temperature, self.top_p)
        out = torch.full_like(scores, float("-inf"), dtype=torch.float32)
        return out.scatter_(1, torch.cat([chosen, chosen], dim=0), 0.0)


def judge_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Next-token probabilities as Persona-judge filters them: temperature, then top-k, then top-p
    (one-hot at the argmax for temperature 0)."""
    logits = logits.float()
    if temperature <= 0:
        return torch.zeros_like(logits).scatter_(1, logits.argmax(dim=-1, keepdim=True), 1.0)
    logits = logits / temperature
    k = min(top_k, logits.shape[-1])
    logits = logits.masked_fill(logits < logits.topk(k, dim=-1).values[:, -1:], float("-inf"))
    probs = _nucleus(torch.softmax(logits, dim=-1), top_p)
    return probs / probs.sum(dim=-1, keepdim=True)


def persona_judge_step(
    draft: torch.Tensor, judge: torch.Tensor, bonus: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One token per row by Persona-judge's rule (Zhang et al., ACL Findings 2025): speculative sampling in which
    the draft is the model under one prompt and the judge the same model under the target preference.

    ``draft`` and ``judge`` are filtered probabilities (:func:`judge_probs`). A row inside its round
    (``bonus`` false) proposes ``x ~ draft`` and the judge accepts it with probability
    ``min(1, judge[x] / draft[x])``; a rejected proposal is replaced by a sample of
    ``max(0, judge - draft)`` renormalised, which ends the round. A row whose ``gamma`` proposals were all
    accepted (``bonus`` true) takes a sample of ``judge`` itself. Either way each token is distributed as the
    judge's filtered distribution (the speculative sampling identity); what the draft changes is which tokens
    come from its own samples. Returns the tokens ``(rows, 1)`` and whether each row's proposal was accepted.
    """
    proposal = torch.multinomial(draft, 1)
    ratio = judge.gather(1, proposal) / draft.gather(1, proposal)
    accepted = torch.rand(ratio.shape, device=ratio.device) < ratio.clamp(max=1.0)
    residual = (judge - draft).clamp(min=0.0)
    empty = residual.sum(dim=-1, keepdim=True) <= 0  # draft == judge: nothing is ever rejected
    residual = torch.where(empty, judge, residual)
    resampled = torch.multinomial(residual / residual.sum(dim=-1, keepdim=True), 1)
    from_judge = torch.multinomial(judge, 1)
    accepted = accepted & ~bonus[:, None]
    tokens = torch.where(bonus[:, None], from_judge, torch.where(accepted, proposal, resampled))
    return tokens, accepted[:, 0]


class PersonaJudgeLogitsProcessor(LogitsProcessor):
    r"""Persona-judge in one batch: ``rows`` answer rows (the base under one prompt) followed by the same prompts
    under a second one. Each round a row's draft side proposes up to ``gamma`` tokens that its judge side
    accepts or rejects (:func:`persona_judge_step`); a rejection, or ``gamma`` acceptances and the judge's own
    bonus token, ends the round. With ``swap`` the two sides trade roles every round, as in the authors'
    two-preference decoding; otherwise the first block always judges. The chosen token is forced on both rows,
    which keeps both caches in step. At temperature 0 every token is the judge's argmax.

    Example:

    ```python
    >>> pad = PAD.from_pretrained(rm="self")
    >>> pad.generate(["Tell me about cats."], "concise", method="persona-judge", temperature=0.9, top_p=0.9)
    ```
    """

    def __init__(
        self,
        rows: int,
        gamma: int = 4,
        temperature: float = 0.0,
        top_k: int = 20,
        top_p: float = 1.0,
        swap: torch.Tensor | bool = False,
    ) -> None:
        self.rows, self.gamma = rows, gamma
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.swap = torch.as_tensor(swap, dtype=torch.bool).expand(rows).clone()
        self.position = torch.zeros(rows, dtype=torch.long)
        self.first_judges = torch.ones(rows, dtype=torch.bool)
        self.proposed = 0
        self.accepted = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        first, second = scores[: self.rows], scores[self.rows :]
        judge_side = self.first_judges.to(scores.device)[:, None]
        judge = judge_probs(torch.where(judge_side, first, second), self.temperature, self.top_k, self.top_p)
        draft = judge_probs(torch.where(judge_side, second, first), self.temperature, self.top_k, self.top_p)
        bonus = (self.position == self.gamma).to(scores.device)
        chosen, accepted = persona_judge_step(draft, judge, bonus)
        accepted = accepted.cpu()
        self.proposed += int((~bonus).sum())
        self.accepted += int(accepted.sum())
        ends = ~accepted
        self.position = torch.where(ends, 0, self.position + 1)
        self.first_judges = self.first_judges ^ (ends & self.swap)
        out = torch.full_like(scores, float("-inf"), dtype=torch.float32)
        return out.scatter_(1, torch.cat([chosen, chosen], dim=0), 0.0)


class NoRepeatNGramRows(LogitsProcessor):
    """transformers' ``no_repeat_ngram_size`` on the first ``rows`` rows of a batch only: a token that would repeat
    an n-gram already in the row (prompt included) gets ``-inf``. In a fused PAD, Amulet or Persona-judge batch
    the rows after the answers follow the answers' tokens and must keep their own distribution; the PAD rule
    drops a candidate the base row bans. A guard against loops (a run of one emoji, bare "-" lines), which a
    strong reward can otherwise prefer.

    Example:

    ```python
    >>> guard = NoRepeatNGramRows(4, rows=2)   # rows 0-1 are answers, the rest PersRM rows
    >>> model.generate(**inputs, logits_processor=[guard, pad_processor], max_new_tokens=64)
    ```
    """

    def __init__(self, ngram_size: int, rows: int) -> None:
        self.ban = NoRepeatNGramLogitsProcessor(ngram_size)
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] == self.rows:
            return self.ban(input_ids, scores)
        head = self.ban(input_ids[: self.rows], scores[: self.rows])
        return torch.cat([head, scores[self.rows :]], dim=0)


class _AnswerGuard(LogitsProcessor):
    """A guard that reads the first ``rows`` rows (the answers) token by token: from ``input_ids`` inside
    ``generate``, or from :meth:`follow` for a caller that keeps each answer itself (the continuous batch).
    Subclasses set ``rows`` and ``start = None`` and define ``_append``, ``_seen`` and ``ban``."""

    rows: int
    start: int | None

    def _append(self, row: int, token: int) -> None:
        raise NotImplementedError

    def _seen(self, row: int) -> int:
        """How many of ``row``'s answer tokens the guard has read."""
        raise NotImplementedError

    def ban(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        raise NotImplementedError

    def follow(self, row: int, answer: Sequence[int]) -> None:
        """Record the tokens of ``answer`` (``row``'s whole answer so far) that the guard has not seen yet, for a
        caller that keeps each answer itself rather than passing ``input_ids`` (the continuous batch)."""
        for token in answer[self._seen(row) :]:
            self._append(row, token)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        elif input_ids.shape[1] > self.start:
            for r, token in enumerate(input_ids[: self.rows, -1].tolist()):
                self._append(r, token)
        return self.ban(scores)


def class_members(token_classes: Sequence[int]) -> dict[int, list[int]]:
    """Each whitespace class that holds more than one token (from :func:`whitespace_classes`), mapped to its
    tokens: what a guard bans when it bans a class. A pass over the vocabulary, so a caller that builds guards
    often (:class:`padkit.PAD`, per request) builds it once and hands it to each guard."""
    members: dict[int, list[int]] = {}
    for token, cls in enumerate(token_classes):
        if cls != token:
            members.setdefault(cls, [cls]).append(token)
    return members


class _ClassBanGuard(_AnswerGuard):
    """An answer guard that keeps each answer as whitespace classes (``token_classes``, from
    :func:`whitespace_classes`) and bans, per answer row, the tokens :meth:`banned` names, each with its whole
    class (``members``: :func:`class_members` of ``token_classes``, built here when not given). Subclasses define
    ``banned`` and ``_append``, which adds to ``answers``."""

    def __init__(
        self, rows: int, token_classes: Sequence[int] | None, members: Mapping[int, Sequence[int]] | None = None
    ) -> None:
        self.rows = rows
        self.start: int | None = None
        self.classes = token_classes
        self.members = class_members(token_classes or ()) if members is None else members
        self.answers: list[list[int]] = [[] for _ in range(rows)]  # token classes

    def _class(self, token: int) -> int:
        return self.classes[token] if self.classes is not None and token < len(self.classes) else token

    def _with_class(self, cls: int) -> Sequence[int]:
        return self.members.get(cls, (cls,))

    def _seen(self, row: int) -> int:
        return len(self.answers[row])

    def banned(self, row: int) -> set[int]:
        raise NotImplementedError

    def ban(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` with every answer row's :meth:`banned` tokens at ``-inf``."""
        rows, tokens = [], []
        for r in range(self.rows):
            for token in self.banned(r):
                if token < scores.shape[-1]:  # a class may hold ids the tokenizer adds past the model's vocabulary
                    rows.append(r)
                    tokens.append(token)
        if not rows:
            return scores
        scores = scores.clone()
        scores[rows, tokens] = float("-inf")
        return scores


class LoopGuard(_ClassBanGuard):
    """PAD's loop guard: on the first ``rows`` rows (the answers), a token that would extend a back-to-back
    repetition past ``max_run`` tokens gets ``-inf``.

    A back-to-back repetition is a unit of tokens said at least twice in a row ("🌍🌍🌍", "SARCO-SARCO-",
    "1001:1001:", a sentence repeated as soon as it ends); its length counts every copy. A unit longer than
    ``max_run`` would only be stopped at the last token of its copy, so a copy of the text one unit back is also
    stopped once it passes ``max_copy`` tokens (default ``2 * max_run``: a 14-token sentence said again stops
    after 8 of them with a guard of 4; ``0`` turns this off). Loops of the 135M base under strong guidance take
    these forms, while ordinary text almost never does, so unlike ``no_repeat_ngram_size`` (which bans any
    repeated n-gram, the prompt's included) the guard rarely touches a fluent answer. For each answer and each
    unit length ``p`` it keeps how many tokens in a row have equalled the token ``p`` before them, so a step
    costs O(``max_period``) per row.

    ``token_classes`` (from :func:`whitespace_classes`) makes tokens that differ only by surrounding whitespace
    equal: a byte-level BPE writes an answer's first "In" and the " In" of its repeat as two tokens, so "In
    short: In short: In short:" is no repetition token by token. A banned token then bans its whole class.

    Example:

    ```python
    >>> guard = LoopGuard(8, rows=2, token_classes=whitespace_classes(tokenizer))   # rows 0-1 are answers
    >>> model.generate(**inputs, logits_processor=[guard, pad_processor], max_new_tokens=64)
    ```
    """

    def __init__(
        self,
        max_run: int,
        rows: int,
        max_period: int = 64,
        token_classes: Sequence[int] | None = None,
        max_copy: int | None = None,
        members: Mapping[int, Sequence[int]] | None = None,
    ) -> None:
        if max_run < 2:
            raise ValueError(f"the loop guard needs a longest allowed run of at least 2 tokens, got {max_run}")
        if max_copy is not None and max_copy < 0:
            raise ValueError(f"the loop guard's copy cap must be 0 (off) or a number of tokens, got {max_copy}")
        self.max_run = max_run
        super().__init__(rows, token_classes, members)
        self.max_copy = 2 * max_run if max_copy is None else max_copy
        self.max_period = max_period
        self.periodic: list[list[int]] = [[0] * (max_period + 1) for _ in range(rows)]

    def _append(self, row: int, token: int) -> None:
        answer, periodic, cls = self.answers[row], self.periodic[row], self._class(token)
        for p in range(1, min(self.max_period, len(answer)) + 1):
            periodic[p] = periodic[p] + 1 if answer[-p] == cls else 0
        answer.append(cls)

    def banned(self, row: int) -> set[int]:
        """The tokens that would extend one of ``row``'s back-to-back repetitions past ``max_run`` tokens."""
        answer, periodic, out = self.answers[row], self.periodic[row], set()
        for p in range(1, min(self.max_period, len(answer)) + 1):
            run = periodic[p] + 1  # positions equal to the one p before, with the next token
            if (run >= p and run + p > self.max_run) or (self.max_copy and run > self.max_copy):
                out.update(self._with_class(answer[-p]))
        return out


class NGramGuard(_ClassBanGuard):
    """PAD's n-gram guard: on the first ``rows`` rows (the answers), a token that would say again an n-gram of
    ``ngram_size`` tokens the answer has already said gets ``-inf``.

    The loop guard stops back-to-back repetition; a long guided answer can still loop with a gap, one list item
    said again two items later ("- Use fresh ingredients" three times in a bulleted answer). Unlike transformers'
    ``no_repeat_ngram_size``, it reads the answer alone (the prompt may be quoted) and only PAD's answers (a base
    row decodes as it would unguided). ``token_classes`` (from :func:`whitespace_classes`) makes tokens that
    differ only by surrounding whitespace equal, as in :class:`LoopGuard`; a banned token bans its whole class.
    Each step costs O(1) per row: a row keeps, for every (n-1)-gram it has said, the tokens that followed it.

    Example:

    ```python
    >>> guard = NGramGuard(8, rows=2, token_classes=whitespace_classes(tokenizer))   # rows 0-1 are answers
    >>> model.generate(**inputs, logits_processor=[guard, pad_processor], max_new_tokens=128)
    ```
    """

    def __init__(
        self,
        ngram_size: int,
        rows: int,
        token_classes: Sequence[int] | None = None,
        members: Mapping[int, Sequence[int]] | None = None,
    ) -> None:
        if ngram_size < 2:
            raise ValueError(f"the n-gram guard needs n-grams of at least 2 tokens, got {ngram_size}")
        super().__init__(rows, token_classes, members)
        self.n = ngram_size
        self.followers: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(rows)]

    def _append(self, row: int, token: int) -> None:
        answer = self.answers[row]
        answer.append(self._class(token))
        if len(answer) >= self.n:
            self.followers[row].setdefault(tuple(answer[-self.n : -1]), set()).add(answer[-1])

    def banned(self, row: int) -> set[int]:
        """The tokens that would end an n-gram ``row`` has said already."""
        out: set[int] = set()
        for cls in self.followers[row].get(tuple(self.answers[row][-(self.n - 1) :]), ()):
            out.update(self._with_class(cls))
        return out


def vocabulary_texts(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Each token id's text, decoded alone (special tokens as written): the table :func:`whitespace_classes` and
    :func:`colon_endings` both read. Decoding a 49k vocabulary takes about half a second, so build it once."""
    return tokenizer.batch_decode([[i] for i in range(len(tokenizer))])


def whitespace_classes(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str] | None = None) -> list[int]:
    """For :class:`LoopGuard`: each token id mapped to the smallest id whose text is the same once surrounding
    whitespace is stripped ("In" and " In"). Tokens of whitespace alone and pieces of a character (byte tokens
    that decode to U+FFFD) keep their own class, so line breaks and the bytes of different emoji stay apart.
    ``texts`` is :func:`vocabulary_texts` of ``tokenizer`` when the caller has it already."""
    texts = vocabulary_texts(tokenizer) if texts is None else texts
    first: dict[str, int] = {}
    classes = []
    for token, text in enumerate(texts):
        key = text.strip()
        classes.append(token if not key or "\ufffd" in text else first.setdefault(key, token))
    return classes


class ColonEndGuard(_AnswerGuard):
    """PAD's colon guard: on the first ``rows`` rows (the answers), the tokens that end a turn (``end_token_ids``:
    EOS and the chat template's special tokens) get ``-inf`` while the answer's last visible text ends with a colon.

    A strongly guided 135M base sometimes answers with a title that announces an answer and never gives it
    ("5 days in Basel:", "Get better at cooking:"): 13 of 50 ``concise`` koala answers at w=0.65 with the session-38
    PersRM (docs/results.md, "Session 39"). No finished answer ends that way, so the guard makes such an answer
    go on; with ``top_k``, the next token is also one of the base's own ``top_k`` (the PersRM's candidates then
    cannot fill the gap with a token the base would never write: "||=||", a vertical tab). ``endings`` (from
    :func:`colon_endings`) says per token id whether its text ends with a colon (1), is whitespace alone or
    invisible and so keeps the state before it (0), or ends otherwise (-1).

    Example:

    ```python
    >>> guard = ColonEndGuard(colon_endings(tokenizer), tokenizer.all_special_ids, rows=2, top_k=10)
    >>> model.generate(**inputs, logits_processor=[guard, pad_processor], max_new_tokens=64)
    ```
    """

    def __init__(self, endings: Sequence[int], end_token_ids: Sequence[int], rows: int, top_k: int = 0) -> None:
        self.endings = endings
        self.top_k = top_k
        self.ends = list(end_token_ids)
        self.rows = rows
        self.start: int | None = None
        self.seen = [0] * rows
        self.open = [False] * rows

    def _append(self, row: int, token: int) -> None:
        ending = self.endings[token] if token < len(self.endings) else -1
        if ending:
            self.open[row] = ending > 0
        self.seen[row] += 1

    def _seen(self, row: int) -> int:
        return self.seen[row]

    def ban(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` with the turn-ending tokens at ``-inf`` on every answer row whose text ends with a colon."""
        rows = [r for r in range(self.rows) if self.open[r]]
        ends = [t for t in self.ends if t < scores.shape[-1]]
        if not rows or not ends:
            return scores
        scores = scores.clone()
        index = torch.tensor(rows, device=scores.device)
        scores[index[:, None], torch.tensor(ends, device=scores.device)[None, :]] = float("-inf")
        if self.top_k:
            head = scores[index]
            kth = head.topk(min(self.top_k, head.shape[-1]), dim=-1).values[:, -1:]
            scores[index] = head.masked_fill(head < kth, float("-inf"))
        return scores


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The ids a tokenizer treats as special: its named special tokens and every added token marked special."""
    added = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return added | set(tokenizer.all_special_ids)


def colon_endings(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str] | None = None) -> list[int]:
    """For :class:`ColonEndGuard`: per token id, 1 if its text ends with a colon once trailing whitespace is
    stripped, 0 if it is whitespace alone or invisible (a special token), -1 otherwise. ``texts`` is
    :func:`vocabulary_texts` of ``tokenizer`` when the caller has it already."""
    texts = vocabulary_texts(tokenizer) if texts is None else texts
    special = special_token_ids(tokenizer)
    return [0 if i in special or not t.strip() else 1 if t.rstrip().endswith(":") else -1 for i, t in enumerate(texts)]


class BanTokensLogitsProcessor(LogitsProcessor):
    """Give ``token_ids`` a score of ``-inf`` at every step: how padkit ignores EOS. With ``rows``, only the
    first ``rows`` rows (the answers of a fused PAD batch): the PersRM rows keep their distribution, as they do
    beside ``generate``, so both paths see the same rewards and the same ``topk+rm`` candidates.

    ``generate(min_new_tokens=...)`` does the same through transformers' min-length processors, which build a
    vocabulary-sized mask at every step (at batch 8 with PAD's 16 rows, about 5 ms of an 80 ms step on a 2-core
    CPU). This one returns a new tensor (one copy of the scores, no mask), so the logits ``generate`` keeps
    for ``output_logits`` stay unprocessed.

    Example:

    ```python
    >>> no_eos = BanTokensLogitsProcessor([tokenizer.eos_token_id])
    >>> model.generate(**inputs, logits_processor=[no_eos], max_new_tokens=128)   # always 128 tokens
    ```
    """

    def __init__(self, token_ids: list[int], rows: int | None = None) -> None:
        self.token_ids = torch.tensor(token_ids, dtype=torch.long)
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.token_ids.device != scores.device:
            self.token_ids = self.token_ids.to(scores.device)
        if self.rows is None or self.rows >= scores.shape[0]:
            return scores.index_fill(1, self.token_ids, float("-inf"))
        return torch.cat([scores[: self.rows].index_fill(1, self.token_ids, float("-inf")), scores[self.rows :]])


class ARGSLogitsProcessor(LogitsProcessor):
    """ARGS-style guided decoding (Khanov et al., 2024), the baseline PAD is compared with: the base's top-k
    next tokens are rescored by ``log pi_base + w * R(prefix + candidate)``, where ``R`` is a sequence-level
    reward recomputed over the whole text for every candidate at every step (no cache).

    ``reward_fn(row, candidate_sequences)`` returns one reward per candidate sequence (generated token ids).

    Example::

        processor = ARGSLogitsProcessor(lambda row, seqs: torch.zeros(len(seqs)), prompt_length=12, weight=1.0)
        model.generate(**inputs, logits_processor=[processor], do_sample=False)
    """

    def __init__(self, reward_fn, prompt_length: int, weight: float | torch.Tensor = 1.0, top_k: int = 10) -> None:
        self.reward_fn = reward_fn
        self.prompt_length = prompt_length
        self.weight = weight
        self.top_k = top_k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        top = logp.topk(min(self.top_k, logp.shape[-1]), dim=-1)
        out = torch.full_like(scores, float("-inf"))
        for b in range(input_ids.shape[0]):
            prefix = input_ids[b, self.prompt_length :].tolist()
            rewards = self.reward_fn(b, [prefix + [c] for c in top.indices[b].tolist()]).to(logp.device, logp.dtype)
            w = self.weight[b] if isinstance(self.weight, torch.Tensor) else self.weight
            total = top.values[b] + w * rewards
            out[b, top.indices[b]] = torch.where(torch.isfinite(top.values[b]), total, top.values[b]).to(scores.dtype)
        return out
