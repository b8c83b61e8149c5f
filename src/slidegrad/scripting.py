"""Glue for the workflow's scripts: run a job, logging to its log, turning bad input into one error line."""

from __future__ import annotations

import sys
import zipfile
from typing import Any, Callable, NoReturn

from .errors import SlidegradError
from .failures import load_error_line, os_error_line
from .progress import setup_job_logging


def runtime_options(config: dict[str, Any], threads: int) -> dict[str, Any]:
    """What a model job takes from the config at run time (changing it reruns nothing): its
    ``threads``, the native engine's ``memory_budget_mb`` and the GPU ``lock_dir``."""
    from .layout import Layout

    return {
        "threads": threads,
        "memory_budget_mb": config["memory_budget_mb"],
        "lock_dir": Layout(config["outdir"]).gpu_locks(),
    }


def run_job(job: Callable[..., Any], **kwargs: Any) -> None:
    """Call ``job(**kwargs)`` with ``slidegrad`` logging to stderr (the job's log file).

    On :class:`SlidegradError` print ``slidegrad: error: <line>`` to stderr and exit 1;
    Snakemake then deletes the job's outputs, so nothing half-written remains.  A fault of the
    machine gets the same one line, no traceback: any ``OSError`` (disk full, a read-only or
    vanished folder, a file gone) names the path and the cause (:func:`slidegrad.failures.os_error_line`),
    and a file ``numpy.load`` finds truncated or corrupt names the file and the rule that wrote it.
    """
    setup_job_logging(sys.stderr)
    try:
        job(**kwargs)
    except SlidegradError as err:
        _fail(str(err))
    except OSError as err:
        _fail(os_error_line(err))
    except (ValueError, EOFError, zipfile.BadZipFile) as err:
        line = load_error_line(err)  # only an error raised inside numpy.load; any other is a bug: its traceback
        if line is None:
            raise
        _fail(line)


def _fail(line: str) -> NoReturn:
    """Print the error line to the job's log (if that cannot be written, e.g. its disk is full, to the
    process's own stderr) and exit 1."""
    message = f"slidegrad: error: {line}"
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        print(message, file=sys.__stderr__, flush=True)
    sys.exit(1)
