"""How long Snakemake takes to build the DAG (``snakemake -n``) as targets grow.

A target is one (slide, tile, method) mask.  The project is synthetic: placeholder
slide files (a dry run never opens them), a tile table of level-0 x,y and 6 methods.
Prints one line per size: targets, jobs, seconds.  The target is 100,000 in ≤ 30 s.

    .venv/bin/python bench/dag_bench.py [--sizes 1000 10000 100000] [--tiles-per-job 64]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
METHODS = ["vanilla", "integrated_gradients", "guided_integrated_gradients", "blur_integrated_gradients", "xrai", "gradcam"]
TILES_PER_SLIDE = 500


def make_project(root: Path, n_targets: int, tiles_per_job: int) -> None:
    n_tiles = n_targets // len(METHODS)
    n_slides = max(1, -(-n_tiles // TILES_PER_SLIDE))
    (root / "slides").mkdir(parents=True)
    (root / "model").mkdir()
    (root / "model/params.json").write_text(json.dumps({"backend": "torch", "tile_px": 64, "tile_um": 64}))
    with open(root / "samples.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "path"])
        for s in range(n_slides):
            (root / f"slides/s{s}.svs").touch()
            writer.writerow([f"s{s}", f"slides/s{s}.svs"])
    with open(root / "tiles.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "x", "y"])
        for t in range(n_tiles):
            s, i = divmod(t, TILES_PER_SLIDE)
            writer.writerow([f"s{s}", 128 * (i % 100), 128 * (i // 100)])
    config = {
        "samples": "samples.csv", "tiles": "tiles.csv", "model": {"path": "model", "backend": "torch"},
        "tile_px": 64, "tile_um": 64, "methods": METHODS, "tiles_per_job": tiles_per_job,
    }  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(config))


def dry_run(root: Path) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "-n", "--quiet", "rules", "--cores", "1"]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{result.stderr[-2000:]}")
    total = re.search(r"^total\s+(\d+)$", result.stdout, flags=re.M)
    return seconds, int(total.group(1)) if total else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--tiles-per-job", type=int, default=64)
    args = parser.parse_args()
    print(f"{'targets':>8} {'slides':>6} {'jobs':>7} {'seconds':>8}  (tiles_per_job={args.tiles_per_job})")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_project(root, size, args.tiles_per_job)
            seconds, jobs = dry_run(root)
            n_slides = len(list((root / "slides").iterdir()))
        print(f"{size:>8} {n_slides:>6} {jobs:>7} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
