"""Cost of the evaluation stage against the mask jobs', at the demo's settings, from one run.

Runs the embedded demo (``config.yaml``: 12 tiles, 8 methods, ``evaluate:`` deletion,
insertion and pointing at 20 steps) into a fresh ``outdir`` with ``--cores 1``, so jobs run
one at a time and each job's Snakemake ``benchmark:`` file is its own wall time (process
start, imports, model load and compute).  Prints both sums and

    ratio = Σ evaluate jobs / Σ mask jobs          (target ≤ 0.5)

plus the same ratio on CPU seconds (``cpu_time``).  The demo's slides and model under
``resources/demo/`` are built first if missing (not counted).  A GPU run: ``--device cuda``.

    .venv/bin/python bench/evaluate_bench.py [--cores 1] [--device auto]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def job_seconds(outdir: Path, rule: str) -> tuple[float, float, int]:
    """(wall s, cpu s, jobs) summed over a rule's benchmark files."""
    wall = cpu = 0.0
    files = sorted((outdir / "benchmarks" / rule).rglob("*.tsv"))
    for path in files:
        with open(path) as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        wall += float(row["s"])
        cpu += float(row["cpu_time"])
    return wall, cpu, len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(REPO)]
    # the demo's inputs first (shared by every run, not timed)
    subprocess.run([*snakemake, "--cores", "all", "resources/demo/model"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="evaluate_bench_") as tmp:
        outdir = Path(tmp) / "out"
        start = time.perf_counter()
        run = subprocess.run(
            [*snakemake, "--cores", str(args.cores), "--config", f"outdir={outdir}", f"device={args.device}"],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if run.returncode != 0:
            sys.exit(f"evaluate_bench: the demo run failed:\n{run.stderr[-3000:]}")
        masks = job_seconds(outdir, "masks")
        evaluate = job_seconds(outdir, "evaluate")
        with open(outdir / "evaluation.csv") as handle:
            rows = sum(1 for _ in handle) - 1
    print(f"demo run: {wall:.1f} s wall, --cores {args.cores}, device {args.device}; evaluation.csv: {rows} rows")
    print(f"mask jobs:     {masks[2]:3d} jobs, {masks[0]:7.1f} s wall, {masks[1]:7.1f} s cpu")
    print(f"evaluate jobs: {evaluate[2]:3d} jobs, {evaluate[0]:7.1f} s wall, {evaluate[1]:7.1f} s cpu")
    print(f"ratio evaluate / masks: wall {evaluate[0] / masks[0]:.3f}, cpu {evaluate[1] / masks[1]:.3f} (target <= 0.5)")


if __name__ == "__main__":
    main()
