"""The viewer's pieces without a workflow run (fast lane): the run index's path checks, map lookups,
the CLI's one-line errors."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from slidegrad.slide_map import MapGeometry
from slidegrad.viewer.cli import main
from slidegrad.viewer.run import NotFound, Run, value_at

from ..conftest import write_test_slide


@pytest.fixture()
def tiny_run(tmp_path, ihc):
    """An outdir with one slide's tile table (no masks), its sample sheet and a file outside it."""
    slide = write_test_slide(tmp_path / "s1.tiff", ihc)
    with open(tmp_path / "samples.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["slide", "path", "mpp"], ["s1", slide.name, ""]])
    out = tmp_path / "results"
    (out / "tiles").mkdir(parents=True)
    with open(out / "tiles" / "s1.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([
            ["slide", "tile", "x", "y", "chunk", "tile_px", "tile_um", "mpp", "level", "extract_px"],
            ["s1", "x0_y0", 0, 0, "chunk0000", 64, 64, 0.5, 1, 128],
        ])  # fmt: skip
    (out / "summary.csv").write_text("slide\ns1\n")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", out / "leak.csv")
    os.symlink(tmp_path, out / "up")
    return Run(out, samples=tmp_path / "samples.csv", workdir=tmp_path)


def test_output_file_stays_inside_the_outdir(tiny_run):
    assert tiny_run.output_file("summary.csv") == tiny_run.outdir / "summary.csv"
    assert tiny_run.output_file("tiles/s1.csv").name == "s1.csv"
    for bad in ["../secret.txt", "/etc/passwd", "tiles/../../secret.txt", "leak.csv", "up/secret.txt", "tiles",
                "", "C:/x", "summary.csv\x00", "missing.csv"]:  # fmt: skip
        with pytest.raises(NotFound):
            tiny_run.output_file(bad)


def test_names_are_checked_against_the_run(tiny_run):
    slide = tiny_run.slide("s1")
    assert slide.geometry["extract_px"] == 128 and slide.methods == [] and slide.tiles == []
    for call in (lambda: tiny_run.slide("../s1"), lambda: tiny_run.method(slide, "vanilla"),
                 lambda: tiny_run.tile(slide, "x0_y0")):  # fmt: skip
        with pytest.raises(NotFound):
            call()
    tiny_run.deepzoom(slide)
    assert (slide.width, slide.height) == (1024, 1024)


def test_value_at_reads_the_map_pixel_under_a_level0_point():
    geometry = MapGeometry(100, 60, 0.5, 8.0)  # 16 level-0 px per map pixel: 4 rows, 7 columns
    values = np.arange(28, dtype=np.float32).reshape(4, 7)
    values[0, 0] = np.nan
    assert value_at(values, geometry, 16, 0) == 1.0  # column 1 starts at x = 16
    assert value_at(values, geometry, 15.9, 0) is None  # NaN: no tile there
    assert value_at(values, geometry, 99, 59) == 27.0
    assert value_at(values, geometry, 112, 0) is None and value_at(values, geometry, -1, 0) is None


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["view", str(tmp_path / "nope"), "--samples", "x.csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("slidegrad view:") and "is not a folder" in err[0]
    (tmp_path / "out").mkdir()
    assert main(["view", str(tmp_path / "out"), "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_layer_deep_zoom_keeps_the_alpha_and_the_maps_pixels():
    """OpenSlide's DeepZoomGenerator.get_tile flattens RGBA onto white; the layer's generator keeps the
    alpha, and its full-resolution level is the RGBA image itself, tile by tile (254 px, 1 px overlap)."""
    import math

    from openslide.deepzoom import DeepZoomGenerator

    from slidegrad.slide_map import map_rgba
    from slidegrad.viewer.run import rgba_deepzoom

    rng = np.random.default_rng(0)
    values = rng.random((300, 517)).astype(np.float32)
    values[:, 400:] = np.nan  # no tile there: transparent
    rgba = map_rgba(values, "inferno")
    dz = rgba_deepzoom(rgba)
    assert isinstance(dz, DeepZoomGenerator)
    assert dz.level_dimensions[-1] == (517, 300) and dz.level_count == math.ceil(math.log2(517)) + 1
    assert 'Format="png"' in dz.get_dzi("png") and 'Width="517"' in dz.get_dzi("png")
    top = dz.level_count - 1
    cols, rows = dz.level_tiles[top]
    assembled = np.zeros_like(rgba)
    for row in range(rows):
        for col in range(cols):
            (x0, y0), _, size = dz.get_tile_coordinates(top, (col, row))
            tile = np.asarray(dz.get_tile(top, (col, row)))
            assert tile.shape == (size[1], size[0], 4)
            assert np.array_equal(tile, rgba[y0 : y0 + size[1], x0 : x0 + size[0]])
            assembled[y0 : y0 + size[1], x0 : x0 + size[0]] = tile
    assert np.array_equal(assembled, rgba)
    low = np.asarray(dz.get_tile(top - 2, (0, 0)))  # a quarter: 130 x 75, alpha kept on either side
    assert low.shape == (75, 130, 4)
    assert (low[:, :95, 3] == 255).all() and (low[:, 105:, 3] == 0).all()
