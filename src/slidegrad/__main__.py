"""``python -m slidegrad view OUTDIR`` (the ``slidegrad`` console script)."""

import sys

from .viewer.cli import main

sys.exit(main())
