"""Continuous batching (iteration-level scheduling, as in Orca and vLLM) for padkit's decode methods.

:class:`ContinuousBatch` owns a running batch: between two decode steps it prefills newly submitted requests
(their answer row and, for PAD, one PersRM row per preference dimension) and merges them into the batch, and it
retires every request that finished, was cancelled or reached its token limit. A request that arrives while
others decode starts at the next step instead of waiting for the whole batch.

The batch keeps one layout: the answer rows of all requests, then the PersRM rows of all requests, each block
in request order. A LoRA PersRM on the base's weights then adapts one contiguous slice (:class:`LoRARows`),
and each request's rows follow the fused PAD rule of the static path (:class:`SelfGuidedPADLogitsProcessor`),
so a greedy request gives the tokens it gives alone, up to the float rounding of a differently sized batch.
Caches of different lengths merge by left padding; positions come from each row's own attention mask.

Served: methods ``base``, ``prompt`` and ``pad`` where PAD can fuse (``rm="self"``, or a LoRA PersRM on the
base's weights with reference ``base`` or ``none``), greedy or unseeded sampling, with or without PAD's answer
guards (loop and colon, from :meth:`PAD.answer_guards`, per request), without diagnostics or
``no_repeat_ngram_size``. A seeded sampled request, like everything else, stays on the static path
(:meth:`PAD.generate`), where its seed gives the same text as through the Python API.
:meth:`ContinuousBatch.serves` says why a request is not served.

Example:

```python
>>> batch = ContinuousBatch(pad)
>>> req = ContinuousRequest("Tell me about cats.", Preference.parse("concise"), PADConfig(max_new_tokens=32))
>>> batch.submit(req)
>>> while not batch.idle:
...     batch.step()
>>> req.result.text
```
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper
from transformers.cache_utils import DynamicCache

from padkit.decoding.config import PADConfig
from padkit.decoding.pad import PAD, Generation, _cut_at_stop, eos_token_ids
from padkit.decoding.processor import BanTokensLogitsProcessor
from padkit.decoding.stops import find_stop
from padkit.errors import GenerationError
from padkit.models.row_lora import AdapterSwitch, LoRARows
from padkit.preferences import Preference
from padkit.preferences.render import Prompt


@dataclass(eq=False)
class ContinuousRequest:
    """One answer to decode in a :class:`ContinuousBatch`; ``result`` is set when it is done.

    ``on_token(token_id)`` is called for each token as it is chosen (not for EOS); ``cancelled()``, polled every
    step, ends the request with ``finish_reason="cancelled"``."""

    prompt: Prompt
    preference: Preference | None
    config: PADConfig
    on_token: Callable[[int], None] | None = None
    cancelled: Callable[[], bool] | None = None
    token_ids: list[int] = field(default_factory=list)
    result: Generation | None = None
    _chooser: Callable[[torch.Tensor], int] | None = field(default=None, repr=False)
    _stops: list[str] = field(default_factory=list, repr=False)

    @property
    def principles(self) -> list[str]:
        """The PersRM rows' principles (PAD: one per preference dimension)."""
        if self.config.method != "pad" or self.preference is None:
            return []
        return [dim.principle for dim in self.preference.dimensions]


class ContinuousBatch:
    """A decode loop that admits requests and retires finished ones between steps (see the module docs).

    ``max_rows`` bounds the batch's rows (answer and PersRM rows together); a request that would exceed it
    waits for rows to free up. Single-threaded: call :meth:`submit` and :meth:`step` from one thread.
    """

    def __init__(self, pad: PAD, max_rows: int = 64) -> None:
        self.pad = pad
        self.max_rows = max_rows
        self.model = pad.rm_model if pad.rm_shares_base else pad.base_model
        self.tokenizer = pad.tokenizer
        self.lora = pad.rm_shares_base and not pad.rm_is_self
        self.eos = eos_token_ids(pad.base_model, pad.tokenizer)
        self.pending: list[ContinuousRequest] = []
        self.running: list[ContinuousRequest] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None
        self.last: torch.Tensor | None = None
        self.admitted = 0
        """How many requests joined the batch at the last step."""

    def serves(self, preference: Preference | None, config: PADConfig) -> str | None:
        """``None`` if this loop can decode such a request; otherwise why not (it then goes the static path)."""
        if config.method not in ("base", "prompt", "pad"):
            return f"method {config.method!r}"
        if config.seed is not None and config.temperature > 0:
            return "a seeded sampled request (its seed gives the static path's text)"
        if config.diagnostics:
            return "diagnostics"
        if config.no_repeat_ngram_size:
            return "no_repeat_ngram_size"
        fusable = self.pad.can_fuse(config) and config.fused is not False
        if config.method == "pad" and preference is not None and not fusable:
            return "PAD that cannot fuse (a separate PersRM model, another tokenizer, or reference rm-init)"
        return None

    @property
    def idle(self) -> bool:
        return not self.pending and not self.running

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    def submit(self, request: ContinuousRequest) -> None:
        """Queue a request; it joins the batch at the next :meth:`step` with room for its rows."""
        why = self.serves(request.preference, request.config)
        if why is not None:
            raise GenerationError(f"continuous batching does not serve {why}")
        if 1 + len(request.principles) > self.max_rows:
            raise GenerationError(f"a request with {1 + len(request.principles)} rows exceeds max_rows")
        self.pending.append(request)

    def step(self) -> list[ContinuousRequest]:
        """One decode step of the running batch, then admit what fits; returns the requests finished now."""
        finished: list[ContinuousRequest] = []
        with torch.inference_mode():
            if self.running:
                finished += self._advance(self.running, self._forward_step())
            admitted = self._admit()
            self.admitted = len(admitted)
            finished += [r for r in admitted if r.result is not None]
            self._retire()
            self._feed()
        return finished

    # -- the batch -------------------------------------------------------------------------------------------

    @staticmethod
    def _rows_of(requests: list[ContinuousRequest]) -> list[list[int]]:
        """Each request's batch rows in the layout: its answer row, then its PersRM rows (after all answers)."""
        rows, at = [], len(requests)
        for i, r in enumerate(requests):
            rows.append([i, *range(at, at + len(r.principles))])
            at += len(r.principles)
        return rows

    def _contexts(self, stack: ExitStack, requests: list[ContinuousRequest], n_rows: int) -> dict:
        n_rm = n_rows - len(requests)
        if self.lora and n_rm:
            stack.enter_context(AdapterSwitch(self.model, True))
            rows = stack.enter_context(LoRARows(self.model, slice(len(requests), n_rows), n_rows))
            return rows.forward_kwargs()
        stack.enter_context(AdapterSwitch(self.model, False))
        return {}

    def _forward_step(self) -> torch.Tensor:
        mask = torch.cat([self.mask, self.mask.new_ones(self.rows, 1)], dim=1)
        positions = self.mask.sum(dim=1, keepdim=True)
        with ExitStack() as stack:
            kwargs = self._contexts(stack, self.running, self.rows)
            out = self.model(
                input_ids=self.last[:, None],
                attention_mask=mask,
                position_ids=positions,
                cache=self.cache,
                use_cache=True,
                **kwargs,
            )
        self.mask, self.cache = mask, out.cache
        return out.logits[:, -1].float()

    def _admit(self) -> list[ContinuousRequest]:
        """Prefill the pending requests that fit, choose their first token and merge them into the batch."""
        room, new = self.max_rows - self.rows, []
        while self.pending and 1 + len(self.pending[0].principles) <= room:
            request = self.pending.pop(0)
            if request.cancelled is not None and request.cancelled():
                self._finish(request, [], "cancelled")
                new.append(request)
                continue
            room -= 1 + len(request.principles)
            new.append(request)
        live = [r for r in new if r.result is None]
        if not live:
            return new
        texts, labels = self.pad._answer_inputs(
            [r.prompt for r in live], [r.preference for r in live], [r.config for r in live]
        )
        rm_texts, _, _, rm_labels = self.pad._persrm_rows(
            [r.prompt for r in live], [r.preference if r.principles else None for r in live]
        )
        texts, labels = texts + rm_texts, labels + rm_labels
        budget = max(r.config.max_new_tokens for r in live)
        enc = self.pad._encode(self.tokenizer, texts, self.model, budget, labels)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with ExitStack() as stack:
            kwargs = self._contexts(stack, live, len(texts))
            out = self.model(
                input_ids=enc["input_ids"],
                attention_mask=mask,
                position_ids=positions,
                cache=DynamicCache(),
                use_cache=True,
                **kwargs,
            )
        for r in live:
            r._chooser = self._chooser(r)
            r._stops = [] if r.config.ignore_eos else self.pad.stops(r.config.method, r.config.stop)
        self._advance(live, out.logits[:, -1].float())
        self._merge(live, out.cache, mask)
        return new

    def _merge(self, live: list[ContinuousRequest], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Join a prefilled block to the running batch: left-pad the shorter cache, keep the row layout."""
        old = self.running
        if not old:
            self.running, self.cache, self.mask = list(live), cache, mask
            return
        n_old, n_new = len(old), len(live)
        length = max(self.mask.shape[1], mask.shape[1])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = length - t.shape[dim]
            if not missing:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        def join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.cat([a[:n_old], b[:n_new], a[n_old:], b[n_new:]], dim=0)

        layers = []
        for old_layer, new_layer in zip(self.cache.layers, cache.layers, strict=True):
            keys = join(pad(old_layer.keys, 2), pad(new_layer.keys, 2))
            values = join(pad(old_layer.values, 2), pad(new_layer.values, 2))
            layers.append((keys, values))
        self.cache = DynamicCache(layers)
        self.mask = join(pad(self.mask, 1), pad(mask, 1))
        self.running = old + live

    def _retire(self) -> None:
        """Drop the finished requests' rows, and the leading columns no remaining row attends to."""
        keep_req = [i for i, r in enumerate(self.running) if r.result is None]
        if len(keep_req) == len(self.running):
            return
        if not keep_req:
            self.running, self.cache, self.mask = [], None, None
            return
        rows = self._rows_of(self.running)
        index = torch.tensor(
            [rows[i][0] for i in keep_req] + [j for i in keep_req for j in rows[i][1:]], device=self.mask.device
        )
        mask = self.mask[index]
        first = int(mask.any(dim=0).nonzero()[0])
        layers = [(layer.keys[index, :, first:], layer.values[index, :, first:]) for layer in self.cache.layers]
        self.cache = DynamicCache(layers)
        self.mask = mask[:, first:]
        self.running = [self.running[i] for i in keep_req]

    def _feed(self) -> None:
        """The next step's input: each request's last token, on its answer row and its PersRM rows alike."""
        if not self.running:
            self.last = None
            return
        last = torch.empty(self.rows, dtype=torch.long, device=self.model.device)
        for r, rows in zip(self.running, self._rows_of(self.running), strict=True):
            last[rows] = r.token_ids[-1]
        self.last = last

    # -- choosing tokens ---------------------------------------------------------------------------------------

    def _chooser(self, request: ContinuousRequest) -> Callable[[torch.Tensor], int]:
        """Token choice for one request from its rows' logits (answer row first): the static path's processors."""
        config = request.config
        ban = BanTokensLogitsProcessor(self.eos, rows=1) if config.ignore_eos else None
        guards = self.pad.answer_guards(config, rows=1)

        def screened(scores: torch.Tensor) -> torch.Tensor:
            """The static path's processors before the choice: EOS ban, loop and colon guards, on the answer row."""
            if ban is not None:
                scores = ban(None, scores)
            for guard in guards:
                guard.follow(0, request.token_ids)
                scores = guard.ban(scores)
            return scores

        if request.principles:
            dims = request.preference.dimensions
            rule = self.pad.fused_rule(
                torch.tensor([[d.weight for d in dims]]),
                torch.zeros(len(dims), dtype=torch.long),
                config.weight if isinstance(config.weight, float) else config.weight[0],
                config,
            )

            def choose_pad(logits: torch.Tensor) -> int:
                return int(rule(None, screened(logits))[0].argmax())

            return choose_pad
        warpers = []
        if config.temperature > 0:
            warpers.append(TemperatureLogitsWarper(config.temperature))
            if config.top_p < 1:
                warpers.append(TopPLogitsWarper(config.top_p))

        def choose_plain(logits: torch.Tensor) -> int:
            scores = screened(logits[:1])
            if not warpers:
                return int(scores[0].argmax())
            for warper in warpers:
                scores = warper(None, scores)
            return int(torch.multinomial(torch.softmax(scores, dim=-1), 1)[0, 0])

        return choose_plain

    def _advance(self, requests: list[ContinuousRequest], logits: torch.Tensor) -> list[ContinuousRequest]:
        """Choose each request's next token from its rows of ``logits`` and record it; returns those finished."""
        finished = []
        for r, rows in zip(requests, self._rows_of(requests), strict=True):
            if r.cancelled is not None and r.cancelled():
                self._finish(r, r.token_ids, "cancelled")
                finished.append(r)
                continue
            token = r._chooser(logits[rows])
            if token in self.eos and not r.config.ignore_eos:
                self._finish(r, r.token_ids, "stop")
                finished.append(r)
                continue
            r.token_ids.append(token)
            if r.on_token is not None:
                r.on_token(token)
            if (
                r._stops
                and find_stop(self.tokenizer.decode(r.token_ids, skip_special_tokens=True), r._stops) is not None
            ):
                self._finish(r, r.token_ids, "stop", r._stops)
                finished.append(r)
            elif len(r.token_ids) >= r.config.max_new_tokens:
                self._finish(r, r.token_ids, "length")
                finished.append(r)
        return finished

    def _finish(self, request: ContinuousRequest, ids: list[int], reason: str, stops: list[str] | None = None):
        text, cut = _cut_at_stop(self.tokenizer, ids, stops or [])
        ids = ids if cut is None else ids[:cut]
        pref = None if request.config.method == "base" or request.preference is None else str(request.preference)
        request.result = Generation(text, list(ids), reason, request.config.method, pref)
