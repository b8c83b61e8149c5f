"""Faults of the machine, not of the input: a full disk, a read-only folder, a file gone, a mask
truncated after its job wrote it, a slide deleted mid-run.  Each is one line (``slidegrad: error:``
from run_job), no traceback, and nothing half-written."""

from __future__ import annotations

import csv
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
MASKS = "results/masks/s1/vanilla/chunk0000.npz"  # the one mask job's file


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


@pytest.mark.parametrize("writer", ["tiles", "masks"])
def test_a_job_results_file_on_a_full_disk_is_one_line_naming_it(tiny_disk, capsys, writer):
    """A tiles job's chunk file and a mask job's file (written atomically, via a temporary beside it): the
    line names the file the job declares, says the disk is full and what to do, and no temporary is left."""
    from slidegrad.results import write_mask_chunk, write_tile_chunk

    fill(tiny_disk, 4096)
    if writer == "tiles":
        path = tiny_disk / "tiles" / "s1" / "chunk0000.npz"
        tiles = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
        line = job_line(capsys, lambda: write_tile_chunk(path, list("abcd"), [0] * 4, [0] * 4, tiles))
    else:
        path = tiny_disk / "masks" / "s1" / "vanilla" / "chunk0000.npz"
        masks = np.zeros((4, 256, 256), np.float32)
        line = job_line(capsys, lambda: write_mask_chunk(path, list("abcd"), [0] * 4, [0] * 4, masks, masks, [{}] * 4, {}))
    assert line == (
        f"slidegrad: error: cannot write '{path}': No space left on device (ENOSPC); "
        "free space on its file system (or set outdir to another one) and rerun"
    )
    assert not list(path.parent.iterdir())  # no half-written file, no temporary


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
def mask_file(root: Path) -> Path:
    """A mask job's file (one tile), where the workflow puts it."""
    from slidegrad.results import write_mask_chunk

    path = root / "results" / "masks" / "s1" / "vanilla" / "chunk0000.npz"
    zeros = np.zeros((1, 8, 8), np.float32)
    write_mask_chunk(path, ["x0_y0"], [0], [0], zeros, zeros, [{"class_idx": 0}], {"method": "vanilla"})
    return path


def tile_chunk(root: Path) -> Path:
    """A tiles job's chunk file (one tile), where the workflow puts it."""
    from slidegrad.results import write_tile_chunk

    path = root / "results" / "tiles" / "s1" / "chunk0000.npz"
    tiles = np.random.default_rng(0).integers(0, 255, (1, 8, 8, 3), dtype=np.uint8)
    write_tile_chunk(path, ["x0_y0"], [0], [0], tiles)
    return path


def garble(path: Path, at: int, size: int = 64) -> None:
    """Overwrite ``size`` bytes of ``path`` from ``at`` (its zip structure stays; the data's CRC does not)."""
    data = bytearray(path.read_bytes())
    data[at : at + size] = b"\xa5" * size
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("cut", [0, 20, 140, -30, "garbled"], ids=["empty", "half-header", "short-data", "no-end", "garbled"])
def test_a_truncated_mask_file_names_the_file_the_rule_and_the_fix(tmp_path, cut):
    from slidegrad.results import read_mask_chunk

    path = mask_file(tmp_path)
    if cut == "garbled":
        garble(path, path.read_bytes().index(b"masks.npy") + 200)  # inside the masks array's data
    else:
        path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(failures.InputError) as err:
        read_mask_chunk(path, arrays=("masks", "attributions"))
    assert str(err.value).startswith(f"mask file '{path}' is truncated or corrupt (")
    assert str(err.value).endswith("); it was written by rule masks; delete it and rerun to recompute it")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("cut", [0, 20, 140], ids=["empty", "half-header", "short-data"])
def test_load_npy_of_a_truncated_file_names_it_the_rule_and_the_fix(tmp_path, cut):
    """failures.load_npy (readers of other .npy/.npz files a job wrote): an evaluate job's curves here."""
    path = tmp_path / "results" / "evaluation" / "s1" / "chunk0000.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, tiles=np.array(["x0_y0"]), curve=np.zeros((1, 9)))
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(failures.InputError) as err:
        failures.load_npy(path, "curves")
    assert str(err.value).startswith(f"curves '{path}' is truncated or corrupt (")
    assert str(err.value).endswith("); it was written by rule evaluate; delete it and rerun to recompute it")


def test_a_corrupt_mask_read_by_np_load_elsewhere_is_one_line_too(tmp_path, capsys):
    """Jobs that call np.load themselves get the same kind of line from run_job."""
    path = mask_file(tmp_path)
    path.write_bytes(b"garbage")
    line = job_line(capsys, lambda: np.load(path))
    assert line.startswith(f"slidegrad: error: mask '{path}' is truncated or corrupt (")
    assert line.endswith("it was written by rule masks; delete it and rerun to recompute it")


def test_corrupt_mask_records_and_tile_chunk_name_their_writer(tmp_path):
    from slidegrad.results import read_mask_records, read_tile_chunk, write_mask_chunk

    path = tmp_path / "results" / "masks" / "s1" / "vanilla" / "chunk0000.npz"
    zeros = np.zeros((1, 8, 8), np.float32)
    write_mask_chunk(path, ["x0_y0"], [0], [0], zeros, zeros, [{"class_idx": 0}], {"method": "vanilla"})
    with np.load(path) as npz:
        arrays = dict(npz)
    np.savez(path, **{**arrays, "records": np.array('{"class_idx": 0, "method": "vani')})  # a record cut short
    with pytest.raises(failures.InputError, match=r"^mask file '.*/vanilla/chunk0000\.npz' is truncated or corrupt \(.*\); "
                       r"it was written by rule masks; delete it and rerun to recompute it$"):  # fmt: skip
        read_mask_records(path)
    chunk = tile_chunk(tmp_path)
    garble(chunk, chunk.stat().st_size // 3)
    with pytest.raises(failures.InputError, match=r"^tile chunk '.*/tiles/s1/chunk0000\.npz' is truncated or corrupt \(.*\); "
                       r"it was written by rule tiles; delete its folder '.*/tiles/s1' and rerun to recompute it$"):  # fmt: skip
        read_tile_chunk(chunk)
    chunk.write_bytes(chunk.read_bytes()[:50])
    with pytest.raises(failures.InputError, match=r"^tile chunk '.*/tiles/s1/chunk0000\.npz' is truncated or corrupt \(.*\); "
                       r"it was written by rule tiles; delete its folder '.*/tiles/s1' and rerun to recompute it$"):  # fmt: skip
        read_tile_chunk(chunk)


# -- through snakemake -------------------------------------------------------------------------------
def assert_one_line(output: str, line: str) -> None:
    assert output.count(f"slidegrad: error: {line}") >= 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]


@pytest.mark.workflow
def test_tiles_on_a_full_outdir_fail_with_one_line_and_leave_nothing(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path / "run", slide_path, model_dir, TWO_TILES, methods=METHODS)
    mount_tmpfs(root / "results")
    try:
        fill(root / "results", 8192)  # the tiles job's log fits; its chunk file (2 × 64² px, zlib) does not
        result = run_snakemake(root)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert_one_line(
            output,
            "cannot write 'results/tiles/s1/chunk0000.npz': No space left on device (ENOSPC); free space on its file "
            "system (or set outdir to another one) and rerun",
        )
        assert "slidegrad: failed: slide s1, rule tiles: cannot write 'results/tiles/s1/chunk0000.npz'" in output
        left = {p.relative_to(root).as_posix() for p in result_files(root)}
        assert left == {"results/.filler"}, left  # no tile table, no chunk file, no temporary (failures.csv: the run's report)
    finally:
        subprocess.run(["umount", "-l", str(root / "results")], capture_output=True)


@pytest.mark.workflow
def test_a_corrupt_mask_stops_the_summary_with_one_line_and_a_rerun_recomputes_it(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path, slide_path, model_dir, TWO_TILES, methods=METHODS)
    first = run_snakemake(root, MASKS)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    mask = root / MASKS
    mask.write_bytes(mask.read_bytes()[:100])  # truncated, as by a crash or a full disk after the job

    result = run_snakemake(root, "results/summary.csv")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert_one_line(
        output,
        f"mask file '{MASKS}' is truncated or corrupt (",
    )
    assert f"it was written by rule masks; delete it and rerun to recompute it" in output
    assert not (root / "results/summary.csv").exists() and not (root / "results/summary.parquet").exists()
    with open(root / "results/failures.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["slide"], r["rule"], r["log"]) for r in rows] == [("", "summary", "results/logs/summary.log")], rows
    assert rows[0]["message"].startswith(f"mask file '{MASKS}' is truncated or corrupt ("), rows

    mask.unlink()  # what the line says to do
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
