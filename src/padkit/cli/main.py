"""``padkit``: personalized generation from the command line. Every command calls the Python API."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from padkit.cli.options import build_settings, settings_command
from padkit.decoding.config import DEFAULT_WEIGHT, PADConfig
from padkit.distributed.ray_pool import RaySettings
from padkit.errors import PadkitError
from padkit.evaluation.judges import JUDGES, OFF_TOPIC_BELOW
from padkit.settings import comma_names
from padkit.training.dpo import PersRMTrainConfig
from padkit.training.onpolicy import OnPolicyConfig, PromptSelectConfig
from padkit.training.synth import SynthConfig

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
DtypeOpt = Annotated[
    str, typer.Option("--dtype", help="auto (bfloat16 on a GPU, float32 on the CPU), float32 or bfloat16.")
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="auto (the first CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N."),
]


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


def _stream_one(pad, prompt: str, preference: str | None, config) -> None:
    """Print the answer as it is decoded: the same decode as without a streamer, shown as it comes."""
    from transformers import TextStreamer

    from padkit.decoding.stops import streamable

    stops = pad.stops(config.method, config.stop)

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

    tokenizer = pad.decoder(config.method)[1]
    pad.generate(
        [prompt],
        preference,
        config=config,
        streamer=StopAwareStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
    )


def _config(values: dict):
    """The :class:`PADConfig` of a command's derived options; a bad value exits 2 naming the option."""
    from padkit.decoding.config import ConfigError, PADConfig

    try:
        return build_settings(PADConfig, values)
    except ConfigError as e:
        _fail(f"--{e.field.replace('_', '-')}: {e}")


def _check_output(path: Path | None) -> None:
    """Refuse an output the run could not write, before any model is loaded."""
    if path is None:
        return
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        _fail(f"--output {path} is a directory; give a file name")
    if not parent.is_dir():
        _fail(f"--output {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        _fail(f"--output {path} is not writable")


@app.command()
@settings_command(RaySettings, name="ray_settings")
@settings_command(PADConfig, name="decoding")
def generate(
    prompt: Annotated[str | None, typer.Argument(help="The prompt. Omit it when using --input.")] = None,
    preference: Annotated[
        str | None,
        typer.Option("--preference", "-p", help="e.g. 'humorous', 'concise=0.7,humorous=0.3' or free text."),
    ] = None,
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    input_path: Annotated[
        Path | None, typer.Option("--input", help="Prompt file: .json list, .jsonl with 'prompt', or text lines.")
    ] = None,
    output_path: Annotated[
        Path | None,
        typer.Option("--output", help="JSONL output for --input; a rerun with the same settings resumes it."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Prompts per batch with --input.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON lines.")] = False,
    decoding: dict | None = None,
    ray_settings: dict | None = None,
) -> None:
    """Generate personalized answers. Streams to a terminal; prints only the text unless --json.

    With --input, rows may carry their own "preference"; --output keeps each row's id and settings, and a rerun
    skips the ids already written (it refuses an output made with other settings). --ray spreads the batches
    over Ray actors (pip install 'padkit\\[ray]'). The same --seed gives the same text in every case.
    """
    from padkit.decoding import PAD
    from padkit.preferences import Preference

    if (prompt is None) == (input_path is None):
        _fail("give either a PROMPT or --input FILE")
    if output_path is not None and input_path is None:
        _fail("--output goes with --input")
    ray = build_settings(RaySettings, ray_settings or {})
    if ray.ray and input_path is None:
        _fail("--ray goes with --input")
    config = _config(decoding or {})
    _check_output(output_path)
    try:
        if preference is not None:
            Preference.parse(preference)
        _quiet_transformers()
        rows = None
        if input_path is not None:
            from padkit.prompts import read_prompts

            rows = read_prompts(input_path)
            for row in rows:
                if row.preference is not None:
                    Preference.parse(row.preference)
            if ray.ray:
                from padkit.distributed import ModelSpec

                with ray.pool({"main": ModelSpec(base, rm, dtype, device)}) as pool:
                    _generate_file(pool.map, rows, preference, config, output_path, batch_size, as_json, base, rm)
                return
        pad = PAD.from_pretrained(base=base, rm=rm, dtype=dtype, device=device)
        if rows is None:
            if sys.stdout.isatty() and not as_json and config.method != "best-of-n":
                _stream_one(pad, prompt, preference, config)
                return
            gen = pad.generate([prompt], preference, config=config)[0]
            typer.echo(json.dumps(_record(gen, "0", prompt), ensure_ascii=False) if as_json else gen.text)
            return
        from padkit.distributed import run_local

        run = functools.partial(run_local, {"main": pad})
        _generate_file(run, rows, preference, config, output_path, batch_size, as_json, base, rm)
    except PadkitError as e:
        _fail(str(e))


DEMO_PROMPT = "How can I get better at cooking?"
DEMO_PREFERENCES = ("concise", "bulleted", "follow-up", "pirate")
"""Three kinds of trained preference (length, format, turning to the user) and one never trained on (a voice).
friendly and formal were shown until session 51: on the demo prompt the shipped PersRM's friendly answer leaves
cooking and its formal one drifts (README, "Set up and try it")."""


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
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """Answer one prompt plainly and under several preferences, side by side."""
    from padkit.decoding import PAD

    prefs = preference or list(DEMO_PREFERENCES)
    try:
        _quiet_transformers()
        pad = PAD.from_pretrained(base=base, rm=rm, dtype=dtype, device=device)
        prompts = [prompt] * len(prefs)
        plain = pad.generate([prompt], method="base", max_new_tokens=max_new_tokens)[0]
        guided = pad.generate(prompts, preferences=prefs, weight=weight, max_new_tokens=max_new_tokens)
    except PadkitError as e:
        _fail(str(e))
    margin = pad.reward_margin(PADConfig())
    title = f"PAD demo  base={base}  rm={pad.rm_name}  w={weight:g}" + (f"  margin={margin:g}" if margin else "")
    table = Table(title=title, show_lines=True)
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
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
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
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Also time these methods of padkit eval (comma-separated, e.g. prompt,pad-self,amulet,"
            "persona-judge,best-of-n,policy) at batch 1 and --batch-size, with the settings eval runs them with.",
        ),
    ] = "",
    load_format: Annotated[
        str,
        typer.Option(
            "--load-format",
            help="'auto' loads --base's weights; 'dummy' builds --base (a shape: "
            "smollm2-135m, llama-3.2-1b, qwen2.5-7b, llama-3.1-8b, or a config.json) with random weights and a "
            "random LoRA PersRM of --lora-rank on it (--rm self: none), for speed at real sizes with nothing to "
            "download.",
        ),
    ] = "auto",
    lora_rank: Annotated[int, typer.Option("--lora-rank", min=1, help="Rank of the dummy LoRA PersRM.")] = 16,
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", help="Tokenizer for a dummy model's prompts (alias or directory).")
    ] = "smollm2-135m-instruct",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Tokens/s of plain generate, padkit PAD and the official-style PAD loop (no cache, batch 1).

    PAD here is the paper's algorithm (no prompted base, no loop guard), the one the official loop runs;
    --methods pad times padkit's default PAD beside it.

    With a base whose tokenizer differs from the PersRM's (e.g. --base gemma3-270m) PAD runs the
    cross-tokenizer path and the official loop is skipped (it needs a shared vocabulary)."""
    from padkit.decoding import PAD
    from padkit.evaluation.speed import machine_line, run_speed_benchmark

    try:
        _quiet_transformers()
        torch_threads = __import__("torch").get_num_threads()
        if load_format == "dummy":
            dummy_rm = "self" if rm == "self" else "lora"
            pad = PAD.from_dummy(base, dummy_rm, lora_rank, tokenizer, dtype=dtype, device=device)
        elif load_format == "auto":
            pad = PAD.from_pretrained(base=base, rm=rm, dtype=dtype, device=device)
        else:
            raise PadkitError(f"unknown --load-format {load_format!r}; use auto or dummy")
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
            methods=comma_names(methods),
            log=lambda m: err.print(f"timing {m} ..."),
        )
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    table = Table(
        title=f"speed: base={base} rm={pad.rm_name} {report.dtype} on {report.device}, {new_tokens} tokens, "
        f"{torch_threads} CPU threads, "
        f"fastest of {repeats}",
        caption=f"machine: {machine_line(report.machine)}",
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
    for name, figures in report.methods.items():
        rows.append((f"{name}, batch 1 (tok/s)", figures["tps_batch1"], ""))
        rows.append((f"{name}, batch {batch_size} (tok/s)", figures["tps_batch"], ""))
        rows.append((f"{name} / plain, batch 1", figures["vs_plain_batch1"], ""))
        rows.append((f"{name} / plain, batch {batch_size}", figures["vs_plain_batch"], ""))
    for name, value, target in rows:
        table.add_row(name, "n/a" if value is None else f"{value:.2f}", target)
    Console().print(table)


@bench_app.command("serve")
def bench_serve(
    rate: Annotated[float, typer.Option("--rate", help="Mean arrivals per second (Poisson).")] = 0.5,
    requests: Annotated[int, typer.Option("--requests", min=1, help="Requests to send.")] = 24,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="max_tokens of each request.")] = 128,
    preference: Annotated[
        list[str] | None, typer.Option("--preference", "-p", help="Preferences of the requests, in turn.")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="A running padkit server on 127.0.0.1 to load (default: in-process servers)."),
    ] = None,
    batcher: Annotated[
        str, typer.Option("--batchers", help="In-process batchers to compare, comma-separated.")
    ] = "static,continuous",
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the arrival schedule.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Time to first token, time per output token and throughput of the HTTP server under Poisson arrivals:
    the static and the continuous batcher side by side on the same schedule (streamed greedy chat requests)."""
    from padkit.evaluation.serve_bench import run_serve_benchmark
    from padkit.evaluation.speed import machine_info, machine_line

    try:
        pad = None
        if url is None:
            _quiet_transformers()
            from padkit.decoding import PAD

            pad = PAD.from_pretrained(base=base, rm=rm, dtype=dtype, device=device)
        report = run_serve_benchmark(
            pad,
            url,
            rate,
            requests,
            max_tokens,
            tuple(preference or ["concise"]),
            comma_names(batcher),
            seed,
            log=lambda m: err.print(f"{m} ..."),
        )
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps({**report.as_dict(), "machine": machine_info()}, indent=2))
        return
    table = Table(
        title=f"serve: {requests} requests at {rate}/s, max_tokens {max_tokens}",
        caption=f"machine: {machine_line(machine_info())}",
    )
    table.add_column("figure")
    for result in report.results:
        table.add_column(result.name, justify="right")
    paired = len(report.results) == 2
    if paired:
        table.add_column("continuous / static", justify="right")
    for label, key in [
        ("TTFT p50 (s)", "ttft_p50_s"),
        ("TTFT p95 (s)", "ttft_p95_s"),
        ("TPOT p50 (s)", "tpot_p50_s"),
        ("TPOT p95 (s)", "tpot_p95_s"),
        ("requests/s", "requests_per_s"),
        ("tokens/s", "tokens_per_s"),
    ]:
        cells = [f"{getattr(r, key):.3f}" for r in report.results]
        ratio = report.ratio(key) if paired else None
        table.add_row(label, *cells, *([] if not paired else ["" if ratio is None else f"{ratio:.2f}"]))
    for label, cells in [
        ("completed / failed", [f"{r.completed} / {r.failed}" for r in report.results]),
        (
            "RSS before / after (MB)",
            [f"{r.rss_before_mb or 0:.0f} / {r.rss_after_mb or 0:.0f}" for r in report.results],
        ),
    ]:
        table.add_row(label, *cells, *([""] if paired else []))
    Console().print(table)


data_app = typer.Typer(
    help="Preference data: synthesize pairs for PersRM training, pick training-side prompts for on-policy answers, "
    "or make pairs from an eval run's answers.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("synth")
@settings_command(SynthConfig, exclude=("sources", "min_margin"))
def data_synth(
    prompts: Annotated[list[Path], typer.Option("--prompts", help="Prompt file(s): .json, .jsonl or text lines.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="JSONL of pairs; the pool (NAME.pool.jsonl) resumes beside it.")
    ],
    no_input: Annotated[
        bool, typer.Option("--no-input", help="Skip self-instruct tasks with a separate input (keep open questions).")
    ] = False,
    limit: Annotated[int | None, typer.Option(help="Use the first N prompts only.")] = None,
    base: BaseOpt = "smollm2-135m-instruct",
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    settings: dict | None = None,
) -> None:
    """Synthesize preference pairs for every catalog dimension pair: a pool of base-model answers (plain and
    under a few principles), filtered for fluency, repetition and relevance, then contrasted by a judge or
    rewritten into each form."""
    from padkit.decoding import PAD
    from padkit.prompts import read_prompts
    from padkit.training.synth import synthesize_pairs

    try:
        _quiet_transformers()
        rows = [row for path in prompts for row in read_prompts(path, with_input=not no_input)][:limit]
        config = build_settings(SynthConfig, settings or {})
        pad = PAD.from_pretrained(base=base, rm="self", dtype=dtype, device=device)
        report = synthesize_pairs(pad, rows, output, config, progress=err.is_terminal)
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    removed = ", ".join(f"{k}: {v}" for k, v in report.removed.items())
    err.print(f"{report.prompts} prompts, {report.pool_answers} pool answers; removed {removed}")
    err.print(f"{report.cut_answers} kept answers stop at the token limit (trained without an end token)")
    err.print(f"{report.early_end_pairs} early-end pairs (an answer against its own first sentence, ended)")
    err.print(
        f"{report.degenerate_pairs} degenerate pairs (an answer against a loop of its first line or its bare form)"
    )
    err.print(f"{report.stutter_pairs} stutter pairs (an answer against itself with one early unit said twice)")
    err.print(f"{report.evasion_pairs} evasion pairs (an answer against the same form around a non-answer)")
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


@data_app.command("from-eval")
@settings_command(OnPolicyConfig)
def data_from_eval(
    run: Annotated[Path, typer.Argument(help="A `padkit eval` output directory (generations.jsonl, answers.jsonl).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL of pairs for `padkit train --data`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    settings: dict | None = None,
) -> None:
    """On-policy pairs from an eval run: of two answers to one prompt under one preference (base, prompting,
    PAD at each weight), the one that moves the judge at little perplexity cost, or keeps it at much less, or
    is sound where the other loops or leaves the prompt. Pairs with a PAD answer come first."""
    from padkit.training.onpolicy import write_onpolicy_pairs

    try:
        report = write_onpolicy_pairs(run, output, build_settings(OnPolicyConfig, settings or {}))
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    rules = ", ".join(f"{k} {v}" for k, v in report.by_rule.items())
    err.print(f"{report.answers} answers, {report.cells} prompt x preference cells -> {report.pairs} pairs ({rules})")
    if report.unseen_cells:
        err.print(f"left out {report.unseen_cells} cells under dimensions held out of training (--include-unseen)")
    table = Table(title=f"{output}: chosen > rejected")
    table.add_column("sides")
    table.add_column("pairs", justify="right")
    for sides, n in report.by_sides.items():
        table.add_row(sides, str(n))
    Console().print(table)


@data_app.command("prompts")
@settings_command(PromptSelectConfig)
def data_prompts(
    prompts: Annotated[list[Path], typer.Option("--prompts", help="Prompt file(s): .json, .jsonl or text lines.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON list of {id, prompt} for `padkit eval`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    settings: dict | None = None,
) -> None:
    """Prompts for on-policy answers: those on the training side of `padkit train`'s hash split (pairs made from
    answers to held-out prompts would leak into held-out accuracy), within a length range, first by a hash of
    their text. `padkit eval --prompts OUTPUT` answers them; `padkit data from-eval` pairs the answers."""
    from padkit.training.onpolicy import write_training_prompts

    try:
        report = write_training_prompts(prompts, output, build_settings(PromptSelectConfig, settings or {}))
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    err.print(
        f"{report.read} prompts read; left out {report.with_input} with an input, {report.repeated} repeated, "
        f"{report.heldout} held out, {report.length} out of the length range, {report.past_limit} past the limit"
    )
    err.print(f"{report.kept} prompts written to {output}")


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


@app.command()
@settings_command(PersRMTrainConfig)
def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="Adapter directory (checkpoints go inside).")],
    data: DataOpt = None,
    hh_rlhf: HHOpt = None,
    dataset: DatasetOpt = None,
    columns: ColumnsOpt = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last checkpoint.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print padkit.json.")] = False,
    settings: dict | None = None,
) -> None:
    """Train a PersRM: DPO (TRL) with a LoRA on the base; held-out accuracy goes into padkit.json."""
    import contextlib
    import shlex

    from padkit.training.data import load_pair_sources, parse_columns
    from padkit.training.dpo import train_persrm

    try:
        config = build_settings(PersRMTrainConfig, settings or {})
        _quiet_transformers()
        pairs, sources = load_pair_sources(data or [], hh_rlhf or [], dataset or [], parse_columns(columns))
        command = "padkit " + shlex.join(sys.argv[1:])
        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout stays for --json
            result = train_persrm(pairs, output, config, sources, command, resume, progress=err.is_terminal)
    except PadkitError as e:
        _fail(str(e))
    _report_adapter(
        result.metadata,
        result.heldout,
        as_json,
        f"adapter saved to {output} ({result.steps} steps, {result.seconds:.0f} s)",
    )


@app.command()
def merge(
    sources: Annotated[list[str], typer.Argument(help="Trained PersRM directories (LoRA adapters of one base).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the merged adapter.")],
    weight: Annotated[
        list[float] | None,
        typer.Option("--weight", "-w", help="One per PersRM, in order (default: equal weights summing to 1)."),
    ] = None,
    data: DataOpt = None,
    hh_rlhf: HHOpt = None,
    dataset: DatasetOpt = None,
    columns: ColumnsOpt = None,
    heldout_eval_pairs: Annotated[
        int | None, typer.Option(help="Score N held-out pairs of the data (evenly spaced); default all.")
    ] = None,
    reward_margin: Annotated[
        float | None,
        typer.Option(
            help="Record this reward margin (nats) as the merge's own, the one `padkit generate` decodes it with by "
            "default; default: the sources' recorded margin when they all record the same, else none (0)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print padkit.json.")] = False,
) -> None:
    """Merge PersRMs into one: the weighted sum of their LoRA updates (a model soup), exact, no training.

    Give the data they were trained on (--data, --hh-rlhf, ...) to score the merge on their held-out split."""
    import shlex

    from padkit.training.data import load_pair_sources, parse_columns
    from padkit.training.merge import merge_persrms

    try:
        _quiet_transformers()
        given = data or hh_rlhf or dataset
        pairs, names = (
            load_pair_sources(data or [], hh_rlhf or [], dataset or [], parse_columns(columns)) if given else ([], [])
        )
        command = "padkit " + shlex.join(sys.argv[1:])
        result = merge_persrms(
            sources,
            weight,
            output,
            pairs,
            names,
            command,
            heldout_eval_pairs,
            progress=err.is_terminal,
            reward_margin=reward_margin,
        )
    except PadkitError as e:
        _fail(str(e))
    _report_adapter(
        result.metadata, result.heldout, as_json, f"merged adapter (LoRA rank {result.rank}) saved to {output}"
    )


def _report_adapter(metadata: dict, heldout, as_json: bool, saved: str) -> None:
    """What train and merge print: the adapter's padkit.json with --json, else where it went and its held-out
    table."""
    if as_json:
        typer.echo(json.dumps(metadata, indent=2))
        return
    err.print(saved)
    if heldout:
        _print_rm_report(heldout, f"held-out accuracy ({heldout.n} pairs)")


def _print_rm_report(report, title: str) -> None:
    from padkit.evaluation.rm_accuracy import FirstSteps

    table = Table(title=f"{title}, reference={report.reference}")
    decisions = report.decision is not None
    columns = ("dimension", "accuracy", "per token", "mean margin", "pairs")
    steps = ("PAD step", "base step", "reachable", "PAD wrong turn", "base wrong turn")  # FirstSteps' fields
    for col in columns + (steps * decisions):
        table.add_column(col)

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def shares(row) -> tuple[str, ...]:
        return tuple(share(getattr(row, name)) for name in FirstSteps._fields) * decisions

    for name, d in report.dimensions.items():
        table.add_row(name, f"{d.accuracy:.3f}", share(d.token_accuracy), f"{d.margin:.3f}", str(d.n), *shares(d))
    table.add_row("all", f"{report.accuracy:.3f}", share(report.token_accuracy), "", str(report.n), *shares(report))
    for name, d in report.by_shape.items():
        cells = (f"{d.accuracy:.3f}", share(d.token_accuracy), f"{d.margin:.3f}", str(d.n))
        table.add_row(f"all, {name}", *cells, *(("",) * len(steps) * decisions))
    Console().print(table)
    kinds = Table(title="by kind: groups at padkit's bar for a shipped PersRM")
    for col in ("kind", "accuracy", "per token", "pairs", "groups", "at bar", "below the bar"):
        kinds.add_column(col)
    for name, k in report.by_kind.items():
        at_bar = "-" if k.bar is None else f"{k.at_bar} of {k.groups} >= {k.bar:.2f}"
        cells = (f"{k.accuracy:.3f}", f"{k.token_accuracy:.3f}", str(k.n), str(k.groups), at_bar)
        kinds.add_row(name, *cells, ", ".join(k.below))
    if report.by_kind:
        Console().print(kinds)


DECISION_SETTINGS = ("top_k", "candidates", "prompted_base", "reward_margin")
"""PAD's settings that rm-eval's first-step decisions read (--decision-weight sets the weight)."""


@app.command("rm-eval")
@settings_command(
    PADConfig, name="decision", exclude=tuple(f.name for f in fields(PADConfig) if f.name not in DECISION_SETTINGS)
)
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
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group",
            help="Score only the pairs of this report group (repeatable): a dimension, 'early-end', "
            "'NAME (wording held out)', ...",
        ),
    ] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    decision_weight: Annotated[
        float | None,
        typer.Option(
            "--decision-weight",
            help="Also report, per dimension, how often PAD at this weight (and the base alone) picks the chosen "
            "response's token at the first step where chosen and rejected differ (the decision PAD makes), and how "
            "often that token is among PAD's candidates at all (reachable), and how often PAD (and the base) "
            "pick the rejected response's token there instead (wrong turn). PAD decodes as `padkit generate` does "
            "with this PersRM, but for the --top-k, --candidates, --reward-margin and --prompted-base given.",
        ),
    ] = None,
    cut_ends: Annotated[
        str,
        typer.Option(
            "--cut-ends",
            help="closed: every response ends in the end-of-sequence token; open: a response marked cut "
            "(chosen_cut / rejected_cut: stopped by a length limit) is scored without it, as padkit train trains it.",
        ),
    ] = "closed",
    as_json: Annotated[bool, typer.Option("--json", help="Print the accuracies as JSON.")] = False,
    decision: dict | None = None,
) -> None:
    """Pairwise accuracy of a PersRM's implicit reward (chosen above rejected), per dimension.

    Scored on the reward summed over each answer and per token (its mean: the sum grows with length); held-out
    wordings and dimensions (synthesized pairs marked "holdout") are reported on their own rows."""
    from padkit.evaluation.rm_accuracy import SPLITS, evaluate_persrm
    from padkit.training.data import load_pair_sources, parse_columns, select_groups

    if split not in SPLITS:
        _fail(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    try:
        _quiet_transformers()
        pad_config = build_settings(PADConfig, (decision or {}) | {"weight": decision_weight or 0.0})
        pairs, _ = load_pair_sources(data or [], hh_rlhf or [], dataset or [], parse_columns(columns))
        if group:
            pairs = select_groups(pairs, group)
        report = evaluate_persrm(
            pairs,
            rm,
            base,
            split,
            reference,
            heldout_fraction,
            max_length,
            max_prompt_length,
            batch_size,
            sample,
            dtype,
            progress=err.is_terminal,
            device=device,
            decision_weight=decision_weight,
            top_k=pad_config.top_k,
            cut_ends=cut_ends,
            candidates=pad_config.candidates,
            prompted_base=pad_config.prompted_base,
            reward_margin=pad_config.reward_margin,
        )
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    _print_rm_report(report, f"{rm or 'default PersRM'}: {split} pairs, cut answers {cut_ends}")


EVAL_SET_BY_METHOD = (
    "method",
    "weight",
    "reference",
    "prompted_base",
    "temperature",
    "top_p",
    "seed",
    "diagnostics",
)
"""Decoding settings ``padkit eval`` does not offer: its method table sets them per method, --weights sweeps."""


@app.command("eval")
@settings_command(RaySettings, name="ray_settings")
@settings_command(PADConfig, name="decoding", exclude=EVAL_SET_BY_METHOD)
def eval_command(
    preference: Annotated[list[str], typer.Option("--preference", "-p", help="Preference to evaluate (repeatable).")],
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Prompt file: .json, .jsonl or text lines.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Hugging Face dataset (name or saved path).")] = None,
    prompt_column: Annotated[str, typer.Option("--prompt-column")] = "prompt",
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated: base, prompt, policy, pad (padkit's PAD: its base reads the preference too, "
            "and --loop-guard and --ngram-guard apply), paper-pad (the paper's PAD: the base reads the prompt "
            "alone, no loop guards), prompt-pad (PAD on a prompted base whatever the defaults), pad-rm-init, pad-self, "
            "best-of-n, args, amulet, persona-judge."
        ),
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
    limit: Annotated[int | None, typer.Option(help="Use the first N prompts.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    min_relevance: Annotated[
        float,
        typer.Option(
            "--min-relevance",
            help="An answer whose MiniLM similarity to its prompt is under this is off topic and loses to an "
            "on-topic base answer in the win rate (a question back with no answer, a bare sign-off); -1: off.",
        ),
    ] = OFF_TOPIC_BELOW,
    output: Annotated[Path, typer.Option("--output", "-o", help="Report directory; a rerun resumes it.")] = Path(
        "runs/eval"
    ),
    reuse: Annotated[
        list[Path] | None,
        typer.Option(
            "--reuse",
            help="Another eval's report directory (repeatable): copy the answers it made with this run's settings "
            "instead of decoding them again; base and prompting read no PersRM, so they carry over between PersRMs.",
        ),
    ] = None,
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary table as JSON.")] = False,
    decoding: dict | None = None,
    ray_settings: dict | None = None,
) -> None:
    """Run methods x preferences (x weights) over a prompt set, judge every answer, and write a report.

    The decoding options (--top-k, --min-p, --amulet-alpha, ...) apply to every method; each method sets its own
    sampling and reference, and --weights sweeps the PAD weight. --ray generates on Ray actors; judging and
    perplexity run here."""
    from padkit.distributed.jobs import ModelSpec, load_pads
    from padkit.evaluation.harness import EvalConfig, run_eval
    from padkit.evaluation.judges import LLMPairwiseJudge
    from padkit.prompts import read_prompt_dataset, read_prompts

    if (prompts is None) == (dataset is None):
        _fail("give either --prompts FILE or --dataset NAME")
    decoding_config = _config(decoding or {})
    try:
        _quiet_transformers()
        rows = read_prompts(prompts) if prompts is not None else read_prompt_dataset(dataset, prompt_column)
        rows = rows[:limit]
        try:
            weight_values = tuple(float(w) for w in weights.split(","))
        except ValueError:
            raise PadkitError(f"bad --weights {weights!r}: use numbers like 0.5,1,2") from None
        config = EvalConfig(
            methods=comma_names(methods),
            preferences=tuple(preference),
            weights=weight_values,
            judges=comma_names(judges) if judges else None,
            decoding=decoding_config,
            batch_size=batch_size,
            min_relevance=min_relevance,
            llm_judge=LLMPairwiseJudge(llm_judge_url, llm_judge_model, os.environ.get("OPENAI_API_KEY", "unused"))
            if llm_judge_url
            else None,
        )
        models = {"main": ModelSpec(base, rm, dtype, device), "self": ModelSpec(base, "self", dtype, device)}
        pads = load_pads(models)  # judging and perplexity run here, with or without --ray
        ray = build_settings(RaySettings, ray_settings or {})
        if ray.ray:
            with ray.pool(models) as pool:
                report = run_eval(
                    pads, rows, output, config, progress=err.is_terminal, log=err.print, run=pool.map, reuse=reuse or ()
                )
        else:
            report = run_eval(pads, rows, output, config, progress=err.is_terminal, log=err.print, reuse=reuse or ())
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(report.summary(), indent=2))
        return
    typer.echo(report.markdown())
    err.print(f"report, scorecard, CSV and plots in {output}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option()] = 8000,
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    db: Annotated[Path, typer.Option("--db", help="SQLite file of user profiles and keys.")] = Path(
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
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Largest request body; a larger one gets 413.")
    ] = 1 << 20,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="PADKIT_API_KEY",
            help="Admin key: every /v1 route then needs 'Authorization: Bearer KEY' (user keys: padkit keys add).",
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow binding a host other than 127.0.0.1 with no key at all.")
    ] = False,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=0, help="Most requests waiting to decode; more get 429 + Retry-After.")
    ] = 256,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", min=0.1, help="Seconds a request may take; then 504 and it stops.")
    ] = 600.0,
    log_prompts: Annotated[
        bool, typer.Option("--log-prompts", help="Put the prompt in each request's log line (off: never logged).")
    ] = False,
    grace_period: Annotated[
        float, typer.Option("--grace-period", min=0, help="Seconds SIGTERM waits for accepted requests to finish.")
    ] = 30.0,
    continuous: Annotated[
        bool,
        typer.Option(
            "--continuous/--static",
            help="Continuous batching: base, prompt and fused PAD requests join the running batch between decode "
            "steps. --static: batches by time window (--batch-window-ms) and runs each to its end.",
        ),
    ] = True,
) -> None:
    """Serve personalized generation over an OpenAI-compatible HTTP API, with per-user profiles and keys."""
    from padkit.decoding import PAD
    from padkit.serving import ProfileStore, Server
    from padkit.serving.app import LOCAL_HOSTS
    from padkit.serving.app import serve as serve_http

    try:
        store = ProfileStore(db.expanduser())
        is_open = not api_key and not store.has_keys()
        if is_open and host not in LOCAL_HOSTS and not insecure:
            raise PadkitError(
                f"refusing to serve {host} with no API key: anyone who reaches the port could read and change every "
                "profile. Give --api-key (or PADKIT_API_KEY), add user keys with `padkit keys add`, or pass --insecure."
            )
        _quiet_transformers()
        pad = PAD.from_pretrained(base=base, rm=rm, dtype=dtype, device=device)
    except PadkitError as e:
        _fail(str(e))
    server = Server(
        pad,
        store,
        weight,
        max_tokens,
        batch_window_ms / 1000,
        max_batch,
        max_body_bytes,
        api_key,
        max_queue,
        request_timeout,
        log_prompts,
        continuous,
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the one JSON line per request
    err.print(f"padkit serving {base} (rm={pad.rm_name}) on http://{host}:{port}/v1, profiles in {db}")
    if is_open:
        err.print("[yellow]open: no API key is set, so every client is admin (fine on 127.0.0.1 only)[/]")
    serve_http(server, host, port, grace_period)


DbOpt = Annotated[Path, typer.Option("--db", help="SQLite file of user profiles and keys.")]
DEFAULT_DB = Path("~/.local/share/padkit/profiles.sqlite")
keys_app = typer.Typer(help="API keys bound to a user: each reads and changes only its own profile.")
app.add_typer(keys_app, name="keys")


def _store(db: Path):
    from padkit.serving import ProfileStore

    try:
        return ProfileStore(db.expanduser())
    except PadkitError as e:
        _fail(str(e))


@keys_app.command("add")
def keys_add(user: Annotated[str, typer.Argument(help="The user the key belongs to.")], db: DbOpt = DEFAULT_DB) -> None:
    """Make a key for USER and print it (only its SHA-256 hash is stored: it cannot be shown again)."""
    try:
        key, record = _store(db).add_key(user)
    except PadkitError as e:
        _fail(str(e))
    err.print(f"key {record.key_id} for {user!r} (revoke with `padkit keys revoke {record.key_id}`):")
    typer.echo(key)


@keys_app.command("list")
def keys_list(db: DbOpt = DEFAULT_DB) -> None:
    """List the keys: id, user, created, revoked."""
    table = Table("id", "user", "created", "revoked")
    for k in _store(db).list_keys():
        revoked = "" if k.revoked_at is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(k.revoked_at))
        table.add_row(k.key_id, k.user, time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created_at)), revoked)
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (padkit keys list).")], db: DbOpt = DEFAULT_DB
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    if not _store(db).revoke_key(key_id):
        _fail(f"no active key with id {key_id!r} (see padkit keys list)")
    err.print(f"revoked {key_id}")


def _record(gen, rid: str, prompt: str) -> dict:
    return {
        "id": rid,
        "prompt": prompt,
        "text": gen.text,
        "method": gen.method,
        "preference": gen.preference,
        "finish_reason": gen.finish_reason,
        "n_tokens": len(gen.token_ids),
        **({"tokens": [asdict(t) for t in gen.tokens]} if gen.tokens is not None else {}),
    }


def _generate_file(run, rows, preference, config, output_path, batch_size, as_json, base, rm) -> None:
    """Decode the rows not yet in ``output_path`` (here or on Ray workers) and print each as it is written."""
    from padkit.distributed import Task, run_tasks
    from padkit.models.loading import default_rm, model_identity

    tasks = [Task(r.id, r.prompt, r.preference if r.preference is not None else preference, config) for r in rows]
    shown = ("id", "prompt", "text", "method", "preference", "finish_reason", "n_tokens")

    def show(records: list[dict]) -> None:
        for rec in records:
            typer.echo(json.dumps({k: rec[k] for k in shown}, ensure_ascii=False) if as_json else rec["text"])

    run_tasks(
        tasks,
        run,
        output_path,
        batch_size,
        context={"base": base, "rm": model_identity(default_rm(base) if rm is None else rm)},
        on_records=show,
        progress=err.is_terminal,
        log=err.print,
    )


def _unwrap_help(group: typer.Typer) -> None:
    """Give every command of ``group`` (and of its sub-groups) its docstring with each paragraph on one line.

    Typer prints a command's first paragraph joined but the later ones with the docstring's own line breaks, which
    cut its sentences in the middle of a terminal line; rich wraps a one-line paragraph to the terminal instead."""
    for command in group.registered_commands:
        if command.help is None and command.callback is not None:
            paragraphs = inspect.cleandoc(command.callback.__doc__ or "").split("\n\n")
            command.help = "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)
    for sub in group.registered_groups:
        _unwrap_help(sub.typer_instance)


_unwrap_help(app)


def main() -> None:
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    app()


if __name__ == "__main__":
    main()
