"""``padkit``: personalized generation from the command line. Every command calls the Python API."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from padkit.errors import PadkitError

app = typer.Typer(
    help="padkit: Personalized Alignment at Decoding-time. Steer a frozen LLM towards each user's preference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

BaseOpt = Annotated[str, typer.Option("--base", help="Base model: alias, local directory, .gguf file or Hub id.")]
RmOpt = Annotated[
    str, typer.Option("--rm", help="PersRM: 'self' (the base conditioned on the preference), a model dir or adapter.")
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or bfloat16.")]


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


@app.command()
def dimensions(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the built-in preference dimensions (free text works too)."""
    from padkit.preferences import CATALOG

    if as_json:
        typer.echo(json.dumps({k: asdict(v) for k, v in CATALOG.items()}, indent=2))
        return
    table = Table("name", "opposite", "description", "principle given to the PersRM")
    for d in CATALOG.values():
        table.add_row(d.name, d.opposite or "", d.description, d.principle)
    Console().print(table)


def _stream_one(pad, prompt: str, kwargs: dict) -> None:
    from transformers import TextStreamer

    streamer = TextStreamer(pad.tokenizer, skip_prompt=True, skip_special_tokens=True)
    pad.generate([prompt], streamer=streamer, **kwargs)


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="The prompt. Omit it when using --input.")] = None,
    preference: Annotated[
        str | None,
        typer.Option("--preference", "-p", help="e.g. 'humorous', 'concise=0.7,humorous=0.3' or free text."),
    ] = None,
    method: Annotated[str, typer.Option(help="pad, base, prompt or policy.")] = "pad",
    weight: Annotated[float, typer.Option("--weight", "-w", help="Alignment strength w.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Base top-k candidates rescored by PAD.")] = 10,
    reference: Annotated[str, typer.Option(help="Reward reference: base, rm-init or none.")] = "base",
    candidates: Annotated[str, typer.Option(help="Candidate set: topk, topk+eos or topk+rm.")] = "topk+eos",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n")] = 128,
    temperature: Annotated[float, typer.Option(help="0 means greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling.")] = None,
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = "self",
    dtype: DtypeOpt = "float32",
    input_path: Annotated[
        Path | None, typer.Option("--input", help="Prompt file: .json list, .jsonl with 'prompt', or text lines.")
    ] = None,
    output_path: Annotated[
        Path | None, typer.Option("--output", help="JSONL output for --input; an interrupted run resumes.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per batch with --input.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON lines.")] = False,
) -> None:
    """Generate personalized answers. Streams to a terminal; prints only the text unless --json."""
    from padkit.decoding import PAD

    if (prompt is None) == (input_path is None):
        _fail("give either a PROMPT or --input FILE")
    if output_path is not None and input_path is None:
        _fail("--output goes with --input")
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
    )
    try:
        _quiet_transformers()
        if input_path is not None:
            from padkit.prompts import read_prompts

            rows = read_prompts(input_path)
        pad = PAD.from_pretrained(base=base, rm=rm, dtype=dtype)
        if prompt is not None:
            if sys.stdout.isatty() and not as_json:
                _stream_one(pad, prompt, dict(kwargs, preference=preference))
                return
            gen = pad.generate([prompt], preference, **kwargs)[0]
            typer.echo(json.dumps(_record(gen, "0", prompt), ensure_ascii=False) if as_json else gen.text)
            return
        _generate_file(pad, rows, preference, kwargs, output_path, batch_size, as_json)
    except PadkitError as e:
        _fail(str(e))


DEMO_PROMPT = "How can I get better at cooking?"
DEMO_PREFERENCES = ("concise", "humorous", "knowledgeable")


@app.command()
def demo(
    prompt: Annotated[str, typer.Argument(help="The prompt to answer.")] = DEMO_PROMPT,
    preference: Annotated[
        list[str] | None, typer.Option("--preference", "-p", help="Preferences to compare (repeatable).")
    ] = None,
    weight: Annotated[float, typer.Option("--weight", "-w", help="Alignment strength w.")] = 2.0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n")] = 60,
    base: BaseOpt = "smollm2-135m-instruct",
    rm: RmOpt = "self",
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
    table = Table(title=f"PAD demo  base={base}  rm={rm}  w={weight:g}", show_lines=True)
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
    rm: RmOpt = "self",
    dtype: DtypeOpt = "float32",
    check_bf16: Annotated[
        bool, typer.Option("--check-bf16", help="Also report how much of the greedy output bf16 reproduces.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Tokens/s of plain generate, padkit PAD and the official-style PAD loop (no cache, batch 1)."""
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
            log=lambda m: err.print(f"timing {m} ..."),
        )
    except PadkitError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    table = Table(title=f"speed: base={base} rm={rm} dtype={dtype} {new_tokens} tokens, {torch_threads} threads")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    rows = [
        ("plain generate, batch 1 (tok/s)", report.plain_tps, ""),
        ("PAD, batch 1 (tok/s)", report.pad_tps, ""),
        ("official-style loop, batch 1 (tok/s)", report.official_tps, ""),
        (f"plain generate, batch {batch_size} (tok/s)", report.plain_batch8_tps, ""),
        (f"PAD, batch {batch_size} (tok/s)", report.pad_batch8_tps, ""),
        ("PAD / plain, batch 1", report.pad_vs_plain, ">= 0.6"),
        ("PAD / official", report.pad_vs_official, ">= 8"),
        (f"PAD batch {batch_size} / batch 1", report.pad_batch8_vs_batch1, ">= 4"),
        ("peak RSS (MB)", report.peak_rss_mb, ""),
    ]
    if report.bf16_prefix_agreement is not None:
        rows.append(("bf16: share of tokens before first divergence", report.bf16_prefix_agreement, ""))
    for name, value, target in rows:
        table.add_row(name, f"{value:.2f}", target)
    Console().print(table)


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


def _generate_file(pad, rows, preference, kwargs, output_path, batch_size, as_json) -> None:
    from padkit.prompts import append_jsonl, read_done_ids

    done = read_done_ids(output_path) if output_path is not None else set()
    todo = [r for r in rows if r.id not in done]
    if done:
        err.print(f"resuming: {len(done)} of {len(rows)} prompts already in {output_path}")
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("generate", total=len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            prefs = [r.preference if r.preference is not None else preference for r in batch]
            gens = pad.generate([r.prompt for r in batch], preferences=prefs, **kwargs)
            records = [_record(g, r.id, r.prompt) for g, r in zip(gens, batch, strict=True)]
            if output_path is not None:
                append_jsonl(output_path, records)
            for rec in records:
                typer.echo(json.dumps(rec, ensure_ascii=False) if as_json else rec["text"])
            progress.advance(task, len(batch))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
