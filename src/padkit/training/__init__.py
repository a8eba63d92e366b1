"""PersRM training: preference-pair data (training itself is issue #3's open part)."""

from padkit.training.data import (
    PreferencePair,
    parse_hh_dialogue,
    read_hf_dataset,
    read_hh_rlhf,
    read_pairs,
    split_pairs,
)

__all__ = ["PreferencePair", "parse_hh_dialogue", "read_hf_dataset", "read_hh_rlhf", "read_pairs", "split_pairs"]
