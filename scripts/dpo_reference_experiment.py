"""Experiment (session 11): PAD with the DPO reference, the reward the PersRM was trained on.

padkit's decoding reward is ``log pi_rm(a|s,p) - log pi_base(a|s)``: the base *without* the preference. DPO
trained the PersRM against its own weights with the adapter off *on the same input*, preference included, which
is also what ``padkit rm-eval --reference rm-init`` scores. The difference of the two rewards is the base's own
log-ratio with and without the preference in its prompt (what ``pad-self`` decodes with). This script runs any
``padkit`` command with ``--methods ...,pad-rm-init`` decoding by the DPO reward instead: it replaces the
non-fused PAD processor so that each PersRM row gets a reference row (same input, adapter off) in the PersRM's
batch. A LoRA PersRM on the base's tokenizer only. Not part of padkit: results are in docs/results.md.

    python scripts/dpo_reference_experiment.py eval --prompts ../shared/data/psoups_koala_eval_50.json \\
        --limit 20 -p concise --methods base,pad-rm-init --weights 0.5,1 --output runs/eval-dporef
"""

from __future__ import annotations

import sys

import torch

from padkit.decoding.pad import PAD, eos_token_ids
from padkit.decoding.processor import PADLogitsProcessor
from padkit.decoding.reward import RewardStream
from padkit.models.row_lora import LoRARows


class DPOReferenceProcessor(PADLogitsProcessor):
    """PAD's rule with one reference row per PersRM row: ``reward = sum_i w_i (log pi_rm - log pi_init)``."""

    def score_candidates(self, base_logp, rm_logp, ref_logp=None):
        vocab = min(base_logp.shape[-1], rm_logp.shape[-1])
        base_logp, rm_logp, ref_logp = base_logp[:, :vocab], rm_logp[:, :vocab], ref_logp[:, :vocab]
        cand = self._candidate_ids(base_logp, rm_logp)
        rows = cand[self.source_rows]
        delta = rm_logp.gather(1, rows) - ref_logp.gather(1, rows)
        return self.combine_rewards(base_logp, cand, delta, torch.zeros_like(cand, dtype=base_logp.dtype))


def dpo_reference_processor(self, prompts, rows, weights, config, record):
    """Replaces ``PAD._pad_processor``: the PersRM rows, then the same inputs again with the adapter off."""
    if self.cross_tokenizer or not self.rm_is_adapter:
        raise SystemExit("the DPO reference experiment needs a LoRA PersRM with the base's tokenizer")
    texts, source, combine, labels = self._persrm_rows(prompts, rows)
    n = len(texts)
    inputs = self._encode(self.rm_tokenizer, texts + texts, self.rm_model, config.max_new_tokens, labels + labels)
    stream = RewardStream(
        self.rm_model,
        inputs["input_ids"],
        inputs["attention_mask"],
        torch.tensor(source + source, dtype=torch.long),
        LoRARows(self.rm_model, slice(0, n), 2 * n),
        adapters=True,
    )
    return DPOReferenceProcessor(
        stream,
        combine=combine,
        weight=weights,
        reference="rm-init",
        top_k=config.top_k,
        candidates=config.candidates or self.default_candidates,
        eos_token_ids=eos_token_ids(self.base_model, self.tokenizer),
        record=record,
        min_p=config.min_p,
    )


if __name__ == "__main__":
    PAD._pad_processor = dpo_reference_processor
    from padkit.cli.main import main

    sys.exit(main())
