"""Mask jobs declare ``gpu: 1`` whenever they run on CUDA, so ``--resources gpu=N`` caps them.

This machine has no GPU: the GPUs are made visible by ``CUDA_VISIBLE_DEVICES`` (what the
planning reads, without importing a framework) and only dry runs are checked; a job really
taking ``cuda:{i}`` is covered by ``tests/test_devices.py`` (the lock that hands out devices).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import REPO, local_snakemake_env
from .test_workflow import make_project

TILES = [{"slide": "s1", "x": 128 * i, "y": 0} for i in range(4)]


def mask_gpus(root, env_gpus: str | None, *args: str) -> list[int]:
    """The ``gpu`` resource of every mask job a dry run plans, with ``CUDA_VISIBLE_DEVICES=env_gpus``."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if env_gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = env_gpus
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "-n", *args]
    result = subprocess.run(cmd, cwd=root, env=local_snakemake_env(env), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    blocks = result.stdout.split("rule masks:")[1:]
    return [int(re.search(r"resources: .*\bgpu=(\d+)", block).group(1)) for block in blocks]


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("device", "visible", "extra", "expected"),
    [
        ("auto", "0,1", {}, 1),  # auto on a machine with GPUs: every mask job on CUDA asks one
        ("auto", "", {}, 0),  # no GPU visible: CPU jobs ask none
        ("cuda", "", {}, 1),  # cuda: always one (the job then fails clearly where there is none)
        ("cpu", "0,1", {}, 0),  # cpu: none, GPUs or not
        ("auto", "0,1", {"mask_resources": {"gpu": 0}}, 0),  # mask_resources.gpu overrides
    ],
)
def test_mask_jobs_declare_a_gpu_when_they_run_on_cuda(tmp_path, slide_path, model_dir, device, visible, extra, expected):
    root = make_project(tmp_path, slide_path, model_dir, TILES, methods=["vanilla", "gradcam"], device=device, **extra)
    gpus = mask_gpus(root, visible)
    assert gpus == [expected] * 4  # 2 chunks × 2 methods
