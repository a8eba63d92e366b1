"""Token reward of the end token after answers that PAD ended, under several preferences: why answers end early.

PAD's default candidates (``topk+eos``) always include the end token, so its reward
``log pi_rm(EOS | prompt with preference, answer) - log pi_base(EOS | plain prompt, answer)`` decides whether an
answer ends. For the first ``--limit`` answers of ``--source`` that ended (``finish_reason == "stop"``) in an
eval's generations, this prints that reward under each preference, beside the base's log-probability of the end
token and the reward of the base's most likely next token:

    python scripts/end_token_reward.py runs/eval-v11-20/generations.jsonl --source summary-first \\
        -p summary-first -p sign-off -p bulleted -p concise

The PersRM is the shipped ``persrm-smollm2`` unless ``--rm`` names an adapter directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from peft import PeftModel

from padkit.decoding.sequence_reward import encode_response
from padkit.models import ADAPTERS
from padkit.models.loading import DEFAULT_BASE, load_model, load_tokenizer
from padkit.models.row_lora import AdapterSwitch
from padkit.preferences import Dimension, render_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generations", type=Path, help="generations.jsonl of a padkit eval")
    parser.add_argument("--source", required=True, help="the preference whose ended PAD answers are probed")
    parser.add_argument("-p", "--preference", action="append", required=True, help="preferences to score under")
    parser.add_argument("--rm", default=str(ADAPTERS["persrm-smollm2"]), help="PersRM adapter directory")
    parser.add_argument("--limit", type=int, default=6)
    args = parser.parse_args()

    tokenizer = load_tokenizer(DEFAULT_BASE)
    model = PeftModel.from_pretrained(load_model(DEFAULT_BASE), args.rm).eval()  # the base with adapters off
    rows = [json.loads(line) for line in args.generations.read_text().splitlines()]
    ended = [
        r for r in rows if r["method"] == "pad" and r["preference"] == args.source and r["finish_reason"] == "stop"
    ][: args.limit]
    if not ended:
        raise SystemExit(f"no ended PAD answers under {args.source!r} in {args.generations}")
    eos = tokenizer.eos_token_id

    def next_logp(adapters: bool, context: str, answer: str) -> torch.Tensor:
        context_ids, answer_ids = encode_response(tokenizer, context, answer, add_eos=False)
        with torch.no_grad(), AdapterSwitch(model, adapters):
            logits = model(input_ids=torch.tensor([context_ids + answer_ids])).logits[0, -1]
        return torch.log_softmax(logits.float(), -1)

    base_logps = [next_logp(False, render_input(tokenizer, r["prompt"]), r["text"]) for r in ended]
    print("preference | r(EOS) per answer | base log p(EOS) | r(base's top token)")
    for preference in args.preference:
        principle = Dimension(preference).principle
        eos_rewards, base_eos, top_rewards = [], [], []
        for r, base_logp in zip(ended, base_logps, strict=True):
            reward = next_logp(True, render_input(tokenizer, r["prompt"], principle), r["text"]) - base_logp
            top = int(base_logp.argmax())
            eos_rewards.append(f"{reward[eos].item():+.1f}")
            base_eos.append(f"{base_logp[eos].item():.1f}")
            top_rewards.append(f"{tokenizer.decode([top])!r} {reward[top].item():+.1f}")
        print(f"{preference} | {' '.join(eos_rewards)} | {' '.join(base_eos)} | {', '.join(top_rewards)}")


if __name__ == "__main__":
    main()
