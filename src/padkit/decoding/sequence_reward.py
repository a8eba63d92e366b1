"""Sequence-level log-probabilities of whole responses, the basis of the PersRM's implicit reward.

The token-level reward that PAD uses at each step, summed over a response, is the DPO implicit reward
``log pi_rm(y|x,p) - log pi_ref(y|x)``; this module computes the summed log-probabilities in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from padkit.models.row_lora import AdapterSwitch


def encode_response(
    tokenizer: PreTrainedTokenizerBase,
    context: str,
    response: str,
    max_length: int | None = None,
    add_eos: bool = True,
) -> tuple[list[int], list[int]]:
    """Token ids of a rendered context and of ``response`` (+ EOS), the response cut to fit ``max_length``."""
    add_special = not getattr(tokenizer, "chat_template", None)
    context_ids = tokenizer(context, add_special_tokens=add_special)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] * add_eos)
    if max_length is not None:
        response_ids = response_ids[: max(1, max_length - len(context_ids))]
    return context_ids, response_ids


class ResponseScores(NamedTuple):
    """Summed scores of responses (float64) and how many tokens each sum covers, the end token and a
    ``max_length`` cut included, so that a mean per token needs no second tokenization that could disagree.
    ``greedy``: how many of those tokens are the scoring model's own most likely next token (a fluency reading:
    the rest are where a decoder overrode it); None for a difference of two models' scores."""

    total: torch.Tensor
    tokens: torch.Tensor
    greedy: torch.Tensor | None = None

    def rows(self, part: slice) -> ResponseScores:
        """The scores of the responses in ``part``."""
        greedy = None if self.greedy is None else self.greedy[part]
        return ResponseScores(self.total[part], self.tokens[part], greedy)

    @staticmethod
    def cat(parts: Sequence[ResponseScores]) -> ResponseScores:
        """Scores of several batches as one."""
        greedy = None if any(p.greedy is None for p in parts) else torch.cat([p.greedy for p in parts])
        return ResponseScores(torch.cat([p.total for p in parts]), torch.cat([p.tokens for p in parts]), greedy)


@torch.inference_mode()
def response_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 8,
    max_length: int | None = None,
    add_eos: bool | Sequence[bool] = True,
) -> ResponseScores:
    """``sum_t log p(y_t | context, y_<t)`` for each (rendered context, response) pair, and its token count.

    ``add_eos``: whether each response ends in the end-of-sequence token (one flag for all, or one per response).
    Rows are batched by context and each distinct context in a batch is encoded once (a prompt for an eval's
    answers to it; a pair's prompt for both its sides in rm-eval), and the vocabulary is scored only where a
    response is."""
    ends = [add_eos] * len(responses) if isinstance(add_eos, bool) else list(add_eos)
    if len(ends) != len(responses):
        raise ValueError(f"{len(ends)} end-token flags for {len(responses)} responses")
    pairs = [encode_response(tokenizer, c, r, max_length, e) for c, r, e in zip(contexts, responses, ends, strict=True)]
    first_seen: dict[tuple[int, ...], int] = {}
    for c, _ in pairs:
        first_seen.setdefault(tuple(c), len(first_seen))
    order = sorted(range(len(pairs)), key=lambda i: (first_seen[tuple(pairs[i][0])], len(pairs[i][1])))
    total = torch.zeros(len(pairs), dtype=torch.float64)
    greedy = torch.zeros(len(pairs), dtype=torch.long)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        total[rows], greedy[rows] = _score_batch(model, tokenizer.pad_token_id, [pairs[i] for i in rows])
    return ResponseScores(total, torch.tensor([len(r) for _, r in pairs], dtype=torch.long), greedy)


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32 for the softmax; float64 ones (tests' models) stay exact."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@torch.no_grad()
def _score_batch(
    model: PreTrainedModel, pad_id: int, chunk: Sequence[tuple[list[int], list[int]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probabilities of one batch, and how many response tokens are the model's argmax.

    Each distinct context but its last token (its head) runs once, in one right-padded forward whose KV cache is
    then gathered per row; each row then runs its context's last token and its response, so the vocabulary is
    scored only where a response token is predicted."""
    device = model.device
    keys = [tuple(context[:-1]) for context, _ in chunk]
    heads: dict[tuple[int, ...], int] = {}
    for key in keys:
        if key:
            heads.setdefault(key, len(heads))
    # a row without a head reads head 0's cache with every position masked, so no fully masked row runs
    owner = torch.tensor([heads.get(key, 0) for key in keys], dtype=torch.long)
    head_lengths = torch.tensor([len(key) for key in keys], dtype=torch.long)
    head_width = int(head_lengths.max())
    segments = [context[-1:] + response for context, response in chunk]
    width = max(len(segment) for segment in segments)
    if width <= 1:  # an empty context's lone token has nothing that predicts it
        return torch.zeros(len(chunk), dtype=torch.float64), torch.zeros(len(chunk), dtype=torch.long)
    window = getattr(model.config, "sliding_window", None)
    if len(heads) > 1 and window and head_width + width > window:
        # a sliding window counts cache slots, and a short head's padding slots would sit inside it: one head a call
        # (headless rows go with head 0, whose slots they mask whole)
        total = torch.zeros(len(chunk), dtype=torch.float64)
        greedy = torch.zeros(len(chunk), dtype=torch.long)
        for u in range(len(heads)):
            group = (owner == u).nonzero().squeeze(1).tolist()
            total[group], greedy[group] = _score_batch(model, pad_id, [chunk[i] for i in group])
        return total, greedy
    past = None
    if heads:
        head_ids = torch.full((len(heads), head_width), pad_id, dtype=torch.long)
        for head, u in heads.items():
            head_ids[u, : len(head)] = torch.tensor(head, dtype=torch.long)
        head_mask = (torch.arange(head_width)[None, :] < torch.tensor([len(h) for h in heads])[:, None]).long()
        out = model(
            input_ids=head_ids.to(device), attention_mask=head_mask.to(device), use_cache=True, logits_to_keep=1
        )
        past = out.cache
        past.batch_select_indices(owner.to(device))
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chunk), head_width + width), dtype=torch.long)
    mask[:, :head_width] = torch.arange(head_width)[None, :] < head_lengths[:, None]
    for i, segment in enumerate(segments):
        ids[i, : len(segment)] = torch.tensor(segment, dtype=torch.long)
        mask[i, head_width : head_width + len(segment)] = 1
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=(head_lengths[:, None] + torch.arange(width)[None, :]).to(device),
        cache=past,
        logits_to_keep=width,
    )
    logits = _at_least_float32(out.logits[:, :-1])  # logits[:, j] predicts segment token j + 1
    targets = ids[:, 1:].to(device)
    logps = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    scored = mask[:, head_width + 1 :].bool()  # a segment's tokens after its first are its response
    greedy = (logits.argmax(dim=-1) == targets).cpu() & scored
    return logps.double().cpu().where(scored, 0.0).sum(dim=1), greedy.sum(dim=1)


def resolve_reference(reference: str, rm_is_self: bool, rm_is_adapter: bool, rm_name: str = "the PersRM") -> str:
    """The reference a PersRM's reward is taken against, one rule for decoding, reranking and rm-eval:
    ``rm-init`` of ``rm="self"`` is the base (the preference-free form of a PersRM that is the base itself);
    ``rm-init`` of a full-model PersRM does not exist (there is no adapter to switch off)."""
    from padkit.decoding.config import ConfigError

    if reference != "rm-init":
        return reference
    if rm_is_self:
        return "base"
    if not rm_is_adapter:
        raise ConfigError(
            "reference",
            "reference 'rm-init' needs a LoRA PersRM (its adapter disabled is the reference); "
            f"{rm_name!r} is a full model: use reference 'base' or 'none'",
        )
    return reference


def implicit_rewards(
    rm_model: PreTrainedModel,
    rm_tokenizer: PreTrainedTokenizerBase,
    with_preference: Sequence[str],
    responses: Sequence[str],
    reference: str = "base",
    plain: Sequence[str] | None = None,
    base_model: PreTrainedModel | None = None,
    base_tokenizer: PreTrainedTokenizerBase | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    add_eos: bool | Sequence[bool] = True,
    rm_adapters: bool = True,
) -> ResponseScores:
    """Summed implicit reward ``log pi_rm(y | x, p) - log pi_ref(y | ...)`` of each response, with the count of
    the PersRM's tokens it covers.

    ``with_preference`` are the PersRM's rendered contexts. The reference is ``"rm-init"`` (the PersRM's LoRA
    off, same contexts), ``"base"`` (``base_model``, or the PersRM with its LoRA off, on the ``plain``
    contexts rendered without the preference) or ``"none"`` (0). ``rm_adapters=False`` scores with the
    PersRM's adapters off too (``rm="self"`` on a base that carries a LoRA PersRM's weights).
    """
    kwargs = dict(batch_size=batch_size, max_length=max_length, add_eos=add_eos)
    with AdapterSwitch(rm_model, rm_adapters):
        scores = response_logprobs(rm_model, rm_tokenizer, with_preference, responses, **kwargs)
    if reference == "none":
        return scores
    if reference == "rm-init":
        with AdapterSwitch(rm_model, False):
            ref = response_logprobs(rm_model, rm_tokenizer, with_preference, responses, **kwargs)
    else:
        model = base_model if base_model is not None else rm_model
        with AdapterSwitch(model, False):
            ref = response_logprobs(model, base_tokenizer or rm_tokenizer, plain, responses, **kwargs)
    return ResponseScores(scores.total - ref.total, scores.tokens)
