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
    ``max_length`` cut included, so that a mean per token needs no second tokenization that could disagree."""

    total: torch.Tensor
    tokens: torch.Tensor

    def rows(self, part: slice) -> ResponseScores:
        """The scores of the responses in ``part``."""
        return ResponseScores(self.total[part], self.tokens[part])

    @staticmethod
    def cat(parts: Sequence[ResponseScores]) -> ResponseScores:
        """Scores of several batches as one."""
        return ResponseScores(torch.cat([p.total for p in parts]), torch.cat([p.tokens for p in parts]))


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
    Rows are batched by context, so the tokens that a batch's contexts share are encoded once (a whole prompt for an
    eval's answers to it; only the chat template where a batch holds several prompts, as in rm-eval), and the
    vocabulary is scored only where a response is."""
    ends = [add_eos] * len(responses) if isinstance(add_eos, bool) else list(add_eos)
    if len(ends) != len(responses):
        raise ValueError(f"{len(ends)} end-token flags for {len(responses)} responses")
    pairs = [encode_response(tokenizer, c, r, max_length, e) for c, r, e in zip(contexts, responses, ends, strict=True)]
    first_seen: dict[tuple[int, ...], int] = {}
    for c, _ in pairs:
        first_seen.setdefault(tuple(c), len(first_seen))
    order = sorted(range(len(pairs)), key=lambda i: (first_seen[tuple(pairs[i][0])], len(pairs[i][1])))
    total = torch.zeros(len(pairs), dtype=torch.float64)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        total[rows] = _score_batch(model, tokenizer.pad_token_id, [pairs[i] for i in rows])
    return ResponseScores(total, torch.tensor([len(r) for _, r in pairs], dtype=torch.long))


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32 for the softmax; float64 ones (tests' models) stay exact."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _shared_prefix(contexts: Sequence[list[int]]) -> int:
    """How many leading tokens every context in ``contexts`` has in common."""
    shortest = min(len(c) for c in contexts)
    for n in range(shortest):
        if any(c[n] != contexts[0][n] for c in contexts[1:]):
            return n
    return shortest


@torch.no_grad()
def _score_batch(model: PreTrainedModel, pad_id: int, chunk: Sequence[tuple[list[int], list[int]]]) -> torch.Tensor:
    """Summed response log-probabilities of one batch: the shared context prefix runs once (its KV cache repeated
    for each row), the rest right-padded after it; logits are kept only from the first response position on."""
    device = model.device
    shared = _shared_prefix([c for c, _ in chunk])
    rests = [c[shared:] + r for c, r in chunk]
    starts = [len(c) - shared for c, _ in chunk]  # where each response begins in its rest
    width = max(len(rest) for rest in rests)
    if width == 0:
        return torch.zeros(len(chunk), dtype=torch.float64)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chunk), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for i, rest in enumerate(rests):
        ids[i, : len(rest)] = torch.tensor(rest, dtype=torch.long)
        mask[i, shared : shared + len(rest)] = 1
    # logits[:, j] predicts rest token j: the prefix's last position for j = 0, else rest position j - 1
    first = min(starts)
    past, logits = None, []
    if shared:
        out = model(input_ids=torch.tensor([chunk[0][0][:shared]], device=device), use_cache=True, logits_to_keep=1)
        past = out.cache
        past.batch_repeat_interleave(len(chunk))
        if first == 0:
            logits.append(_at_least_float32(out.logits[:, -1:]).expand(len(chunk), -1, -1))
    keep = width - max(first - 1, 0)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), cache=past, logits_to_keep=keep)
    logits.append(_at_least_float32(out.logits[:, :-1]))
    logits = torch.cat(logits, dim=1)  # predicts rest tokens offset .. width - 1
    offset = width - logits.shape[1]
    targets = ids[:, offset:].to(device)
    logps = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    scored = torch.zeros_like(targets, dtype=torch.bool)
    for i, ((_, r), s) in enumerate(zip(chunk, starts, strict=True)):
        scored[i, max(s, 1 - (shared > 0)) - offset : s + len(r) - offset] = True
    return (logps.double().cpu() * scored.cpu()).sum(dim=1)


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
