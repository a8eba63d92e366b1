"""Every decoding setting in one place: :class:`PADConfig`, its defaults, help texts and one ``validate()``.

The Python API, the CLI, the server, the request batcher, Ray jobs and the evaluation harness all build a
``PADConfig``; none of them re-declares a setting's meaning or range, so a value one entry point accepts is
accepted by all of them and a bad one gets the same message everywhere (the server answers it with a 400
naming the field).

Example:

```python
>>> from padkit import PAD, PADConfig
>>> config = PADConfig(weight=2.0, max_new_tokens=64, temperature=0.7, seed=1)
>>> pad = PAD.from_pretrained()
>>> pad.generate(["Tell me about cats."], "concise", config=config, top_k=20)   # keyword overrides
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any, Literal

from padkit.errors import GenerationError
from padkit.preferences.preference import MAX_WEIGHT
from padkit.settings import setting

Method = Literal["pad", "base", "prompt", "policy", "best-of-n", "args", "amulet", "persona-judge"]
METHODS: tuple[str, ...] = ("pad", "base", "prompt", "policy", "best-of-n", "args", "amulet", "persona-judge")
METHOD_SETTINGS: dict[str, frozenset[str]] = {
    "pad": frozenset(
        {
            "top_k",
            "reference",
            "candidates",
            "min_p",
            "reward_margin",
            "fluency_budget",
            "loop_guard",
            "ngram_guard",
            "colon_guard",
            "prompted_base",
        }
    ),
    "args": frozenset({"top_k", "reference"}),
    "best-of-n": frozenset({"best_of", "reference"}),
    "amulet": frozenset({"amulet_iterations", "amulet_alpha", "amulet_lambda", "amulet_eta"}),
    "persona-judge": frozenset({"judge_gamma", "judge_top_k"}),
}
"""Settings only some methods read: every other method decodes alike whatever their values."""
RM_METHODS = frozenset({"pad", "args", "best-of-n", "policy"})
"""Methods that read the PersRM (as a reward, or as the model for ``policy``); the others (base, prompt, amulet,
persona-judge) decode with the base alone, so their answers do not change with the PersRM."""
Reference = Literal["base", "rm-init", "none"]
REFERENCES: tuple[str, ...] = ("base", "rm-init", "none")
Candidates = Literal["topk", "topk+eos", "topk+rm"]
CANDIDATES: tuple[str, ...] = ("topk", "topk+eos", "topk+rm")
DEFAULT_WEIGHT = 0.55
"""The alignment strength w a request gets when it names none (API, CLI, server, eval): at the shipped PersRM's
reward margin (3 nats, in its ``padkit.json``), the largest swept weight whose median base-model perplexity stays
within 1.5x the base's on the 50 koala prompts (docs/results.md, "Session 69": v48 at 0.5 1.46x, at 0.55 1.49x,
at 0.6 1.57x; v38, shipped before it, was at 0.6 with 1.40x, "Session 56")."""
PAPER_PAD: dict[str, Any] = {
    "prompted_base": False,
    "loop_guard": 0,
    "ngram_guard": 0,
    "colon_guard": False,
    "reward_margin": 0.0,
}
"""The settings under which method ``pad`` is the paper's PAD: the base reads the prompt alone and nothing guards
loops. padkit's defaults differ with a trained PersRM (the prompted base moves form preferences further;
the guard stops the loops a prompted base starts: docs/results.md, "Session 27"; the margin keeps small rewards
from swapping words: "Session 48"); ``PADConfig(**PAPER_PAD)`` decodes as the paper (the colon guard is padkit's
too)."""
MAX_TOP_K = 1000
MAX_REWARD_MARGIN = 100.0
MAX_FLUENCY_BUDGET = 100.0
FLUENCY_BUDGET_AHEAD = 16
"""Tokens' worth of fluency budget an answer may spend before it has written them: a form (a bullet, a greeting)
is chosen on the first tokens, where a budget of so much per token written would allow no swap at all."""
MAX_TEMPERATURE = 2.0


class ConfigError(GenerationError):
    """A decoding setting has a value outside what it allows; ``field`` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _stops(values: list[str]) -> tuple[str, ...] | None:
    return tuple(values) or None


@dataclass(frozen=True)
class PADConfig:
    """How to decode: the method and every setting it reads, validated once on construction.

    Frozen, so a validated config stays valid; derive another with :meth:`replace` (which validates again).
    """

    method: str = setting(
        "pad",
        "pad (guided decoding), base (no preference), prompt (the preference in the base's prompt), policy "
        "(decode from the PersRM itself), best-of-n (base samples reranked by the PersRM), args (ARGS-style "
        "sequence-level rescoring; slow), amulet (training-free: each step a small online optimisation "
        "between the base with and without the preference; Zhang et al., ICLR 2025) or persona-judge "
        "(training-free: the base without the preference drafts tokens, the base with it accepts or rejects "
        "them as in speculative sampling; ACL Findings 2025).",
    )
    weight: float | tuple[float, ...] = setting(
        DEFAULT_WEIGHT,
        f"Alignment strength w, in [-{MAX_WEIGHT:g}, {MAX_WEIGHT:g}] (one value, or one per prompt).",
        flags=("--weight", "-w"),
        cli=(float, float),
        cli_default=DEFAULT_WEIGHT,
    )
    top_k: int = setting(10, f"Base top-k candidates rescored by PAD (1 to {MAX_TOP_K}).")
    reference: str = setting(
        "base", "Reward reference: base (the base model), rm-init (the PersRM's LoRA off) or none."
    )
    candidates: str | None = setting(
        None,
        "Candidate set: topk, topk+eos or topk+rm. Default topk+rm with a trained PersRM, topk+eos with "
        "rm='self', topk when the PersRM's tokenizer differs from the base's.",
    )
    min_p: float = setting(
        0.0,
        "Fluency guard of PAD: a candidate needs at least this fraction of the base's top-token probability "
        "(EOS always stays); 0 is off, as in the paper.",
    )
    reward_margin: float | None = setting(
        None,
        "PAD's reward margin: a candidate displaces the base's first choice only when its reward beats that "
        "choice's by more than this many nats; a smaller gain counts as none, so small token-to-token preferences "
        "stop swapping content words while the large gains of a form (a bullet, a greeting) stay. 0 is off (the "
        f"paper's PAD), at most {MAX_REWARD_MARGIN:g}. Default: the margin the PersRM's padkit.json records "
        "(3 for the shipped persrm-smollm2), else 0; 0 across tokenizers.",
    )
    fluency_budget: float = setting(
        0.0,
        "PAD's fluency budget, in nats per answer token: a candidate may cost the base's log-prob of its first "
        "choice minus its own only while the answer's summed cost stays within this much per token so far (plus "
        f"{FLUENCY_BUDGET_AHEAD} tokens' worth ahead, so a form can start on the first token); past it the base's "
        "first choice is taken. The cost is priced under the base as decoded (with the preference in its prompt, "
        "by default), so the plain base that `padkit eval` scores sees more: B=0.3 gave 1.55x its perplexity at "
        f"w=0.8 (docs/results.md, Session 67). 0 is off (the paper's PAD), at most {MAX_FLUENCY_BUDGET:g}; EOS "
        "always stays.",
    )
    no_repeat_ngram_size: int = setting(
        0,
        "Loop guard: an answer never repeats an n-gram of this many tokens (transformers' "
        "no_repeat_ngram_size, on the answer rows only); 0 is off.",
    )
    loop_guard: int = setting(
        4,
        "PAD's loop guard: an answer never repeats a unit of tokens back to back (a run of one emoji, "
        "'SARCO-SARCO-...', a sentence said twice in a row; 'In' and ' In' count as one token) over more than this "
        "many tokens, and never copies more than twice this many tokens of the text one unit back; 0 is off (the "
        "paper's PAD), else 2 to 1000.",
    )
    ngram_guard: int = setting(
        8,
        "PAD's n-gram guard: an answer never says again an n-gram of this many tokens it has said already (a list "
        "item repeated two items later; the prompt does not count, and unlike --no-repeat-ngram-size only PAD's "
        "answers are guarded); 0 is off (the paper's PAD), else 2 to 64.",
    )
    colon_guard: bool = setting(
        True,
        "PAD's colon guard: an answer never ends right after a colon (a title that announces an answer and never "
        "gives it, 'Get better at cooking:'); off is the paper's PAD.",
        flags=("--colon-guard/--no-colon-guard",),
    )
    prompted_base: bool | None = setting(
        None,
        "PAD: the base model reads the preference in its prompt too (prompting and PAD together), so that forms "
        "a plain base never starts (a heading, 'In short:') reach its top-k; off is the paper's PAD, whose base "
        "reads the prompt alone. Default: on with a trained PersRM, off with rm='self' (there the PersRM is the "
        "prompted base, so its reward would be zero).",
        flags=("--prompted-base/--no-prompted-base",),
    )
    max_new_tokens: int = setting(
        128, "Most tokens to generate per answer (at least 1).", flags=("--max-new-tokens", "-n")
    )
    temperature: float = setting(0.0, f"Sampling temperature in [0, {MAX_TEMPERATURE:g}]; 0 means greedy.")
    top_p: float = setting(1.0, "Nucleus sampling mass in (0, 1].")
    seed: int | None = setting(None, "Random seed for sampling: the same seed gives the same text everywhere.")
    stop: tuple[str, ...] | None = setting(
        None,
        "End the answer before this text (repeatable). Default: none, or '\\nQuestion:' for a base model "
        "without chat template.",
        cli=(list[str] | None, _stops),
    )
    ignore_eos: bool = setting(False, "Never stop at EOS: always max_new_tokens tokens.")
    diagnostics: bool = setting(False, "Record each token's base log-prob, reward and alternatives (method pad).")
    fused: bool | None = setting(
        None,
        "One forward per step for base and PersRM rows; needs rm='self' or a LoRA PersRM on the base. "
        "Default: wherever possible.",
        flags=("--fused/--no-fused",),
    )
    best_of: int = setting(4, "Samples per prompt for method best-of-n (at least 1).")
    amulet_iterations: int = setting(60, "Amulet: optimisation rounds per token (the paper's code: 60).")
    amulet_alpha: float = setting(2.0, "Amulet: reward scale alpha of log p(a|x,pref) - log p(a|x) (paper: 2).")
    amulet_lambda: float = setting(
        2.0, "Amulet: weight lambda that keeps the answer near the preference-prompted model (paper: 2)."
    )
    amulet_eta: float = setting(
        10.0, "Amulet: learning rate eta of the follow-the-regularized-leader rounds (paper: 10)."
    )

    judge_gamma: int = setting(
        4, "Persona-judge: draft tokens per round before the judge's own token (the paper's code: 4)."
    )
    judge_top_k: int = setting(
        20,
        "Persona-judge: top-k filter of the draft and judge distributions (the paper's code: 20; it samples "
        "at temperature 0.9, top-p 0.9).",
    )

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif self.stop is not None:
            object.__setattr__(self, "stop", tuple(self.stop))
        if isinstance(self.weight, Sequence) and not isinstance(self.weight, str):
            object.__setattr__(self, "weight", tuple(self.weight))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting whose value is not allowed."""
        _choice("method", self.method, METHODS)
        _choice("reference", self.reference, REFERENCES)
        if self.candidates is not None:
            _choice("candidates", self.candidates, CANDIDATES)
        for w in self.weight if isinstance(self.weight, tuple) else (self.weight,):
            _number("weight", w, -MAX_WEIGHT, MAX_WEIGHT)
        _integer("top_k", self.top_k, 1, MAX_TOP_K)
        _number("min_p", self.min_p, 0.0, 1.0)
        if self.reward_margin is not None:
            _number("reward_margin", self.reward_margin, 0.0, MAX_REWARD_MARGIN)
        _number("fluency_budget", self.fluency_budget, 0.0, MAX_FLUENCY_BUDGET)
        _integer("no_repeat_ngram_size", self.no_repeat_ngram_size, 0, 64)
        _integer("loop_guard", self.loop_guard, 0, 1000)
        if self.loop_guard == 1:
            raise ConfigError("loop_guard", "loop_guard must be 0 (off) or a run length from 2 to 1000, got 1")
        _integer("ngram_guard", self.ngram_guard, 0, 64)
        if self.ngram_guard == 1:
            raise ConfigError("ngram_guard", "ngram_guard must be 0 (off) or an n-gram length from 2 to 64, got 1")
        _integer("max_new_tokens", self.max_new_tokens, 1, None)
        _integer("best_of", self.best_of, 1, None)
        _integer("amulet_iterations", self.amulet_iterations, 1, 1000)
        _number("amulet_alpha", self.amulet_alpha, -MAX_WEIGHT, MAX_WEIGHT)
        _number("amulet_lambda", self.amulet_lambda, 0.0, 1e6)
        _number("amulet_eta", self.amulet_eta, 1e-6, 1e6)
        _integer("judge_gamma", self.judge_gamma, 1, 64)
        _integer("judge_top_k", self.judge_top_k, 1, MAX_TOP_K)
        _number("temperature", self.temperature, 0.0, MAX_TEMPERATURE)
        _number("top_p", self.top_p, 0.0, 1.0)
        if self.top_p == 0:
            raise ConfigError("top_p", "top_p must be in (0, 1], got 0")
        if self.seed is not None:
            _integer("seed", self.seed, 0, 2**63 - 1)
        if self.stop is not None and not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError("stop", f"stop strings must be non-empty text, got {list(self.stop)!r}")
        for name in ("ignore_eos", "diagnostics"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("fused", "prompted_base"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"{name} must be true, false or unset, got {getattr(self, name)!r}")
        if self.diagnostics and self.method != "pad":
            raise ConfigError("diagnostics", f"diagnostics are for method 'pad', not {self.method!r}")

    def replace(self, **overrides: Any) -> PADConfig:
        """A copy with ``overrides`` applied and validated; an unknown name is an error that names it."""
        unknown = sorted(set(overrides) - set(FIELDS))
        if unknown:
            raise ConfigError(unknown[0], f"unknown decoding setting {unknown[0]!r}; known: {', '.join(FIELDS)}")
        return replace(self, **overrides)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PADConfig:
        """Build from a mapping such as a request body or saved settings (unknown keys are an error)."""
        return cls().replace(**values)

    def reads(self, name: str) -> bool:
        """Whether this config's method reads setting ``name``: every method reads the settings
        :data:`METHOD_SETTINGS` does not list; a listed one only its methods (``loop_guard``: PAD)."""
        listed = any(name in names for names in METHOD_SETTINGS.values())
        return not listed or name in METHOD_SETTINGS.get(self.method, frozenset())

    @property
    def reads_rm(self) -> bool:
        """Whether this config's method reads the PersRM (:data:`RM_METHODS`)."""
        return self.method in RM_METHODS

    def decisive(self) -> PADConfig:
        """This config with the settings its method does not read (:data:`METHOD_SETTINGS`) at their defaults:
        two configs that decode alike compare equal, so a resumed run is not refused over, say, an
        ``amulet_alpha`` that its PAD rows never read."""
        unread = [name for name in FIELDS if not self.reads(name)]
        return replace(self, **{name: FIELDS[name].default for name in unread})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples as lists); ``from_dict`` reads them back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @staticmethod
    def help(name: str) -> str:
        """The help text of setting ``name``, for CLI options and API docs."""
        return FIELDS[name].metadata["help"]

    @staticmethod
    def default(name: str) -> Any:
        """The default value of setting ``name``."""
        f = FIELDS[name]
        return f.default if f.default is not MISSING else f.default_factory()


FIELDS = {f.name: f for f in fields(PADConfig)}
BEFORE_ADDED: dict[str, Any] = {"ngram_guard": 0}
"""How a method that reads one of these settings decoded before the setting existed, for the settings whose
default is not that: a resumed run reads a record that lacks one as decoded with this value, not the default."""


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"unknown {name} {value!r}; use one of {', '.join(allowed)}")


def _number(name: str, value: Any, low: float, high: float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise ConfigError(name, f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")


def _integer(name: str, value: Any, low: int, high: int | None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(name, f"{name} must be an integer {bound}, got {value!r}")
