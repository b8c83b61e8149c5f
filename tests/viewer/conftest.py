"""The viewer's fixtures: a small real run (Snakemake: one slide, table mode, two methods, slide maps,
deletion metric), a real ``slidegrad view`` server on it (a subprocess on a free port, stopped at the
end), and Debian's chromium driven by Playwright (installed by tests/viewer/chromium.sh when missing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ..conftest import REPO, run_snakemake, write_model_dir, write_test_slide

CHROMIUM_SH = Path(__file__).with_name("chromium.sh")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# Explained tiles (level-0 top-left; 128 px a side on the 1024 × 1024 test slide); (768, 0) stays unexplained.
TILES = [(0, 0), (128, 0), (256, 128), (512, 512), (640, 384), (896, 896)]
METHODS = ["vanilla", "gradcam"]
OSD = REPO / "src" / "slidegrad" / "viewer" / "node_modules" / "openseadragon" / "build" / "openseadragon"


def write_project(root: Path) -> Path:
    import csv

    import yaml
    from skimage.data import immunohistochemistry

    root.mkdir(parents=True, exist_ok=True)
    slide = write_test_slide(root / "s1.tiff", immunohistochemistry())
    model = write_model_dir(root / "model")
    with open(root / "samples.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["slide", "path", "mpp"], ["s1", slide.name, ""]])
    with open(root / "tiles.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["slide", "x", "y"], *[["s1", x, y] for x, y in TILES]])
    config = {
        "samples": "samples.csv", "tiles": "tiles.csv", "model": {"path": "model"}, "methods": METHODS,
        "tiles_per_job": 6, "threads": 1, "slide_map": {"enabled": True},
        "evaluate": {"metrics": ["deletion"], "steps": 4},
    }  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


@pytest.fixture(scope="session")
def viewer_run(tmp_path_factory) -> Path:
    """A run made by the workflow, only the files the viewer reads (slide maps, masks, evaluation)."""
    root = write_project(tmp_path_factory.mktemp("viewer") / "project")
    targets = [f"results/slide_maps/s1/{m}.npz" for m in METHODS]
    targets += ["results/slide_maps/s1/predictions.npz", "results/evaluation.csv"]
    result = run_snakemake(root, *targets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="session")
def server(viewer_run) -> str:
    """``slidegrad view results`` in the run's folder on a free port; yields its URL."""
    if not (OSD / "openseadragon.min.js").is_file():
        if shutil.which("npm") is None:
            pytest.fail("OpenSeadragon is not installed and there is no npm: run `make install` (npm ci)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=OSD.parents[3], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "slidegrad", "view", "results", "--config", "config.yaml", "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=viewer_run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = None
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if " at http://" in line:
            url = line.rsplit(" at ", 1)[1].strip()
            break
    if url is None:
        proc.kill()
        pytest.fail("slidegrad view did not start:\n" + "".join(lines) + (proc.stdout.read() or ""))
    yield url.rstrip("/")
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def api(server):
    """``api(path)`` → (status, parsed JSON or bytes) from the running server."""

    def call(path: str, data: dict | bytes | None = None) -> tuple[int, object]:
        if data is None:
            status, body = _get(server + path)
        else:
            raw = data if isinstance(data, bytes) else json.dumps(data).encode()
            request = urllib.request.Request(server + path, data=raw, method="POST",
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as err:
                status, body = err.code, err.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    return call


def chromium_path() -> str:
    """/usr/bin/chromium, installed with apt-get when missing; skip only where apt cannot install it."""
    result = subprocess.run(["bash", str(CHROMIUM_SH)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "chromium.sh failed"
        if "no apt-get" in reason or "needs root" in reason:
            pytest.skip(reason)
        pytest.fail(reason)
    return result.stdout.strip()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
