"""The public PAD API: one object, one ``generate``, every method a parameter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

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

from padkit.decoding.config import (
    DEFAULT_WEIGHT,
    MAX_REWARD_MARGIN,
    METHODS,
    Candidates,
    ConfigError,
    PADConfig,
    Reference,
)
from padkit.decoding.crossing import TextRewardStream
from padkit.decoding.kv_cache import reserved_cache
from padkit.decoding.processor import (
    AmuletLogitsProcessor,
    ARGSLogitsProcessor,
    BanTokensLogitsProcessor,
    ColonEndGuard,
    CrossTokenizerPADLogitsProcessor,
    LoopGuard,
    NGramGuard,
    NoRepeatNGramRows,
    PADLogitsProcessor,
    PersonaJudgeLogitsProcessor,
    SelfGuidedPADLogitsProcessor,
    StepRecord,
    class_members,
    colon_endings,
    special_token_ids,
    vocabulary_texts,
    whitespace_classes,
)
from padkit.decoding.reward import RewardStream
from padkit.decoding.sequence_reward import implicit_rewards, resolve_reference
from padkit.decoding.stops import CancelledRows, find_stop
from padkit.errors import GenerationError, ModelLoadError
from padkit.models.loading import (
    DEFAULT_BASE,
    adapter_base,
    default_rm,
    load_model,
    load_tokenizer,
    recorded_reward_margin,
    resolve_device,
    resolve_model_dir,
    same_vocabulary,
)
from padkit.models.packed_gemm import PackedGemm
from padkit.models.row_lora import AdapterSwitch, BaseWeightsOnly, LoRARows, set_adapters
from padkit.preferences import Preference, PreferenceLike, render_input
from padkit.preferences.render import Prompt

__all__ = ["DEFAULT_WEIGHT", "METHODS", "PAD", "Alternative", "Generation", "PADConfig", "TokenInfo"]


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
    finish_reason: Literal["stop", "length", "cancelled"]
    method: str
    preference: str | None
    tokens: list[TokenInfo] | None = field(default=None, repr=False)


@dataclass
class _Plan:
    """What a decode mode's builder hands the shared finish step (:meth:`PAD._run`)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    inputs: dict[str, torch.Tensor]
    rows: int
    """How many leading rows of the batch are answers (the rest are PersRM rows of a fused batch)."""
    preferences: list[Preference | None]
    method: str
    adapters: bool = False
    """Run ``model``'s LoRA adapters (if any) on: the PersRM decoding, or a fused batch; else the base."""
    pad_processor: Any = None
    processors: list = field(default_factory=list)
    contexts: list[AbstractContextManager] = field(default_factory=list)
    samples_itself: bool = False
    """The processor picks tokens itself (fused PAD), so ``generate`` stays greedy."""
    temperature: float | None = None
    select: Callable[[list[Generation]], list[Generation]] | None = None
    follows: torch.Tensor | None = None
    """For the rows after the answers (a fused batch's PersRM rows), the answer row each follows."""
    base_only: bool = False
    """Nothing in the decode needs a LoRA PersRM on the base's weights: run the bare base (:class:`BaseWeightsOnly`)."""


class _PromptRows(BaseStreamer):
    """Hands a streamer the first ``rows`` rows only: the answers, without a fused batch's PersRM rows, so any
    streamer (one row, or the server's batched one) sees the same decode as a call without a streamer."""

    def __init__(self, streamer: BaseStreamer, rows: int) -> None:
        self.streamer, self.rows = streamer, rows

    def put(self, value: torch.Tensor) -> None:
        self.streamer.put(value[: self.rows])

    def end(self) -> None:
        self.streamer.end()


class PAD:
    """A frozen base model steered at decoding time by a personalized reward model (PersRM).

    ``rm="self"`` uses the base model conditioned on the preference as its own PersRM (no training
    needed); any other value is a full causal LM or a PEFT LoRA adapter directory. ``rm_shares_base`` says a
    LoRA PersRM sits on the base's own weights, so base rows can run in its batch with the adapter off.
    A PersRM with another tokenizer than the base's scores each candidate's text instead of its token id
    (``cross_tokenizer``, chosen automatically; ``True`` forces the text path for a shared tokenizer too).
    ``default_reward_margin`` is the reward margin of a request that names none (``PADConfig.reward_margin``): a
    margin is in nats of one PersRM's reward, so it belongs to the PersRM; :meth:`from_pretrained` reads it from
    the PersRM's ``padkit.json`` (3 for the shipped one, 0 for ``rm="self"`` and a PersRM that records none).
    The base and a LoRA PersRM may be one object (a PEFT model on the base: one copy of the weights, as
    :meth:`from_pretrained` loads them); a PEFT model given as the base always runs with its adapters off.
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
        default_reward_margin: float = 0.0,
    ) -> None:
        if not 0 <= default_reward_margin <= MAX_REWARD_MARGIN:
            raise ValueError(
                f"default_reward_margin must be in [0, {MAX_REWARD_MARGIN:g}], got {default_reward_margin}"
            )
        self.default_reward_margin = default_reward_margin
        self.base_model = base_model
        self.tokenizer = tokenizer
        self.rm_model = rm_model if rm_model is not None else base_model
        self.rm_tokenizer = rm_tokenizer if rm_tokenizer is not None else tokenizer
        self.rm_is_self = rm_model is None
        self.base_name = base_name
        self.rm_name = rm_name
        one_copy = rm_model is base_model and hasattr(base_model, "disable_adapter")
        self.rm_shares_base = (rm_shares_base or one_copy) and hasattr(self.rm_model, "disable_adapter")
        differs = not self.rm_is_self and not same_vocabulary(self.rm_tokenizer, tokenizer)
        if cross_tokenizer is False and differs:
            raise ModelLoadError(
                f"the PersRM {rm_name!r} uses a different tokenizer from the base {base_name!r}; "
                "token-level guidance needs a shared vocabulary (leave cross_tokenizer unset to score text)"
            )
        self.cross_tokenizer = differs if cross_tokenizer is None else cross_tokenizer

    @cached_property
    def vocabulary_texts(self) -> list[str]:
        """Every base token's text (:func:`vocabulary_texts`), decoded once for both guards' tables: the guards act on
        answer rows, which the base tokenizer writes, and decoding the whole vocabulary takes about half a second."""
        return vocabulary_texts(self.tokenizer)

    @cached_property
    def token_classes(self) -> list[int]:
        """The loop guard's whitespace classes of the base tokenizer (:func:`whitespace_classes`)."""
        return whitespace_classes(self.tokenizer, self.vocabulary_texts)

    @cached_property
    def class_members(self) -> dict[int, list[int]]:
        """The tokens of each shared whitespace class (:func:`class_members`), for both class-reading guards."""
        return class_members(self.token_classes)

    @cached_property
    def colon_endings(self) -> list[int]:
        """The colon guard's table of the base tokenizer (:func:`colon_endings`)."""
        return colon_endings(self.tokenizer, self.vocabulary_texts)

    @cached_property
    def turn_end_ids(self) -> list[int]:
        """The tokens the colon guard bans: EOS and the tokenizer's other special tokens (with EOS banned, a chat
        model ends its turn by opening the next one, '<|im_start|>user', or by another invisible '<repo_name>')."""
        ids = eos_token_ids(self.base_model, self.tokenizer)
        return ids + [i for i in sorted(special_token_ids(self.tokenizer)) if i not in ids]

    def answer_guards(self, config: PADConfig, rows: int) -> list[LoopGuard | NGramGuard | ColonEndGuard]:
        """The guards ``config`` turns on for the first ``rows`` rows (the answers), in the order they apply: the
        loop guard, the n-gram guard, then the colon guard (not when EOS is ignored: no answer can end on a colon
        then). The static path and the continuous batch both take them from here."""
        guards: list[LoopGuard | NGramGuard | ColonEndGuard] = []
        if config.loop_guard and config.reads("loop_guard"):
            guards.append(
                LoopGuard(config.loop_guard, rows, token_classes=self.token_classes, members=self.class_members)
            )
        if config.ngram_guard and config.reads("ngram_guard"):
            guards.append(NGramGuard(config.ngram_guard, rows, self.token_classes, self.class_members))
        if config.colon_guard and config.reads("colon_guard") and not config.ignore_eos:
            guards.append(ColonEndGuard(self.colon_endings, self.turn_end_ids, rows, config.top_k))
        return guards

    @classmethod
    def from_pretrained(
        cls,
        base: str = DEFAULT_BASE,
        rm: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
    ) -> PAD:
        """Load the base model and the PersRM by alias, directory, ``.gguf`` file or Hub id, on ``device``
        (``auto``: a CUDA GPU when there is one, else the CPU) in ``dtype`` (``auto``: bfloat16 on a GPU,
        float32 on the CPU).

        ``rm=None`` picks the PersRM shipped for the default base, and ``"self"`` for any other base. A LoRA
        PersRM trained on this base goes onto the base's own weights (one copy in memory, its adapters off
        except for the PersRM's forwards).
        """
        rm = default_rm(base) if rm is None else rm
        where = resolve_device(device)
        base_model = load_model(base, dtype, where)
        tokenizer = load_tokenizer(base)
        if rm == "self":
            return cls(base_model, tokenizer, base_name=base)
        rm_dir = resolve_model_dir(rm)
        is_adapter = isinstance(rm_dir, Path) and (rm_dir / "adapter_config.json").is_file()
        margin = dict(default_reward_margin=recorded_reward_margin(rm_dir) if isinstance(rm_dir, Path) else 0.0)
        if is_adapter and adapter_base(rm_dir) == base:
            from peft import PeftModel

            shared = PeftModel.from_pretrained(base_model, rm_dir).eval()
            set_adapters(shared, False)  # used directly, ``pad.base_model`` is the base
            return cls(shared, tokenizer, shared, load_tokenizer(rm), base_name=base, rm_name=rm, **margin)
        rm_model = load_model(rm, dtype, where)
        return cls(base_model, tokenizer, rm_model, load_tokenizer(rm), base_name=base, rm_name=rm, **margin)

    @classmethod
    def from_dummy(
        cls,
        shape: str,
        rm: str = "lora",
        lora_rank: int = 16,
        tokenizer: str = DEFAULT_BASE,
        dtype: str = "auto",
        device: str = "auto",
        seed: int = 0,
    ) -> PAD:
        """Random weights of a real shape, for speed measurements with nothing to download: the base built from
        ``shape`` (a shipped shape name or a ``config.json``, see :mod:`padkit.models.dummy`) and, with
        ``rm="lora"``, a random LoRA PersRM of ``lora_rank`` on its own weights (``rm="self"``: none).
        ``tokenizer`` only turns prompts into ids (any tokenizer whose ids fit the shape's vocabulary)."""
        from padkit.models.dummy import dummy_model, random_lora

        if rm not in ("lora", "self"):
            raise ModelLoadError(f"a dummy PersRM is 'lora' (random, of --lora-rank) or 'self', not {rm!r}")
        base_model = dummy_model(shape, dtype, device, seed)
        tok = load_tokenizer(tokenizer)
        if len(tok) > base_model.config.vocab_size:
            raise ModelLoadError(
                f"the tokenizer {tokenizer!r} has {len(tok)} tokens, more than the shape's vocabulary of "
                f"{base_model.config.vocab_size}"
            )
        name = f"dummy:{Path(shape).stem}"
        if rm == "self":
            return cls(base_model, tok, base_name=name)
        shared = random_lora(base_model, lora_rank, seed)
        set_adapters(shared, False)
        return cls(shared, tok, shared, tok, base_name=name, rm_name=f"random LoRA r{lora_rank}")

    @property
    def default_candidates(self) -> Candidates:
        """``topk+rm`` with a trained PersRM on the base's tokenizer: a bullet, an emoji or a heading the base
        rarely proposes reaches the candidates (docs/results.md, "Session 32"); ``topk+eos`` with ``rm="self"``,
        whose "PersRM" is the prompted base; ``topk`` across tokenizers: there the two models' EOS are unrelated,
        and a forced EOS the base finds unlikely gets a huge log-ratio reward."""
        if self.cross_tokenizer:
            return "topk"
        return "topk+eos" if self.rm_is_self else "topk+rm"

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

    def _encode(
        self,
        tokenizer: PreTrainedTokenizerBase,
        texts: list[str],
        model: PreTrainedModel,
        budget: int,
        labels: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tokenize a left-padded batch; a row too long for the context is named by ``labels[i]``."""
        add_special = not getattr(tokenizer, "chat_template", None)
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None:
            lengths = enc["attention_mask"].sum(dim=1)
            for i, length in enumerate(lengths.tolist()):
                if length + budget > limit:
                    what = labels[i] if labels is not None else f"prompt {i}"
                    raise GenerationError(
                        f"{what} is {length} tokens; with max_new_tokens={budget} it exceeds the model's "
                        f"context of {limit} tokens"
                    )
        return {k: v.to(model.device) for k, v in enc.items()}

    def _encode_prompts(self, prompts: list[Prompt], budget: int) -> dict[str, torch.Tensor]:
        """The base model's inputs for ``prompts`` as written (no preference in them)."""
        texts = [render_input(self.tokenizer, p) for p in prompts]
        return self._encode(self.tokenizer, texts, self.base_model, budget, [row_label(i) for i in range(len(prompts))])

    def answer_input(
        self, index: int, prompt: Prompt, preference: Preference | None, config: PADConfig
    ) -> tuple[str, str]:
        """An answer row's input text, with the preference in it when the row's model reads it
        (:func:`base_principle`), and the label that names the row in errors."""
        principle = base_principle(config, preference, self.prompts_base(config))
        text = render_input(self.decoder(config.method)[1], prompt, principle)
        return text, row_label(index, None if principle is None else ",".join(d.text for d in preference.dimensions))

    def prompts_base(self, config: PADConfig) -> bool:
        """Whether PAD's base reads the preference: ``prompted_base`` if set, else on unless the PersRM is the base
        itself (``rm="self"``), which would then read exactly what the base reads and give a zero reward."""
        return config.prompted_base if config.prompted_base is not None else not self.rm_is_self

    def _answer_inputs(
        self, prompts: list[Prompt], rows: list[Preference | None], configs: PADConfig | list[PADConfig]
    ) -> tuple[list[str], list[str]]:
        """:meth:`answer_input` of every row (one config for all, or one per row as in a continuous batch): the
        texts, then the labels."""
        if isinstance(configs, PADConfig):
            configs = [configs] * len(prompts)
        answers = [
            self.answer_input(i, p, r, c) for i, (p, r, c) in enumerate(zip(prompts, rows, configs, strict=True))
        ]
        return [text for text, _ in answers], [label for _, label in answers]

    def _encode_answers(
        self, prompts: list[Prompt], rows: list[Preference | None], config: PADConfig
    ) -> dict[str, torch.Tensor]:
        """The answer rows' inputs for the model that decodes ``config.method``."""
        model, tokenizer = self.decoder(config.method)
        texts, labels = self._answer_inputs(prompts, rows, config)
        return self._encode(tokenizer, texts, model, config.max_new_tokens, labels)

    def reward_margin(self, config: PADConfig) -> float:
        """PAD's reward margin: ``config.reward_margin`` if set, else the PersRM's own (``self.default_reward_margin``,
        the margin its rewards were measured with) on the base's tokenizer and 0 across tokenizers, where each
        candidate's reward is a sum over its text's pieces."""
        if config.reward_margin is not None:
            return config.reward_margin
        return 0.0 if self.cross_tokenizer else self.default_reward_margin

    def _persrm_rows(
        self, prompts: list[Prompt], rows: list[Preference | None]
    ) -> tuple[list[str], list[int], torch.Tensor, list[str]]:
        """PersRM inputs (one per dimension of each prompt), the prompt each follows, the weight matrix, and a
        label naming each row for errors."""
        texts, source, dim_weights, labels = [], [], [], []
        for b, (prompt, pref) in enumerate(zip(prompts, rows, strict=True)):
            for dim in pref.dimensions if pref is not None else ():
                texts.append(render_input(self.rm_tokenizer, prompt, dim.principle))
                source.append(b)
                dim_weights.append(dim.weight)
                labels.append(row_label(b, dim.text))
        combine = torch.zeros(len(prompts), len(texts))
        combine[torch.tensor(source, dtype=torch.long), torch.arange(len(texts))] = torch.tensor(dim_weights)
        return texts, source, combine, labels

    def _resolve_reference(self, reference: str) -> str:
        return resolve_reference(reference, self.rm_is_self, self.rm_is_adapter, self.rm_name)

    def _persrm_adapters(self) -> bool:
        """Whether the PersRM's forwards run with its adapters on: yes for a LoRA PersRM, no for ``rm="self"``
        (the base conditioned on the preference, even when the base carries a LoRA PersRM's weights)."""
        return not self.rm_is_self

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
        prompted_base: bool | None = PADConfig.default("prompted_base"),
        record: bool = False,
    ) -> tuple[dict[str, torch.Tensor], PADLogitsProcessor | CrossTokenizerPADLogitsProcessor]:
        """Base-model inputs and a PAD logits processor for them, for use with ``model.generate``.

        The settings mean what they mean in :class:`PADConfig` and are checked by it. The guards are processors
        of their own: put ``pad.answer_guards(config, rows=len(prompts))`` before this one for what the loop,
        n-gram and colon guards of ``config`` do in :meth:`generate`."""
        prompts = _check_prompts(prompts)
        config = PADConfig(
            weight=weight,
            top_k=top_k,
            reference=reference,
            candidates=candidates,
            max_new_tokens=max_new_tokens,
            prompted_base=prompted_base,
        )
        rows = self._row_preferences(len(prompts), preference, preferences)
        inputs = self._encode_answers(prompts, rows, config)
        return inputs, self._pad_processor(prompts, rows, _weights(config.weight, len(prompts)), config, record)

    def _pad_processor(
        self, prompts: list[Prompt], rows: list[Preference | None], weights: torch.Tensor, config: PADConfig, record
    ) -> PADLogitsProcessor | CrossTokenizerPADLogitsProcessor:
        """The PAD processor beside a base decode: the PersRM rows (and ``rm-init`` reference rows) in a stream
        with their own cache, scoring token ids, or text across tokenizers."""
        settings = self._rule_settings(config)
        if self.cross_tokenizer and settings["candidates"] == "topk+rm":
            raise ConfigError("candidates", "candidates 'topk+rm' needs a PersRM with the base's tokenizer")
        texts, source, combine, labels = self._persrm_rows(prompts, rows)
        lora_rows = None
        if settings["reference"] == "rm-init":
            lora_rows = LoRARows(self.rm_model, slice(0, len(texts)), len(texts) + len(prompts))
            texts += [render_input(self.rm_tokenizer, p) for p in prompts]
            labels += [f"prompt {b}" for b in range(len(prompts))]
            source += list(range(len(prompts)))
        if not texts:
            texts, source, labels = [render_input(self.rm_tokenizer, prompts[0])], [0], ["prompt 0"]
        rm_inputs = self._encode(self.rm_tokenizer, texts, self.rm_model, config.max_new_tokens, labels)
        rule = dict(combine=combine, weight=weights, record=record, **settings)
        source_rows = torch.tensor(source, dtype=torch.long)
        if self.cross_tokenizer:
            text_stream = TextRewardStream(
                self.rm_model,
                self.rm_tokenizer,
                self.tokenizer,
                rm_inputs["input_ids"],
                rm_inputs["attention_mask"],
                source_rows,
                base_eos=rule["eos_token_ids"],
                eos_token_id=self.rm_tokenizer.eos_token_id,
                lora_rows=lora_rows,
                adapters=self._persrm_adapters(),
            )
            return CrossTokenizerPADLogitsProcessor(text_stream, **rule)
        stream = RewardStream(
            self.rm_model,
            rm_inputs["input_ids"],
            rm_inputs["attention_mask"],
            source_rows,
            lora_rows,
            adapters=self._persrm_adapters(),
        )
        return PADLogitsProcessor(stream, **rule)

    def can_fuse(self, config: PADConfig) -> bool:
        """Whether ``config`` can run fused: PAD on a shared vocabulary with ``rm="self"``, or with a LoRA PersRM
        on the base's own weights and a reference other than ``rm-init``."""
        return (
            config.method == "pad"
            and not self.cross_tokenizer
            and (self.rm_is_self or (self.rm_shares_base and config.reference != "rm-init"))
        )

    def decode_mode(self, config: PADConfig) -> str:
        """The entry of :data:`DECODE_MODES` that runs ``config``: decided by the configuration alone, never by a
        streamer or a terminal, so a seed gives the same text through every entry point."""
        if config.method in ("base", "prompt", "policy"):
            return "plain"
        if config.method in ("best-of-n", "args", "amulet", "persona-judge"):
            return config.method
        fuse = self.can_fuse(config)
        if config.fused and not fuse:
            raise ConfigError(
                "fused",
                "fused decoding needs method 'pad' with rm='self', or a LoRA PersRM on the base's own weights "
                "(reference base or none)",
            )
        if config.fused if config.fused is not None else fuse:
            return "fused-pad"
        return "cross-tokenizer-pad" if self.cross_tokenizer else "pad"

    def generate(
        self,
        prompts: str | Sequence[Prompt],
        preference: PreferenceLike | None = None,
        *,
        preferences: Sequence[PreferenceLike | None] | None = None,
        config: PADConfig | None = None,
        streamer: BaseStreamer | None = None,
        cancelled: Callable[[], Sequence[bool]] | None = None,
        **overrides: Any,
    ) -> list[Generation]:
        """Generate one answer per prompt and return them in order.

        ``config`` (a :class:`PADConfig`) holds every decoding setting; keyword ``overrides`` replace some of
        its values (``pad.generate(prompts, "concise", weight=2.0, max_new_tokens=64)``) and are validated the
        same way. ``preference`` applies to every prompt; ``preferences`` gives one per prompt (``None``: no
        preference). A ``streamer`` receives the prompt rows' tokens as they are chosen; it never changes the
        decode (the method table :data:`DECODE_MODES` is picked by the configuration only). ``cancelled()``,
        polled every step, says per prompt which answers nobody waits for any more: their rows stop (the server
        passes it for clients that hung up); their :class:`Generation` ends with ``finish_reason="cancelled"``.
        ``stop`` strings end an answer (cut before them, ``finish_reason="stop"``); by default a base model
        without a chat template stops at ``"\nQuestion:"``, where its ``Question: … Answer:`` frame repeats.
        """
        config = config if config is not None else PADConfig()
        if overrides:
            config = config.replace(**overrides)
        prompts = _check_prompts([prompts] if isinstance(prompts, str) else prompts)
        rows = self._row_preferences(len(prompts), preference, preferences)
        mode = self.decode_mode(config)
        if streamer is not None and mode == "best-of-n":
            raise ConfigError("method", "best-of-n picks its answer after decoding every sample: it cannot stream")
        plan = DECODE_MODES[mode](self, prompts, rows, _weights(config.weight, len(prompts)), config)
        if cancelled is not None and plan.select is not None:
            cancelled = None  # best-of-n's samples are reranked at the end: all of them are needed
        gens = self._run(plan, config, streamer, cancelled)
        return plan.select(gens) if plan.select is not None else gens

    def _plain_plan(self, prompts, rows, weights, config) -> _Plan:
        """``base``, ``prompt`` and ``policy``: one model, the preference (if any) in its prompt."""
        model, tokenizer = self.decoder(config.method)
        inputs = self._encode_answers(prompts, rows, config)
        adapters = config.method == "policy" and self._persrm_adapters()
        plan = _Plan(model, tokenizer, inputs, len(prompts), rows, config.method, adapters=adapters)
        plan.base_only = config.method != "policy"
        return plan

    def _pad_plan(self, prompts, rows, weights, config) -> _Plan:
        """PAD beside the base: the base decodes, a :class:`PADLogitsProcessor` (or its cross-tokenizer form)
        runs the PersRM rows on their own cache and rescores the base's top-k."""
        inputs = self._encode_answers(prompts, rows, config)
        processor = self._pad_processor(prompts, rows, weights, config, config.diagnostics)
        plan = _Plan(self.base_model, self.tokenizer, inputs, len(prompts), rows, "pad", pad_processor=processor)
        if isinstance(processor, PADLogitsProcessor):  # a PersRM beside generate: its rows are fixed too
            stream = processor.stream
            plan.contexts.append(PackedGemm(stream.model, len(stream.source_rows), config.max_new_tokens))
        return plan

    def _fused_plan(self, prompts, rows, weights, config) -> _Plan:
        """PAD in one forward per step: the prompt rows then the PersRM rows in one batch of one model (the
        LoRA, if any, on the PersRM rows only); the processor picks each token itself."""
        texts, source, combine, labels = self._persrm_rows(prompts, rows)
        answer_texts, answer_labels = self._answer_inputs(prompts, rows, config)
        all_texts, all_labels = answer_texts + texts, answer_labels + labels
        inputs = self._encode(self.tokenizer, all_texts, self.base_model, config.max_new_tokens, all_labels)
        model = self.rm_model if self.rm_shares_base else self.base_model
        plan = _Plan(model, self.tokenizer, inputs, len(prompts), rows, "pad", samples_itself=True)
        plan.follows = source_rows = torch.tensor(source, dtype=torch.long)
        if self.rm_shares_base:
            lora_rows = LoRARows(self.rm_model, slice(len(prompts), len(all_texts)), len(all_texts))
            inputs.update(lora_rows.forward_kwargs())
            plan.contexts.append(lora_rows)
            plan.adapters = True  # LoRARows' PEFT fallback needs the adapters on; its fast path sets them per row
        plan.pad_processor = self.fused_rule(combine, source_rows, weights, config)
        return plan

    def fused_rule(
        self, combine: torch.Tensor, source_rows: torch.Tensor, weights: float | torch.Tensor, config: PADConfig
    ) -> SelfGuidedPADLogitsProcessor:
        """The fused PAD rule with ``config``'s settings, for a batch of answer rows followed by the PersRM rows
        ``combine`` sums (the fused plan's, and each request's in continuous batching)."""
        return SelfGuidedPADLogitsProcessor(
            combine,
            source_rows,
            temperature=config.temperature,
            top_p=config.top_p,
            weight=weights,
            record=config.diagnostics,
            **self._rule_settings(config),  # rm-init fuses only for rm="self": its reference is the base
        )

    def _rule_settings(self, config: PADConfig) -> dict[str, Any]:
        """The PAD rule's settings from ``config``, one place for the processor beside a base decode and the
        fused one: the resolved reference and candidate set, top-k, the end tokens and the guards."""
        return dict(
            reference=self._resolve_reference(config.reference),
            top_k=config.top_k,
            candidates=config.candidates or self.default_candidates,
            eos_token_ids=eos_token_ids(self.base_model, self.tokenizer),
            min_p=config.min_p,
            reward_margin=self.reward_margin(config),
            fluency_budget=config.fluency_budget,
        )

    def _amulet_plan(self, prompts, rows, weights, config) -> _Plan:
        """Amulet: each answer row (the base with the preference in its prompt) beside its preference-free twin,
        one batch; :class:`AmuletLogitsProcessor` optimises the next-token distribution every step."""
        principles = [None if r is None else r.prompt_principle() for r in rows]
        texts = [render_input(self.tokenizer, p, pr) for p, pr in zip(prompts, principles, strict=True)]
        texts += [render_input(self.tokenizer, p) for p in prompts]
        labels = [f"prompt {i} with its preference" for i in range(len(prompts))]
        labels += [f"prompt {i}" for i in range(len(prompts))]
        inputs = self._encode(self.tokenizer, texts, self.base_model, config.max_new_tokens, labels)
        plan = _Plan(self.base_model, self.tokenizer, inputs, len(prompts), rows, "amulet", samples_itself=True)
        plan.follows, plan.base_only = torch.arange(len(prompts)), True
        plan.pad_processor = AmuletLogitsProcessor(
            len(prompts),
            config.amulet_iterations,
            config.amulet_alpha,
            config.amulet_lambda,
            config.amulet_eta,
            config.temperature,
            config.top_p,
        )
        return plan

    def _persona_judge_plan(self, prompts, rows, weights, config) -> _Plan:
        """Persona-judge: each answer row beside a twin under a second prompt, one batch. The judge is the base
        with the preference in its prompt and the draft the base without it; a two-dimension preference puts one
        dimension on each side and they trade roles every round (the paper's two-preference decoding)."""
        judges, drafts, swaps = [], [], []
        for pref in rows:
            pair = pref is not None and len(pref.dimensions) == 2
            if pair:
                judges.append(Preference(pref.dimensions[:1]).prompt_principle())
                drafts.append(Preference(pref.dimensions[1:]).prompt_principle())
            else:
                judges.append(None if pref is None else pref.prompt_principle())
                drafts.append(None)
            swaps.append(pair)
        texts = [
            render_input(self.tokenizer, p, pr)
            for side in (judges, drafts)
            for p, pr in zip(prompts, side, strict=True)
        ]
        labels = [f"prompt {i} with its preference" for i in range(len(prompts))]
        labels += [f"prompt {i} for the draft" for i in range(len(prompts))]
        inputs = self._encode(self.tokenizer, texts, self.base_model, config.max_new_tokens, labels)
        plan = _Plan(self.base_model, self.tokenizer, inputs, len(prompts), rows, "persona-judge")
        plan.samples_itself = plan.base_only = True
        plan.follows = torch.arange(len(prompts))
        plan.pad_processor = PersonaJudgeLogitsProcessor(
            len(prompts), config.judge_gamma, config.temperature, config.judge_top_k, config.top_p, torch.tensor(swaps)
        )
        return plan

    def _args_plan(self, prompts, rows, weights, config) -> _Plan:
        """ARGS: the base's top-k rescored by the sequence-level reward of prefix + candidate, every step."""
        inputs = self._encode_prompts(prompts, config.max_new_tokens)
        reference = self._resolve_reference(config.reference)

        def reward(row: int, sequences: list[list[int]]) -> torch.Tensor:
            total = torch.zeros(len(sequences), dtype=torch.float64)
            texts = [self.tokenizer.decode(s, skip_special_tokens=True) for s in sequences]
            for dim in rows[row].dimensions if rows[row] is not None else ():
                total += dim.weight * self.sequence_rewards(prompts[row], dim.principle, texts, reference, eos=False)
            return total

        plan = _Plan(self.base_model, self.tokenizer, inputs, len(prompts), rows, "args")
        plan.processors.append(ARGSLogitsProcessor(reward, inputs["input_ids"].shape[1], weights, config.top_k))
        return plan

    def _best_of_n_plan(self, prompts, rows, weights, config) -> _Plan:
        """``best_of`` base samples per prompt (temperature 1 unless set), then the one with the highest summed
        implicit reward of the PersRM."""
        n = config.best_of
        reference = self._resolve_reference(config.reference)
        repeated = [p for p in prompts for _ in range(n)]
        inputs = self._encode_prompts(repeated, config.max_new_tokens)
        plan = _Plan(self.base_model, self.tokenizer, inputs, len(repeated), [None] * len(repeated), "best-of-n")
        plan.temperature, plan.base_only = config.temperature or 1.0, True

        def select(samples: list[Generation]) -> list[Generation]:
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
                out.append(replace(best, preference=None if pref is None else str(pref)))
            return out

        plan.select = select
        return plan

    def _run(
        self,
        plan: _Plan,
        config: PADConfig,
        streamer: BaseStreamer | None,
        cancelled: Callable[[], Sequence[bool]] | None = None,
    ) -> list[Generation]:
        """The shared finish step: run ``model.generate`` on a plan, cut each answer at EOS or a stop string."""
        model, tokenizer, inputs = plan.model, plan.tokenizer, plan.inputs
        temperature = plan.temperature if plan.temperature is not None else config.temperature
        sample_in_generate = temperature > 0 and not plan.samples_itself
        processors = LogitsProcessorList(
            [BanTokensLogitsProcessor(eos_token_ids(model, tokenizer), plan.rows)] if config.ignore_eos else []
        )
        if config.no_repeat_ngram_size:
            processors.append(NoRepeatNGramRows(config.no_repeat_ngram_size, plan.rows))
        processors.extend(self.answer_guards(config, plan.rows))
        processors.extend(plan.processors)
        if plan.pad_processor is not None:
            processors.append(plan.pad_processor)
        if sample_in_generate:
            processors.append(TemperatureLogitsWarper(temperature))
            if config.top_p < 1:
                processors.append(TopPLogitsWarper(config.top_p))
        generation_config = GenerationConfig(
            max_new_tokens=config.max_new_tokens,
            do_sample=sample_in_generate,
            temperature=1.0,
            top_k=0 if sample_in_generate else None,
            top_p=1.0,
            eos_token_id=eos_token_ids(model, tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        stops = [] if config.ignore_eos else self.stops(plan.method, config.stop)
        if stops:
            generation_config.stop_strings = stops
        if config.seed is not None:
            torch.manual_seed(config.seed)
        n_rows = inputs["input_ids"].shape[0]
        stopping = []
        if cancelled is not None:
            follows = plan.follows if plan.follows is not None else torch.arange(plan.rows, n_rows)
            stopping.append(CancelledRows(cancelled, torch.cat([torch.arange(plan.rows), follows])))
        with torch.inference_mode(), ExitStack() as stack:
            stack.enter_context(AdapterSwitch(model, plan.adapters))
            if plan.base_only:
                model = stack.enter_context(BaseWeightsOnly(model))
            for context in plan.contexts:
                stack.enter_context(context)
            stack.enter_context(PackedGemm(model, n_rows, config.max_new_tokens))
            cache = reserved_cache(model.config, inputs["input_ids"].shape[1] + config.max_new_tokens)
            sequences = model.generate(
                **inputs,
                **({} if cache is None else {"cache": cache}),
                generation_config=generation_config,
                logits_processor=processors,
                stopping_criteria=stopping or None,
                streamer=None if streamer is None else _PromptRows(streamer, plan.rows),
                tokenizer=tokenizer,
            )
        new_tokens = sequences[: plan.rows, inputs["input_ids"].shape[1] :]
        eos = set(generation_config.eos_token_id)
        results = []
        halted = stopping[0].halted_at if stopping else {}
        for b, row in enumerate(new_tokens.tolist()):
            finish = None
            if b in halted:  # cancelled: what came after is padding, whatever its token
                row, finish = row[: halted[b] - inputs["input_ids"].shape[1]], "cancelled"
            stop_at = next((i for i, t in enumerate(row) if t in eos), None)
            ids = row if stop_at is None else row[:stop_at]
            text, cut = _cut_at_stop(tokenizer, ids, stops)
            if cut is not None:
                ids, stop_at = ids[:cut], None
            tokens = None
            if plan.pad_processor is not None and config.diagnostics:
                tokens = self._token_infos(plan.pad_processor.records, b, row[: len(ids) + (stop_at is not None)])
            pref = plan.preferences[b]
            stopped = (stop_at is not None or cut is not None) and not config.ignore_eos
            finish = "stop" if stopped else finish or "length"
            results.append(
                Generation(
                    text=text,
                    token_ids=ids,
                    finish_reason=finish,
                    method=plan.method,
                    preference=None if plan.method == "base" or pref is None else str(pref),
                    tokens=tokens,
                )
            )
        return results

    def sequence_rewards(
        self,
        prompt: Prompt,
        principle: str,
        responses: Sequence[str],
        reference: Reference = "base",
        eos: bool = True,
    ) -> torch.Tensor:
        """The PersRM's summed implicit reward of whole responses: ``log pi_rm(y|x,p) - log pi_ref(y|...)``.

        ``eos=False`` scores unfinished responses (prefixes) without the closing EOS token. The reference
        follows the same rule as in decoding (``rm-init`` needs a LoRA PersRM; for ``rm="self"`` it is the base).
        """
        reference = self._resolve_reference(reference)
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
            rm_adapters=self._persrm_adapters(),
        ).total

    def _token_infos(self, records: list[StepRecord], row: int, chosen: list[int]) -> list[TokenInfo]:
        infos = []
        texts = token_texts(self.tokenizer, chosen)
        for step, token, text in zip(records, chosen, texts, strict=False):
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
                    text=text,
                    base_logprob=me.base_logprob if me else float("nan"),
                    reward=me.reward if me else float("nan"),
                    score=me.score if me else float("nan"),
                    alternatives=ranked,
                )
            )
        return infos


def row_label(index: int, preference_text: str | None = None) -> str:
    """How an error names a row of the batch: ``prompt 3``, or ``prompt 3 with its preference 'concise'`` for a
    row whose model reads the preference (long texts shortened)."""
    if preference_text is None:
        return f"prompt {index}"
    shown = preference_text if len(preference_text) <= 40 else preference_text[:37] + "..."
    return f"prompt {index} with its preference {shown!r}"


def base_principle(config: PADConfig, preference: Preference | None, prompted_base: bool) -> str | None:
    """The preference text an answer row's model reads in its prompt: with method ``prompt`` and ``policy``, and
    with PAD when ``prompted_base`` (:meth:`PAD.prompts_base`); ``None`` for the plain base and the paper's PAD
    (the base reads the prompt alone and the PersRM alone reads the preference)."""
    if preference is None:
        return None
    if config.method in ("prompt", "policy") or (prompted_base and config.reads("prompted_base")):
        return preference.prompt_principle()
    return None


DECODE_MODES: dict[str, Callable[..., _Plan]] = {
    "plain": PAD._plain_plan,
    "pad": PAD._pad_plan,
    "cross-tokenizer-pad": PAD._pad_plan,
    "fused-pad": PAD._fused_plan,
    "args": PAD._args_plan,
    "amulet": PAD._amulet_plan,
    "persona-judge": PAD._persona_judge_plan,
    "best-of-n": PAD._best_of_n_plan,
}
"""Decode mode -> the builder of its :class:`_Plan` (see :meth:`PAD.decode_mode`); every plan then runs through
the one finish step. ``cross-tokenizer-pad`` shares ``pad``'s builder, whose processor scores text instead of
token ids."""


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


def token_texts(tokenizer: PreTrainedTokenizerBase, ids: list[int], context: int = 4) -> list[str]:
    """The text each token adds to the answer, so that the pieces join to the decoded answer: a token that ends
    inside a character (a byte piece of "ڱ" or an emoji) adds nothing, the token that completes it adds it whole.
    Decoding each token alone would show every byte piece as U+FFFD.

    Each step decodes a short window, the tokens since the last complete character and ``context`` before them
    (a tokenizer may drop a space at the start of what it decodes, the same in both decodes), so an answer of n
    tokens costs O(n) token decodes rather than decoding each of its n prefixes."""
    texts, start, done = [], 0, ""
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[start:k], skip_special_tokens=True)
        if text.endswith("\ufffd") and k < len(ids):
            texts.append("")
            continue
        texts.append(text[len(done) :])
        start = max(start, k - context)
        done = tokenizer.decode(ids[start:k], skip_special_tokens=True)
    return texts


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


def _weights(weight: float | tuple[float, ...], n: int) -> torch.Tensor:
    """The alignment strength of each of ``n`` prompts (the config has checked every value)."""
    values = list(weight) if isinstance(weight, tuple) else [weight] * n
    if len(values) != n:
        raise ConfigError("weight", f"got {len(values)} weights for {n} prompts")
    return torch.tensor(values, dtype=torch.float32)


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends an answer: the generation config's EOS ids and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
