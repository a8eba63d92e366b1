"""How well a PersRM ranks preference pairs: pairwise accuracy of its summed implicit reward and of its mean
reward per token, and (with a weight) whether PAD takes the chosen side at the one step where the two responses
part.

The reward of a response ``y`` to prompt ``x`` under preference ``p`` is
``log pi_rm(y | x, p) - log pi_ref(y | ...)``: with ``reference="rm-init"`` the reference is the PersRM with its
LoRA disabled on the same input (the DPO implicit reward it was trained on); with ``"base"`` it is the base model
without the preference (what PAD decodes with by default); with ``"none"`` it is 0 (plain log-likelihood).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from padkit.decoding.config import REFERENCES, Candidates, Reference
from padkit.decoding.processor import _PADRule
from padkit.decoding.sequence_reward import ResponseScores, encode_response, implicit_rewards, resolve_reference
from padkit.errors import PadkitError
from padkit.models.loading import DEFAULT_BASE, same_vocabulary
from padkit.models.row_lora import AdapterSwitch
from padkit.preferences import Dimension, render_clipped
from padkit.preferences.catalog import lookup
from padkit.training.data import PreferencePair, spaced_sample, split_pairs

SPLITS = ("heldout", "train", "all")
CUT_ENDS = ("closed", "open")
"""How ``rm-eval`` ends a response marked cut (``chosen_cut`` / ``rejected_cut``): ``closed`` with the
end-of-sequence token, as every response; ``open`` without it, as ``padkit train`` trains it (see
:func:`end_tokens`)."""


@dataclass
class DimensionAccuracy:
    """Share of pairs whose chosen response gets the higher summed reward, and the mean gap of the sums;
    ``token_accuracy``: the share whose chosen response gets the higher mean reward per token (see
    :func:`token_wins`). With a decision weight also the share where PAD (``decision``) and the base alone
    (``base_decision``) pick the chosen response's token at the first step where chosen and rejected differ,
    where that token is among PAD's candidates at all (``reachable``: no weight can pick it otherwise), and where
    PAD (``wrong_turn``) and the base alone (``base_wrong_turn``) pick the rejected response's token there instead:
    a miss of the chosen token may be another fine token, a pick of the rejected one is the turn the pair forbids."""

    accuracy: float
    margin: float
    n: int
    decision: float | None = None
    base_decision: float | None = None
    reachable: float | None = None
    wrong_turn: float | None = None
    base_wrong_turn: float | None = None
    token_accuracy: float | None = None


def _present(fields: dict) -> dict:
    """The fields of a report row that were measured (None: not asked for, or no bar)."""
    return {k: v for k, v in fields.items() if v is not None}


@dataclass
class KindSummary:
    """The pairs of one kind (:func:`pair_kind`) pooled, and how many of its report groups reach the kind's bar
    (:data:`ACCURACY_BARS`; ``bar`` is None for a kind without one): ``below`` names the others, lowest first."""

    accuracy: float
    token_accuracy: float
    n: int
    groups: int
    bar: float | None = None
    at_bar: int | None = None
    below: list[str] = field(default_factory=list)


@dataclass
class RMReport:
    """Accuracy per dimension and over all pairs."""

    reference: str
    accuracy: float
    n: int
    cut_ends: str = "closed"
    """How responses marked cut were ended (:data:`CUT_ENDS`)."""
    token_accuracy: float | None = None
    """Share of pairs whose chosen response gets the higher mean reward per token (:func:`token_wins`)."""
    dimensions: dict[str, DimensionAccuracy] = field(default_factory=dict)
    decision: float | None = None
    base_decision: float | None = None
    reachable: float | None = None
    wrong_turn: float | None = None
    base_wrong_turn: float | None = None
    by_shape: dict[str, DimensionAccuracy] = field(default_factory=dict)
    """Accuracy by how the chosen response relates to the rejected one (:func:`shape_split`)."""
    by_kind: dict[str, KindSummary] = field(default_factory=dict)
    """Accuracy by what a group of pairs tests, against padkit's bar for it (:func:`kind_split`)."""

    def as_dict(self) -> dict:
        shares = {name: getattr(self, name) for name in ("token_accuracy", *FirstSteps._fields)}

        def rows(table: dict[str, DimensionAccuracy]) -> dict:
            return {k: _present(vars(d)) for k, d in table.items()}

        return {
            "reference": self.reference,
            "cut_ends": self.cut_ends,
            "accuracy": self.accuracy,
            "n": self.n,
            **{k: v for k, v in shares.items() if v is not None},
            "dimensions": rows(self.dimensions),
            **({"by_shape": rows(self.by_shape)} if self.by_shape else {}),
            **({"by_kind": {k: _present(vars(v)) for k, v in self.by_kind.items()}} if self.by_kind else {}),
        }


KINDS = ("trained dimension", "wording held out", "dimension held out", "preference text", "repair")
"""What a group of pairs tests (:func:`pair_kind`), in report order."""
ACCURACY_BARS = {"trained dimension": 0.85, "wording held out": 0.80, "preference text": 0.65}
"""The held-out accuracy padkit asks of a PersRM it ships, per report group of each kind: every trained dimension
0.85 on held-out prompts, every held-out wording of one 0.80, pairs named only by their preference text (HH-RLHF
harmless) 0.65. Held-out dimensions are judged by what PAD writes (``padkit eval``); repair groups have no bar."""


def pair_kind(pair: PreferencePair) -> str:
    """What a pair tests: a trained catalog dimension, one of its held-out wordings, a dimension held out of
    training, a preference given only as text (no catalog dimension: HH-RLHF, a user's file), or a repair group
    (synthesized pairs named after what they mend, such as ``early-end``)."""
    if pair.holdout:
        return f"{pair.holdout} held out"
    if pair.dimension is None:
        return "preference text"
    return "trained dimension" if lookup(pair.dimension) else "repair"


def kind_split(
    pairs: Sequence[PreferencePair],
    wins: torch.Tensor,
    token_wins: torch.Tensor,
    groups: dict[str, DimensionAccuracy],
) -> dict[str, KindSummary]:
    """Pool the pairs of each kind (:func:`pair_kind`) and count its ``groups`` (the report's rows) at
    :data:`ACCURACY_BARS`, so a report says at a glance which targets a PersRM meets and where it falls short."""
    kinds = [pair_kind(p) for p in pairs]
    table = {}
    for kind in sorted(set(kinds), key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k)):
        idx = torch.tensor([i for i, k in enumerate(kinds) if k == kind])
        names = sorted({p.group for p, k in zip(pairs, kinds, strict=True) if k == kind})
        summary = KindSummary(
            round(wins[idx].mean().item(), 4), round(token_wins[idx].mean().item(), 4), len(idx), len(names)
        )
        bar = ACCURACY_BARS.get(kind)
        if bar is not None:
            short = sorted((groups[n].accuracy, n) for n in names if groups[n].accuracy < bar)
            summary.bar, summary.at_bar = bar, len(names) - len(short)
            summary.below = [f"{n} {a:.3f}" for a, n in short]
        table[kind] = summary
    return table


SHAPES: dict[str, Callable[[str, str], bool]] = {
    "chosen longer": lambda c, r: len(c.split()) > len(r.split()),
    "chosen shorter": lambda c, r: len(c.split()) < len(r.split()),
    "chosen extends rejected": lambda c, r: c != r and c.startswith(r),
    "rejected extends chosen": lambda c, r: c != r and r.startswith(c),
}
"""How a pair's chosen answer relates to its rejected one (a pair can be in a length row and an extension row)."""


def shape_split(
    pairs: Sequence[PreferencePair], wins: torch.Tensor, gaps: torch.Tensor, token_wins: torch.Tensor | None = None
) -> dict[str, DimensionAccuracy]:
    """Accuracy and margin (and with ``token_wins`` the per-token accuracy) over the pairs of each
    :data:`SHAPES` row that has any (lengths in words).

    A PersRM that learnt a shape rather than the preference scores high on one row of a pair of rows and low on
    the other, whatever its overall accuracy. v13, trained with many early-end pairs (the whole answer against
    its first sentence: the chosen extends the rejected), fell on held-out pairs where the rejected answer is the
    chosen plus a sentence (no follow-up question, no sign-off, no caveat).
    """
    chosen, rejected = [p.chosen.strip() for p in pairs], [p.rejected.strip() for p in pairs]
    table = {}
    for name, test in SHAPES.items():
        idx = torch.tensor([i for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)) if test(c, r)])
        if len(idx):
            table[name] = _accuracy_over(wins, gaps, idx, token_wins)
    return table


def group_split(
    pairs: Sequence[PreferencePair],
    wins: torch.Tensor,
    gaps: torch.Tensor,
    token_wins: torch.Tensor | None = None,
    picks: FirstSteps | None = None,
) -> dict[str, DimensionAccuracy]:
    """The report's rows: accuracy and margin over the pairs of each group (:attr:`PreferencePair.group`), and with
    ``picks`` (:func:`first_step_decisions`) the group's decision shares."""
    table = {}
    for name in sorted({p.group for p in pairs}):
        idx = torch.tensor([i for i, p in enumerate(pairs) if p.group == name])
        table[name] = row = _accuracy_over(wins, gaps, idx, token_wins)
        if picks is not None:
            _set_shares(row, FirstSteps(*(t[idx] for t in picks)))
    return table


def _accuracy_over(
    wins: torch.Tensor, gaps: torch.Tensor, idx: torch.Tensor, token_wins: torch.Tensor | None = None
) -> DimensionAccuracy:
    """The accuracy row of the pairs at ``idx`` (a report group or a shape)."""
    row = DimensionAccuracy(round(wins[idx].mean().item(), 4), round(gaps[idx].mean().item(), 4), len(idx))
    if token_wins is not None:
        row.token_accuracy = round(token_wins[idx].mean().item(), 4)
    return row


def check_cut_ends(cut_ends: str) -> None:
    """Raise a :class:`PadkitError` naming the choices unless ``cut_ends`` is one of :data:`CUT_ENDS`."""
    if cut_ends not in CUT_ENDS:
        raise PadkitError(f"unknown cut ends {cut_ends!r}; use one of {', '.join(CUT_ENDS)}")


def end_tokens(pairs: Sequence[PreferencePair], cut_ends: str) -> tuple[list[bool], list[bool]]:
    """Whether each pair's chosen and rejected response is scored with an end-of-sequence token.

    A response cut by a length limit did not end there. ``padkit train`` trains it without the end token, so a
    ``closed`` score also asks the PersRM whether the answer should stop where the sampler stopped it, a question
    it was never taught: for ``detailed`` (the long side is a cut answer, the short side one that ends) that
    question, not the length, can decide the pair. ``open`` scores each side as it was trained."""
    check_cut_ends(cut_ends)
    if cut_ends == "closed":
        return [True] * len(pairs), [True] * len(pairs)
    return [not p.chosen_cut for p in pairs], [not p.rejected_cut for p in pairs]


def token_wins(chosen: ResponseScores, rejected: ResponseScores) -> torch.Tensor:
    """1.0 where the chosen response's mean reward per token is above the rejected one's, else 0.0.

    PAD adds the reward token by token, so what steers it is the reward's sign and size per token; the sum also
    grows with the length of an answer. A PersRM whose per-token reward favours the longer, chosen side of a
    ``detailed`` pair can still rank it below a short answer by the sum when its reward per token is negative on
    both sides (v27: 0.40 by the sum, 0.90 per token on held-out ``detailed`` pairs). Both views are reported;
    neither replaces the other."""
    return (chosen.total / chosen.tokens.clamp(min=1) > rejected.total / rejected.tokens.clamp(min=1)).double()


def pair_rewards(
    rm_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    reference: Reference = "rm-init",
    base_model: PreTrainedModel | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    progress: bool = False,
    rm_is_self: bool = False,
    base_tokenizer: PreTrainedTokenizerBase | None = None,
    cut_ends: str = "closed",
) -> tuple[ResponseScores, ResponseScores]:
    """Summed implicit rewards of the chosen and the rejected response of each pair, with the PersRM tokens each
    sum covers.

    ``rm_is_self``: the PersRM is the base conditioned on the preference (``rm="self"``); the reference rule is
    :func:`~padkit.decoding.sequence_reward.resolve_reference`, as in decoding. ``cut_ends``: :func:`end_tokens`."""
    if reference not in REFERENCES:
        raise PadkitError(f"unknown reference {reference!r}; use one of {', '.join(REFERENCES)}")
    chosen_ends, rejected_ends = end_tokens(pairs, cut_ends)
    reference = resolve_reference(reference, rm_is_self, hasattr(rm_model, "disable_adapter"))
    plain_tokenizer = base_tokenizer or tokenizer
    chosen: list[ResponseScores] = []
    rejected: list[ResponseScores] = []
    for start in tqdm(range(0, len(pairs), batch_size), desc="scoring pairs", unit="batch", disable=not progress):
        chunk = pairs[start : start + batch_size]
        stop = start + len(chunk)
        with_pref = [
            render_clipped(tokenizer, p.prompt, Dimension(p.preference).principle, max_prompt_length) for p in chunk
        ]
        plain = None
        if reference == "base":
            plain = 2 * [render_clipped(plain_tokenizer, p.prompt, None, max_prompt_length) for p in chunk]
        reward = implicit_rewards(
            rm_model,
            tokenizer,
            with_pref + with_pref,
            [p.chosen for p in chunk] + [p.rejected for p in chunk],
            reference,
            plain=plain,
            base_model=base_model,
            base_tokenizer=base_tokenizer,
            batch_size=2 * batch_size,
            max_length=max_length,
            add_eos=chosen_ends[start:stop] + rejected_ends[start:stop],
            rm_adapters=not rm_is_self,
        )
        chosen.append(reward.rows(slice(None, len(chunk))))
        rejected.append(reward.rows(slice(len(chunk), None)))
    return ResponseScores.cat(chosen), ResponseScores.cat(rejected)


class FirstSteps(NamedTuple):
    """PAD's and the base's picks at the first step where a pair's two responses differ, one value per pair (1.0 or
    0.0; NaN for a pair without such a step), named as the report's fields (:class:`DimensionAccuracy`)."""

    decision: torch.Tensor
    """PAD picks the chosen response's token."""
    base_decision: torch.Tensor
    """The base alone (prompted as PAD's base is) picks it."""
    reachable: torch.Tensor
    """The chosen response's token is among PAD's candidates."""
    wrong_turn: torch.Tensor
    """PAD picks the rejected response's token."""
    base_wrong_turn: torch.Tensor
    """The base alone picks it."""


@torch.inference_mode()
def first_step_decisions(
    rm_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    weight: float,
    reference: Reference = "base",
    top_k: int = 10,
    base_model: PreTrainedModel | None = None,
    max_prompt_length: int | None = None,
    progress: bool = False,
    rm_is_self: bool = False,
    cut_ends: str = "closed",
    candidates: Candidates = "topk+eos",
    prompted_base: bool = False,
    reward_margin: float = 0.0,
) -> FirstSteps:
    """Whether PAD at ``weight`` (with ``candidates``, PAD's candidate set) and the base alone pick the chosen
    response's token at the first step where the chosen and rejected responses differ, given their shared start,
    whether that token is among the candidates, and whether PAD and the base pick the rejected response's token
    there instead (1.0 or 0.0 each, per pair; NaN for a pair without such a step; see :class:`FirstSteps`).

    Summed-reward accuracy saturates on format pairs (a rewrite is easy to rank as a whole) while PAD still
    fails to take the turn at the step that makes the difference, where the reward must beat the base's
    log-probability gap; this measures that step. Both models must share the tokenizer. ``cut_ends``: whether a
    response marked cut ends in the end token (:func:`end_tokens`). ``prompted_base`` and ``reward_margin`` are
    PAD's (:class:`~padkit.decoding.config.PADConfig`): with ``prompted_base`` the base reads the preference too,
    and "the base alone" is that prompted base; the defaults are the paper's PAD (the base reads the prompt
    alone, no margin)."""
    reference = resolve_reference(reference, rm_is_self, hasattr(rm_model, "disable_adapter"))
    base = base_model if base_model is not None else rm_model
    rule = _PADRule(
        torch.ones(1, 1),
        torch.zeros(1, dtype=torch.long),
        weight,
        reference,
        top_k,
        candidates,
        [tokenizer.eos_token_id],
        reward_margin=reward_margin,
    )

    def last_logp(model: PreTrainedModel, adapters: bool, ids: list[int]) -> torch.Tensor:
        with AdapterSwitch(model, adapters):
            logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[:, -1].float()
        return torch.log_softmax(logits, dim=-1).cpu()

    steps: list[tuple[float, ...]] = []
    chosen_ends, rejected_ends = end_tokens(pairs, cut_ends)
    for pair, chosen_end, rejected_end in tqdm(
        zip(pairs, chosen_ends, rejected_ends, strict=True),
        desc="first-step decisions",
        unit="pair",
        total=len(pairs),
        disable=not progress,
    ):
        with_pref = render_clipped(tokenizer, pair.prompt, Dimension(pair.preference).principle, max_prompt_length)
        context, chosen = encode_response(tokenizer, with_pref, pair.chosen, add_eos=chosen_end)
        rejected = encode_response(tokenizer, with_pref, pair.rejected, add_eos=rejected_end)[1]
        step = next((i for i, (a, b) in enumerate(zip(chosen, rejected, strict=False)) if a != b), None)
        if step is None:  # one side the other's start (EOS included): nothing to decide at one step
            steps.append((float("nan"),) * len(FirstSteps._fields))
            continue
        shared = chosen[:step]
        plain = None if prompted_base else render_clipped(tokenizer, pair.prompt, None, max_prompt_length)
        base_ids = context if plain is None else encode_response(tokenizer, plain, "")[0]
        base_logp = last_logp(base, False, base_ids + shared)
        rm_logp = last_logp(rm_model, not rm_is_self, context + shared)
        ref_logp = last_logp(rm_model, False, context + shared) if reference == "rm-init" else None
        record = rule.score_candidates(base_logp, rm_logp, ref_logp)
        pad_pick = record.candidates[0, record.scores[0].argmax()].item()
        base_pick = base_logp[0].argmax().item()
        good, bad = chosen[step], rejected[step]
        hits = (
            pad_pick == good,
            base_pick == good,
            good in record.candidates[0].tolist(),
            pad_pick == bad,
            base_pick == bad,
        )
        steps.append(tuple(map(float, hits)))
    by_field = torch.tensor(steps, dtype=torch.float64).reshape(len(steps), len(FirstSteps._fields)).T
    return FirstSteps(*by_field)


def evaluate_rm(
    rm_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    reference: Reference = "rm-init",
    decision_weight: float | None = None,
    top_k: int = 10,
    cut_ends: str = "closed",
    candidates: Candidates = "topk+eos",
    prompted_base: bool = False,
    reward_margin: float = 0.0,
    **kwargs,
) -> RMReport:
    """Pairwise accuracy (summed and per token) and mean margin per preference dimension (keyword arguments go
    to :func:`pair_rewards`);
    with ``decision_weight`` also :func:`first_step_decisions` at that weight, with ``candidates``,
    ``prompted_base`` and ``reward_margin`` (reference ``base``, as PAD). Both end a response marked cut as
    ``cut_ends`` says (:func:`end_tokens`)."""
    if not pairs:
        raise PadkitError("no preference pairs to evaluate")
    base_tokenizer = kwargs.get("base_tokenizer")
    if decision_weight is not None and base_tokenizer is not None and not same_vocabulary(base_tokenizer, tokenizer):
        raise PadkitError("first-step decisions need the PersRM and the base to share a tokenizer")
    chosen, rejected = pair_rewards(rm_model, tokenizer, pairs, reference, cut_ends=cut_ends, **kwargs)
    wins = (chosen.total > rejected.total).double()
    gaps = chosen.total - rejected.total
    per_token = token_wins(chosen, rejected)
    picks = None
    if decision_weight is not None:
        picks = first_step_decisions(
            rm_model,
            tokenizer,
            pairs,
            decision_weight,
            "base",
            top_k,
            base_model=kwargs.get("base_model"),
            max_prompt_length=kwargs.get("max_prompt_length"),
            progress=kwargs.get("progress", False),
            rm_is_self=kwargs.get("rm_is_self", False),
            cut_ends=cut_ends,
            candidates=candidates,
            prompted_base=prompted_base,
            reward_margin=reward_margin,
        )
    report = RMReport(
        reference,
        round(wins.mean().item(), 4),
        len(pairs),
        cut_ends,
        token_accuracy=round(per_token.mean().item(), 4),
        by_shape=shape_split(pairs, wins, gaps, per_token),
    )
    report.dimensions = group_split(pairs, wins, gaps, per_token, picks)
    if picks is not None:
        _set_shares(report, picks)
    report.by_kind = kind_split(pairs, wins, per_token, report.dimensions)
    return report


def _set_shares(row: DimensionAccuracy | RMReport, picks: FirstSteps) -> None:
    """Fill ``row``'s decision fields with the shares of ``picks`` (one name each: :class:`FirstSteps`)."""
    for name, values in picks._asdict().items():
        setattr(row, name, _share(values))


def _share(picks: torch.Tensor) -> float | None:
    """Mean over the pairs that have a decision step (NaN marks those that do not)."""
    kept = picks[~picks.isnan()]
    return round(kept.mean().item(), 4) if kept.numel() else None


def evaluate_persrm(
    pairs: Sequence[PreferencePair],
    rm: str | None = None,
    base: str = DEFAULT_BASE,
    split: str = "heldout",
    reference: Reference | None = None,
    heldout_fraction: float | None = None,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    batch_size: int = 8,
    sample: int | None = None,
    dtype: str = "float32",
    progress: bool = False,
    device: str = "auto",
    decision_weight: float | None = None,
    top_k: int = 10,
    cut_ends: str = "closed",
    candidates: Candidates | None = None,
    prompted_base: bool | None = None,
    reward_margin: float | None = None,
) -> RMReport:
    """``padkit rm-eval``: load a PersRM by name and score one split of ``pairs`` the way it was trained.

    The split, its salt and the clipping lengths default to those a trained PersRM's ``padkit.json`` records;
    ``sample`` scores N evenly spaced pairs of the split; ``cut_ends`` is :func:`end_tokens`'s. The reference
    defaults to ``rm-init`` for a LoRA PersRM (its DPO reference) and ``base`` otherwise; a LoRA PersRM is scored
    on the base it was trained on. First-step decisions are PAD's as ``padkit generate`` decodes with this PersRM:
    ``candidates``, ``prompted_base`` and ``reward_margin`` default to PAD's for it
    (:attr:`padkit.PAD.default_candidates`, :meth:`padkit.PAD.prompts_base`, :meth:`padkit.PAD.reward_margin`:
    the base reads the preference and the PersRM's recorded margin applies).
    """
    from padkit.decoding.config import PADConfig
    from padkit.decoding.pad import PAD
    from padkit.models.loading import adapter_base, default_rm, read_metadata, resolve_model_dir

    if split not in SPLITS:
        raise PadkitError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    check_cut_ends(cut_ends)  # before the models load
    rm = rm or default_rm(base)
    where = resolve_model_dir(rm) if rm != "self" else None
    is_adapter = isinstance(where, Path) and (where / "adapter_config.json").is_file()
    trained = ((read_metadata(where) if isinstance(where, Path) else None) or {}).get("config", {})
    fraction = heldout_fraction if heldout_fraction is not None else trained.get("heldout_fraction", 0.1)
    train_part, heldout_part = split_pairs(pairs, fraction, trained.get("split_salt", "padkit"))
    chosen = spaced_sample({"heldout": heldout_part, "train": train_part, "all": list(pairs)}[split], sample)
    pad = PAD.from_pretrained(base=adapter_base(where) if is_adapter else base, rm=rm, dtype=dtype, device=device)
    decoding = PADConfig(prompted_base=prompted_base, reward_margin=reward_margin)
    return evaluate_rm(
        pad.rm_model,
        pad.rm_tokenizer,
        chosen,
        reference or ("rm-init" if is_adapter else "base"),
        base_model=pad.base_model,
        base_tokenizer=pad.tokenizer,
        rm_is_self=pad.rm_is_self,
        batch_size=batch_size,
        max_length=max_length or trained.get("max_length"),
        max_prompt_length=max_prompt_length or trained.get("max_prompt_length"),
        progress=progress,
        decision_weight=decision_weight,
        top_k=top_k,
        cut_ends=cut_ends,
        candidates=candidates or pad.default_candidates,
        prompted_base=pad.prompts_base(decoding),
        reward_margin=pad.reward_margin(decoding),
    )
