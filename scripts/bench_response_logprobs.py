"""Seconds of ``response_logprobs`` at this checkout against an older commit's, old and new interleaved in one
process, and the largest difference of their scores. Two workloads: the answers of a ``padkit eval`` run (the
distinct answers to its first N prompts, each under its plain rendered prompt, as eval's perplexity is), or the
first N pairs of a pairs file as rm-eval scores them (both sides under the preference-rendered prompt, 8 pairs to a
call). Session 62 (eval answers) and 63 (pairs):

    python scripts/bench_response_logprobs.py runs/v62/koala-v43d --prompts 3 --rounds 2 --batch-sizes 8,16
    python scripts/bench_response_logprobs.py runs/v39/pairs.jsonl --pairs 48 --old-rev 5a6765a --batch-sizes 16
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from padkit import PAD
from padkit.decoding.sequence_reward import response_logprobs
from padkit.preferences import Dimension, render_clipped, render_input
from padkit.training.data import read_pairs

MODULE = "src/padkit/decoding/sequence_reward.py"


def old_function(rev: str):
    """``response_logprobs`` as commit ``rev`` had it (it must import with this checkout's padkit)."""
    source = subprocess.run(["git", "show", f"{rev}:{MODULE}"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_sequence_reward.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_sequence_reward", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.response_logprobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a padkit eval output directory (its generations.jsonl) or a pairs file")
    parser.add_argument("--prompts", type=int, default=3, help="eval answers: how many prompts")
    parser.add_argument("--pairs", type=int, default=64, help="a pairs file: how many pairs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-sizes", default="8,16", help="the new function's batch sizes (the old one: the first)")
    parser.add_argument("--old-rev", default="b3f196d", help="the commit to compare with")
    args = parser.parse_args()
    pad = PAD.from_pretrained()
    if args.run.is_dir():
        records = [json.loads(line) for line in (args.run / "generations.jsonl").read_text().splitlines()]
        prompts = list(dict.fromkeys(r["prompt"] for r in records))[: args.prompts]
        answers = list(dict.fromkeys((r["prompt"], r["text"]) for r in records if r["prompt"] in prompts))
        calls = [([render_input(pad.tokenizer, p) for p, _ in answers], [t for _, t in answers])]
        what = f"{len(answers)} answers to {len(prompts)} prompts"
    else:
        pairs = read_pairs(args.run)[: args.pairs]
        calls = []
        for start in range(0, len(pairs), 8):
            chunk = pairs[start : start + 8]
            contexts = [render_clipped(pad.tokenizer, p.prompt, Dimension(p.preference).principle, 80) for p in chunk]
            calls.append((contexts + contexts, [p.chosen for p in chunk] + [p.rejected for p in chunk]))
        what = f"{len(pairs)} pairs, 8 to a call"
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    old = f"old b{sizes[0]}"
    fns = {old: (old_function(args.old_rev), sizes[0])}
    fns.update({f"new b{b}": (response_logprobs, b) for b in sizes})
    seconds, scores = dict.fromkeys(fns, 0.0), {}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, (fn, size) in fns.items():
                start = time.perf_counter()
                parts = [fn(pad.base_model, pad.tokenizer, c, t, batch_size=size).total for c, t in calls]
                scores[name] = torch.cat(parts)
                seconds[name] += time.perf_counter() - start
    print(f"{what}, {args.rounds} rounds, old = {args.old_rev}")
    for name in fns:
        diff = (scores[name] - scores[old]).abs().max().item()
        ratio = seconds[old] / seconds[name]
        print(f"{name}: {seconds[name]:.1f} s, {ratio:.2f}x the old, max |difference| {diff:.2e} nats")


if __name__ == "__main__":
    main()
