"""Speed benchmark: plain ``generate`` vs padkit PAD vs a re-implementation of the official PAD loop."""

from __future__ import annotations

import copy
import os
import re
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor

from padkit.decoding import PAD, PAPER_PAD
from padkit.errors import PadkitError
from padkit.models.packed_gemm import (
    PACK_MIN_ROWS,
    PACK_MIN_STEPS,
    TUNER,
    cpu_info,
    cpu_model,
    mkl_packing_available,
    packing_policy,
)
from padkit.models.row_lora import AdapterSwitch
from padkit.preferences import Preference, render_input

BENCH_PROMPTS = [
    "How can I get better at cooking?",
    "Explain why the sky is blue.",
    "Write a short note to a friend who just moved to a new city.",
    "What are the pros and cons of working from home?",
    "Give me three ideas for a rainy weekend.",
    "How does a bicycle stay upright?",
    "What should I know before adopting a cat?",
    "Summarize the plot of a heist movie you would like to see.",
]


SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
"""CPU flags that decide which kernels MKL and oneDNN use for float32 and bfloat16 GEMMs."""


def machine_info() -> dict[str, Any]:
    """The machine a benchmark ran on, so figures from two machines can be told apart: CPU model, cores, the
    speed-relevant CPU flags, torch/MKL/oneDNN versions, threads, and the kernel choices padkit makes there
    (under ``auto``, each row count measured so far: plain and packed milliseconds per pass, packed or not)."""
    flags = set(cpu_info().get("flags", "").split())
    build = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", build)
    onednn = re.search(r"MKL-DNN v([\d.]+)", build)
    policy = packing_policy()
    tuned = {
        shapes: {rows: {**asdict(t), "packed": t.pays} for rows, t in sorted(by_rows.items())}
        for shapes, by_rows in TUNER.this_machine().items()
    }
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "mkl": mkl.group(1) if mkl else None,
        "onednn": onednn.group(1) if onednn else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
        "kernels": {
            "mkl_packed_gemm": mkl_packing_available(),
            "packing_policy": policy,
            "packed_gemm_from_rows": PACK_MIN_ROWS if policy == "fixed" else None,
            "packed_gemm_from_steps": PACK_MIN_STEPS,
            "packing_measured": tuned if policy == "auto" else {},
        },
    }


def _packing_summary(kernels: dict[str, Any]) -> str:
    if not kernels["mkl_packed_gemm"] or kernels["packing_policy"] == "off":
        return "GEMM packing off"
    if kernels["packing_policy"] == "fixed":
        return f"GEMM packed from {kernels['packed_gemm_from_rows']} rows (fixed)"
    measured = [(int(r), t["packed"]) for by_rows in kernels["packing_measured"].values() for r, t in by_rows.items()]
    packed = ",".join(str(r) for r in sorted({r for r, p in measured if p})) or "none"
    tried = ",".join(str(r) for r in sorted({r for r, _ in measured})) or "none yet"
    return f"GEMM packing measured: packed at rows {packed} of {tried}"


def machine_line(info: dict[str, Any]) -> str:
    """One line naming the machine, for a benchmark table's title."""
    flags = ",".join(info["cpu_flags"]) or "none"
    gpu = f"GPU {info['gpu']} (CUDA {info['cuda']}); " if info.get("gpu") else ""
    return (
        f"{gpu}{info['cpu']} ({info['logical_cores']} cores, {info['torch_threads']} threads, flags {flags}); "
        f"torch {info['torch']}, MKL {info['mkl']}, oneDNN {info['onednn']}; {_packing_summary(info['kernels'])}"
    )


@dataclass
class SpeedReport:
    """Tokens per second of each decoder, and the ratios the targets are stated in."""

    plain_tps: float
    pad_tps: float
    official_tps: float | None
    plain_batch8_tps: float
    pad_batch8_tps: float
    pad_vs_plain: float
    pad_vs_official: float | None
    pad_batch8_vs_batch1: float
    new_tokens: int
    batch_size: int
    peak_rss_mb: float
    repeats: int = 1
    cross_tokenizer: bool = False
    text_path_tps: float | None = None
    text_path_vs_token_path: float | None = None
    bf16_prefix_agreement: float | None = None
    bf16_token_agreement: float | None = None
    base: str = ""
    rm: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    methods: dict[str, dict[str, float]] = field(default_factory=dict)
    """Each other method timed (``methods=``): tok/s at batch 1 and at ``batch_size``, and each over plain's."""
    machine: dict[str, Any] = field(default_factory=machine_info)

    def as_dict(self) -> dict:
        return asdict(self)


def official_pad_loop(pad: PAD, prompt: str, preference: str, weight: float, top_k: int, new_tokens: int) -> list[int]:
    """The official PAD code's loop: batch 1, no KV cache (both models re-read the whole prefix every token),
    the base's top-k rescored by ``log pi_base + w * (log pi_rm - log pi_base)``; EOS is ignored."""
    principle = Preference.parse(preference).dimensions[0].principle
    base_ids = pad.tokenizer(render_input(pad.tokenizer, prompt), return_tensors="pt", add_special_tokens=False)
    rm_ids = pad.rm_tokenizer(
        render_input(pad.rm_tokenizer, prompt, principle), return_tensors="pt", add_special_tokens=False
    )
    base_seq, rm_seq = base_ids["input_ids"], rm_ids["input_ids"]
    out: list[int] = []
    as_base, as_rm = AdapterSwitch(pad.base_model, False), AdapterSwitch(pad.rm_model, not pad.rm_is_self)
    with torch.inference_mode():
        for _ in range(new_tokens):
            with as_base:
                base_logp = torch.log_softmax(pad.base_model(base_seq).logits[0, -1].float(), dim=-1)
            with as_rm:
                rm_logp = torch.log_softmax(pad.rm_model(rm_seq).logits[0, -1].float(), dim=-1)
            cand = base_logp.topk(top_k).indices
            score = base_logp[cand] + weight * (rm_logp[cand] - base_logp[cand])
            token = cand[score.argmax()].view(1, 1)
            base_seq = torch.cat([base_seq, token], dim=1)
            rm_seq = torch.cat([rm_seq, token], dim=1)
            out.append(int(token))
    return out


def _timed_rounds(
    decoders: dict[str, Callable[[int], int]], new_tokens: int, repeats: int, log: Callable[[str], None]
) -> dict[str, float]:
    """Tokens/s of each ``decoders[name](new_tokens)``: the fastest of ``repeats`` rounds after a short untimed
    warm-up, where each round times every decoder once in turn. Interleaving spreads a slow spell of a shared
    machine over all decoders instead of whichever one it overlapped, and the least disturbed run is the best
    estimate of a decoder's own speed (as ``timeit`` reports)."""
    for fn in decoders.values():
        fn(min(4, new_tokens))
    best = dict.fromkeys(decoders, 0.0)
    for round_ in range(1, repeats + 1):
        for name, fn in decoders.items():
            log(f"{name} (round {round_}/{repeats})")
            start = time.perf_counter()
            tokens = fn(new_tokens)
            best[name] = max(best[name], tokens / (time.perf_counter() - start))
    return best


def run_speed_benchmark(
    pad: PAD,
    preference: str = "humorous",
    weight: float = 2.0,
    top_k: int = 10,
    new_tokens: int = 128,
    batch_size: int = 8,
    official_prompts: int = 1,
    check_bf16: bool = False,
    text_path: bool = False,
    repeats: int = 3,
    methods: tuple[str, ...] = (),
    log: Callable[[str], None] = lambda _: None,
) -> SpeedReport:
    """Time each decoder on the same prompts, greedy, EOS ignored so every run makes ``new_tokens`` tokens.

    "PAD" here is the paper's (:data:`PAPER_PAD`), the algorithm the official-style loop runs, so the two compare
    implementations; ``methods=("pad",)`` times padkit's default PAD (prompted base, loop guard) beside it.

    Across tokenizers (``pad.cross_tokenizer``) there is no official-style loop to time: the official code
    needs a shared vocabulary. ``text_path`` also times the cross-tokenizer (text-scored) path on these same,
    shared-tokenizer models, which isolates what scoring text instead of token ids costs. Each decoder gets a
    short untimed warm-up, then the fastest of ``repeats`` interleaved rounds counts. ``methods`` adds other
    methods of ``padkit eval`` (``prompt``, ``amulet``, ``persona-judge``, ``pad-self``, ...), each with the
    settings the harness runs it with, timed at batch 1 and at ``batch_size`` in the same rounds.
    """
    from padkit.evaluation.harness import METHODS

    unknown = [m for m in methods if m not in METHODS and m != "pad-self"]
    if unknown:
        raise PadkitError(f"unknown method(s) {', '.join(unknown)}; use {', '.join([*METHODS, 'pad-self'])}")
    prompts = (BENCH_PROMPTS * (batch_size // len(BENCH_PROMPTS) + 1))[:batch_size]

    def plain(rows: list[str]) -> Callable[[int], int]:
        def run(n: int) -> int:
            return sum(len(g.token_ids) for g in pad.generate(rows, method="base", max_new_tokens=n, ignore_eos=True))

        return run

    def guided(rows: list[str], decoder: PAD = pad) -> Callable[[int], int]:
        def run(n: int) -> int:
            gens = decoder.generate(
                rows, preference, weight=weight, top_k=top_k, max_new_tokens=n, ignore_eos=True, **PAPER_PAD
            )
            return sum(len(g.token_ids) for g in gens)

        return run

    def other(name: str, rows: list[str]) -> Callable[[int], int]:
        decoder = PAD(pad.base_model, pad.tokenizer) if name == "pad-self" else pad
        settings = dict(METHODS["pad"] if name == "pad-self" else METHODS[name])
        if settings["method"] in ("pad", "args"):
            settings.update(weight=weight, top_k=top_k)

        def run(n: int) -> int:
            gens = decoder.generate(rows, preference, max_new_tokens=n, ignore_eos=True, **settings)
            return sum(len(g.token_ids) for g in gens)

        return run

    def official(n: int) -> int:
        return sum(len(official_pad_loop(pad, p, preference, weight, top_k, n)) for p in prompts[:official_prompts])

    plain1, pad1, official1, text1 = (
        "plain generate, batch 1",
        "PAD, batch 1",
        "official-style loop, batch 1",
        "PAD scoring text (the cross-tokenizer path), batch 1",
    )
    plain_n, pad_n = f"plain generate, batch {batch_size}", f"PAD, batch {batch_size}"
    decoders = {plain1: plain(prompts[:1]), pad1: guided(prompts[:1])}
    if not pad.cross_tokenizer:
        decoders[official1] = official
    if text_path and not pad.cross_tokenizer:
        rm = None if pad.rm_is_self else pad.rm_model
        text_pad = PAD(pad.base_model, pad.tokenizer, rm, pad.rm_tokenizer, rm_name=pad.rm_name, cross_tokenizer=True)
        decoders[text1] = guided(prompts[:1], text_pad)
    decoders[plain_n], decoders[pad_n] = plain(prompts), guided(prompts)
    for name in methods:
        decoders[f"{name}, batch 1"] = other(name, prompts[:1])
        decoders[f"{name}, batch {batch_size}"] = other(name, prompts)
    tps = _timed_rounds(decoders, new_tokens, repeats, log)
    timed = {}
    for name in methods:
        one, many = tps[f"{name}, batch 1"], tps[f"{name}, batch {batch_size}"]
        timed[name] = {
            "tps_batch1": one,
            "tps_batch": many,
            "vs_plain_batch1": one / tps[plain1],
            "vs_plain_batch": many / tps[plain_n],
        }
    plain_tps, pad_tps, plain8, pad8 = tps[plain1], tps[pad1], tps[plain_n], tps[pad_n]
    official_tps, text_tps = tps.get(official1), tps.get(text1)
    agreement = (None, None)
    if check_bf16:
        log("bf16 vs float32 outputs")
        agreement = bf16_agreement(pad, prompts, preference, weight, top_k, new_tokens)
    return SpeedReport(
        plain_tps=plain_tps,
        pad_tps=pad_tps,
        official_tps=official_tps,
        plain_batch8_tps=plain8,
        pad_batch8_tps=pad8,
        pad_vs_plain=pad_tps / plain_tps,
        pad_vs_official=None if official_tps is None else pad_tps / official_tps,
        pad_batch8_vs_batch1=pad8 / pad_tps,
        new_tokens=new_tokens,
        batch_size=batch_size,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        repeats=repeats,
        cross_tokenizer=pad.cross_tokenizer,
        text_path_tps=text_tps,
        text_path_vs_token_path=None if text_tps is None else text_tps / pad_tps,
        bf16_prefix_agreement=agreement[0],
        bf16_token_agreement=agreement[1],
        base=pad.base_name,
        rm=pad.rm_name,
        device=str(pad.base_model.device),
        dtype=str(pad.base_model.dtype).removeprefix("torch."),
        methods=timed,
    )


class _ForceTokens(LogitsProcessor):
    """Forces ``tokens[:, step]`` at each step and records what the processors before it would have chosen."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens
        self.choices: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.choices.append(scores.argmax(dim=-1))
        forced = self.tokens[:, len(self.choices) - 1 : len(self.choices)].to(scores.device)
        return torch.full_like(scores, float("-inf")).scatter_(1, forced, 0.0)


def forced_choices(
    pad: PAD, prompts: list[str], preference: str, tokens: torch.Tensor, weight: float, top_k: int
) -> torch.Tensor:
    """PAD's greedy choice at every step of the given continuations (teacher forcing): ``(batch, steps)``."""
    steps = tokens.shape[1]
    inputs, processor = pad.logits_processor(
        prompts, preference, weight=weight, top_k=top_k, max_new_tokens=steps, prompted_base=PAPER_PAD["prompted_base"]
    )
    force = _ForceTokens(tokens)
    config = GenerationConfig(
        max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=pad.tokenizer.pad_token_id
    )
    with torch.inference_mode():
        pad.base_model.generate(**inputs, generation_config=config, logits_processor=[processor, force])
    return torch.stack(force.choices, dim=1).cpu()


def bf16_agreement(
    pad: PAD, prompts: list[str], preference: str, weight: float, top_k: int, new_tokens: int
) -> tuple[float, float]:
    """How closely a bf16 copy follows float32 greedy PAD: the mean share of tokens it reproduces before its
    first divergence (free running, where one flip changes all that follows), and the share of steps where it
    picks float32's token given float32's prefix (teacher forcing: each decision judged alone)."""
    kwargs = dict(weight=weight, top_k=top_k, max_new_tokens=new_tokens, ignore_eos=True, **PAPER_PAD)
    full = pad.generate(prompts, preference, **kwargs)
    half_base = copy.deepcopy(pad.base_model).to(torch.bfloat16)
    half_rm = None
    if not pad.rm_is_self:  # one copy stays one copy: a LoRA PersRM on the base's own weights
        half_rm = half_base if pad.rm_model is pad.base_model else copy.deepcopy(pad.rm_model).to(torch.bfloat16)
    half = PAD(half_base, pad.tokenizer, half_rm, None if pad.rm_is_self else pad.rm_tokenizer)
    shares = []
    for a, b in zip(full, half.generate(prompts, preference, **kwargs), strict=True):
        same = next(
            (i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False)) if x != y), len(a.token_ids)
        )
        shares.append(same / max(len(a.token_ids), 1))
    tokens = torch.tensor([g.token_ids for g in full])
    chosen = forced_choices(half, prompts, preference, tokens, weight, top_k)
    return sum(shares) / len(shares), (chosen == tokens).float().mean().item()
