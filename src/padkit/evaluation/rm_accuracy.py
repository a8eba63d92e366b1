"""How well a PersRM ranks preference pairs: pairwise accuracy of its summed implicit reward.

The reward of a response ``y`` to prompt ``x`` under preference ``p`` is
``log pi_rm(y | x, p) - log pi_ref(y | ...)``: with ``reference="rm-init"`` the reference is the PersRM with its
LoRA disabled on the same input (the DPO implicit reward it was trained on); with ``"base"`` it is the base model
without the preference (what PAD decodes with by default); with ``"none"`` it is 0 (plain log-likelihood).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from padkit.decoding.sequence_reward import implicit_rewards
from padkit.errors import PadkitError
from padkit.preferences import Dimension, render_clipped
from padkit.training.data import PreferencePair

RMReference = Literal["rm-init", "base", "none"]


@dataclass
class DimensionAccuracy:
    """Share of pairs whose chosen response gets the higher reward, and the mean reward gap."""

    accuracy: float
    margin: float
    n: int


@dataclass
class RMReport:
    """Accuracy per dimension and over all pairs."""

    reference: str
    accuracy: float
    n: int
    dimensions: dict[str, DimensionAccuracy] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "reference": self.reference,
            "accuracy": self.accuracy,
            "n": self.n,
            "dimensions": {k: vars(v) for k, v in self.dimensions.items()},
        }


def pair_rewards(
    rm_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    reference: RMReference = "rm-init",
    base_model: PreTrainedModel | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed implicit rewards of the chosen and the rejected response of each pair."""
    if reference not in ("rm-init", "base", "none"):
        raise PadkitError(f"unknown reference {reference!r}; use rm-init, base or none")
    if reference == "rm-init" and not hasattr(rm_model, "disable_adapter"):
        if base_model is not None:
            raise PadkitError("reference 'rm-init' needs a LoRA PersRM; use 'base' with a full-model PersRM")
        reference = "base"  # the PersRM is the base itself: its preference-free form is the base
    chosen, rejected = [], []
    for start in tqdm(range(0, len(pairs), batch_size), desc="scoring pairs", unit="batch", disable=not progress):
        chunk = pairs[start : start + batch_size]
        with_pref = [
            render_clipped(tokenizer, p.prompt, Dimension(p.preference).principle, max_prompt_length) for p in chunk
        ]
        plain = None
        if reference == "base":
            plain = 2 * [render_clipped(tokenizer, p.prompt, None, max_prompt_length) for p in chunk]
        reward = implicit_rewards(
            rm_model,
            tokenizer,
            with_pref + with_pref,
            [p.chosen for p in chunk] + [p.rejected for p in chunk],
            reference,
            plain=plain,
            base_model=base_model,
            batch_size=2 * batch_size,
            max_length=max_length,
        )
        chosen.append(reward[: len(chunk)])
        rejected.append(reward[len(chunk) :])
    return torch.cat(chosen), torch.cat(rejected)


def evaluate_rm(
    rm_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    reference: RMReference = "rm-init",
    **kwargs,
) -> RMReport:
    """Pairwise accuracy and mean margin per preference dimension (keyword arguments go to :func:`pair_rewards`)."""
    if not pairs:
        raise PadkitError("no preference pairs to evaluate")
    chosen, rejected = pair_rewards(rm_model, tokenizer, pairs, reference, **kwargs)
    wins = (chosen > rejected).double()
    gaps = chosen - rejected
    report = RMReport(reference, round(wins.mean().item(), 4), len(pairs))
    for name in sorted({p.group for p in pairs}):
        idx = torch.tensor([i for i, p in enumerate(pairs) if p.group == name])
        report.dimensions[name] = DimensionAccuracy(
            round(wins[idx].mean().item(), 4), round(gaps[idx].mean().item(), 4), len(idx)
        )
    return report
