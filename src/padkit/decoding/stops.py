"""Where an answer ends: stop strings (also while it is still streaming) and cancelled rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import StoppingCriteria


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def streamable(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The part of a growing text that is safe to show, and whether a stop string was reached.

    Cut before a stop string; otherwise hold back a tail that may be the start of one (``"\\nQues"``).
    """
    end = find_stop(text, stops)
    if end is not None:
        return text[:end], True
    held = max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
    return text[: len(text) - held], False


class CancelledRows(StoppingCriteria):
    """Stop the rows whose request was cancelled (its client went away), at the next step.

    ``cancelled()`` says, per answer row, whether it is cancelled; ``row_of[i]`` is the answer row that batch row
    ``i`` belongs to (a fused batch's PersRM rows follow their answer row), so a cancelled answer stops with all
    its rows. A batch whose rows are all done ends; the others run on, untouched.

    Example:

    ```python
    >>> flags = [False, False]
    >>> stop = CancelledRows(lambda: flags, torch.arange(2))
    >>> model.generate(**inputs, stopping_criteria=[stop])   # set flags[1] = True from another thread
    ```
    """

    def __init__(self, cancelled: Callable[[], Sequence[bool]], row_of: torch.Tensor) -> None:
        self.cancelled, self.row_of = cancelled, row_of
        self.halted_at: dict[int, int] = {}
        """Answer row -> the sequence length when it was stopped (later tokens are padding)."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        flags = list(self.cancelled())
        for row, flag in enumerate(flags):
            if flag:
                self.halted_at.setdefault(row, input_ids.shape[1])
        return torch.tensor(flags, dtype=torch.bool)[self.row_of].to(input_ids.device)
