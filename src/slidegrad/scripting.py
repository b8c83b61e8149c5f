"""Glue for the workflow's scripts: run a job, logging to its log, turning bad input into one error line."""

from __future__ import annotations

import sys
from typing import Any, Callable

from .errors import SlidegradError
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
    Snakemake then deletes the job's outputs, so nothing half-written remains.
    """
    setup_job_logging(sys.stderr)
    try:
        job(**kwargs)
    except SlidegradError as err:
        print(f"slidegrad: error: {err}", file=sys.stderr)
        sys.exit(1)
