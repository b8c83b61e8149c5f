"""Tests for slidegrad.slide_map: slide-level maps stitched from tiles (issue 26, the library part).

Most tests use mpp 0.25 µm/px and 8 µm map pixels, so one map pixel is s = 32 level-0 px and
every box edge below is a multiple of 1/8 map pixel: the weights are exact in binary floats.
"""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from slidegrad.errors import InputError
from slidegrad.plot import colormap
from slidegrad.slide_map import (
    MapGeometry,
    SlideCanvas,
    map_overlay,
    map_overlay_png,
    map_rgba,
    normalise,
    slide_scale,
    write_map_tiff,
)

MPP, MAP_UM, S = 0.25, 8.0, 32  # S: level-0 px per map pixel


def assert_one_line(err: pytest.ExceptionInfo[InputError], *needles: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


def tile_values(n_rows: int, n_cols: int) -> np.ndarray:
    """Distinct known values per tile, one of them negative (a signed attribution)."""
    values = 0.5 + np.arange(n_rows * n_cols, dtype=np.float64).reshape(n_rows, n_cols) * 0.75
    values[1, 1] = -values[1, 1]
    return values


def stitch_grid(geometry: MapGeometry, extract: int, stride: int, values: np.ndarray, px: int = 16) -> SlideCanvas:
    """Constant ``(px, px)`` tiles at ``(col·stride, row·stride)``, one chunk (add_many) per grid row."""
    canvas = SlideCanvas(geometry)
    n_rows, n_cols = values.shape
    for row in range(n_rows):
        coords = [(col * stride, row * stride) for col in range(n_cols)]
        tiles = np.stack([np.full((px, px), values[row, col], np.float32) for col in range(n_cols)])
        canvas.add_many(coords, extract, tiles)
    assert canvas.tiles == n_rows * n_cols
    return canvas


# --------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------


def test_geometry_shape_scale_and_boxes() -> None:
    g = MapGeometry(1000, 600, 0.5, 8.0)  # s = 16: 62.5 x 37.5 map px, rounded up
    assert g.scale == 16 and g.shape == (38, 63)
    assert g.tile_box(16, 32, 64) == (1.0, 2.0, 5.0, 6.0)
    assert g.tile_box(8, 0, 64) == (0.5, 0.0, 4.5, 4.0)
    assert g.tile_box(936, 536, 64) == (58.5, 33.5, 62.5, 37.5)  # touches the slide's corner
    assert MapGeometry(40_000, 40_000, 0.25).shape == (1250, 1250)  # default map_um 8
    assert MapGeometry(40_001, 39_999, 0.25).shape == (1250, 1251)
    assert MapGeometry(3, 3, 0.1, 0.3).shape == (1, 1)  # 3 · 0.1 / 0.3 is 1.0000000000000002 in floats

    class FakeWSI:
        dimensions, mpp = (2048, 1536), 0.25

    assert MapGeometry.from_wsi(FakeWSI(), 16.0) == MapGeometry(2048, 1536, 0.25, 16.0)


# --------------------------------------------------------------------------
# stitching: stride 1, stride 2, partial coverage, resampling
# --------------------------------------------------------------------------


def test_stride_1_centre_pixels_equal_slide_normalised_tile_values(tmp_path: Path) -> None:
    extract = 96  # 3 map px a side: each tile's centre pixel lies inside it
    values = tile_values(4, 5)
    g = MapGeometry(5 * extract, 4 * extract, MPP, MAP_UM)
    assert g.shape == (12, 15)
    raw = stitch_grid(g, extract, extract, values).result()
    assert raw.dtype == np.float32 and raw.shape == g.shape and not np.isnan(raw).any()
    expected_raw = np.kron(values, np.ones((3, 3)))
    np.testing.assert_allclose(raw, expected_raw, rtol=1e-6)

    scale = slide_scale(raw)
    np.testing.assert_allclose(scale, np.percentile(np.abs(expected_raw), 99), rtol=1e-6)
    norm = normalise(raw, scale)
    assert norm.dtype == np.float32 and norm.min() >= 0 and norm.max() == 1
    for row in range(4):
        for col in range(5):
            centre = ((row * extract + extract // 2) // S, (col * extract + extract // 2) // S)
            expected = min(abs(values[row, col]) / scale, 1.0)
            np.testing.assert_allclose(norm[centre], expected, rtol=1e-6)
    # the TIFF's pixels are the colour map of those values
    write_map_tiff(tmp_path / "map.tiff", norm, g)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "map.tiff")[..., :3], colormap(norm)[..., :3])


def test_stride_2_overlaps_are_averaged() -> None:
    extract, stride = 128, 64  # stride_div 2: each map px inside the grid lies under up to 4 tiles
    values = tile_values(5, 7)
    g = MapGeometry(512, 384, MPP, MAP_UM)  # (512 - 128) / 64 + 1 = 7 cols, 5 rows
    canvas = stitch_grid(g, extract, stride, values)
    raw = canvas.result()
    assert raw.shape == (12, 16) and not np.isnan(raw).any()
    # map px (r, c) covers level-0 [32c, 32c + 32): tile (i, j) covers it when 64j <= 32c < 64j + 128
    expected = np.empty(raw.shape)
    count = np.empty(raw.shape)
    for r in range(raw.shape[0]):
        for c in range(raw.shape[1]):
            rows = [i for i in range(5) if 2 * i <= r < 2 * i + 4]
            cols = [j for j in range(7) if 2 * j <= c < 2 * j + 4]
            expected[r, c] = np.mean([values[i, j] for i in rows for j in cols])
            count[r, c] = len(rows) * len(cols)
    np.testing.assert_allclose(raw, expected, rtol=1e-6)
    np.testing.assert_allclose(canvas.weight, count, rtol=1e-12)  # each covering tile adds weight 1
    # px (2, 2) = level-0 [64, 96)²: tiles (0, 0), (0, 1), (1, 0), (1, 1)
    assert count[2, 2] == 4
    np.testing.assert_allclose(raw[2, 2], (values[0, 0] + values[0, 1] + values[1, 0] + values[1, 1]) / 4, rtol=1e-6)
    np.testing.assert_allclose(raw[0, 0], values[0, 0], rtol=1e-6)  # a corner: one tile


def test_stride_2_tile_centres_line_up_with_a_linear_field() -> None:
    """Alignment (Slideflow issue 331): on a linear field, the mean of the 4 map pixels that meet at an
    interior tile's centre is that tile's value; a half-tile shift would break it."""
    extract, stride = 128, 64
    ys, xs = np.mgrid[0:5, 0:7] * stride + extract / 2  # tile centres, level 0
    values = 0.1 + 0.003 * xs + 0.002 * ys
    raw = stitch_grid(MapGeometry(512, 384, MPP, MAP_UM), extract, stride, values).result()
    for i in range(1, 4):
        for j in range(1, 6):
            r, c = int(ys[i, j]) // S, int(xs[i, j]) // S  # the pixel below-right of the centre point
            np.testing.assert_allclose(raw[r - 1 : r + 1, c - 1 : c + 1].mean(), values[i, j], rtol=1e-6)


def test_partial_coverage_is_weighted_by_area() -> None:
    g = MapGeometry(256, 256, MPP, MAP_UM)
    canvas = SlideCanvas(g)
    canvas.add(0, 0, 40, np.full((5, 5), 1.0))  # map box [0, 1.25)²
    canvas.add(16, 0, 64, np.full((8, 8), 3.0))  # map box [0.5, 2.5) x [0, 2)
    w = canvas.weight
    np.testing.assert_array_equal(w[:2, :3], [[1.5, 1.25, 0.5], [0.75, 1.0625, 0.5]])
    raw = canvas.result()
    np.testing.assert_allclose(raw[0, 0], (1 * 1.0 + 0.5 * 3.0) / 1.5, rtol=1e-6)
    np.testing.assert_allclose(raw[0, 1], (0.25 * 1.0 + 1 * 3.0) / 1.25, rtol=1e-6)
    np.testing.assert_allclose(raw[1, 0], (0.25 * 1.0 + 0.5 * 3.0) / 0.75, rtol=1e-6)
    np.testing.assert_allclose(raw[1, 1], (0.0625 * 1.0 + 1 * 3.0) / 1.0625, rtol=1e-6)
    np.testing.assert_allclose(raw[:2, 2], 3.0, rtol=1e-6)  # half-covered by one tile: its value
    assert np.isnan(raw[2:, :]).all() and np.isnan(raw[:, 3:]).all()


def test_tile_values_are_area_averaged_onto_map_pixels() -> None:
    g = MapGeometry(256, 256, MPP, MAP_UM)
    v4 = np.arange(16, dtype=np.float64).reshape(4, 4)  # 4 x 4 values on 2 x 2 map px: block means
    canvas = SlideCanvas(g)
    canvas.add(0, 0, 64, v4)
    np.testing.assert_allclose(canvas.result()[:2, :2], v4.reshape(2, 2, 2, 2).mean(axis=(1, 3)), rtol=1e-6)
    v3 = np.array([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0], [64.0, 128.0, 256.0]])  # cells 2/3 map px wide
    canvas = SlideCanvas(g)
    canvas.add(0, 0, 64, v3)
    part = np.array([[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])  # map px x cell overlaps, per axis
    np.testing.assert_allclose(canvas.result()[:2, :2], part @ v3 @ part.T, rtol=1e-6)
    np.testing.assert_allclose(canvas.weight[:2, :2], 1.0, rtol=1e-12)


def test_tile_at_the_slide_edge_and_unaligned_scale() -> None:
    g = MapGeometry(500, 300, MPP, MAP_UM)  # 15.625 x 9.375 map px → (10, 16)
    canvas = SlideCanvas(g)
    canvas.add(372, 172, 128, np.ones((7, 7)))  # its box ends at the slide's corner
    np.testing.assert_allclose(canvas.weight[9, 11:16], [0.375 * 0.375] + [0.375] * 3 + [0.375 * 0.625], rtol=1e-12)
    # mpp 0.3 µm: s = 26.666… level-0 px; tiles whose edges meet a map-pixel border leave no float crumbs
    g = MapGeometry(1600, 800, 0.3, 8.0)  # s = 80 / 3
    canvas = SlideCanvas(g)
    canvas.add(80, 80, 80, np.ones((3, 3)))  # exactly map px [3, 6)²
    covered = canvas.weight > 0
    assert covered.sum() == 9 and covered[3:6, 3:6].all()
    np.testing.assert_allclose(canvas.weight[3:6, 3:6], 1.0, rtol=1e-9)


# --------------------------------------------------------------------------
# slide-wide scale
# --------------------------------------------------------------------------


def test_slide_scale_rule_and_fallbacks() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 50))
    values[:5] = np.nan
    assert slide_scale(values) == pytest.approx(np.percentile(np.abs(values[5:]), 99), rel=1e-12)
    mostly_zero = np.zeros((20, 20))
    mostly_zero[0, 0] = 2.5  # 99th percentile is 0 → the maximum
    assert slide_scale(mostly_zero) == 2.5
    assert slide_scale(np.zeros((4, 4))) == 1.0
    assert slide_scale(np.full((4, 4), np.nan)) == 1.0
    norm = normalise(np.array([[np.nan, -1.0, 0.5, 3.0]]), 2.0)
    np.testing.assert_array_equal(norm, np.array([[np.nan, 0.5, 0.25, 1.0]], np.float32))


# --------------------------------------------------------------------------
# TIFF and overlay
# --------------------------------------------------------------------------


def test_outside_tiles_is_nan_and_transparent(tmp_path: Path) -> None:
    g = MapGeometry(512, 384, MPP, MAP_UM)
    canvas = SlideCanvas(g)
    canvas.add_many([(0, 0), (128, 64)], 128, np.stack([np.full((8, 8), 1.0), np.full((8, 8), 2.0)]))
    raw = canvas.result()
    covered = np.zeros(g.shape, bool)
    covered[0:4, 0:4] = covered[2:6, 4:8] = True
    np.testing.assert_array_equal(~np.isnan(raw), covered)
    norm = normalise(raw, slide_scale(raw))
    path = tmp_path / "map.tiff"
    write_map_tiff(path, norm, g)
    pixels = tifffile.imread(path)
    assert pixels.shape == (*g.shape, 4) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., 3], np.where(covered, 255, 0))
    assert (pixels[~covered] == 0).all()
    np.testing.assert_array_equal(pixels, map_rgba(norm))
    with openslide.OpenSlide(str(path)) as osr:
        region = np.asarray(osr.read_region((0, 0), 0, (g.shape[1], g.shape[0])))
    np.testing.assert_array_equal(region[..., 3], np.where(covered, 255, 0))
    np.testing.assert_array_equal(region[covered], pixels[covered])


def test_tiff_has_the_slides_aspect_and_physical_size(tmp_path: Path) -> None:
    width, height, mpp = 40_000, 30_000, 0.25  # 10 x 7.5 mm; map (938, 1250) with min_level_size 256
    g = MapGeometry(width, height, mpp, MAP_UM)
    assert g.shape == (938, 1250)
    norm = np.full(g.shape, np.nan, np.float32)
    norm[100:800, 200:1100] = np.linspace(0, 1, 900, dtype=np.float32)
    path = tmp_path / "map.tiff"
    write_map_tiff(path, norm, g)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.shape == (938, 1250, 4)
        x_res = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
        um_per_px = 1e4 * x_res[1] / x_res[0]
        assert len(tif.pages) >= 2  # pyramidal
    assert um_per_px == pytest.approx(MAP_UM, rel=1e-6)
    assert abs(1250 * um_per_px - width * mpp) < MAP_UM and abs(938 * um_per_px - height * mpp) < MAP_UM
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.dimensions == (1250, 938)
        assert osr.level_count >= 2 and osr.level_dimensions[1] == (625, 469)
        map_mpp = float(osr.properties["openslide.mpp-x"])
        assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(MAP_UM, rel=1e-6)
        cols, rows = osr.dimensions
    assert map_mpp == pytest.approx(MAP_UM, rel=1e-6)
    assert abs(cols * map_mpp - width * mpp) < map_mpp and abs(rows * map_mpp - height * mpp) < map_mpp
    assert cols / rows == pytest.approx(width / height, abs=1 / rows)


def test_a_real_slide_grid_with_stride_div_2(tmp_path: Path) -> None:
    """A slide written by write_pyramidal_tiff, read by WSI; its grid stitched; map and slide line up."""
    from slidegrad.slide import WSI, write_pyramidal_tiff

    image = np.full((600, 1000, 3), 200, np.uint8)
    write_pyramidal_tiff(tmp_path / "slide.tiff", image, 0.5, min_level_size=128)
    with WSI(tmp_path / "slide.tiff", tile_px=32, tile_um=32, stride_div=2) as wsi:  # 64 px, step 32
        g = MapGeometry.from_wsi(wsi, 8.0)  # s = 16
        canvas = SlideCanvas(g)
        n_cols, n_rows = wsi.grid_shape
        for row in range(n_rows):
            coords = [wsi.grid_to_xy(col, row) for col in range(n_cols)]
            canvas.add_many(coords, wsi.extract_px, np.ones((n_cols, 32, 32), np.float32))
        thumbnail = wsi.thumbnail(500)
    assert g.shape == (38, 63) and (n_cols, n_rows) == (30, 17)
    raw = canvas.result()
    # the grid reaches level-0 x < 29·32 + 64 = 992 and y < 16·32 + 64 = 576: map cols < 62, rows < 36
    assert not np.isnan(raw[:36, :62]).any() and np.isnan(raw[36:]).all() and np.isnan(raw[:, 62:]).all()
    norm = normalise(raw, slide_scale(raw))
    write_map_tiff(tmp_path / "map.tiff", norm, g)
    with openslide.OpenSlide(str(tmp_path / "slide.tiff")) as slide:
        slide_um = np.array(slide.dimensions) * float(slide.properties["openslide.mpp-x"])
    with openslide.OpenSlide(str(tmp_path / "map.tiff")) as m:
        map_um = np.array(m.dimensions) * float(m.properties["openslide.mpp-x"])
    assert ((map_um - slide_um) >= 0).all() and ((map_um - slide_um) < 8.0).all()

    # the overlay: the thumbnail's size; unchanged outside tiles; tinted inside
    assert thumbnail.shape == (300, 500, 3)
    over = map_overlay(thumbnail, norm, g, alpha=0.5)
    assert over.shape == thumbnail.shape and over.dtype == np.uint8
    # thumbnail px spans 2 level-0 px: x >= 992 is thumbnail col >= 496, y >= 576 is row >= 288
    np.testing.assert_array_equal(over[:, 496:], thumbnail[:, 496:])
    np.testing.assert_array_equal(over[288:], thumbnail[288:])
    yellow = colormap(np.ones((1, 1)))[0, 0, :3].astype(float)
    assert (over[:288, :496] == np.round(0.5 * 200 + 0.5 * yellow).astype(np.uint8)).all()
    map_overlay_png(tmp_path / "overlay.png", thumbnail, norm, g, alpha=0.5)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "overlay.png")), over)


def test_overlay_opacity_follows_partial_coverage() -> None:
    g = MapGeometry(64, 64, 1.0, 16.0)  # 4 x 4 map px of 16 level-0 px
    norm = np.full(g.shape, np.nan, np.float32)
    norm[:, :1] = 1.0  # column 0 covered
    thumb = np.zeros((2, 2, 3), np.uint8)  # each thumbnail px spans 2 map px: half covered in column 0
    over = map_overlay(thumb, norm, g, alpha=1.0)
    yellow = colormap(np.ones((1, 1)))[0, 0, :3].astype(float)
    np.testing.assert_array_equal(over[:, 0], np.tile(np.round(0.5 * yellow), (2, 1)).astype(np.uint8))
    assert (over[:, 1] == 0).all()


# --------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------


def test_memory_stays_at_map_size() -> None:
    g = MapGeometry(40_000, 40_000, 0.25)  # 10 x 10 mm at 8 µm: 1250 x 1250
    assert g.shape == (1250, 1250)
    canvas = SlideCanvas(g)
    map_px = 1250 * 1250
    assert canvas.nbytes == 2 * map_px * 8
    rng = np.random.default_rng(1)
    chunk = rng.random((64, 224, 224), dtype=np.float32)  # 64 tiles of 128 µm at 224 px
    coords = [(512 * (i % 78), 512 * (i // 78) + 4096) for i in range(64)]
    tracemalloc.start()
    try:
        canvas.add_many(coords, 512, chunk)
        canvas.add(39_488, 39_488, 512, chunk[0])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one tile in float64 is 0.4 MB; anything slide-sized (40,000² px) would be >= 1.6 GB
    assert peak < 4 * 2**20, peak
    arrays = [v for v in vars(canvas).values() if isinstance(v, np.ndarray)]
    assert len(arrays) == 2 and all(a.shape == (1250, 1250) for a in arrays)
    assert canvas.tiles == 65 and (canvas.weight > 0).sum() == 65 * 16 * 16


# --------------------------------------------------------------------------
# bad input: one line each
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ((1000, 800, None), ["mpp", "microns per level-0 pixel", "got None"]),
        ((1000, 800, 0), ["mpp", "> 0", "got 0"]),
        ((1000, 800, -0.5), ["mpp", "got -0.5"]),
        ((1000, 800, float("nan")), ["mpp", "got nan"]),
        ((1000, 800, "0.25"), ["mpp", "got '0.25'"]),
        ((1000, 800, 0.25, 0), ["map_um", "> 0", "got 0"]),
        ((1000, 800, 0.25, -8), ["map_um", "got -8"]),
        ((1000, 800, 0.5, 0.25), ["map_um 0.25 is finer", "expected map_um >= mpp"]),
        ((0, 800, 0.25), ["width", "integer >= 1", "got 0"]),
        ((1000, 80.5, 0.25), ["height", "got 80.5"]),
    ],
)
def test_bad_geometry(args: tuple, needles: list[str]) -> None:
    with pytest.raises(InputError) as err:
        MapGeometry(*args)
    assert_one_line(err, "slide map", *needles)


GOOD = np.ones((8, 8), np.float32)


@pytest.mark.parametrize(
    ("call", "needles"),
    [
        (lambda c: c.add(-1, 0, 64, GOOD), ["tile at x=-1, y=0", "outside the slide (256 x 192)"]),
        (lambda c: c.add(0, 160, 64, GOOD), ["tile at x=0, y=160", "outside the slide"]),
        (lambda c: c.add(224, 0, 64, GOOD), ["tile at x=224, y=0", "outside the slide"]),
        (lambda c: c.add(0, 0, 0, GOOD), ["extract_px must be a number > 0"]),
        (lambda c: c.add(float("nan"), 0, 64, GOOD), ["tile x/y must be finite numbers"]),
        (lambda c: c.add(32, 64, 64, np.where(np.eye(8) > 0, np.nan, 1.0)), ["tile at x=32, y=64", "NaN or inf"]),
        (lambda c: c.add(32, 64, 64, np.full((8, 8), np.inf)), ["tile at x=32, y=64", "NaN or inf"]),
        (lambda c: c.add(0, 0, 64, np.ones((8, 8, 3))), ["channel-reduced (h, w)", "(8, 8, 3)"]),
        (lambda c: c.add(0, 0, 64, np.ones((0, 8))), ["channel-reduced (h, w)"]),
        (lambda c: c.add(0, 0, 64, np.full((8, 8), "a")), ["real numbers"]),
        (lambda c: c.add_many([(0, 0)], 64, np.ones((2, 8, 8))), ["coords must be (N, 2)", "2 tiles"]),
        (lambda c: c.add_many([0, 0], 64, np.ones((2, 8, 8))), ["coords must be (N, 2)"]),
    ],
)
def test_bad_tiles(call, needles: list[str]) -> None:
    canvas = SlideCanvas(MapGeometry(256, 192, MPP, MAP_UM))
    with pytest.raises(InputError) as err:
        call(canvas)
    assert_one_line(err, "slide map", *needles)
    assert canvas.tiles == 0 and not canvas.weight.any()


def test_a_bad_tile_in_a_chunk_adds_nothing() -> None:
    canvas = SlideCanvas(MapGeometry(256, 192, MPP, MAP_UM))
    chunk = np.ones((3, 8, 8))
    chunk[2, 4, 4] = np.nan
    with pytest.raises(InputError) as err:
        canvas.add_many([(0, 0), (64, 0), (128, 64)], 64, chunk)
    assert_one_line(err, "tile at x=128, y=64", "NaN")
    assert canvas.tiles == 0 and not canvas.weight.any() and np.isnan(canvas.result()).all()


def test_bad_scale_map_and_outputs(tmp_path: Path) -> None:
    g = MapGeometry(256, 192, MPP, MAP_UM)
    good = np.zeros(g.shape, np.float32)
    cases = [
        (lambda: normalise(good, 0), "scale must be a number > 0"),
        (lambda: normalise(good, float("nan")), "scale must be a number > 0"),
        (lambda: slide_scale(np.array([1.0, np.inf])), "inf"),
        (lambda: write_map_tiff(tmp_path / "m.tiff", np.zeros((5, 5)), g), "not the geometry's (rows, cols) (6, 8)"),
        (lambda: write_map_tiff(tmp_path / "m.tiff", good + 2, g), "expected values in [0, 1] or NaN"),
        (lambda: write_map_tiff(tmp_path / "m.tiff", good, g, cmap="nope"), "not a matplotlib colour map"),
        (lambda: map_overlay(np.zeros((4, 4)), good, g), "thumbnail must be uint8 (h, w, 3)"),
        (lambda: map_overlay(np.zeros((4, 4, 3), np.uint8), good, g, alpha=2), "alpha"),
        (lambda: SlideCanvas((256, 192)), "expected a MapGeometry"),
    ]
    for call, needle in cases:
        with pytest.raises(InputError) as err:
            call()
        assert_one_line(err, needle)
    assert list(tmp_path.iterdir()) == []


def test_map_tiff_is_deterministic_and_atomic(tmp_path: Path) -> None:
    g = MapGeometry(2048, 1024, 0.5, 8.0)
    norm = np.where(np.arange(128) % 3 == 0, np.nan, np.linspace(0, 1, 128)).astype(np.float32)
    norm = np.tile(norm, (64, 1))
    write_map_tiff(tmp_path / "a.tiff", norm, g)
    write_map_tiff(tmp_path / "b.tiff", norm, g)
    assert (tmp_path / "a.tiff").read_bytes() == (tmp_path / "b.tiff").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tiff", "b.tiff"]
    assert math.isclose(g.scale, 16)


def test_rgba_pyramid_levels_weight_colour_by_alpha(tmp_path: Path) -> None:
    """write_pyramidal_tiff's RGBA path: lower levels average colour over opaque pixels only."""
    from slidegrad.slide import write_pyramidal_tiff

    image = np.zeros((64, 96, 4), np.uint8)
    image[:, :33] = (200, 100, 10, 255)  # column 32 opaque, 33 transparent: a 2 x 2 block half covered
    write_pyramidal_tiff(tmp_path / "rgba.tiff", image, 8.0, tile_size=16, min_level_size=16)
    with tifffile.TiffFile(tmp_path / "rgba.tiff") as tif:
        levels = [page.asarray() for page in tif.pages]
        assert tif.pages[0].extrasamples == (2,)  # unassociated alpha
    assert [level.shape for level in levels] == [(64, 96, 4), (32, 48, 4), (16, 24, 4)]
    np.testing.assert_array_equal(levels[0], image)
    # colour kept, alpha halved
    np.testing.assert_array_equal(levels[1][:, 16], np.broadcast_to([200, 100, 10, 128], (32, 4)))
    assert (levels[1][:, 17:] == 0).all()
    np.testing.assert_array_equal(levels[1][:, :16], np.broadcast_to([200, 100, 10, 255], (32, 16, 4)))
    # alpha (128 + 0 + 128 + 0 + 2) // 4
    np.testing.assert_array_equal(levels[2][:, 8], np.broadcast_to([200, 100, 10, 64], (16, 4)))
    with pytest.raises(InputError) as err:
        write_pyramidal_tiff(tmp_path / "x.tiff", image, 8.0, compression="jpeg")
    assert_one_line(err, "x.tiff", "jpeg compression takes an RGB image")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgba.tiff"]
