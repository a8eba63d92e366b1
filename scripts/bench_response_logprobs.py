"""Seconds of ``response_logprobs`` at this checkout against an older commit's, on the answers of a ``padkit eval``
run: the distinct answers to its first N prompts (each scored under its plain rendered prompt, as eval's perplexity
is), old and new interleaved in one process, and the largest difference of their scores. Session 62:

    python scripts/bench_response_logprobs.py runs/v62/koala-v43d --prompts 3 --rounds 2 --batch-sizes 8,16
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
from padkit.preferences import render_input

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
    parser.add_argument("run", type=Path, help="a padkit eval output directory (its generations.jsonl)")
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-sizes", default="8,16", help="the new function's batch sizes (the old one: 8)")
    parser.add_argument("--old-rev", default="b3f196d", help="the commit to compare with")
    args = parser.parse_args()
    records = [json.loads(line) for line in (args.run / "generations.jsonl").read_text().splitlines()]
    prompts = list(dict.fromkeys(r["prompt"] for r in records))[: args.prompts]
    answers = list(dict.fromkeys((r["prompt"], r["text"]) for r in records if r["prompt"] in prompts))
    pad = PAD.from_pretrained()
    contexts = [render_input(pad.tokenizer, p) for p, _ in answers]
    texts = [t for _, t in answers]
    fns = {"old b8": (old_function(args.old_rev), 8)}
    fns.update({f"new b{b}": (response_logprobs, int(b)) for b in args.batch_sizes.split(",")})
    seconds, scores = dict.fromkeys(fns, 0.0), {}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, (fn, size) in fns.items():
                start = time.perf_counter()
                scores[name] = fn(pad.base_model, pad.tokenizer, contexts, texts, batch_size=size).total
                seconds[name] += time.perf_counter() - start
    print(f"{len(texts)} answers to {len(prompts)} prompts, {args.rounds} rounds")
    for name in fns:
        diff = (scores[name] - scores["old b8"]).abs().max().item()
        ratio = seconds["old b8"] / seconds[name]
        print(f"{name}: {seconds[name]:.1f} s, {ratio:.2f}x the old, max |difference| {diff:.2e} nats")


if __name__ == "__main__":
    main()
