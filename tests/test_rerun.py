"""Killing a local run midway, then rerunning, completes only the missing targets."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, local_snakemake_env, run_snakemake
from .test_workflow import make_project

METHODS = ["vanilla", {"name": "integrated_gradients", "x_steps": 8}, "gradcam"]
TILES = [{"slide": "s1", "x": 128 * i, "y": 0} for i in range(6)]


def mask_files(root: Path) -> dict[str, int]:
    """Finished mask jobs (their benchmark file is written last) → their mask file's mtime."""
    done = {}
    for bench in (root / "results/benchmarks/masks").rglob("*.tsv"):
        chunk, method = bench.parent.name, bench.stem
        done[f"{chunk}/{method}"] = (root / "results/masks/s1" / method / f"{chunk}.npz").stat().st_mtime_ns
    return done


def executed(output: str, rule: str) -> int:
    """How many jobs of ``rule`` a run's job stats report."""
    match = re.search(rf"^{rule}\s+(\d+)$", output, flags=re.M)
    return int(match.group(1)) if match else 0


def _default_sigint() -> None:
    """Ctrl-C's default action in the run, as in a terminal: a test runner started in the
    background (``nohup … &``, a CI shell without job control) passes SIGINT ignored to its children."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.workflow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_killed_run_resumes_with_only_the_missing_jobs(tmp_path, slide_path, model_dir, sig):
    root = make_project(tmp_path / "run", slide_path, model_dir, TILES, methods=METHODS, tiles_per_job=2)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "--cores", "1"]
    run = subprocess.Popen(
        cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=local_snakemake_env(), preexec_fn=_default_sigint,
    )
    deadline = time.time() + 300
    while len(mask_files(root)) < 3 and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert run.poll() is None, "the run ended before it could be killed"
    os.killpg(run.pid, sig)  # snakemake and the job it is running
    run.wait(timeout=60)
    finished = mask_files(root)
    assert 3 <= len(finished) < 9

    if sig == signal.SIGKILL:  # a killed snakemake leaves its lock; the user unlocks
        assert run_snakemake(root, "--unlock").returncode == 0
    rerun = run_snakemake(root)
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-3000:]
    assert executed(output, "masks") == 9 - len(finished)
    after = mask_files(root)
    assert len(after) == 9
    assert {k: after[k] for k in finished} == finished  # finished masks were not recomputed
    again = run_snakemake(root, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    rows = (root / "results/summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 * 3
    # one file per mask job (a job killed while writing may leave its hidden temporary, .{chunk}.npz.*.tmp)
    files = sorted(p.relative_to(root / "results/masks/s1").as_posix() for p in (root / "results/masks/s1").rglob("[!.]*") if p.is_file())
    assert files == sorted(f"{m}/chunk000{c}.npz" for m in ("vanilla", "integrated_gradients", "gradcam") for c in range(3))
