"""Job logging: what a running workflow job is doing, through :mod:`logging`.

A job's log (``{outdir}/logs/…``) gets one line when it starts a step and progress
lines as tiles finish — tiles done / total, seconds per tile, time left — so
``tail -f`` on it shows a long mask job moving.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

LOGGER = logging.getLogger("slidegrad")


def setup_job_logging(stream=None) -> None:  # type: ignore[no-untyped-def]
    """Send ``slidegrad`` log records (INFO and up) to ``stream`` (the job's log: stderr), timestamped."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


class Progress:
    """Logs ``{what}: {done}/{total} tiles, {s} s/tile, ~{eta} s left`` as work advances.

    A line at most every ``every`` seconds, at each tenth of the work, and at the end.
    Call the object with ``(done, total)`` (the engines' ``progress`` callback).
    """

    def __init__(self, what: str, total: int, every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.every, self.clock = what, total, every, clock
        self.start = self.last_time = clock()
        self.last_tenth = 0
        LOGGER.info("%s: %d tiles", what, total)

    def __call__(self, done: int, total: int | None = None) -> None:
        total = self.total if total is None else total
        now = self.clock()
        tenth = (10 * done) // max(total, 1)
        if done < total and tenth <= self.last_tenth and now - self.last_time < self.every:
            return
        self.last_tenth, self.last_time = tenth, now
        per_tile = (now - self.start) / max(done, 1)
        left = f", ~{per_tile * (total - done):.0f} s left" if done < total else ""
        LOGGER.info("%s: %d/%d tiles, %.2f s/tile%s", self.what, done, total, per_tile, left)
