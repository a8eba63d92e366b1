"""Run ``padkit`` with the loop guard's copy cap set by hand, to measure what the cap changes.

``python scripts/loop_guard_copy_cap.py CAP eval ...``: a unit longer than the guard's run is also stopped once a
copy of it passes ``CAP`` tokens; ``0`` is the guard before session 27 (such a copy stopped only at its last
token), ``8`` what a guard of 4 does since. Measurement only: docs/results.md, session 27.
"""

import sys

from padkit.decoding.processor import LoopGuard

if len(sys.argv) < 2 or not sys.argv[1].isdigit():
    sys.exit("usage: loop_guard_copy_cap.py CAP PADKIT-ARGS...")
CAP = int(sys.argv[1])


def banned(self: LoopGuard, row: int) -> set[int]:
    answer, periodic, out = self.answers[row], self.periodic[row], set()
    for p in range(1, min(self.max_period, len(answer)) + 1):
        run = periodic[p] + 1
        if (run >= p and run + p > self.max_run) or (CAP and p > self.max_run and run > CAP):
            out.update(self.members.get(answer[-p], (answer[-p],)))
    return out


LoopGuard.banned = banned

from padkit.cli.main import main  # noqa: E402

sys.argv = ["padkit", *sys.argv[2:]]
main()
