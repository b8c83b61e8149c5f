"""Workflow overhead: wall time of a local run against the compute its jobs report.

1,000 demo tiles × 6 methods with the demo CNN, run with ``snakemake --cores N``.  Each job's
``benchmark:`` file gives its own wall time (process start, imports, model load and compute);
the overhead is what Snakemake adds around them (DAG, scheduling, file checks):

    overhead = wall / (sum of job seconds / cores) − 1        (target ≤ 10%)

With ``--cores 1`` jobs run one at a time and the sum is exact; with more cores jobs share
the CPU, so the ideal is approximate.  Uses resources/demo/model when it exists (else
trains one for 1 epoch).  ``--steps`` sets every integration method's steps (Slideflow's
defaults are 25-100; fewer steps make compute cheaper and the overhead ratio stricter).

    .venv/bin/python bench/workflow_bench.py [--tiles 1000] [--tiles-per-job 64] [--cores 1] [--steps 10]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from slidegrad import demo  # noqa: E402


def methods(steps: int) -> list:
    return [
        "vanilla",
        {"name": "integrated_gradients", "x_steps": steps},
        {"name": "guided_integrated_gradients", "x_steps": steps},
        {"name": "blur_integrated_gradients", "steps": steps},
        {"name": "xrai_fast", "steps": steps},
        "gradcam",
    ]


def make_project(root: Path, n_tiles: int, tiles_per_job: int, steps: int) -> int:
    slides = {}
    for variant in demo.VARIANTS:
        slides[f"demo_{variant}"] = root / f"demo_{variant}.tiff"
        demo.write_demo_slide(slides[f"demo_{variant}"], variant)
    model = REPO / "resources/demo/model"
    if not (model / "weights.pt").exists():
        model = root / "model"
        demo.train_demo_model(list(slides.values()), model, epochs=1)
    per_slide = -(-n_tiles // len(slides))
    rows = []
    for name, path in slides.items():
        _, coords = demo.grid_tiles(path, stride_div=2)
        rows += [{"slide": name, "x": x, "y": y} for x, y in coords[:per_slide]]
    rows = rows[:n_tiles]
    with open(root / "tiles.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slide", "x", "y"])
        writer.writeheader()
        writer.writerows(rows)
    with open(root / "samples.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "path"])
        writer.writerows(slides.items())
    config = {
        "samples": "samples.csv", "tiles": "tiles.csv", "model": {"path": str(model)}, "methods": methods(steps),
        "tiles_per_job": tiles_per_job, "threads": 1, "stride_div": 2,
    }  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return len(rows)


def job_seconds(root: Path) -> dict[str, float]:
    """Sum of the ``s`` column of every benchmark file, per rule folder."""
    sums: dict[str, float] = {}
    for path in (root / "results" / "benchmarks").rglob("*.tsv"):
        rule = path.relative_to(root / "results" / "benchmarks").parts[0]
        with open(path) as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        sums[rule.removesuffix(".tsv")] = sums.get(rule.removesuffix(".tsv"), 0.0) + float(row["s"])
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1000)
    parser.add_argument("--tiles-per-job", type=int, default=64)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n = make_project(root, args.tiles, args.tiles_per_job, args.steps)
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root),
               "--cores", str(args.cores), "--quiet", "all"]  # fmt: skip
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"snakemake failed:\n{result.stderr[-3000:]}")
        sums = job_seconds(root)
        n_jobs = sum(1 for _ in (root / "results" / "benchmarks").rglob("*.tsv"))
    total = sum(sums.values())
    ideal = total / args.cores
    print(f"tiles {n} × methods 6, tiles_per_job {args.tiles_per_job}, cores {args.cores}, steps {args.steps}")
    print("job seconds by rule: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(sums.items())))
    print(f"jobs {n_jobs}  sum of job seconds {total:.1f}  ideal wall {ideal:.1f}  wall {wall:.1f}")
    print(f"overhead {100 * (wall / ideal - 1):.1f}%  (target ≤ 10%)")


if __name__ == "__main__":
    main()
