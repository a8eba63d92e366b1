"""The PersRM side of PAD: a model run beside decoding with its own KV cache."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers import PreTrainedModel

from padkit.decoding.kv_cache import reserved_cache
from padkit.models.row_lora import AdapterSwitch, LoRARows


class CachedRows:
    """A model run over a batch of rows that keeps its own KV cache between forwards (reserved memory that grows by
    doubling, where the model allows); ``lora_rows`` switches a LoRA adapter on for some rows only (the others run
    the base weights). ``adapters`` turns the model's adapters on (a LoRA PersRM) or off (the base conditioned
    on the preference) for each forward, whatever the decode around it runs: with one copy of the weights the
    base's forward and the PersRM's take turns; ``None`` leaves them as they are."""

    def __init__(self, model: PreTrainedModel, lora_rows: LoRARows | None = None, adapters: bool | None = None) -> None:
        self.model = model
        self.lora_rows = lora_rows
        self.switch = AdapterSwitch(model, adapters) if adapters is not None else None
        self.cache = reserved_cache(model.config, 0)

    def _forward(self, **inputs) -> torch.Tensor:
        """Run the rows on ``inputs`` after the cache; return float32 log-probabilities of the kept logits."""
        with self.switch or nullcontext():
            if self.lora_rows is None:
                out = self.model(cache=self.cache, use_cache=True, **inputs)
            else:
                with self.lora_rows:
                    out = self.model(cache=self.cache, use_cache=True, **inputs, **self.lora_rows.forward_kwargs())
        self.cache = out.cache
        return torch.log_softmax(out.logits.float(), dim=-1)


class RewardStream(CachedRows):
    """Feeds each decoded token to a PersRM and returns next-token log-probabilities for its rows.

    The PersRM reads its own, preference-conditioned input, so it cannot share the base model's cache.
    Every row (one per preference dimension of each prompt, plus the ``rm-init`` reference rows) lives in one
    left-padded batch with one :class:`~transformers.DynamicCache`: the prefix is encoded once, then each
    step is a single-token forward. ``source_rows[j]`` is the decoding row whose tokens row ``j`` follows.
    ``lora_rows`` lets reference rows run with the LoRA adapter off in the same forward as the adapted rows.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor,
        source_rows: torch.LongTensor,
        lora_rows: LoRARows | None = None,
        adapters: bool | None = None,
    ) -> None:
        super().__init__(model, lora_rows, adapters)
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.source_rows = source_rows
        self.positions = (attention_mask.sum(dim=1, keepdim=True) - 1).clamp(min=0)

    def _next_logp(self, **inputs) -> torch.Tensor:
        return self._forward(logits_to_keep=1, **inputs)[:, -1, :]

    @torch.inference_mode()
    def start(self) -> torch.Tensor:
        """Encode the rows' prompts; return log-probabilities of the first new token."""
        position_ids = (self.attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        return self._next_logp(input_ids=self.input_ids, attention_mask=self.attention_mask, position_ids=position_ids)

    @torch.inference_mode()
    def step(self, new_tokens: torch.LongTensor) -> torch.Tensor:
        """Append each decoding row's latest token to the rows that follow it; return the next log-probs."""
        tokens = new_tokens[self.source_rows].unsqueeze(1)
        self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(tokens)], dim=1)
        self.positions = self.positions + 1
        return self._next_logp(input_ids=tokens, attention_mask=self.attention_mask, position_ids=self.positions)
