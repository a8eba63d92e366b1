"""The public PAD API: one object, one ``generate``, every method a parameter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from padkit.decoding.crossing import TextRewardStream
from padkit.decoding.kv_cache import reserved_cache
from padkit.decoding.processor import (
    ARGSLogitsProcessor,
    BanTokensLogitsProcessor,
    Candidates,
    CrossTokenizerPADLogitsProcessor,
    PADLogitsProcessor,
    Reference,
    SelfGuidedPADLogitsProcessor,
    StepRecord,
)
from padkit.decoding.reward import RewardStream
from padkit.decoding.sequence_reward import implicit_rewards
from padkit.decoding.stops import find_stop
from padkit.errors import GenerationError, ModelLoadError
from padkit.models.loading import (
    DEFAULT_BASE,
    adapter_base,
    default_rm,
    load_model,
    load_tokenizer,
    resolve_model_dir,
)
from padkit.models.packed_gemm import PackedGemm
from padkit.models.row_lora import LoRARows
from padkit.preferences import Preference, PreferenceLike, render_input
from padkit.preferences.render import Prompt

Method = Literal["pad", "base", "prompt", "policy", "best-of-n", "args"]
METHODS: tuple[str, ...] = ("pad", "base", "prompt", "policy", "best-of-n", "args")
DEFAULT_WEIGHT = 1.0
"""The alignment strength w a request gets when it names none (API, CLI, server, eval)."""


@dataclass
class Alternative:
    """A candidate the base model offered at one step, with how PAD scored it."""

    token_id: int
    text: str
    base_logprob: float
    reward: float
    score: float


@dataclass
class TokenInfo:
    """One generated token with its base log-prob, reward and the alternatives it beat."""

    token_id: int
    text: str
    base_logprob: float
    reward: float
    score: float
    alternatives: list[Alternative]


@dataclass
class Generation:
    """One prompt's output."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]
    method: str
    preference: str | None
    tokens: list[TokenInfo] | None = field(default=None, repr=False)


class PAD:
    """A frozen base model steered at decoding time by a personalized reward model (PersRM).

    ``rm="self"`` uses the base model conditioned on the preference as its own PersRM (no training
    needed); any other value is a full causal LM or a PEFT LoRA adapter directory. ``rm_shares_base`` says a
    LoRA PersRM sits on the base's own weights, so base rows can run in its batch with the adapter off.
    A PersRM with another tokenizer than the base's scores each candidate's text instead of its token id
    (``cross_tokenizer``, chosen automatically; ``True`` forces the text path for a shared tokenizer too).
    """

    def __init__(
        self,
        base_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        rm_model: PreTrainedModel | None = None,
        rm_tokenizer: PreTrainedTokenizerBase | None = None,
        base_name: str = "base",
        rm_name: str = "self",
        rm_shares_base: bool = False,
        cross_tokenizer: bool | None = None,
    ) -> None:
        self.base_model = base_model
        self.tokenizer = tokenizer
        self.rm_model = rm_model if rm_model is not None else base_model
        self.rm_tokenizer = rm_tokenizer if rm_tokenizer is not None else tokenizer
        self.rm_is_self = rm_model is None
        self.base_name = base_name
        self.rm_name = rm_name
        self.rm_shares_base = rm_shares_base and hasattr(self.rm_model, "disable_adapter")
        differs = not self.rm_is_self and self.rm_tokenizer.get_vocab() != tokenizer.get_vocab()
        if cross_tokenizer is False and differs:
            raise ModelLoadError(
                f"the PersRM {rm_name!r} uses a different tokenizer from the base {base_name!r}; "
                "token-level guidance needs a shared vocabulary (leave cross_tokenizer unset to score text)"
            )
        self.cross_tokenizer = differs if cross_tokenizer is None else cross_tokenizer

    @classmethod
    def from_pretrained(cls, base: str = DEFAULT_BASE, rm: str | None = None, dtype: str = "float32") -> PAD:
        """Load the base model and the PersRM by alias, directory, ``.gguf`` file or Hub id.

        ``rm=None`` picks the PersRM shipped for the default base, and ``"self"`` for any other base.
        """
        rm = default_rm(base) if rm is None else rm
        base_model = load_model(base, dtype)
        tokenizer = load_tokenizer(base)
        if rm == "self":
            return cls(base_model, tokenizer, base_name=base)
        rm_model = load_model(rm, dtype)
        rm_dir = resolve_model_dir(rm)
        shares = isinstance(rm_dir, Path) and hasattr(rm_model, "disable_adapter") and adapter_base(rm_dir) == base
        return cls(
            base_model, tokenizer, rm_model, load_tokenizer(rm), base_name=base, rm_name=rm, rm_shares_base=shares
        )

    @property
    def default_candidates(self) -> Candidates:
        """``topk+eos``, or ``topk`` across tokenizers: there the two models' EOS are unrelated, and a forced EOS
        the base finds unlikely gets a huge log-ratio reward."""
        return "topk" if self.cross_tokenizer else "topk+eos"

    @staticmethod
    def stop_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
        """Default stop strings: the next ``Question:`` of the frame a tokenizer without chat template gets."""
        return [] if getattr(tokenizer, "chat_template", None) else ["\nQuestion:"]

    def decoder(self, method: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The model and tokenizer whose vocabulary ``method``'s output is in: the PersRM's for ``policy``."""
        return (self.rm_model, self.rm_tokenizer) if method == "policy" else (self.base_model, self.tokenizer)

    def stops(self, method: str, stop: Sequence[str] | None = None) -> list[str]:
        """The stop strings ``method`` ends at: ``stop`` as given, else :meth:`stop_strings` of its tokenizer."""
        return [s for s in (self.stop_strings(self.decoder(method)[1]) if stop is None else stop) if s]

    @property
    def rm_is_adapter(self) -> bool:
        return hasattr(self.rm_model, "disable_adapter")

    def _row_preferences(
        self, n: int, preference: PreferenceLike | None, preferences: Sequence[PreferenceLike | None] | None
    ) -> list[Preference | None]:
        if preferences is not None:
            if preference is not None:
                raise GenerationError("give either preference (all prompts) or preferences (one per prompt)")
            if len(preferences) != n:
                raise GenerationError(f"got {len(preferences)} preferences for {n} prompts")
            return [None if p is None else Preference.parse(p) for p in preferences]
        single = None if preference is None else Preference.parse(preference)
        return [single] * n

    def _encode(self, tokenizer: PreTrainedTokenizerBase, texts: list[str], model: PreTrainedModel, budget: int):
        add_special = not getattr(tokenizer, "chat_template", None)
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None:
            lengths = enc["attention_mask"].sum(dim=1)
            for i, length in enumerate(lengths.tolist()):
                if length + budget > limit:
                    raise GenerationError(
                        f"prompt {i} is {length} tokens; with max_new_tokens={budget} it exceeds the model's "
                        f"context of {limit} tokens"
                    )
        return {k: v.to(model.device) for k, v in enc.items()}

    def _persrm_rows(
        self, prompts: list[Prompt], rows: list[Preference | None]
    ) -> tuple[list[str], list[int], torch.Tensor]:
        """PersRM inputs (one per dimension of each prompt), the prompt each follows, and the weight matrix."""
        texts, source, dim_weights = [], [], []
        for b, (prompt, pref) in enumerate(zip(prompts, rows, strict=True)):
            for dim in pref.dimensions if pref is not None else ():
                texts.append(render_input(self.rm_tokenizer, prompt, dim.principle))
                source.append(b)
                dim_weights.append(dim.weight)
        combine = torch.zeros(len(prompts), len(texts))
        combine[torch.tensor(source, dtype=torch.long), torch.arange(len(texts))] = torch.tensor(dim_weights)
        return texts, source, combine

    def _fused_inputs(
        self,
        prompts: list[Prompt],
        rows: list[Preference | None],
        weight: float | Sequence[float],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        **rule,
    ) -> tuple[dict[str, torch.Tensor], SelfGuidedPADLogitsProcessor, AbstractContextManager]:
        """Inputs for one batch of base rows then PersRM rows, their processor, and the context to generate in
        (the LoRA on the PersRM rows only, for a LoRA PersRM on the base's weights)."""
        if rule.get("reference") == "rm-init":
            rule["reference"] = "base"  # the PersRM is the base itself: its preference-free form is the base
        texts, source, combine = self._persrm_rows(prompts, rows)
        all_texts = [render_input(self.tokenizer, p) for p in prompts] + texts
        inputs = self._encode(self.tokenizer, all_texts, self.base_model, max_new_tokens)
        context: AbstractContextManager = nullcontext()
        if self.rm_shares_base:
            context = LoRARows(self.rm_model, slice(len(prompts), len(all_texts)), len(all_texts))
            inputs.update(context.forward_kwargs())
        processor = SelfGuidedPADLogitsProcessor(
            combine,
            torch.tensor(source, dtype=torch.long),
            temperature=temperature,
            top_p=top_p,
            weight=_check_weights(weight, len(prompts)),
            eos_token_ids=eos_token_ids(self.base_model, self.tokenizer),
            **rule,
        )
        return inputs, processor, context

    def logits_processor(
        self,
        prompts: Sequence[Prompt],
        preference: PreferenceLike | None = None,
        *,
        preferences: Sequence[PreferenceLike | None] | None = None,
        weight: float | Sequence[float] = DEFAULT_WEIGHT,
        top_k: int = 10,
        reference: Reference = "base",
        candidates: Candidates | None = None,
        max_new_tokens: int = 128,
        record: bool = False,
    ) -> tuple[dict[str, torch.Tensor], PADLogitsProcessor | CrossTokenizerPADLogitsProcessor]:
        """Base-model inputs and a PAD logits processor for them, for use with ``model.generate``."""
        prompts = _check_prompts(prompts)
        rows = self._row_preferences(len(prompts), preference, preferences)
        weights = _check_weights(weight, len(prompts))
        candidates = candidates or self.default_candidates
        if reference == "rm-init" and not self.rm_is_self and not self.rm_is_adapter:
            raise GenerationError(
                "reference 'rm-init' needs a LoRA PersRM (its adapter disabled is the reference); "
                f"{self.rm_name!r} is a full model: use reference 'base' or 'none'"
            )
        if reference == "rm-init" and self.rm_is_self:
            reference = "base"
        base_inputs = self._encode(
            self.tokenizer, [render_input(self.tokenizer, p) for p in prompts], self.base_model, max_new_tokens
        )
        texts, source, combine = self._persrm_rows(prompts, rows)
        lora_rows = None
        if reference == "rm-init":
            lora_rows = LoRARows(self.rm_model, slice(0, len(texts)), len(texts) + len(prompts))
            texts += [render_input(self.rm_tokenizer, p) for p in prompts]
            source += list(range(len(prompts)))
        if not texts:
            texts, source = [render_input(self.rm_tokenizer, prompts[0])], [0]
        rm_inputs = self._encode(self.rm_tokenizer, texts, self.rm_model, max_new_tokens)
        rule = dict(
            combine=combine,
            weight=weights,
            reference=reference,
            top_k=top_k,
            candidates=candidates,
            eos_token_ids=eos_token_ids(self.base_model, self.tokenizer),
            record=record,
        )
        if self.cross_tokenizer:
            if candidates == "topk+rm":
                raise GenerationError("candidates 'topk+rm' needs a PersRM with the base's tokenizer")
            text_stream = TextRewardStream(
                self.rm_model,
                self.rm_tokenizer,
                self.tokenizer,
                rm_inputs["input_ids"],
                rm_inputs["attention_mask"],
                torch.tensor(source, dtype=torch.long),
                base_eos=rule["eos_token_ids"],
                eos_token_id=self.rm_tokenizer.eos_token_id,
                lora_rows=lora_rows,
            )
            return base_inputs, CrossTokenizerPADLogitsProcessor(text_stream, **rule)
        stream = RewardStream(
            self.rm_model,
            rm_inputs["input_ids"],
            rm_inputs["attention_mask"],
            torch.tensor(source, dtype=torch.long),
            lora_rows,
        )
        return base_inputs, PADLogitsProcessor(stream, **rule)

    def generate(
        self,
        prompts: str | Sequence[Prompt],
        preference: PreferenceLike | None = None,
        *,
        preferences: Sequence[PreferenceLike | None] | None = None,
        method: Method = "pad",
        weight: float | Sequence[float] = DEFAULT_WEIGHT,
        top_k: int = 10,
        reference: Reference = "base",
        candidates: Candidates | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        ignore_eos: bool = False,
        diagnostics: bool = False,
        streamer: BaseStreamer | None = None,
        fused: bool | None = None,
        best_of: int = 4,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Generate one answer per prompt with ``method`` and return them in order.

        ``method``: ``pad`` (guided decoding), ``base`` (no preference), ``prompt`` (the preference in the
        base model's prompt), ``policy`` (decode from the PersRM itself, the training-based baseline) or
        ``best-of-n`` (``best_of`` base samples, reranked by the PersRM's sequence-level implicit reward) or
        ``args`` (ARGS-style: the base's top-k rescored by the sequence-level reward of prefix + candidate,
        recomputed every step; slow, for comparison).
        ``temperature=0`` is greedy. ``diagnostics=True`` (``pad`` only) fills ``Generation.tokens``.
        ``fused`` runs base and PersRM rows in one forward per step; it needs ``rm="self"`` or a LoRA PersRM on
        the base's weights (base rows run with the adapter off), and is chosen automatically there unless a
        streamer is given (streamers take one row).
        ``stop`` strings end an answer (cut before them, ``finish_reason="stop"``); by default a base model
        without a chat template stops at ``"\nQuestion:"``, where its ``Question: … Answer:`` frame repeats.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = _check_prompts(prompts)
        if method not in METHODS:
            raise GenerationError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        if max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise GenerationError(f"temperature must be a finite number >= 0, got {temperature}")
        if not (0 < top_p <= 1):
            raise GenerationError(f"top_p must be in (0, 1], got {top_p}")
        rows = self._row_preferences(len(prompts), preference, preferences)
        if method == "best-of-n":
            return self._best_of_n(
                prompts, rows, best_of, reference, max_new_tokens, temperature or 1.0, top_p, seed, ignore_eos, stop
            )
        model, tokenizer = self.decoder(method)
        processors = LogitsProcessorList(
            [BanTokensLogitsProcessor(eos_token_ids(model, tokenizer))] if ignore_eos else []
        )
        pad_processor = None
        context: AbstractContextManager = nullcontext()
        can_fuse = (
            method == "pad"
            and not self.cross_tokenizer
            and (self.rm_is_self or (self.rm_shares_base and reference != "rm-init"))
        )
        if fused and not can_fuse:
            raise GenerationError(
                "fused decoding needs method 'pad' with rm='self', or a LoRA PersRM on the base's own weights "
                "(reference base or none)"
            )
        if fused is None:  # a plain streamer takes one row; a ``batched`` one handles the fused batch's rows
            fused = can_fuse and (streamer is None or getattr(streamer, "batched", False))
        sample_in_generate = temperature > 0 and not fused
        candidates = candidates or self.default_candidates
        rule = dict(top_k=top_k, reference=reference, candidates=candidates, record=diagnostics)
        if fused:
            inputs, pad_processor, context = self._fused_inputs(
                prompts, rows, weight, max_new_tokens, temperature, top_p, **rule
            )
        elif method == "pad":
            inputs, pad_processor = self.logits_processor(
                prompts, preferences=rows, weight=weight, max_new_tokens=max_new_tokens, **rule
            )
        elif method == "args":
            inputs = self._encode(
                self.tokenizer, [render_input(self.tokenizer, p) for p in prompts], self.base_model, max_new_tokens
            )
            processors.append(self._args_processor(prompts, rows, weight, top_k, reference, inputs))
        if pad_processor is not None:
            processors.append(pad_processor)
            model = self.rm_model if fused and self.rm_shares_base else self.base_model
        elif method != "args":
            texts = [
                render_input(tokenizer, p, None if method == "base" or r is None else r.prompt_principle())
                for p, r in zip(prompts, rows, strict=True)
            ]
            inputs = self._encode(tokenizer, texts, model, max_new_tokens)
        if sample_in_generate:
            processors.append(TemperatureLogitsWarper(temperature))
            if top_p < 1:
                processors.append(TopPLogitsWarper(top_p))
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sample_in_generate,
            temperature=1.0,
            top_k=0 if sample_in_generate else None,
            top_p=1.0,
            eos_token_id=eos_token_ids(model, tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        stops = [] if ignore_eos else self.stops(method, stop)
        if stops:
            config.stop_strings = stops
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode(), ExitStack() as stack:
            stack.enter_context(context)
            stack.enter_context(PackedGemm(model, inputs["input_ids"].shape[0], max_new_tokens))
            if isinstance(pad_processor, PADLogitsProcessor):  # a PersRM beside generate: its rows are fixed too
                stream = pad_processor.stream
                stack.enter_context(PackedGemm(stream.model, len(stream.source_rows), max_new_tokens))
            cache = reserved_cache(model.config, inputs["input_ids"].shape[1] + max_new_tokens)
            sequences = model.generate(
                **inputs,
                **({} if cache is None else {"cache": cache}),
                generation_config=config,
                logits_processor=processors,
                streamer=streamer,
                tokenizer=tokenizer,
            )
        new_tokens = sequences[: len(prompts), inputs["input_ids"].shape[1] :]
        eos = set(config.eos_token_id)
        results = []
        for b, row in enumerate(new_tokens.tolist()):
            stop_at = next((i for i, t in enumerate(row) if t in eos), None)
            ids = row if stop_at is None else row[:stop_at]
            text, cut = _cut_at_stop(tokenizer, ids, stops)
            if cut is not None:
                ids, stop_at = ids[:cut], None
            tokens = None
            if pad_processor is not None and diagnostics:
                tokens = self._token_infos(pad_processor.records, b, row[: len(ids) + (stop_at is not None)])
            results.append(
                Generation(
                    text=text,
                    token_ids=ids,
                    finish_reason="stop" if (stop_at is not None or cut is not None) and not ignore_eos else "length",
                    method=method,
                    preference=None if method == "base" or rows[b] is None else str(rows[b]),
                    tokens=tokens,
                )
            )
        return results

    def _args_processor(self, prompts, rows, weight, top_k, reference, inputs) -> ARGSLogitsProcessor:
        weights = _check_weights(weight, len(prompts))

        def reward(row: int, sequences: list[list[int]]) -> torch.Tensor:
            total = torch.zeros(len(sequences), dtype=torch.float64)
            texts = [self.tokenizer.decode(s, skip_special_tokens=True) for s in sequences]
            for dim in rows[row].dimensions if rows[row] is not None else ():
                total += dim.weight * self.sequence_rewards(prompts[row], dim.principle, texts, reference, eos=False)
            return total

        return ARGSLogitsProcessor(reward, inputs["input_ids"].shape[1], weights, top_k)

    def _best_of_n(
        self,
        prompts: list[Prompt],
        rows: list[Preference | None],
        n: int,
        reference: Reference,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        ignore_eos: bool,
        stop: Sequence[str] | None,
    ) -> list[Generation]:
        """Sample ``n`` base answers per prompt and keep the one with the highest summed implicit reward."""
        if n < 1:
            raise GenerationError(f"best_of must be at least 1, got {n}")
        samples = self.generate(
            [p for p in prompts for _ in range(n)],
            method="base",
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            ignore_eos=ignore_eos,
            stop=stop,
        )
        scores = torch.zeros(len(samples), dtype=torch.float64)
        for b, (prompt, pref) in enumerate(zip(prompts, rows, strict=True)):
            texts = [g.text for g in samples[b * n : (b + 1) * n]]
            for dim in pref.dimensions if pref is not None else ():
                scores[b * n : (b + 1) * n] += dim.weight * self.sequence_rewards(
                    prompt, dim.principle, texts, reference
                )
        out = []
        for b, pref in enumerate(rows):
            best = samples[b * n + int(torch.argmax(scores[b * n : (b + 1) * n]))]
            out.append(
                Generation(
                    best.text, best.token_ids, best.finish_reason, "best-of-n", None if pref is None else str(pref)
                )
            )
        return out

    def sequence_rewards(
        self,
        prompt: Prompt,
        principle: str,
        responses: Sequence[str],
        reference: Reference = "base",
        eos: bool = True,
    ) -> torch.Tensor:
        """The PersRM's summed implicit reward of whole responses: ``log pi_rm(y|x,p) - log pi_ref(y|...)``.

        ``eos=False`` scores unfinished responses (prefixes) without the closing EOS token.
        """
        if reference == "rm-init" and not self.rm_is_adapter:
            reference = "base"  # without a LoRA to switch off, the preference-free base is the reference
        return implicit_rewards(
            self.rm_model,
            self.rm_tokenizer,
            [render_input(self.rm_tokenizer, prompt, principle)] * len(responses),
            list(responses),
            reference,
            plain=[render_input(self.tokenizer, prompt)] * len(responses),
            base_model=self.base_model,
            base_tokenizer=self.tokenizer,
            add_eos=eos,
        )

    def _token_infos(self, records: list[StepRecord], row: int, chosen: list[int]) -> list[TokenInfo]:
        infos = []
        for step, token in zip(records, chosen, strict=False):
            cand = step.candidates[row].tolist()
            alts: dict[int, Alternative] = {}
            for j, tok in enumerate(cand):
                alts.setdefault(
                    tok,
                    Alternative(
                        tok,
                        self.tokenizer.decode([tok]),
                        float(step.base_logprobs[row, j]),
                        float(step.rewards[row, j]),
                        float(step.scores[row, j]),
                    ),
                )
            ranked = sorted(alts.values(), key=lambda a: a.score, reverse=True)
            me = alts.get(token)
            infos.append(
                TokenInfo(
                    token_id=token,
                    text=self.tokenizer.decode([token]),
                    base_logprob=me.base_logprob if me else float("nan"),
                    reward=me.reward if me else float("nan"),
                    score=me.score if me else float("nan"),
                    alternatives=ranked,
                )
            )
        return infos


def _check_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    prompts = list(prompts)
    if not prompts:
        raise GenerationError("no prompts given")
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if not p.strip():
                raise GenerationError(f"prompt {i} is empty")
            continue
        if not isinstance(p, Sequence) or not p or not all(isinstance(m, dict) and "content" in m for m in p):
            raise GenerationError(f"prompt {i} must be a non-empty string or a list of chat messages")
        if p[-1].get("role") != "user" or not str(p[-1]["content"]).strip():
            raise GenerationError(f"prompt {i}: a conversation must end with a non-empty user turn")
    return prompts


def _cut_at_stop(tokenizer: PreTrainedTokenizerBase, ids: list[int], stops: list[str]) -> tuple[str, int | None]:
    """The answer's text cut before its first stop string, and how many tokens cover that text (None: no cut).

    The last kept token may reach into the stop string when one token holds both."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    end = find_stop(text, stops)
    if end is None:
        return text, None
    low, high = 0, len(ids)  # the fewest tokens whose text covers text[:end]
    while low < high:
        mid = (low + high) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=True)) >= end:
            high = mid
        else:
            low = mid + 1
    return text[:end], low


def _check_weights(weight: float | Sequence[float], n: int) -> torch.Tensor:
    values = [weight] * n if isinstance(weight, int | float) else list(weight)
    if len(values) != n:
        raise GenerationError(f"got {len(values)} weights for {n} prompts")
    for v in values:
        if not isinstance(v, int | float) or not math.isfinite(v):
            raise GenerationError(f"alignment weight must be a finite number, got {v!r}")
    return torch.tensor(values, dtype=torch.float32)


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends an answer: the generation config's EOS ids and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
