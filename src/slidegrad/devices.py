"""One GPU per job: how many GPUs this process may use, and which one a job takes.

Imports neither torch nor TensorFlow, so the Snakemake parse process can count GPUs
(:func:`visible_gpu_count`) without loading a framework.  A job process that runs on
CUDA takes a GPU of its own with :func:`claim_gpu` (or :func:`job_device`, from the
config's ``device``): an exclusive ``fcntl.flock`` on a lock file per GPU, held for as
long as the returned handle (or the process) lives, so concurrent jobs of a run on one
host each get their own device, and wait when there are more jobs than GPUs.

Device index ``i`` means ``cuda:{i}``: the ``i``-th device of ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import IO, Any

from .errors import InputError, first_line, is_int, quote

LOGGER = logging.getLogger("slidegrad")
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the NVIDIA driver knows
POLL_S = 0.5  # seconds between tries while every GPU is taken
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}  # flock not available there


def _visible_entries() -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES``'s device entries (CUDA stops at the first empty or negative one);
    ``None`` where it is unset."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    entries = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return entries


def visible_gpu_count() -> int:
    """How many CUDA GPUs this process could use, without importing a framework.

    ``CUDA_VISIBLE_DEVICES`` set: its number of entries (``""`` or ``"-1"`` → 0; CUDA ignores
    entries from the first empty or negative one on); unset: the GPUs the NVIDIA driver lists
    in ``/proc/driver/nvidia/gpus``; 0 where nothing is found.
    """
    entries = _visible_entries()
    if entries is not None:
        return len(entries)
    try:
        return sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        return 0


def _lock_name(index: int, host: str) -> str:
    """``{host}-gpu{index}.lock``, where ``index`` stands for the device's entry in ``CUDA_VISIBLE_DEVICES``
    when that is set (e.g. ``3``, or a ``GPU-…`` UUID), so jobs that see different GPUs do not block each
    other; inside a Slurm job ``{host}`` is ``{host}-slurm{SLURM_JOB_ID}``: Slurm gives each of its jobs
    GPUs of their own (and may number them from 0 in every job)."""
    entries = _visible_entries()
    key = entries[index] if entries is not None and index < len(entries) else str(index)
    slurm_job = os.environ.get("SLURM_JOB_ID", "").strip()
    scope = f"{host}-slurm{slurm_job}" if slurm_job else host
    return f"{_safe(scope)}-gpu{_safe(key)}.lock"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "_"


def claim_gpu(lock_dir: str | os.PathLike[str], count: int | None = None) -> tuple[int, Any] | None:
    """Take a GPU of this host for this process: ``(i, handle)`` for ``cuda:{i}``, ``None`` when
    ``count`` (default :func:`visible_gpu_count`) is 0.

    Takes an exclusive non-blocking ``fcntl.flock`` on ``{lock_dir}/{hostname}-gpu{i}.lock``
    for the first free ``i`` in ``range(count)`` (``lock_dir`` is created if missing).  The lock
    holds while ``handle`` stays open (close it, or end the process, to free the GPU).  With every
    GPU taken it waits (one log line says so) and tries again every :data:`POLL_S` seconds.  Where
    the file system has no ``flock`` it logs a warning and returns ``(0, None)``: device 0, unlocked.
    With ``CUDA_VISIBLE_DEVICES`` set, the lock file is named by the device's entry there rather
    than by ``i`` (``CUDA_VISIBLE_DEVICES=3`` → ``{hostname}-gpu3.lock`` for ``cuda:0``); inside a
    Slurm job the host part is ``{hostname}-slurm{SLURM_JOB_ID}``.
    """
    count = visible_gpu_count() if count is None else count
    if not is_int(count) or count < 0:
        raise InputError(f"claim_gpu: count must be an integer >= 0, got {count!r}")
    if count == 0:
        return None
    folder = Path(lock_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"GPU lock folder {quote(folder)}: cannot create it ({first_line(exc)})") from None
    host = _safe(socket.gethostname())
    waiting = False
    while True:
        for index in range(count):
            path = folder / _lock_name(index, host)
            try:
                handle = open(path, "a+")  # noqa: SIM115 - returned: the lock lives as long as the handle
            except OSError as exc:
                raise InputError(f"GPU lock file {quote(path)}: cannot open it ({first_line(exc)})") from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process holds this GPU
                handle.close()
                continue
            except OSError as exc:
                handle.close()
                if exc.errno not in _UNSUPPORTED:
                    raise InputError(f"GPU lock file {quote(path)}: cannot lock it ({first_line(exc)})") from None
                LOGGER.warning(
                    "GPU lock folder %s does not support file locks (%s); using cuda:0 without a lock, "
                    "so concurrent jobs may share a GPU",
                    quote(folder),
                    first_line(exc),
                )
                return 0, None
            _note_holder(handle)
            if waiting:
                LOGGER.info("took cuda:%d (lock %s)", index, quote(path))
            return index, handle
        if not waiting:
            LOGGER.warning(
                "all %d GPU(s) of %s are taken by other jobs; waiting for one to be free (locks in %s)",
                count,
                host,
                quote(folder),
            )
            waiting = True
        time.sleep(POLL_S)


def _note_holder(handle: IO[str]) -> None:
    """Write the holder's pid into the lock file (for people looking at the folder); errors are ignored."""
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    except OSError:
        pass


def job_device(device: str, lock_dir: str | os.PathLike[str]) -> tuple[str, Any]:
    """The device a job runs on for the config's ``device``, and the lock that keeps it (or ``None``).

    ``"cpu"`` → ``("cpu", None)``; ``"cuda"``, or ``"auto"`` when :func:`visible_gpu_count` finds a GPU
    → a GPU of its own (:func:`claim_gpu` in ``lock_dir``): ``("cuda:{i}", handle)``; ``"auto"``
    without a GPU → ``("cpu", None)``; ``"cuda"`` without a GPU → ``("cuda", None)`` (the framework
    then says it has none).  A specific device (``"cuda:1"``) is returned as given, unlocked.
    Keep the handle (a variable of the job) for as long as the job uses the GPU.
    """
    if not isinstance(device, str):
        raise InputError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu":
        return "cpu", None
    if device not in ("auto", "cuda"):
        return device, None
    count = visible_gpu_count()
    if count == 0:
        return ("cpu" if device == "auto" else "cuda"), None
    index, handle = claim_gpu(lock_dir, count) or (0, None)  # never None: count > 0
    return f"cuda:{index}", handle
