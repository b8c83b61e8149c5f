"""What every job shares: versions, the device, thread pools, the memory budget, table cells."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import __version__
from ..failures import corrupt_file
from ..model import ModelParams
from ..progress import LOGGER


def read_png(path: str | Path) -> np.ndarray:
    """uint8 ``(H, W, 3)``; a truncated or corrupt file is one InputError line naming it (and the rule that wrote it)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as err:
        if err.errno is not None:  # the file system's error (missing, unreadable): run_job's one line
            raise
        raise corrupt_file(path, "image", err) from None


def write_png(path: str | Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, format="PNG", optimize=False)


def software_versions(framework: str) -> dict[str, str]:
    """Versions of slidegrad, the model's framework (``torch`` or ``tensorflow``) and PAIR's ``saliency``."""

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return ""

    return {
        "slidegrad_version": __version__,  # the code that ran (a conda run imports it from src/, uninstalled)
        "framework": framework,
        "framework_version": version(framework),
        "pair_version": version("saliency"),
    }


def claim_device(device: str, lock_dir: str | None, framework: str) -> tuple[str, Any]:
    """The device this job runs on: its own GPU when it runs on CUDA (see :mod:`slidegrad.devices`);
    ``auto`` is the CPU where the ``framework`` (the model's, loaded already) can use no GPU (e.g. a GPU
    it was given is not CUDA's)."""
    from ..backends import get_framework
    from ..devices import job_device

    if device == "auto" and not get_framework(framework).sees_gpu():
        device = "cpu"
    chosen, handle = job_device(device, lock_dir or ".")
    LOGGER.info("device: %s", chosen)
    return chosen, handle



def load_with_threads(params: ModelParams, threads: int | None, load_options: dict[str, Any] | None = None) -> Any:
    """Pin the CPU thread pools of the model's framework to ``threads`` (results depend on it: keep it fixed
    to reproduce; before the framework initialises its pools), then load the model (``params``: read once)."""
    from ..model import detect_framework, load_model

    if threads:
        detect_framework(params).set_threads(threads)
    return load_model(params, **(load_options or {}))


def budget_bytes(memory_budget_mb: int | None) -> int | None:
    """The config's ``memory_budget_mb`` in bytes (``None``: the engine's default)."""
    return memory_budget_mb * (1 << 20) if memory_budget_mb else None



def format_cell(value: Any) -> str:
    """A CSV cell: empty for None, ``true``/``false`` for booleans, 6 decimals for floats (reruns are
    byte-identical), else ``str``."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    return f"{float(value):.6f}" if isinstance(value, (float, np.floating)) else str(value)

