"""The workflow on a real SLURM: profiles/slurm on a one-node cluster (tests/slurm/cluster.sh)
runs every job through sbatch and gives results byte-identical to a local run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO, write_model_dir, write_test_slide
from ..test_workflow import make_project

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
# Two fast methods × one chunk of two tiles: 2 mask jobs (each SLURM job costs ~10 s here).
METHODS = ["vanilla", "gradcam"]
TILES = [{"slide": "s1", "x": 0, "y": 0}, {"slide": "s1", "x": 640, "y": 384}]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: tests/slurm/cluster.sh installs and starts the slurm daemons"
    if not (shutil.which("sbatch") and shutil.which("slurmctld")) and not shutil.which("apt-get"):
        return "slurm is not installed and there is no apt-get to install it"
    return None


def _cluster(command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER), command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running one-node SLURM; stopped afterwards when this fixture started it."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    was_up = "cluster.sh: node " in _cluster("status").stdout  # daemons already running
    started = _cluster("start")
    assert started.returncode == 0, started.stdout + started.stderr
    yield
    if not was_up:
        _cluster("stop")


def _snakemake(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _squeue(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Job id → (state, GPUs asked) for jobs SLURM still lists (MinJobAge=300 s)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-O", "JobID:24,State:24,tres-per-job:80,tres-per-node:80"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {row[0]: (row[1], " ".join(row[2:])) for row in rows}


@pytest.mark.workflow
def test_slurm_profile_matches_local_run(tmp_path, slurm_cluster, ihc):
    slide = write_test_slide(tmp_path / "slide.tiff", ihc)
    model = write_model_dir(tmp_path / "model")
    # a fixed memory budget: the same batch split whatever memory is free on either side
    options = {"methods": METHODS, "tiles_per_job": 2, "threads": 1, "memory_budget_mb": 256}
    local = make_project(tmp_path / "local", slide, model, TILES, **options)
    slurm = make_project(tmp_path / "slurm", slide, model, TILES, **options)

    # One after the other: a local run alongside takes the CPUs the SLURM jobs need
    # (a 2-CPU node here), and saves nothing.
    slurm_cmd = _snakemake(slurm, "--profile", str(PROFILE), "--slurm-keep-successful-logs")
    proc = subprocess.run(slurm_cmd, cwd=slurm, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    slurm_out = proc.stdout
    local_run = subprocess.run(
        _snakemake(local, "--cores", "2", "--show-failed-logs"), cwd=local, capture_output=True, text=True, timeout=600
    )
    assert local_run.returncode == 0, local_run.stdout[-3000:] + local_run.stderr[-3000:]
    assert proc.returncode == 0, slurm_out[-6000:]

    # Every job but the target rule `all` went through sbatch; SLURM lists them as completed.
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", slurm_out)
    assert len(submitted) >= 4, slurm_out[-3000:]  # tiles, 2 masks, overlays, summary, figure
    assert set(re.findall(r"^localrule (\w+):", slurm_out, flags=re.M)) == {"all"}, slurm_out[-3000:]
    logs = {p.stem for p in (slurm / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(submitted) <= logs, (submitted, logs)
    states = _squeue(submitted)
    assert {job: state for job, (state, _) in states.items()} == dict.fromkeys(submitted, "COMPLETED")
    assert any("gpu" in gres for _, gres in states.values()), states  # set-resources: masks ask a GPU

    # Same result files, byte for byte.
    local_files, slurm_files = _files(local / "results"), _files(slurm / "results")
    assert sorted(slurm_files) == sorted(local_files)
    assert sum(name.endswith(".npy") for name in local_files) >= len(METHODS) * len(TILES)  # a mask per tile
    differ = [name for name in local_files if local_files[name] != slurm_files[name]]
    assert not differ, differ
