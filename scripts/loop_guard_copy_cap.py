"""Run ``padkit`` with the loop guard's copy cap set by hand, to measure what the cap changes.

``python scripts/loop_guard_copy_cap.py CAP eval ...``: a unit longer than the guard's run is also stopped once a
copy of it passes ``CAP`` tokens (``LoopGuard(max_copy=CAP)``); ``0`` is the guard before session 27 (such a copy
stopped only at its last token), ``8`` what a guard of 4 does by default. Measurement only: docs/results.md,
session 27.
"""

import functools
import sys

from padkit.decoding.processor import LoopGuard

if len(sys.argv) < 2 or not sys.argv[1].isdigit():
    sys.exit("usage: loop_guard_copy_cap.py CAP PADKIT-ARGS...")
LoopGuard.__init__ = functools.partialmethod(LoopGuard.__init__, max_copy=int(sys.argv[1]))

from padkit.cli.main import main  # noqa: E402

sys.argv = ["padkit", *sys.argv[2:]]
main()
