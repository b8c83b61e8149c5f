"""Atomic file writes: a reader sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from .errors import InputError, first_line, quote


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "w", where: str | None = None, make_parents: bool = True,
    os_errors: bool = False,
) -> Iterator[IO[Any]]:
    """Open a fresh temporary file beside ``path`` (``mode`` ``"w"`` or ``"wb"``); on success fsync it and
    rename it onto ``path``; on any error remove it and leave ``path`` as it was.

    Parent folders are created unless ``make_parents`` is false (then a missing one is an error).  An
    ``OSError`` while writing becomes an :class:`InputError` naming ``where`` (default: the path), or with
    ``os_errors`` the same ``OSError`` naming ``path`` (not the temporary), for a job's one-line report
    (:func:`slidegrad.failures.os_error_line`: the cause, and what to do on a full disk).  Concurrent
    writers each get their own temporary name.
    """
    target = Path(path)
    where = where or quote(target)
    if not make_parents and not target.parent.is_dir():
        raise InputError(f"{where}: the folder {quote(target.parent)} does not exist")
    if target.is_dir():
        raise InputError(f"{where}: is a directory, expected a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise InputError(f"{where}: cannot create a file in {quote(target.parent)} ({first_line(exc)})") from None
    os.fchmod(handle, 0o666 & ~_umask())
    os.close(handle)  # reopened by name: writers like tifffile want a file with a path
    try:
        with open(tmp, mode, **({} if "b" in mode else {"newline": "", "encoding": "utf-8"})) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and os_errors:  # the job's one OSError line (run_job), naming the target
            raise OSError(exc.errno, exc.strerror, os.fspath(target)) from None
        if isinstance(exc, OSError):
            raise InputError(f"{where}: cannot write the file ({first_line(exc)})") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(path: str | os.PathLike[str], columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """A UTF-8 CSV with ``columns`` and ``\\n`` line ends, written atomically."""
    with atomic_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """A UTF-8 text file, written atomically."""
    with atomic_write(path) as handle:
        handle.write(text)
