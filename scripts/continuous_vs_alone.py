"""Share of greedy answers that continuous batching gives exactly as the request decoded alone, on the default
model: requests join a running batch at staggered steps (as under load), then each is decoded alone with
``PAD.generate``. Prints the share and, for each differing answer, where it first differs.

    python scripts/continuous_vs_alone.py --requests 16 --max-new-tokens 64
"""

from __future__ import annotations

import argparse

from padkit import PAD, PADConfig
from padkit.decoding.continuous import ContinuousBatch, ContinuousRequest
from padkit.evaluation.speed import BENCH_PROMPTS
from padkit.preferences import Preference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--every", type=int, default=3, help="a new request joins every N steps")
    args = parser.parse_args()
    pad = PAD.from_pretrained()
    prefs = ["concise", "friendly", None, "bulleted", "elementary", "pirate"]
    requests = [
        ContinuousRequest(
            BENCH_PROMPTS[i % len(BENCH_PROMPTS)],
            None if prefs[i % len(prefs)] is None else Preference.parse(prefs[i % len(prefs)]),
            PADConfig(max_new_tokens=args.max_new_tokens),
        )
        for i in range(args.requests)
    ]
    batch, step, waiting = ContinuousBatch(pad), 0, list(requests)
    while waiting or not batch.idle:
        if waiting and step % args.every == 0:
            batch.submit(waiting.pop(0))
        batch.step()
        step += 1
    same = 0
    for i, r in enumerate(requests):
        alone = pad.generate([r.prompt], preferences=[r.preference], config=r.config)[0]
        if alone.token_ids == r.result.token_ids:
            same += 1
            continue
        pairs = zip(alone.token_ids, r.result.token_ids, strict=False)
        first = next(
            (j for j, (a, b) in enumerate(pairs) if a != b), min(len(alone.token_ids), len(r.result.token_ids))
        )
        print(f"request {i} ({r.preference}): differs from token {first} of {len(alone.token_ids)}")
    print(f"identical: {same} of {len(requests)} ({args.max_new_tokens} tokens, {step} steps)")


if __name__ == "__main__":
    main()
