"""Guided decoding: the decoding configuration, the PAD logits processors, the PersRM stream and the PAD API."""

from padkit.decoding.config import PAPER_PAD, ConfigError, PADConfig
from padkit.decoding.pad import DECODE_MODES, METHODS, PAD, Alternative, Generation, TokenInfo
from padkit.decoding.processor import PADLogitsProcessor, StepRecord
from padkit.decoding.reward import RewardStream

__all__ = [
    "DECODE_MODES",
    "METHODS",
    "PAD",
    "PAPER_PAD",
    "Alternative",
    "ConfigError",
    "Generation",
    "PADConfig",
    "PADLogitsProcessor",
    "RewardStream",
    "StepRecord",
    "TokenInfo",
]
