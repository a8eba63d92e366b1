"""``padkit``: personalized generation from the command line. Every command calls the Python API."""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from padkit.decoding.pad import DEFAULT_WEIGHT
from padkit.errors import PadkitError
from padkit.evaluation.judges import JUDGES

app = typer.Typer(
    help="padkit: Personalized Alignment at Decoding-time. Steer a frozen LLM towards each user's preference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

BaseOpt = Annotated[str, typer.Option("--base", help="Base model: alias, local directory, .gguf file or Hub id.")]
RmOpt = Annotated[
    str | None,
    typer.Option(
        "--rm",
        help="PersRM: 'persrm-smollm2' (shipped; the default with the built-in bases, scoring text when the "
        "tokenizer differs), 'self' (the base conditioned on the preference; the default with your own models), "
        "a model dir or a LoRA adapter dir.",
    ),
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or bfloat16.")]
RayOpt = Annotated[bool, typer.Option("--ray", help="Spread generation over Ray actors (pip install 'padkit\\[ray]').")]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Join a running Ray cluster (e.g. 'auto' or HOST:6379); default: start one."),
]
NumWorkersOpt = Annotated[int, typer.Option("--num-workers", help="Ray actors, each with its own model copy.")]
CpusOpt = Annotated[float, typer.Option("--cpus-per-worker", help="CPUs per Ray actor (its torch threads).")]
GpusOpt = Annotated[float, typer.Option("--gpus-per-worker", help="GPUs Ray reserves per actor.")]


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(2)


@app.command()
def dimensions(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the built-in preference dimensions (free text works too)."""
    from padkit.preferences import CATALOG

    if as_json:
        typer.echo(json.dumps({k: asdict(v) for k, v in CATALOG.items()}, indent=2))
        return
    table = Table("name", "opposite", "trained", "description", "principle given to the PersRM")
    for d in CATALOG.values():
        table.add_row(d.name, d.opposite or "", "yes" if d.trained else "no", d.description, d.principle)
    Console().print(table)


@app.command("judge-check")
def judge_check(
    labels: Annotated[Path, typer.Argument(help="JSONL of hand labels: {judge, a, b, more: a|b|same}.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How often each offline judge agrees with texts labelled by hand (is the judge evidence or a proxy?)."""
    from padkit.evaluation.judges import judge_agreement
    from padkit.jsonio import iter_jsonl

    try:
        if not labels.is_file():
            raise PadkitError(f"label file not found: {labels}")
        report = judge_agreement([record for record, _ in iter_jsonl(labels)])
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps({k: asdict(v) for k, v in report.items()}, indent=2))
        return
    table = Table("judge", "agreement", "labelled pairs", "disagreeing labels (line - 1)")
    for a in report.values():
        table.add_row(a.judge, f"{a.agreement:.2f}", str(a.n), ", ".join(map(str, a.disagreements)))
    Console().print(table)


def _stream_one(pad, prompt: str, kwargs: dict) -> None:
    from transformers import TextStreamer

    from padkit.decoding.stops import streamable

    method = kwargs.get("method", "pad")
    stops = pad.stops(method, kwargs.get("stop"))

    class StopAwareStreamer(TextStreamer):
        """Prints the answer as it comes, never the stop string that ends it."""

        shown, text, stopped = 0, "", False

        def on_finalized_text(self, chunk: str, stream_end: bool = False) -> None:
            self.text += chunk
            safe, self.stopped = streamable(self.text, stops) if not self.stopped else (self.text[: self.shown], True)
            if stream_end and not self.stopped:
                safe = self.text
            print(safe[self.shown :], end="\n" if stream_end else "", flush=True)
            self.shown = max(self.shown, len(safe))

    pad.generate(
        [prompt],
        streamer=StopAwareStreamer(pad.decoder(method)[1], skip_prompt=True, skip_special_tokens=True),
        **kwargs,
    )


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="The prompt. Omit it when using --input.")] = None,
    preference: Annotated[
        str | None,
        typer.Option("--preference", "-p", help="e.g. 'humorous', 'concise=0.7,humorous=0.3' or free text."),
    ] = None,
    method: Annotated[str, typer.Option(help="pad, base, prompt, policy, best-of-n or args.")] = "pad",
    weight: Annotated[float, typer.Option("--weight", "-w", help="Alignment strength w.")] = DEFAULT_WEIGHT,
    top_k: Annotated[int, typer.Option("--top-k", help="Base top-k candidates rescored by PAD.")] = 10,
    reference: Annotated[str, typer.Option(help="Reward reference: base, rm-init or none.")] = "base",
    candidates: Annotated[
        str | None,
        typer.Option(
            help="Candidate set: topk, topk+eos or topk+rm. Default topk+eos; topk when the PersRM's tokenizer "
            "differs from the base's."
        ),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n")] = 128,
    temperature: Annotated[float, typer.Option(help="0 means greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling.")] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option(
            "--stop",
            help="End the answer before this text (repeatable). Default: none, or '\\nQuestion:' for a "
            "base model without chat template.",
        ),
    ] = None,
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = None,
    dtype: DtypeOpt = "float32",
    input_path: Annotated[
        Path | None, typer.Option("--input", help="Prompt file: .json list, .jsonl with 'prompt', or text lines.")
    ] = None,
    output_path: Annotated[
        Path | None, typer.Option("--output", help="JSONL output for --input; an interrupted run resumes.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per batch with --input.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON lines.")] = False,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    num_workers: NumWorkersOpt = 2,
    cpus_per_worker: CpusOpt = 1,
    gpus_per_worker: GpusOpt = 0,
) -> None:
    """Generate personalized answers. Streams to a terminal; prints only the text unless --json.

    With --input, rows may carry their own "preference"; --output keeps each row's id and a rerun skips the
    ids already written. --ray spreads the batches over Ray actors (pip install 'padkit\\[ray]').
    """
    from padkit.decoding import PAD

    if (prompt is None) == (input_path is None):
        _fail("give either a PROMPT or --input FILE")
    if output_path is not None and input_path is None:
        _fail("--output goes with --input")
    if ray and input_path is None:
        _fail("--ray goes with --input")
    kwargs = dict(
        method=method,
        weight=weight,
        top_k=top_k,
        reference=reference,
        candidates=candidates,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=stop or None,
    )
    try:
        _quiet_transformers()
        if input_path is not None:
            from padkit.prompts import read_prompts

            rows = read_prompts(input_path)
            if ray:
                from padkit.distributed import ModelSpec, RayPool

                models = {"main": ModelSpec(base, rm, dtype)}
                with RayPool(models, num_workers, ray_address, cpus_per_worker, gpus_per_worker) as pool:
                    _generate_file(pool.map, rows, preference, kwargs, output_path, batch_size, as_json)
                return
        pad = PAD.from_pretrained(base=base, rm=rm, dtype=dtype)
        if prompt is not None:
            if sys.stdout.isatty() and not as_json:
                _stream_one(pad, prompt, dict(kwargs, preference=preference))
                return
            gen = pad.generate([prompt], preference, **kwargs)[0]
            typer.echo(json.dumps(_record(gen, "0", prompt), ensure_ascii=False) if as_json else gen.text)
            return
        from padkit.distributed import run_local

        run = functools.partial(run_local, {"main": pad})
        _generate_file(run, rows, preference, kwargs, output_path, batch_size, as_json)
    except PadkitError as e:
        _fail(str(e))


DEMO_PROMPT = "How can I get better at cooking?"
DEMO_PREFERENCES = ("concise", "friendly", "formal", "pirate")


@app.command()
def demo(
    prompt: Annotated[str, typer.Argument(help="The prompt to answer.")] = DEMO_PROMPT,
    preference: Annotated[
        list[str] | None, typer.Option("--preference", "-p", help="Preferences to compare (repeatable).")
    ] = None,
    weight: Annotated[float, typer.Option("--weight", "-w", help="Alignment strength w.")] = DEFAULT_WEIGHT,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n")] = 60,
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = None,
    dtype: DtypeOpt = "float32",
) -> None:
    """Answer one prompt plainly and under several preferences, side by side."""
    from padkit.decoding import PAD

    prefs = preference or list(DEMO_PREFERENCES)
    try:
        _quiet_transformers()
        pad = PAD.from_pretrained(base=base, rm=rm, dtype=dtype)
        prompts = [prompt] * len(prefs)
        plain = pad.generate([prompt], method="base", max_new_tokens=max_new_tokens)[0]
        guided = pad.generate(prompts, preferences=prefs, weight=weight, max_new_tokens=max_new_tokens)
    except PadkitError as e:
        _fail(str(e))
    table = Table(title=f"PAD demo  base={base}  rm={pad.rm_name}  w={weight:g}", show_lines=True)
    table.add_column("preference", style="bold")
    table.add_column("answer")
    table.add_row("(none: plain base)", plain.text)
    for pref, gen in zip(prefs, guided, strict=True):
        table.add_row(pref, gen.text)
    Console(width=max(Console().width, 100)).print(f"[bold]prompt:[/] {prompt}", table)


bench_app = typer.Typer(help="Benchmarks that print ratios against their targets.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("speed")
def bench_speed(
    preference: Annotated[str, typer.Option("--preference", "-p")] = "humorous",
    weight: Annotated[float, typer.Option("--weight", "-w")] = 2.0,
    top_k: Annotated[int, typer.Option("--top-k")] = 10,
    new_tokens: Annotated[int, typer.Option("--new-tokens", "-n")] = 128,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = None,
    dtype: DtypeOpt = "float32",
    check_bf16: Annotated[
        bool,
        typer.Option(
            "--check-bf16",
            help="Also report how closely a bf16 copy follows float32 greedy PAD (free running and teacher forced).",
        ),
    ] = False,
    text_path: Annotated[
        bool,
        typer.Option(
            "--text-path", help="Also time the cross-tokenizer path (PersRM scores text) on these same models."
        ),
    ] = False,
    repeats: Annotated[
        int,
        typer.Option(
            "--repeats", min=1, help="Rounds: each times every decoder once, in turn; the fastest run of each counts."
        ),
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Tokens/s of plain generate, padkit PAD and the official-style PAD loop (no cache, batch 1).

    With a base whose tokenizer differs from the PersRM's (e.g. --base gemma3-270m) PAD runs the
    cross-tokenizer path and the official loop is skipped (it needs a shared vocabulary)."""
    from padkit.decoding import PAD
    from padkit.evaluation.speed import run_speed_benchmark

    try:
        _quiet_transformers()
        torch_threads = __import__("torch").get_num_threads()
        pad = PAD.from_pretrained(base=base, rm=rm, dtype=dtype)
        report = run_speed_benchmark(
            pad,
            preference,
            weight,
            top_k,
            new_tokens,
            batch_size,
            check_bf16=check_bf16,
            text_path=text_path,
            repeats=repeats,
            log=lambda m: err.print(f"timing {m} ..."),
        )
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    table = Table(
        title=f"speed: base={base} rm={pad.rm_name} dtype={dtype} {new_tokens} tokens, {torch_threads} threads, "
        f"fastest of {repeats}"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    rows = [
        ("plain generate, batch 1 (tok/s)", report.plain_tps, ""),
        (
            "PAD, batch 1 (tok/s)" + (" [text-scored, cross-tokenizer]" if report.cross_tokenizer else ""),
            report.pad_tps,
            "",
        ),
        ("official-style loop, batch 1 (tok/s)", report.official_tps, ""),
        (f"plain generate, batch {batch_size} (tok/s)", report.plain_batch8_tps, ""),
        (f"PAD, batch {batch_size} (tok/s)", report.pad_batch8_tps, ""),
        ("PAD / plain, batch 1", report.pad_vs_plain, ">= 0.6"),
        ("PAD / official", report.pad_vs_official, ">= 8"),
        (f"PAD batch {batch_size} / batch 1", report.pad_batch8_vs_batch1, ">= 4"),
        ("peak RSS (MB)", report.peak_rss_mb, ""),
    ]
    if report.text_path_tps is not None:
        rows.append(("PAD scoring text (cross-tokenizer path), batch 1 (tok/s)", report.text_path_tps, ""))
        rows.append(("text path / token path, batch 1", report.text_path_vs_token_path, ""))
    if report.bf16_prefix_agreement is not None:
        rows.append(("bf16: share of tokens before first divergence", report.bf16_prefix_agreement, ""))
        rows.append(("bf16: share of steps choosing float32's token", report.bf16_token_agreement, ""))
    for name, value, target in rows:
        table.add_row(name, "n/a" if value is None else f"{value:.2f}", target)
    Console().print(table)


data_app = typer.Typer(help="Preference data: synthesize pairs for PersRM training.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth")
def data_synth(
    prompts: Annotated[list[Path], typer.Option("--prompts", help="Prompt file(s): .json, .jsonl or text lines.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="JSONL of pairs; the pool (NAME.pool.jsonl) resumes beside it.")
    ],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="Tokens per pool answer.")] = 64,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the pool.")] = 0.8,
    top_p: Annotated[float, typer.Option("--top-p")] = 0.95,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Generations per batch.")] = 48,
    max_perplexity: Annotated[
        float, typer.Option("--max-perplexity", help="Fluency filter: the base model's perplexity of an answer.")
    ] = 12.0,
    min_relevance: Annotated[
        float, typer.Option("--min-relevance", help="Relevance filter: MiniLM cosine of prompt and answer.")
    ] = 0.15,
    heldout_fraction: Annotated[
        float,
        typer.Option("--heldout-fraction", help="Prompts that also get held-out wordings and unseen dimensions."),
    ] = 0.2,
    seed: Annotated[int, typer.Option()] = 0,
    no_input: Annotated[
        bool, typer.Option("--no-input", help="Skip self-instruct tasks with a separate input (keep open questions).")
    ] = False,
    limit: Annotated[int | None, typer.Option(help="Use the first N prompts only.")] = None,
    base: BaseOpt = "smollm2-135m-instruct",
    dtype: DtypeOpt = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Synthesize preference pairs for every catalog dimension pair: a pool of base-model answers (plain and
    under a few principles), filtered for fluency, repetition and relevance, then contrasted by a judge or
    rewritten into each form."""
    from padkit.decoding import PAD
    from padkit.prompts import read_prompts
    from padkit.training.synth import SynthConfig, synthesize_pairs

    try:
        _quiet_transformers()
        rows = [row for path in prompts for row in read_prompts(path, with_input=not no_input)][:limit]
        config = SynthConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            batch_size=batch_size,
            seed=seed,
            max_perplexity=max_perplexity,
            min_relevance=min_relevance,
            heldout_fraction=heldout_fraction,
        )
        pad = PAD.from_pretrained(base=base, rm="self", dtype=dtype)
        report = synthesize_pairs(pad, rows, output, config, progress=err.is_terminal)
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    removed = ", ".join(f"{k}: {v}" for k, v in report.removed.items())
    err.print(f"{report.prompts} prompts, {report.pool_answers} pool answers; removed {removed}")
    table = Table(title=f"{output}: {report.pairs} training pairs, held out {report.heldout_pairs}")
    for col in ("dimension", "judge", "prompts with a pair", "by contrast", "by rewrite", "mean judge margin"):
        table.add_column(col)
    for name, d in report.per_dimension.items():
        table.add_row(
            name,
            d["judge"],
            str(d["prompts_with_pair"]),
            str(d["by_contrast"]),
            str(d["by_rewrite"]),
            str(d["mean_margin"]),
        )
    Console().print(table)


DataOpt = Annotated[
    list[Path] | None, typer.Option("--data", help="Pair file(s): JSON/JSONL {prompt, chosen, rejected, preference}.")
]
HHOpt = Annotated[
    list[Path] | None, typer.Option("--hh-rlhf", help="HH-RLHF file(s) (.jsonl[.gz]), read as 'harmless'.")
]
DatasetOpt = Annotated[list[str] | None, typer.Option("--dataset", help="Hugging Face dataset name or saved path.")]
ColumnsOpt = Annotated[
    str | None, typer.Option("--columns", help="Column mapping for --dataset: prompt=q,chosen=a,...")
]


def _int_list(spec: str | None) -> tuple[int, ...] | None:
    """``"20-29"`` or ``"0,5,7"`` -> layer indices."""
    if not spec:
        return None
    out: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise PadkitError(f"bad layer list {spec!r}: use e.g. '20-29' or '0,5,7'") from None
    return tuple(out)


def _caps(specs: list[str]) -> dict[str, int]:
    """``["harmless=400"]`` -> ``{"harmless": 400}``."""
    caps = {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise PadkitError(f"bad --cap {spec!r}: use DIMENSION=N, e.g. harmless=400")
        caps[name.strip()] = int(value)
    return caps


@app.command()
def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="Adapter directory (checkpoints go inside).")],
    data: DataOpt = None,
    hh_rlhf: HHOpt = None,
    dataset: DatasetOpt = None,
    columns: ColumnsOpt = None,
    base: BaseOpt = "smollm2-135m-instruct",
    beta: Annotated[float, typer.Option(help="DPO beta: higher stays closer to the base.")] = 0.1,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha")] = 32,
    target_modules: Annotated[str, typer.Option("--target-modules", help="Comma-separated module names.")] = (
        "q_proj,k_proj,v_proj,o_proj"
    ),
    layers: Annotated[str | None, typer.Option(help="Only these layers get LoRA, e.g. '20-29'.")] = None,
    learning_rate: Annotated[float, typer.Option("--learning-rate", "--lr")] = 5e-4,
    epochs: Annotated[float, typer.Option()] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after N steps (-1: run all epochs).")] = -1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per step.")] = 4,
    grad_accum: Annotated[int, typer.Option("--grad-accum")] = 1,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens of prompt + response.")] = 192,
    max_prompt_length: Annotated[int, typer.Option("--max-prompt-length")] = 96,
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast.")] = False,
    precompute_ref: Annotated[
        bool, typer.Option("--precompute-ref/--no-precompute-ref", help="Reference log-probs once, up front.")
    ] = True,
    heldout_fraction: Annotated[float, typer.Option("--heldout-fraction")] = 0.1,
    max_pairs: Annotated[
        int | None, typer.Option("--max-train-pairs-per-dimension", help="Cap the training pairs of each dimension.")
    ] = None,
    cap: Annotated[
        list[str] | None,
        typer.Option("--cap", help="DIMENSION=N: a cap for one dimension, over the per-dimension one (repeatable)."),
    ] = None,
    heldout_eval_pairs: Annotated[
        int | None,
        typer.Option("--heldout-eval-pairs", help="Score N held-out pairs (evenly spaced) at the end; default all."),
    ] = None,
    save_steps: Annotated[int, typer.Option("--save-steps")] = 25,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last checkpoint.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print padkit.json.")] = False,
) -> None:
    """Train a PersRM: DPO (TRL) with a LoRA on the base; held-out accuracy goes into padkit.json."""
    import contextlib
    import shlex

    from padkit.training.data import load_pair_sources, parse_columns
    from padkit.training.dpo import PersRMTrainConfig, train_persrm

    try:
        _quiet_transformers()
        pairs, sources = load_pair_sources(data or [], hh_rlhf or [], dataset or [], parse_columns(columns))
        config = PersRMTrainConfig(
            base=base,
            beta=beta,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
            layers=_int_list(layers),
            learning_rate=learning_rate,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            gradient_accumulation=grad_accum,
            max_length=max_length,
            max_prompt_length=max_prompt_length,
            bf16=bf16,
            precompute_ref=precompute_ref,
            heldout_fraction=heldout_fraction,
            max_train_pairs_per_dimension=max_pairs,
            dimension_caps=_caps(cap or []),
            heldout_eval_pairs=heldout_eval_pairs,
            save_steps=save_steps,
            seed=seed,
        )
        command = "padkit " + shlex.join(sys.argv[1:])
        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout stays for --json
            result = train_persrm(pairs, output, config, sources, command, resume, progress=err.is_terminal)
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(result.metadata, indent=2))
        return
    err.print(f"adapter saved to {output} ({result.steps} steps, {result.seconds:.0f} s)")
    if result.heldout:
        _print_rm_report(result.heldout, f"held-out accuracy ({result.heldout_pairs} pairs)")


def _print_rm_report(report, title: str) -> None:
    table = Table(title=f"{title}, reference={report.reference}")
    for col in ("dimension", "accuracy", "mean margin", "pairs"):
        table.add_column(col)
    for name, d in report.dimensions.items():
        table.add_row(name, f"{d.accuracy:.3f}", f"{d.margin:.3f}", str(d.n))
    table.add_row("all", f"{report.accuracy:.3f}", "", str(report.n))
    Console().print(table)


@app.command("rm-eval")
def rm_eval(
    data: DataOpt = None,
    hh_rlhf: HHOpt = None,
    dataset: DatasetOpt = None,
    columns: ColumnsOpt = None,
    rm: RmOpt = None,
    base: BaseOpt = "smollm2-135m-instruct",
    split: Annotated[str, typer.Option(help="heldout, train or all (the split a padkit.json records).")] = "heldout",
    reference: Annotated[str | None, typer.Option(help="rm-init (LoRA off), base or none.")] = None,
    heldout_fraction: Annotated[float | None, typer.Option("--heldout-fraction")] = None,
    max_length: Annotated[int | None, typer.Option("--max-length")] = None,
    max_prompt_length: Annotated[int | None, typer.Option("--max-prompt-length")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    sample: Annotated[
        int | None, typer.Option(help="Score N pairs of the split, evenly spaced (every k-th), instead of all.")
    ] = None,
    dtype: DtypeOpt = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print the accuracies as JSON.")] = False,
) -> None:
    """Pairwise accuracy of a PersRM's summed implicit reward (chosen above rejected), per dimension; held-out
    wordings and dimensions (synthesized pairs marked ``holdout``) are reported on their own rows."""
    from padkit.evaluation.rm_accuracy import evaluate_rm
    from padkit.models.loading import default_rm, load_model, load_tokenizer, resolve_model_dir
    from padkit.training.data import load_pair_sources, parse_columns, spaced_sample, split_pairs
    from padkit.training.dpo import read_metadata

    if split not in ("heldout", "train", "all"):
        _fail(f"unknown split {split!r}; use heldout, train or all")
    try:
        _quiet_transformers()
        pairs, _ = load_pair_sources(data or [], hh_rlhf or [], dataset or [], parse_columns(columns))
        rm = rm or default_rm(base)
        meta = None
        if rm != "self":
            where = resolve_model_dir(rm)
            meta = read_metadata(where) if isinstance(where, Path) else None
        trained = (meta or {}).get("config", {})
        fraction = heldout_fraction if heldout_fraction is not None else trained.get("heldout_fraction", 0.1)
        train_part, heldout_part = split_pairs(pairs, fraction, trained.get("split_salt", "padkit"))
        chosen = spaced_sample({"heldout": heldout_part, "train": train_part, "all": pairs}[split], sample)
        rm_model = load_model(base if rm == "self" else rm, dtype)
        tokenizer = load_tokenizer(base if rm == "self" else rm)
        is_adapter = hasattr(rm_model, "disable_adapter")
        ref = reference or ("rm-init" if is_adapter else "base")
        base_model = None if rm == "self" or is_adapter or ref != "base" else load_model(base, dtype)
        report = evaluate_rm(
            rm_model,
            tokenizer,
            chosen,
            ref,
            base_model=base_model,
            batch_size=batch_size,
            max_length=max_length or trained.get("max_length"),
            max_prompt_length=max_prompt_length or trained.get("max_prompt_length"),
            progress=err.is_terminal,
        )
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    _print_rm_report(report, f"{rm}: {split} pairs")


@app.command("eval")
def eval_command(
    preference: Annotated[list[str], typer.Option("--preference", "-p", help="Preference to evaluate (repeatable).")],
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Prompt file: .json, .jsonl or text lines.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Hugging Face dataset (name or saved path).")] = None,
    prompt_column: Annotated[str, typer.Option("--prompt-column")] = "prompt",
    methods: Annotated[
        str, typer.Option(help="Comma-separated: base, prompt, policy, pad, pad-rm-init, pad-self, best-of-n, args.")
    ] = "base,prompt,pad",
    judges: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated judges ({', '.join(JUDGES)}, rm:PATH), each optionally with :lower or :higher "
            "(which way is more of the preference); default: the dimension's judge (padkit dimensions)."
        ),
    ] = None,
    weights: Annotated[
        str, typer.Option(help="Comma-separated alignment weights for the PAD methods.")
    ] = f"{DEFAULT_WEIGHT:g}",
    llm_judge_url: Annotated[
        str | None, typer.Option("--llm-judge-url", help="OpenAI-compatible base URL of an LLM judge (off by default).")
    ] = None,
    llm_judge_model: Annotated[str, typer.Option("--llm-judge-model")] = "gpt-4o",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n")] = 128,
    limit: Annotated[int | None, typer.Option(help="Use the first N prompts.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    top_k: Annotated[int, typer.Option("--top-k")] = 10,
    output: Annotated[Path, typer.Option("--output", "-o", help="Report directory; a rerun resumes it.")] = Path(
        "runs/eval"
    ),
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = None,
    dtype: DtypeOpt = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary table as JSON.")] = False,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    num_workers: NumWorkersOpt = 2,
    cpus_per_worker: CpusOpt = 1,
    gpus_per_worker: GpusOpt = 0,
) -> None:
    """Run methods x preferences (x weights) over a prompt set, judge every answer, and write a report.

    --ray generates on Ray actors; judging and perplexity run here."""
    from padkit.distributed.jobs import ModelSpec, load_pads
    from padkit.evaluation.harness import EvalConfig, run_eval
    from padkit.evaluation.judges import LLMPairwiseJudge
    from padkit.prompts import read_prompt_dataset, read_prompts

    if (prompts is None) == (dataset is None):
        _fail("give either --prompts FILE or --dataset NAME")
    try:
        _quiet_transformers()
        rows = read_prompts(prompts) if prompts is not None else read_prompt_dataset(dataset, prompt_column)
        rows = rows[:limit]
        try:
            weight_values = tuple(float(w) for w in weights.split(","))
        except ValueError:
            raise PadkitError(f"bad --weights {weights!r}: use numbers like 0.5,1,2") from None
        config = EvalConfig(
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
            preferences=tuple(preference),
            weights=weight_values,
            judges=tuple(j.strip() for j in judges.split(",")) if judges else None,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            top_k=top_k,
            llm_judge=LLMPairwiseJudge(llm_judge_url, llm_judge_model, os.environ.get("OPENAI_API_KEY", "unused"))
            if llm_judge_url
            else None,
        )
        models = {"main": ModelSpec(base, rm, dtype), "self": ModelSpec(base, "self", dtype)}
        pads = load_pads(models)  # judging and perplexity run here, with or without --ray
        if ray:
            from padkit.distributed import RayPool

            with RayPool(models, num_workers, ray_address, cpus_per_worker, gpus_per_worker) as pool:
                report = run_eval(pads, rows, output, config, progress=err.is_terminal, log=err.print, run=pool.map)
        else:
            report = run_eval(pads, rows, output, config, progress=err.is_terminal, log=err.print)
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(report.summary(), indent=2))
        return
    typer.echo(report.markdown())
    err.print(f"report, CSV and plots in {output}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option()] = 8000,
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = None,
    dtype: DtypeOpt = "float32",
    db: Annotated[Path, typer.Option("--db", help="SQLite file of user profiles.")] = Path(
        "~/.local/share/padkit/profiles.sqlite"
    ),
    weight: Annotated[
        float, typer.Option("--weight", "-w", help="Alignment weight when a request gives none.")
    ] = DEFAULT_WEIGHT,
    batch_window_ms: Annotated[
        float, typer.Option("--batch-window-ms", help="How long a request waits for company.")
    ] = (20.0),
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most requests decoded together.")] = 16,
    max_tokens: Annotated[int, typer.Option("--max-tokens-limit", help="Largest max_tokens a request may ask.")] = 1024,
) -> None:
    """Serve personalized generation over an OpenAI-compatible HTTP API, with per-user profiles."""
    import uvicorn

    from padkit.decoding import PAD
    from padkit.serving import ProfileStore, Server, create_app

    try:
        _quiet_transformers()
        store = ProfileStore(db.expanduser())
        pad = PAD.from_pretrained(base=base, rm=rm, dtype=dtype)
    except PadkitError as e:
        _fail(str(e))
    server = Server(pad, store, weight, max_tokens, batch_window_ms / 1000, max_batch)
    err.print(f"padkit serving {base} (rm={pad.rm_name}) on http://{host}:{port}/v1, profiles in {db}")
    uvicorn.run(create_app(server), host=host, port=port, log_level="info")


def _record(gen, rid: str, prompt: str) -> dict:
    return {
        "id": rid,
        "prompt": prompt,
        "text": gen.text,
        "method": gen.method,
        "preference": gen.preference,
        "finish_reason": gen.finish_reason,
        "n_tokens": len(gen.token_ids),
    }


def _generate_file(run, rows, preference, kwargs, output_path, batch_size, as_json) -> None:
    """Cut the rows not yet in ``output_path`` into batches; ``run(batches, on_result)`` decodes them (here or
    on Ray workers) and this process alone writes each result, so ids are written once."""
    from padkit.distributed import Batch
    from padkit.prompts import append_jsonl, read_done_ids

    done = read_done_ids(output_path) if output_path is not None else set()
    todo = [r for r in rows if r.id not in done]
    if done:
        err.print(f"resuming: {len(done)} of {len(rows)} prompts already in {output_path}")
    batches = [
        Batch(
            [r.prompt for r in chunk],
            [r.preference if r.preference is not None else preference for r in chunk],
            kwargs,
            tag=chunk,
        )
        for chunk in (todo[i : i + batch_size] for i in range(0, len(todo), batch_size))
    ]
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("generate", total=len(todo))

        def write(batch, gens, seconds) -> None:
            records = [_record(g, r.id, r.prompt) for g, r in zip(gens, batch.tag, strict=True)]
            if output_path is not None:
                append_jsonl(output_path, records)
            for rec in records:
                typer.echo(json.dumps(rec, ensure_ascii=False) if as_json else rec["text"])
            progress.advance(task, len(records))

        run(batches, write)


def main() -> None:
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    app()


if __name__ == "__main__":
    main()
