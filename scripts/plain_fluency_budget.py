"""Experiment (session 68): PAD's fluency budget priced under the plain base, the model `padkit eval` scores with.

padkit's ``--fluency-budget`` prices each candidate under the base as decoded, which reads the preference in its
prompt (the default ``prompted_base``), so it did not hold answers near the bound eval measures (session 67). This
script runs any ``padkit`` command with the budget priced under the *plain* base instead: the fused batch gets one
more row per prompt (the prompt without the preference, no adapter) that follows the answer row, and the budget
reads that row's log-probs. Two prices (``PRICE`` in the environment):

- ``regret`` (the default): a candidate costs the plain base's log-prob of its most likely candidate minus its own,
  as padkit's budget does under the decoded base;
- ``abs``: a candidate costs its negative log-prob under the plain base, so the budget caps the answer's
  perplexity under the plain base itself (``B`` per token written plus 16 tokens' worth; the least costly
  candidate always stays).

Static fused PAD only (the eval path with a LoRA PersRM). Not part of padkit: results are in docs/results.md.

    PRICE=abs python scripts/plain_fluency_budget.py eval --prompts ../shared/data/psoups_koala_eval_50.json \\
        -p concise --methods base,pad --weights 1.0 --fluency-budget 0.9 --output runs/eval-plain-budget
"""

from __future__ import annotations

import os
import sys

import torch

from padkit.decoding import pad as pad_module
from padkit.decoding.config import FLUENCY_BUDGET_AHEAD
from padkit.decoding.processor import SelfGuidedPADLogitsProcessor, _PADRule
from padkit.models.row_lora import LoRARows
from padkit.preferences.render import render_input

PRICE = os.environ.get("PRICE", "regret")
_padkit_fused_plan = pad_module.PAD._fused_plan
_padkit_over_budget = _PADRule._over_budget


def fused_plan(self, prompts, rows, weights, config):
    """``PAD._fused_plan`` with the plain rows after the PersRM rows, when a budget is set and the base is prompted."""
    plan = _padkit_fused_plan(self, prompts, rows, weights, config)
    if not (config.fluency_budget > 0 and self.prompts_base(config)):
        return plan
    if not self.rm_shares_base:
        raise SystemExit("the plain-base budget experiment needs a LoRA PersRM on the base's own weights")
    texts, source, _, labels = self._persrm_rows(prompts, rows)
    answers, answer_labels = self._answer_inputs(prompts, rows, config)
    n = len(prompts)
    plain = [render_input(self.tokenizer, p) for p in prompts]
    all_texts = answers + texts + plain
    all_labels = answer_labels + labels + [f"prompt {i} without its preference" for i in range(n)]
    plan.inputs = self._encode(self.tokenizer, all_texts, self.base_model, config.max_new_tokens, all_labels)
    plan.follows = torch.cat([torch.tensor(source, dtype=torch.long), torch.arange(n)])
    lora_rows = LoRARows(self.rm_model, slice(n, n + len(texts)), len(all_texts))
    plan.inputs.update(lora_rows.forward_kwargs())
    plan.contexts = [lora_rows]
    plan.pad_processor.plain_rows = True
    return plan


def over_budget(self, cand, cand_base, dropped):
    """The budget's drop mask with each candidate priced under the plain rows' log-probs (``self._price``)."""
    price = getattr(self, "_price", None)
    if price is None:
        return _padkit_over_budget(self, cand, cand_base, dropped)
    logp = price.gather(1, cand).masked_fill(dropped, float("-inf"))
    first = logp.max(dim=1, keepdim=True).values
    free = dropped | torch.isin(cand, self.eos)
    cost = torch.where(free, 0.0, -logp if PRICE == "abs" else (first - logp).clamp(min=0.0))
    if self.spent is None:
        self.spent = torch.zeros(cand.shape[0], device=cand.device)
    self._pending = (cand, cost)
    allowed = self.fluency_budget * (self.written + 1 + FLUENCY_BUDGET_AHEAD)
    return (self.spent[:, None] + cost > allowed) & (logp < first) & ~free


def fused_call(self, input_ids, scores):
    """``SelfGuidedPADLogitsProcessor.__call__`` reading the plain rows, if any, after the PersRM rows."""
    batch, n_rm = self.combine.shape
    logp = torch.log_softmax(scores.float(), dim=-1)
    plain = getattr(self, "plain_rows", False)
    self._price = logp[batch + n_rm :] if plain else None
    step = self.score_candidates(logp[:batch], logp[batch : batch + n_rm])
    chosen = self._choose(step)
    self.charge(chosen)
    follows = torch.cat([self.source_rows, torch.arange(batch)]) if plain else self.source_rows
    chosen = torch.cat([chosen, chosen[follows]], dim=0)
    out = torch.full_like(scores, float("-inf"), dtype=torch.float32)
    return out.scatter_(1, chosen, 0.0)


if __name__ == "__main__":
    pad_module.PAD._fused_plan = fused_plan
    pad_module.DECODE_MODES["fused-pad"] = fused_plan
    _PADRule._over_budget = over_budget
    SelfGuidedPADLogitsProcessor.__call__ = fused_call
    from padkit.cli.main import main

    sys.exit(main())
