"""The slide-level jobs over stored results: synthetic tiles with known attributions and probabilities,
stitched from mask files (two chunks) onto a real pyramidal slide, with and without stride_div 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from slidegrad.errors import InputError
from slidegrad.jobs.slide_maps import write_prediction_map, write_slide_map
from slidegrad.layout import Layout
from slidegrad.prediction_map import read_prediction_npz
from slidegrad.slide_map import read_map_npz
from slidegrad.results import write_mask_chunk, write_tile_chunk
from slidegrad.tables import Tile, chunk_label, write_tile_table

from .conftest import write_test_slide

MPP = 0.5  # the test slide: 1024 × 1024 px at 0.5 µm/px
EXTRACT = 128  # level-0 px per tile: 64 µm
MAP_UM = 16.0  # 32 level-0 px per map pixel: a tile covers 4 × 4 map pixels
PER_JOB = 3


def _run(tmp_path, ihc, xy, values, probabilities, method="vanilla"):
    """Write a tile table, tile chunks and one method's mask files; return (slide path, table, outdir)."""
    slide_path = write_test_slide(tmp_path / "s.tiff", ihc, mpp=MPP)
    outdir = str(tmp_path / "out")
    layout = Layout(outdir)
    tiles = [Tile("s", x, y) for x, y in xy]
    geometry = {"tile_px": 16, "tile_um": EXTRACT * MPP, "mpp": MPP, "level": 0, "extract_px": EXTRACT}
    write_tile_table(layout.tile_table("s"), tiles, PER_JOB, geometry)
    for start in range(0, len(tiles), PER_JOB):
        part = tiles[start : start + PER_JOB]
        n = len(part)
        chunk = chunk_label(start // PER_JOB)
        names, xs, ys = [t.name for t in part], [t.x for t in part], [t.y for t in part]
        write_tile_chunk(layout.tile_chunk("s", chunk), names, xs, ys, np.zeros((n, 16, 16, 3), np.uint8))
        attributions = np.stack([np.full((16, 16), v, np.float32) for v in values[start : start + n]])
        records = [
            {"class_idx": 0, "class_label": "a", "probability": float(p[0]), "probabilities": [float(q) for q in p]}
            for p in probabilities[start : start + n]
        ]
        job = {"method": method, "outcome_labels": ["a", "b"]}
        write_mask_chunk(
            layout.mask_file("s", chunk, method), names, xs, ys, np.zeros_like(attributions), attributions, records, job
        )
    return str(slide_path), layout.tile_table("s"), outdir


def _slide_map(tmp_path, slide_path, table, outdir, percentile=99.0):
    out = {ext: str(tmp_path / f"map.{ext}") for ext in ("tiff", "png", "npz")}
    write_slide_map("s", slide_path, None, table, outdir, "vanilla", out["tiff"], out["png"], out["npz"],
                    MAP_UM, percentile, "inferno", 0.6)  # fmt: skip
    return out


def _pixel(x: float, y: float) -> tuple[int, int]:
    """The map pixel (row, col) holding level-0 point (x, y)."""
    s = MAP_UM / MPP
    return int(y // s), int(x // s)


def test_each_tile_centre_is_its_slide_normalised_value(tmp_path, ihc):
    xy = [(0, 0), (128, 0), (256, 0), (0, 128), (128, 128), (512, 384), (896, 896)]  # 3 chunks
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]
    probs = [(0.1 * i, 1 - 0.1 * i) for i in range(len(xy))]
    slide_path, table, outdir = _run(tmp_path, ihc, xy, values, probs)
    out = _slide_map(tmp_path, slide_path, table, outdir, percentile=100.0)
    raw, scale, geometry = read_map_npz(out["npz"])
    assert geometry.shape == (32, 32) and (geometry.width, geometry.height) == (1024, 1024)
    assert scale == pytest.approx(8.0)  # the 100th percentile of |value| over the slide's tiles
    for (x, y), value in zip(xy, values):
        r, c = _pixel(x + EXTRACT / 2, y + EXTRACT / 2)
        assert raw[r, c] == pytest.approx(value)
        assert raw[r, c] / scale == pytest.approx(value / 8.0)  # the slide-normalised value
    covered = np.zeros((32, 32), bool)
    for x, y in xy:
        covered[y // 32 : (y + EXTRACT) // 32, x // 32 : (x + EXTRACT) // 32] = True
    assert np.isnan(raw[~covered]).all() and not np.isnan(raw[covered]).any()  # transparent outside tiles

    # the TIFF: the slide's aspect and physical size, transparent outside tiles
    with tifffile.TiffFile(out["tiff"]) as tif:
        page = tif.pages[0]
        assert page.shape == (32, 32, 4)
        x_res = page.tags["XResolution"].value
        unit = page.tags["ResolutionUnit"].value
        um_per_px = {3: 1e4, 2: 25400.0}[int(unit)] * x_res[1] / x_res[0]
        assert um_per_px == pytest.approx(MAP_UM, rel=1e-4)
        assert page.shape[1] * um_per_px == pytest.approx(1024 * MPP) and page.shape[0] * um_per_px == pytest.approx(1024 * MPP)
        rgba = page.asarray()
    assert (rgba[..., 3][~covered] == 0).all() and (rgba[..., 3][covered] == 255).all()
    assert json.loads(tifffile.TiffFile(out["tiff"]).pages[0].description)["method"] == "vanilla"


def test_overlapping_tiles_are_averaged_with_stride_div_2(tmp_path, ihc):
    xy = [(0, 0), (64, 0), (128, 0), (0, 64)]  # stride EXTRACT / 2: tiles overlap by half
    values = [2.0, 4.0, 8.0, 6.0]
    slide_path, table, outdir = _run(tmp_path, ihc, xy, values, [(0.2, 0.8), (0.4, 0.6), (0.6, 0.4), (1.0, 0.0)])
    raw, _, _ = read_map_npz(_slide_map(tmp_path, slide_path, table, outdir)["npz"])
    assert raw[_pixel(16, 100)] == pytest.approx((2 + 6) / 2)  # x in [0, 64), y in [64, 128): tiles 1 and 4
    assert raw[_pixel(80, 16)] == pytest.approx((2 + 4) / 2)  # x in [64, 128), y < 64: tiles 1 and 2
    assert raw[_pixel(80, 100)] == pytest.approx((2 + 4 + 6) / 3)  # tiles 1, 2 and 4
    assert raw[_pixel(140, 16)] == pytest.approx((4 + 8) / 2)  # x in [128, 192): tiles 2 and 3
    assert raw[_pixel(200, 16)] == pytest.approx(8.0)  # x in [192, 256): tile 3 alone

    npz = str(tmp_path / "pred.npz")
    write_prediction_map("s", slide_path, None, table, outdir, "vanilla", False, npz, [str(tmp_path / "pred.png")], MAP_UM)
    stored = read_prediction_npz(npz)
    assert stored.labels == ["a", "b"] and stored.maps.shape == (2, 32, 32)
    assert stored.maps[(0, *_pixel(16, 100))] == pytest.approx((0.2 + 1.0) / 2)
    assert stored.maps[(1, *_pixel(140, 16))] == pytest.approx((0.6 + 0.4) / 2)
    assert (tmp_path / "pred.png").stat().st_size > 0


def test_a_missing_mask_file_is_one_line_naming_it(tmp_path, ihc):
    slide_path, table, outdir = _run(tmp_path, ihc, [(0, 0), (128, 0), (256, 0), (0, 128)], [1, 2, 3, 4], [(0.5, 0.5)] * 4)
    missing = Layout(outdir).mask_file("s", "chunk0001", "vanilla")
    (tmp_path / "out" / "masks" / "s" / "vanilla" / "chunk0001.npz").unlink()
    with pytest.raises(InputError) as err:
        _slide_map(tmp_path, slide_path, table, outdir)
    assert missing in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "map.tiff").exists()
