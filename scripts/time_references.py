"""Tokens/s of PAD.generate for plain base decoding and PAD with each reference (base: the fused path; rm-init:
the PersRM stream path), at batch 1 and batch 8, fastest of N runs. Run it against another checkout to compare
versions on one machine:

    PYTHONPATH=/path/to/other/checkout/src python scripts/time_references.py

It times with its own loop (the benchmark's helper is not in older checkouts) and needs only ``PAD``.
"""

from __future__ import annotations

import argparse
import time

from padkit import PAD
from padkit.evaluation.speed import BENCH_PROMPTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--paths", default="plain,base,rm-init", help="plain and/or PAD references to time")
    args = parser.parse_args()
    pad = PAD.from_pretrained()
    for path in args.paths.split(","):
        settings = dict(method="base") if path == "plain" else dict(reference=path, weight=2.0)
        pad.generate(BENCH_PROMPTS[:1], "humorous", max_new_tokens=4, **settings)
        for rows in (BENCH_PROMPTS[:1], BENCH_PROMPTS[:8]):
            best = 0.0
            for _ in range(args.repeats):
                start = time.perf_counter()
                gens = pad.generate(rows, "humorous", max_new_tokens=args.new_tokens, ignore_eos=True, **settings)
                best = max(best, sum(len(g.token_ids) for g in gens) / (time.perf_counter() - start))
            print(f"{path} batch={len(rows)}: {best:.1f} tok/s (first tokens {gens[0].token_ids[:6]})")


if __name__ == "__main__":
    main()
