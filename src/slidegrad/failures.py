"""When jobs fail: one line per fault of the machine, and a run's list of failed jobs.

* :func:`os_error_line`: an ``OSError`` (disk full, read-only or vanished folder, a file gone) as one line
  naming the path and the cause; :func:`slidegrad.scripting.run_job` prints it.
* :func:`load_npy` and :func:`corrupt_file`: a mask (or other file a job wrote) that is truncated or
  corrupt, as one line naming the file, the rule that wrote it and what to delete to recompute it.
* :func:`report_failures` (the Snakefile's ``onerror:``): one line per failed job of the run, and the
  same rows in ``{outdir}/failures.csv``; :func:`forget_failures` (``onsuccess:``) removes that file.
"""

from __future__ import annotations

import contextlib
import errno as errnos
import io
import os
import shutil
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import InputError, SlidegradError, first_line, quote
from .layout import Layout, written_by  # noqa: F401 - written_by: re-exported

ERROR_PREFIX = "slidegrad: error: "
FAILURE_COLUMNS = ("slide", "rule", "message", "log")
RERUN_LINE = (
    "slidegrad: Snakemake removed the outputs of the failed jobs, so running snakemake again retries "
    "them (and only them, with what depends on them); fix the cause first"
)
LOW_SPACE_BYTES = 1 << 20  # a file system with less free than this is called full in an error line


def rerun_hint(path: str | os.PathLike[str]) -> str:
    """``; it was written by rule R; delete … and rerun to recompute it`` (empty for a file no rule wrote)."""
    found = written_by(path)
    if found is None:
        return ""
    rule, output = found
    what = "it" if Path(output) == Path(path) else f"its folder {quote(output)}"
    return f"; it was written by rule {rule}; delete {what} and rerun to recompute it"


def corrupt_file(path: str | os.PathLike[str], what: str, err: BaseException) -> InputError:
    """The one line for a file that cannot be parsed: ``{what} '{path}' is truncated or corrupt (…)``."""
    return InputError(f"{what} {quote(path)} is truncated or corrupt ({first_line(err)}){rerun_hint(path)}")


_NPY_ERRORS = (ValueError, EOFError, zipfile.BadZipFile)  # what np.load raises for a short or garbled file


def load_npy(path: str | os.PathLike[str], what: str = "mask") -> Any:
    """``np.load(path)`` (no pickles); a truncated or corrupt file is an :class:`InputError` naming it
    and the rule that wrote it (:func:`corrupt_file`)."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except _NPY_ERRORS as err:
        raise corrupt_file(path, what, err) from None


# -- one line for an OSError ---------------------------------------------------------------------------
def _open_file(err: BaseException) -> tuple[str, bool] | None:
    """``(path, writing)`` of the file object a failed call was using: the innermost frame of ``err``'s
    traceback (or of the exception it was raised during) with an open file among its locals.  A write
    or close error (disk full) names no file itself (``err.filename`` is ``None``)."""
    seen = 0
    while err is not None and seen < 3:
        frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]
        for frame in reversed(frames):
            for value in list(frame.f_locals.values()):
                name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
                if isinstance(name, (str, bytes)) or isinstance(name, os.PathLike):
                    mode = str(getattr(value, "mode", ""))
                    return os.fsdecode(name), any(c in mode for c in "wax+")
        err, seen = err.__context__, seen + 1  # type: ignore[assignment]
    return None


def _free_bytes(path: str) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing folder)."""
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def os_error_line(err: OSError) -> str:
    """One line for an ``OSError``: the path (its ``filename``, else the file it was writing or reading),
    the cause (``strerror`` and the errno's name) and, for a full disk, what to do.

    e.g. ``cannot write '…/tiles/s1/x0_y0.png': No space left on device (ENOSPC); free space on its
    file system (or set outdir to another one) and rerun``.
    """
    path: str | None = os.fsdecode(err.filename) if err.filename is not None else None
    writing: bool | None = None
    if path is None:
        found = _open_file(err)
        if found:
            path, writing = found
    code = err.errno
    cause = err.strerror or first_line(err)
    if code in errnos.errorcode:
        cause += f" ({errnos.errorcode[code]})"
    full = code in (errnos.ENOSPC, errnos.EDQUOT)
    if code is None and path is not None and writing is not False:  # e.g. numpy's "N requested and M written"
        free = _free_bytes(path)
        if free is not None and free < LOW_SPACE_BYTES:
            cause, full, writing = f"{cause}: its file system is full ({free} bytes free)", True, True
    if writing is None and (full or code == errnos.EROFS):
        writing = True
    target = quote(path) if path is not None else "a file"
    if err.filename2 is not None:
        target += f" → {quote(os.fsdecode(err.filename2))}"
    verb = {True: "cannot write ", False: "cannot read "}.get(writing, "") if writing is not None else ""
    if not verb and path is None:
        verb = "I/O error on "
    line = f"{verb}{target}: {cause}"
    if full:
        line += "; free space on its file system (or set outdir to another one) and rerun"
    elif path is not None and (code == errnos.ENOENT or writing is False):  # a file a job wrote: recompute it
        line += rerun_hint(path)
    return line


def load_error_line(err: BaseException) -> str | None:
    """One line for an error raised inside ``numpy.load`` (a truncated or corrupt ``.npy``/``.npz``), naming
    the file numpy was loading; ``None`` when ``err`` did not come from there.

    For jobs whose code calls ``np.load`` directly rather than :func:`load_npy`."""
    import numpy as np

    if not isinstance(err, _NPY_ERRORS):
        return None
    code = getattr(np.load, "__code__", None)
    for frame, _ in reversed(list(traceback.walk_tb(err.__traceback__))):
        if frame.f_code is code:
            file = frame.f_locals.get("file")
            if isinstance(file, (str, os.PathLike)):
                what = "mask" if written_by(file) and written_by(file)[0] == "masks" else "file"  # type: ignore[index]
                return str(corrupt_file(file, what, err))
    return None


# -- a run's failed jobs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """A failed job: its slide (empty for a rule over all slides), rule, error line and log."""

    slide: str
    rule: str
    message: str
    log: str

    def line(self) -> str:
        where = f"slide {self.slide}, rule {self.rule}" if self.slide else f"rule {self.rule}"
        return f"slidegrad: failed: {where}: {self.message} (log: {self.log or 'none'})"


def _log_lines(log: str | os.PathLike[str]) -> list[str]:
    """The non-empty lines of a log (``OSError`` if it cannot be read)."""
    text = Path(log).read_text(encoding="utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def error_line(log: str | os.PathLike[str] | None) -> str | None:
    """A job log's last ``slidegrad: error:`` line, without the prefix (``None``: it has none)."""
    try:
        lines = _log_lines(log) if log else []
    except OSError:
        return None
    return next((line[len(ERROR_PREFIX) :] for line in reversed(lines) if line.startswith(ERROR_PREFIX)), None)


def error_message(log: str | os.PathLike[str] | None) -> str:
    """What a failed job's log says: its last ``slidegrad: error:`` line (without the prefix); else its
    last line (a crash: e.g. a traceback's last line); else that it has no log."""
    if not log:
        return "the job has no log"
    try:
        lines = _log_lines(log)
    except OSError as err:
        return f"its log cannot be read ({err.strerror or first_line(err)})"
    found = error_line(log)
    if found is not None:
        return found
    if not lines:
        return "the log is empty (the job stopped before it started, or was killed)"
    return f"no slidegrad error line; the log ends: {lines[-1][:300]}"


def failed_jobs(workflow: Any) -> list[tuple[str, dict[str, str], list[str]]]:
    """``(rule, wildcards, logs)`` of every job that failed in this run, after its retries.

    From Snakemake's own record (``workflow.scheduler.failed``, the set its scheduler adds a job to once
    its last attempt failed): exactly this run's failures, a crash without a ``slidegrad: error:`` line
    included, and no stale log of an earlier run.  A group job (a cluster bundle of overlay jobs) stands
    for its members whose log ends in an error line (all of them, if none does)."""
    scheduler = getattr(workflow, "scheduler", None)
    jobs = getattr(scheduler, "failed", None)
    if jobs is None:
        raise AttributeError("this Snakemake has no workflow.scheduler.failed")
    found = []
    for job in jobs:
        members = list(getattr(job, "jobs", None) or [job])
        records = [(m.rule.name, dict(getattr(m, "wildcards_dict", {}) or {}), [str(p) for p in m.log]) for m in members]
        if len(records) > 1:
            records = [r for r in records if any(error_line(log) is not None for log in r[2])] or records
        found += records
    return found


def collect_failures(jobs: Iterable[tuple[str, dict[str, str], Sequence[str]]]) -> list[Failure]:
    """One :class:`Failure` per job, its message from its log; sorted by slide, rule and log."""
    failures = []
    for rule, wildcards, logs in jobs:
        log = next((str(p) for p in logs if error_line(p) is not None), str(logs[0]) if logs else "")
        failures.append(Failure(str(wildcards.get("slide", "")), rule, error_message(log), log))
    return sorted(set(failures), key=lambda f: (f.slide, f.rule, f.log))


def failures_csv(outdir: str) -> str:
    return Layout(outdir).failures()


def report_failures(workflow: Any, outdir: str, say: Callable[[str], Any] = print) -> list[Failure]:
    """The Snakefile's ``onerror:``: ``say`` one line per failed job, and where they were written
    (``{outdir}/failures.csv``, columns :data:`FAILURE_COLUMNS`, atomically), and that a rerun retries them."""
    from .files import write_csv

    try:
        failures = collect_failures(failed_jobs(workflow))
    except AttributeError as err:  # another Snakemake: its logs hold the lines
        say(f"slidegrad: cannot list the failed jobs ({err}); see their logs under {quote(Layout(outdir).log_dir())}")
        return []
    if not failures:
        return []
    target = failures_csv(outdir)
    try:
        write_csv(target, FAILURE_COLUMNS, [f.__dict__ for f in failures])
        where = f"listed in {quote(target)}"
    except SlidegradError as err:
        where = f"not written to a file: {err}"
    jobs = "1 job" if len(failures) == 1 else f"{len(failures)} jobs"
    say(f"slidegrad: {jobs} of this run failed ({where}):")
    for failure in failures:
        say(failure.line())
    say(RERUN_LINE)
    return failures


def forget_failures(outdir: str) -> None:
    """The Snakefile's ``onsuccess:``: remove a ``failures.csv`` an earlier, failed run left (silently)."""
    with contextlib.suppress(OSError):  # gone already, or a folder we cannot write: nothing to do
        os.unlink(failures_csv(outdir))
