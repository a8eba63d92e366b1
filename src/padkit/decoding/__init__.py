"""Guided decoding: the PAD logits processor, the PersRM stream and the public PAD API."""

from padkit.decoding.pad import METHODS, PAD, Alternative, Generation, TokenInfo
from padkit.decoding.processor import PADLogitsProcessor, StepRecord
from padkit.decoding.reward import RewardStream

__all__ = [
    "METHODS",
    "PAD",
    "Alternative",
    "Generation",
    "PADLogitsProcessor",
    "RewardStream",
    "StepRecord",
    "TokenInfo",
]
