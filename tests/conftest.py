"""Shared fixtures: a tiny seeded CNN, real IHC tiles, small slides and model directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_TILE_PX = 64
TEST_TILE_UM = 64  # at 0.5 µm/px: 128 level-0 px, read from the 2× level


@pytest.fixture(scope="session")
def ihc() -> np.ndarray:
    """The real IHC sample image shipped with scikit-image, uint8 (512, 512, 3)."""
    from skimage.data import immunohistochemistry

    return immunohistochemistry()


@pytest.fixture(scope="session")
def ihc_tiles(ihc) -> np.ndarray:
    """Four 64×64 uint8 tiles: two DAB-rich, two stroma."""
    corners = [(0, 0), (320, 270), (150, 240), (330, 180)]
    return np.stack([ihc[y : y + 64, x : x + 64] for x, y in corners])


def make_tiny_cnn(seed: int = 0, n_classes: int = 2):
    import torch

    from slidegrad.torch_nets import SmallCNN

    torch.manual_seed(seed)
    model = SmallCNN(n_classes=n_classes, widths=(4, 8))
    return model.eval()


@pytest.fixture()
def tiny_cnn():
    return make_tiny_cnn()


def write_model_dir(path: Path, tile_px: int = TEST_TILE_PX, tile_um: float = TEST_TILE_UM, seed: int = 0) -> Path:
    """A model directory (weights.pt + params.json) with a seeded tiny SmallCNN."""
    import torch

    model = make_tiny_cnn(seed)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path / "weights.pt")
    params = {
        "backend": "torch",
        "architecture": "small_cnn",
        "architecture_kwargs": {"widths": [4, 8]},
        "tile_px": tile_px,
        "tile_um": tile_um,
        "outcome_labels": ["negative", "positive"],
        "preprocessing": "scale",
    }
    (path / "params.json").write_text(json.dumps(params))
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "model")


def write_test_slide(path: Path, ihc: np.ndarray, mpp: float | None = 0.5) -> Path:
    """A 1024×1024 pyramidal TIFF from the IHC image (mirrored 2×2)."""
    from slidegrad.slide import write_pyramidal_tiff

    top = np.concatenate([ihc, ihc[:, ::-1]], axis=1)
    image = np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))
    if mpp is None:
        import tifffile

        tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", metadata=None)
        return path
    write_pyramidal_tiff(path, image, mpp=mpp, min_level_size=256)
    return path


@pytest.fixture(scope="session")
def slide_path(tmp_path_factory, ihc) -> Path:
    return write_test_slide(tmp_path_factory.mktemp("slides") / "test.tiff", ihc)


def write_positive_demo_tiles(path: Path) -> list[dict[str, str]]:
    """A tile table (``slide, x, y``) of the committed demo table's first DAB-positive tile of each slide;
    returns those rows of the demo table."""
    import csv

    with open(REPO / "config/demo/tiles.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["dab_label"] == "1"]
    picks = [next(r for r in rows if r["slide"] == s) for s in ("demo_a", "demo_b")]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slide", "x", "y"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(picks)
    return picks


def result_files(root: Path, sub: str = "") -> set[Path]:
    """Files a run left under ``results/{sub}``, its job logs, benchmarks and failure report aside (a failed
    job's log stays; ``failures.csv`` lists the failed jobs, see slidegrad.failures)."""
    folder = root / "results" / sub
    logs = (root / "results" / "logs", root / "results" / "benchmarks")
    report = root / "results" / "failures.csv"
    return {p for p in folder.rglob("*") if p.is_file() and p != report and not any(p.is_relative_to(d) for d in logs)}


_NO_SCONTROL: Path | None = None


def local_snakemake_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a local (not SLURM) snakemake run in a test: ``PATH`` starts with a folder
    whose ``scontrol`` fails at once.

    Where SLURM's client is installed, the SLURM executor plugin runs ``scontrol show config`` when
    snakemake imports it, at every start, and that waits ~9 s for a controller that is down (see
    the README's SLURM section); a local run never needs the answer.  tests/slurm uses the real one.
    """
    global _NO_SCONTROL
    if _NO_SCONTROL is None:
        import tempfile

        _NO_SCONTROL = Path(tempfile.mkdtemp(prefix="slidegrad-no-scontrol-"))
        stub = _NO_SCONTROL / "scontrol"
        stub.write_text("#!/bin/sh\necho 'scontrol: disabled for local test runs' >&2\nexit 1\n")
        stub.chmod(0o755)
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{_NO_SCONTROL}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` (which holds config.yaml), locally."""
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
        "--cores", "2", "--show-failed-logs", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir, env=local_snakemake_env())


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory) -> dict:
    """Both demo slides and a demo model trained for one epoch (shared by the demo and parity tests)."""
    from slidegrad import demo

    root = tmp_path_factory.mktemp("demo")
    slides = {}
    for variant in demo.VARIANTS:
        slides[variant] = root / f"demo_{variant}.tiff"
        demo.write_demo_slide(slides[variant], variant)
    params = demo.train_demo_model(list(slides.values()), root / "model", epochs=1)
    return {"slides": slides, "model": root / "model", "params": params}
