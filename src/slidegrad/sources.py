"""A slide file (or ``.tfrecords``) that changes or goes away while the workflow runs.

The tiles job records what the slide was when it read it (:class:`SourceStamp`: path, size,
modification time) beside its tiles, and checks it again before it writes its tile table: a slide
still being copied in changes under the job.  A later job that reads the slide again (the
overview) checks the record before it opens the file and after it read it.  Each case is one
:class:`~slidegrad.errors.InputError` line naming the slide, the file and what to do; without
the check, a job would read a slide its tiles did not come from, or fail inside OpenSlide.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import InputError, quote
from .files import atomic_write


@dataclass(frozen=True)
class SourceStamp:
    """A file as a job found it: ``path``, ``size`` in bytes and ``mtime_ns`` (ns since the epoch)."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> SourceStamp:
        """The file's stamp now (``OSError`` where it cannot be stat'ed)."""
        info = os.stat(path)
        return cls(str(path), info.st_size, info.st_mtime_ns)

    def describe(self) -> str:
        """``"1234 bytes, modified 2026-12-07 02:32:14 UTC"``."""
        when = datetime.fromtimestamp(self.mtime_ns / 1e9, tz=timezone.utc)
        return f"{self.size} bytes, modified {when:%Y-%m-%d %H:%M:%S} UTC"


def write_stamp(path: str | os.PathLike[str], stamp: SourceStamp) -> None:
    """Write ``stamp`` as JSON to ``path`` (atomically)."""
    with atomic_write(path, "w") as handle:
        json.dump(asdict(stamp), handle, indent=1)


def read_stamp(path: str | os.PathLike[str]) -> SourceStamp | None:
    """The stamp a tiles job wrote at ``path``; ``None`` where there is none (tiles made before
    slidegrad recorded one) or it is not a stamp (the check is then skipped, as it was then)."""
    try:
        data = json.loads(Path(path).read_text())
        return SourceStamp(str(data["path"]), int(data["size"]), int(data["mtime_ns"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_unchanged(slide: str, stamp: SourceStamp, since: str, rerun: str) -> None:
    """Raise one :class:`InputError` line if the file ``stamp`` names is gone or differs from it.

    ``since``: when it was recorded (``"after its tiles were read"``); ``rerun``: what a rerun
    needs once it changed (deleting the tile table, waiting for a copy to finish).
    """
    where = f"slide '{slide}': {quote(stamp.path)}"
    try:
        now = SourceStamp.of(stamp.path)
    except FileNotFoundError:
        raise InputError(
            f"{where} was deleted {since}; restore it and rerun, or remove the slide from the sample sheet"
        ) from None
    except OSError as err:
        raise InputError(f"{where} cannot be read any more ({err.strerror or err}) {since}") from None
    if (now.size, now.mtime_ns) != (stamp.size, stamp.mtime_ns):
        raise InputError(f"{where} changed {since} (then {stamp.describe()}; now {now.describe()}); {rerun}")
