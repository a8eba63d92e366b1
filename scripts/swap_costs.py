"""Where a ``padkit eval`` run's perplexity comes from: each answer scored under the base token by token, as eval's
perplexity is (its plain rendered prompt, the end token only where the answer ended). A token is "swapped" when it
is not the base's greedy choice given the answer so far; its gap is the base's log-prob of that greedy choice minus
that of the token taken. Prints, per run and preference, the median perplexity, the swapped share, the gap's
quartiles, the log-loss per answer token that the swapped and the kept tokens carry, and the costliest swapped
tokens. Session 64:

    python scripts/swap_costs.py cautious,friendly,follow-up,elementary,sign-off,pirate runs/v60/koala-v38:base \\
        runs/v60/koala-v38 runs/v63/koala-v43e runs/v64/koala-v43f

A run is ``DIR`` (its ``pad`` answers) or ``DIR:METHOD``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import torch

from padkit import PAD
from padkit.decoding.sequence_reward import encode_response
from padkit.preferences import render_input


@torch.no_grad()
def token_costs(pad: PAD, prompt: str, text: str, ended: bool) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The answer's token ids, each token's log-loss under the base and the base's best log-prob at each step."""
    context, answer = encode_response(pad.tokenizer, render_input(pad.tokenizer, prompt), text, add_eos=ended)
    logits = pad.base_model(torch.tensor([context + answer])).logits[0, len(context) - 1 : -1]
    logp = logits.float().log_softmax(-1)
    nll = -logp.gather(1, torch.tensor(answer)[:, None])[:, 0]
    return answer, nll, logp.max(-1).values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preferences", help="comma-separated preferences")
    parser.add_argument("runs", nargs="+", help="eval run directories, each DIR or DIR:METHOD (default method pad)")
    args = parser.parse_args()
    pad = PAD.from_pretrained(rm="self")
    for spec in args.runs:
        run, _, method = spec.partition(":")
        records = [json.loads(line) for line in (Path(run) / "generations.jsonl").read_text().splitlines()]
        for pref in args.preferences.split(","):
            rows, gaps = [], defaultdict(list)
            for r in records:
                if r["method"] != (method or "pad") or r["preference"] not in (pref, "-"):
                    continue
                answer, nll, best = token_costs(pad, r["prompt"], r["text"], r.get("finish_reason") != "length")
                swapped = (best + nll) > 1e-6
                for t, g in zip(torch.tensor(answer)[swapped].tolist(), (best + nll)[swapped].tolist(), strict=True):
                    gaps[pad.tokenizer.decode([t])].append(g)
                n = len(answer)
                rows.append(
                    (
                        nll.mean().exp().item(),
                        swapped.float().mean().item(),
                        nll[swapped].sum() / n,
                        nll[~swapped].sum() / n,
                    )
                )
            every = sorted(g for v in gaps.values() for g in v)
            quartiles = [round(every[int(f * (len(every) - 1))], 2) for f in (0.25, 0.5, 0.75)] if every else []
            costliest = sorted(gaps.items(), key=lambda kv: -sum(kv[1]))[:8]
            ppl, share, from_swaps, from_kept = ([float(r[i]) for r in rows] for i in range(4))
            print(
                f"{spec} {pref}: perplexity (median) {statistics.median(ppl):.2f}, swapped "
                f"{statistics.mean(share):.3f}, gap quartiles {quartiles}, log-loss per token from swaps "
                f"{statistics.mean(from_swaps):.3f} + kept {statistics.mean(from_kept):.3f}"
                f"\n    costliest: " + ", ".join(f"{t!r} {len(v)}x{sum(v) / len(v):.1f}" for t, v in costliest),
                flush=True,
            )


if __name__ == "__main__":
    main()
