"""Faults of the machine, not of the input: a full disk, a read-only folder, a file gone, a mask
truncated after its job wrote it, a slide deleted mid-run.  Each is one line (``slidegrad: error:``
from run_job), no traceback, and nothing half-written."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slidegrad import failures
from slidegrad.scripting import run_job

from .conftest import REPO, local_snakemake_env, result_files, run_snakemake
from .test_workflow import make_project

TWO_TILES = [{"slide": "s1", "x": 0, "y": 0}, {"slide": "s1", "x": 128, "y": 0}]
METHODS = ["vanilla"]
MASKS = "results/masks/s1/chunk0000/vanilla"


def mount_tmpfs(folder: Path, size: str = "3m") -> None:
    """A tiny tmpfs at ``folder`` (skips the test, with the reason, where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")


def fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s file system, leaving ``leave`` bytes free."""
    free = shutil.disk_usage(folder).free
    (folder / ".filler").write_bytes(b"\0" * max(0, free - leave))


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 3 MB tmpfs, unmounted afterwards."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def job_line(capsys, job, **kwargs) -> str:
    """Run ``job`` through run_job; its one stderr line (it must exit 1)."""
    with pytest.raises(SystemExit) as stop:
        run_job(job, **kwargs)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("slidegrad: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- run_job: any OSError is one line naming the path ------------------------------------------------
def test_a_png_on_a_full_disk_is_one_line_naming_it(tiny_disk, capsys):
    from slidegrad.jobs import write_png

    fill(tiny_disk, 4096)
    tile = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    line = job_line(capsys, write_png, path=tiny_disk / "x0_y0.png", image=tile)
    assert line == (
        f"slidegrad: error: cannot write '{tiny_disk}/x0_y0.png': No space left on device (ENOSPC); "
        "free space on its file system (or set outdir to another one) and rerun"
    )


def test_a_mask_on_a_full_disk_is_one_line_naming_it(tiny_disk, capsys):
    fill(tiny_disk, 4096)  # numpy's own error names no errno: "N requested and M written"
    line = job_line(capsys, np.save, file=tiny_disk / "m.npy", arr=np.zeros((256, 256), np.float32))
    assert re.fullmatch(
        rf"slidegrad: error: cannot write '{re.escape(str(tiny_disk))}/m\.npy': \d+ requested and \d+ written: its file "
        r"system is full \(\d+ bytes free\); free space on its file system \(or set outdir to another one\) and rerun",
        line,
    ), line


def test_a_read_only_folder_is_one_line(capsys, tmp_path):
    def job():
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "out" / "x.png"))

    line = job_line(capsys, job)
    assert line == f"slidegrad: error: cannot write '{tmp_path}/out/x.png': Read-only file system (EROFS)"


def test_a_vanished_outdir_is_one_line(capsys, tmp_path):
    from slidegrad.tables import read_tile_table

    table = tmp_path / "results" / "tiles" / "s1.csv"
    line = job_line(capsys, read_tile_table, path=table)
    assert line == (
        f"slidegrad: error: '{table}': No such file or directory (ENOENT); it was written by rule tiles; "
        "delete it and rerun to recompute it"
    )


def test_an_error_that_is_no_fault_of_a_file_keeps_its_traceback(capsys):
    def job():
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        run_job(job)


# -- corrupt files a job wrote --------------------------------------------------------------------
def mask_folder(root: Path) -> Path:
    folder = root / "results" / "masks" / "s1" / "chunk0000" / "vanilla"
    folder.mkdir(parents=True)
    np.save(folder / "x0_y0.npy", np.zeros((8, 8), np.float32))
    return folder


@pytest.mark.parametrize("cut", [0, 20, 140], ids=["empty", "half-header", "short-data"])
def test_a_truncated_mask_names_the_file_the_rule_and_the_fix(tmp_path, cut):
    folder = mask_folder(tmp_path)
    path = folder / "x0_y0.npy"
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(failures.InputError) as err:
        failures.load_npy(path)
    assert str(err.value).startswith(f"mask '{path}' is truncated or corrupt (")
    assert str(err.value).endswith(
        f"); it was written by rule masks; delete its folder '{folder}' and rerun to recompute it"
    )


def test_a_corrupt_mask_read_by_np_load_elsewhere_is_one_line_too(tmp_path, capsys):
    """Jobs that call np.load themselves (evaluate, overview) get the same line from run_job."""
    path = mask_folder(tmp_path) / "x0_y0.npy"
    path.write_bytes(b"garbage")
    line = job_line(capsys, lambda: np.load(path))
    assert line.startswith(f"slidegrad: error: mask '{path}' is truncated or corrupt (")
    assert line.endswith("it was written by rule masks; delete its folder "
                         f"'{path.parent}' and rerun to recompute it")  # fmt: skip


def test_a_corrupt_sidecar_and_tile_png_name_their_writer(tmp_path):
    from slidegrad.jobs import read_png, read_sidecar

    sidecar = mask_folder(tmp_path) / "x0_y0.json"
    sidecar.write_text('{"method": "vani')
    with pytest.raises(failures.InputError, match=r"^mask sidecar '.*x0_y0\.json': not valid JSON \(.*\); "
                       r"it was written by rule masks; delete its folder '.*/vanilla' and rerun"):  # fmt: skip
        read_sidecar(sidecar)
    png = tmp_path / "results" / "tiles" / "s1" / "x0_y0.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    with pytest.raises(failures.InputError, match=r"^image '.*x0_y0\.png' is truncated or corrupt \(.*\); it was "
                       r"written by rule tiles; delete its folder '.*/tiles/s1' and rerun to recompute it$"):  # fmt: skip
        read_png(png)


# -- through snakemake -------------------------------------------------------------------------------
def assert_one_line(output: str, line: str) -> None:
    assert output.count(f"slidegrad: error: {line}") >= 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]


@pytest.mark.workflow
def test_tiles_on_a_full_outdir_fail_with_one_line_and_leave_nothing(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path / "run", slide_path, model_dir, TWO_TILES, methods=METHODS)
    mount_tmpfs(root / "results")
    try:
        fill(root / "results", 8192)  # the tiles job's log fits; its first PNG does not
        result = run_snakemake(root)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert_one_line(
            output,
            "cannot write 'results/tiles/s1/x0_y0.png': No space left on device (ENOSPC); free space on its file "
            "system (or set outdir to another one) and rerun",
        )
        assert "slidegrad: failed: slide s1, rule tiles: cannot write 'results/tiles/s1/x0_y0.png'" in output
        left = {p.relative_to(root).as_posix() for p in result_files(root)}
        assert left == {"results/.filler"}, left  # no tile table, no PNG (failures.csv: the run's report)
    finally:
        subprocess.run(["umount", "-l", str(root / "results")], capture_output=True)


@pytest.mark.workflow
def test_a_corrupt_mask_stops_the_summary_with_one_line_and_a_rerun_recomputes_it(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path, slide_path, model_dir, TWO_TILES, methods=METHODS)
    first = run_snakemake(root, MASKS)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    mask = root / MASKS / "x0_y0.npy"
    mask.write_bytes(mask.read_bytes()[:100])  # truncated, as by a crash or a full disk after the job

    result = run_snakemake(root, "results/summary.csv")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert_one_line(
        output,
        f"mask '{MASKS}/x0_y0.npy' is truncated or corrupt (",
    )
    assert f"it was written by rule masks; delete its folder '{MASKS}' and rerun to recompute it" in output
    assert not (root / "results/summary.csv").exists() and not (root / "results/summary.parquet").exists()
    rows = (root / "results/failures.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(",summary,\"mask '") and rows[1].endswith(",results/logs/summary.log")

    shutil.rmtree(root / MASKS)  # what the line says to do
    again = run_snakemake(root, "results/summary.csv")
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert re.search(r"^masks\s+1$", again.stdout + again.stderr, flags=re.M)
    assert not (root / "results/failures.csv").exists()  # a successful run removes the old list


@pytest.mark.workflow
def test_a_slide_deleted_after_its_tiles_job_is_one_line_from_the_next_job_that_reads_it(tmp_path, slide_path, model_dir):
    """The mask jobs read the tiles, not the slide; the next job that reads it (overview) checks the
    tiles job's record of the file: one slidegrad line naming the slide, in the run's end summary and
    failures.csv, no traceback, no overview written."""
    root = make_project(tmp_path, slide_path, model_dir, TWO_TILES, methods=METHODS)
    slide = root / "s1.tiff"
    shutil.copy(slide_path, slide)
    (root / "samples.csv").write_text(f"slide,path,mpp\ns1,{slide},\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "--cores", "1"]
    run = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=local_snakemake_env())  # fmt: skip
    deadline = time.time() + 120
    while not (root / "results/tiles/s1.csv").exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    slide.unlink()
    output, _ = run.communicate(timeout=300)
    assert run.returncode != 0, output[-3000:]
    line = (f"slide 's1': '{slide}' was deleted after its tiles were read; restore it and rerun, or remove the "
            "slide from the sample sheet")  # fmt: skip
    assert_one_line(output, line)
    assert f"slidegrad: failed: slide s1, rule overview: {line}" in output, output[-3000:]
    assert "Missing input" not in output, output[-3000:]
    rows = (root / "results/failures.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("s1,overview,") and rows[1].endswith(",results/logs/overview/s1.log")
    assert not list((root / "results").glob("figures/overview/*")), "no overview of a slide that is gone"
