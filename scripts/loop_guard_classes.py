"""Run ``padkit`` with the loop guard's token classes on or off, to measure what the classes change.

``python scripts/loop_guard_classes.py classes eval ...`` is ``padkit eval ...`` as shipped; ``exact`` gives every
token its own class, the guard before the classes ("In" and " In" two tokens). Measurement only: docs/results.md,
session 26.
"""

import sys

from padkit.decoding.pad import PAD

if sys.argv[1] not in ("exact", "classes"):
    sys.exit("usage: loop_guard_classes.py exact|classes PADKIT-ARGS...")
if sys.argv[1] == "exact":
    PAD.token_classes = property(lambda self: list(range(len(self.tokenizer))))

from padkit.cli.main import main  # noqa: E402

sys.argv = ["padkit", *sys.argv[2:]]
main()
