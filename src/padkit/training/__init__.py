"""PersRM training: preference-pair data, synthesized pairs, and DPO with LoRA."""

from padkit.training.data import (
    PreferencePair,
    load_pair_sources,
    parse_hh_dialogue,
    read_hf_dataset,
    read_hh_rlhf,
    read_pairs,
    split_pairs,
)

__all__ = [
    "PreferencePair",
    "load_pair_sources",
    "parse_hh_dialogue",
    "read_hf_dataset",
    "read_hh_rlhf",
    "read_pairs",
    "split_pairs",
]
