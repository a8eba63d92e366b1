"""Does PAD with a prompted base say a form's opener again right after it? The reward of the repeat token.

Under ``--prompted-base`` v11 answers "summary-first" with "In short: In short: In short: ...". For each case
(a preference, an answer prefix that has just produced the form, and the token that would start saying it again)
and each of the first ``N`` koala prompts (env ``N``, default 8), this takes the prompted base's top-10 next tokens
after the prefix, gives each its PersRM reward ``r(t) = R(prefix + t) - R(prefix)`` (``PAD.sequence_rewards``
of the prefixes, no end token) and the guided score ``log p_base(t) + 0.5 r(t)``, and prints per PersRM: on how
many prompts the repeat token is in the top 10, on how many it wins, its mean rank and its mean reward:

    python scripts/repeat_token_reward.py runs/persrm-v11 runs/persrm-v16
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from padkit import PAD
from padkit.preferences.preference import Preference
from padkit.preferences.render import render_input

W = 0.5
CASES = [  # (preference, prefix, the text whose first token starts the repeat)
    ("summary-first", "In short:", " In"),
    ("summary-first", "In a nutshell:", " In"),
    ("emoji", "Sure! 😊", "😊"),
    ("bulleted", "Here are some tips:\n- Practice every day.\n-", " Practice"),
    ("numbered", "Here are some tips:\n1. Practice every day.\n2.", " Practice"),
]
PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "psoups_koala_eval_50.json"


def main(rms: list[str]) -> None:
    prompts = [r["prompt"] for r in json.loads(PROMPTS.read_text())][: int(os.environ.get("N", "8"))]
    for rm in rms:
        pad = PAD.from_pretrained("smollm2-135m-instruct", rm=rm)
        tok = pad.tokenizer
        stats = {}
        for pref, prefix, rep in CASES:
            p = Preference.parse(pref)
            rep_id = tok(rep, add_special_tokens=False).input_ids[0]
            ranks, wins, rewards = [], 0, []
            for q in prompts:
                text = render_input(tok, q, p.prompt_principle()) + prefix
                ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
                with torch.no_grad():
                    logp = pad.base_model(ids).logits[0, -1].log_softmax(-1)
                top = logp.topk(10)
                responses = [prefix] + [prefix + tok.decode([t]) for t in top.indices.tolist()]
                summed = pad.sequence_rewards(q, p.dimensions[0].principle, responses, eos=False)
                r = (summed[1:] - summed[0]).tolist()
                score = [lp + W * x for lp, x in zip(top.values.tolist(), r, strict=True)]
                order = sorted(range(10), key=lambda i: -score[i])
                found = [i for i, t in enumerate(top.indices.tolist()) if t == rep_id]
                if found:
                    ranks.append(order.index(found[0]) + 1)
                    rewards.append(r[found[0]])
                    wins += order[0] == found[0]
            stats[f"{pref} | {prefix!r}"] = dict(
                in_top10=len(ranks),
                repeat_wins=wins,
                mean_rank=round(sum(ranks) / len(ranks), 2) if ranks else None,
                mean_repeat_reward=round(sum(rewards) / len(rewards), 2) if rewards else None,
            )
        print(rm, json.dumps(stats, indent=1), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
