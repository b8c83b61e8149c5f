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


# the two documented settings of profiles/slurm: GPUs per mask job come from the workflow config
# (the test node's GPU is a scheduling fake, so the GPU setting asks for it with mask_resources
# while the jobs compute on the CPU)
SETTINGS = {"gpu": {"mask_resources": {"gpu": 1}}, "cpu-only": {"device": "cpu"}}
# a fixed memory budget: the same batch split whatever memory is free on either side
OPTIONS = {"methods": METHODS, "tiles_per_job": 2, "threads": 1, "memory_budget_mb": 256}


def _results(root: Path) -> dict[str, bytes]:
    """A run's result files; logs and benchmarks (timings, host names) aside."""
    files = _files(root / "results")
    return {name: data for name, data in files.items() if not name.startswith(("logs/", "benchmarks/"))}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, ihc):
    root = tmp_path_factory.mktemp("slurm")
    slide = write_test_slide(root / "slide.tiff", ihc)
    model = write_model_dir(root / "model")
    local = make_project(root / "local", slide, model, TILES, **OPTIONS)
    run = subprocess.run(
        _snakemake(local, "--cores", "2", "--show-failed-logs"), cwd=local, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return {"slide": slide, "model": model, "results": _results(local)}


@pytest.mark.workflow
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_slurm_profile_matches_local_run(tmp_path, slurm_cluster, local_run, setting):
    slurm = make_project(tmp_path / "slurm", local_run["slide"], local_run["model"], TILES, **OPTIONS, **SETTINGS[setting])
    slurm_cmd = _snakemake(slurm, "--profile", str(PROFILE), "--slurm-keep-successful-logs")
    proc = subprocess.run(slurm_cmd, cwd=slurm, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    slurm_out = proc.stdout
    assert proc.returncode == 0, slurm_out[-6000:]

    # Every job but the target rule `all` went through sbatch; SLURM lists them as completed.
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", slurm_out)
    assert len(submitted) >= 4, slurm_out[-3000:]  # tiles, 2 masks, pictures, summary, figure
    assert set(re.findall(r"^localrule (\w+):", slurm_out, flags=re.M)) == {"all"}, slurm_out[-3000:]
    logs = {p.stem for p in (slurm / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(submitted) <= logs, (submitted, logs)
    states = _squeue(submitted)
    assert {job: state for job, (state, _) in states.items()} == dict.fromkeys(submitted, "COMPLETED")
    mask_jobs = _mask_job_ids(slurm)
    assert len(mask_jobs) == len(METHODS) and mask_jobs <= set(submitted), (mask_jobs, submitted)
    asked_gpu = {job for job, (_, tres) in states.items() if "gpu" in tres}
    if setting == "gpu":  # each mask job, and no other, asks one GPU
        assert asked_gpu == mask_jobs, states
    else:  # the CPU-only setting: no job asks a GPU
        assert asked_gpu == set(), states

    # Same result files, byte for byte; logs and benchmarks under the outdir too.
    slurm_files = _results(slurm)
    assert sorted(slurm_files) == sorted(local_run["results"])
    masks = sorted(name for name in slurm_files if name.startswith("masks/"))  # a mask file per job, not per tile
    assert masks == sorted(f"masks/s1/{method}/chunk0000.npz" for method in METHODS), masks
    differ = [name for name in slurm_files if local_run["results"][name] != slurm_files[name]]
    assert not differ, differ
    assert (slurm / "results/logs/masks/s1/chunk0000/vanilla.log").is_file()
    assert not (slurm / "logs").exists() and not (slurm / "benchmarks").exists()


def _mask_job_ids(root: Path) -> set[str]:
    """SLURM job ids of the mask rule's jobs (the plugin's log folders: rule_masks/<wildcards>/<id>.log)."""
    return {p.stem for p in (root / ".snakemake" / "slurm_logs" / "rule_masks").rglob("*.log")}
