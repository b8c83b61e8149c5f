"""Tests for slidegrad.prediction_map: tiles' class probabilities as slide maps (issue 26 item 3, the library part).

As in test_slide_map: mpp 0.25 µm/px and 8 µm map pixels, so one map pixel is S = 32 level-0 px and
every tile edge below is a multiple of 1/2 map pixel (exact weights in binary floats).
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from slidegrad.errors import InputError
from slidegrad.prediction_map import (
    PredictionCanvas,
    prediction_figure,
    prediction_maps,
    prediction_overlay,
    read_prediction_npz,
    write_prediction_npz,
)
from slidegrad.slide_map import MapGeometry, SlideCanvas

MPP, MAP_UM, S = 0.25, 8.0, 32
LABELS = ["tumour", "stroma", "necrosis"]


def assert_one_line(err: pytest.ExceptionInfo[InputError], *needles: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


def grid_probabilities(n_rows: int, n_cols: int, n_classes: int = 3, seed: int = 0) -> np.ndarray:
    """``(n_rows, n_cols, C)`` distinct softmax rows (sum 1, each in (0, 1))."""
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(n_rows, n_cols, n_classes))
    probs = np.exp(logits)
    return probs / probs.sum(axis=-1, keepdims=True)


def grid_coords(n_rows: int, n_cols: int, stride: int) -> np.ndarray:
    """``(n_rows · n_cols, 2)`` level-0 (x, y), row-major, ``stride`` apart."""
    ys, xs = np.mgrid[0:n_rows, 0:n_cols] * stride
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


# --------------------------------------------------------------------------
# stitching
# --------------------------------------------------------------------------


def test_stride_1_each_tile_centre_is_its_probability() -> None:
    extract = 96  # 3 map px a side: no overlap, the centre pixel lies inside the tile only
    probs = grid_probabilities(4, 5)
    g = MapGeometry(5 * extract, 4 * extract, MPP, MAP_UM)
    maps = prediction_maps(g, grid_coords(4, 5, extract), extract, probs.reshape(-1, 3))
    assert maps.dtype == np.float32 and maps.shape == (3, 12, 15) and not np.isnan(maps).any()
    for row in range(4):
        for col in range(5):
            centre = (row * extract + extract // 2) // S, (col * extract + extract // 2) // S
            np.testing.assert_allclose(maps[(slice(None), *centre)], probs[row, col], rtol=1e-6)
    for k in range(3):  # every pixel of a tile's square is its probability
        np.testing.assert_allclose(maps[k], np.kron(probs[..., k], np.ones((3, 3))), rtol=1e-6)
    np.testing.assert_allclose(maps.sum(axis=0), 1.0, rtol=1e-6)  # softmax rows stay rows


def test_stride_div_2_overlaps_are_the_mean_of_the_overlapping_tiles() -> None:
    extract, stride = 128, 64  # stride_div 2: inside the grid each map px lies under 4 tiles
    probs = grid_probabilities(5, 7, seed=1)
    g = MapGeometry(512, 384, MPP, MAP_UM)  # (512 - 128) / 64 + 1 = 7 cols, 5 rows
    maps = prediction_maps(g, grid_coords(5, 7, stride), extract, probs.reshape(-1, 3))
    assert maps.shape == (3, 12, 16) and not np.isnan(maps).any()
    # map px (r, c) covers level-0 [32c, 32c + 32): tile (i, j) covers it when 2j <= c < 2j + 4
    for r in range(12):
        for c in range(16):
            rows = [i for i in range(5) if 2 * i <= r < 2 * i + 4]
            cols = [j for j in range(7) if 2 * j <= c < 2 * j + 4]
            expected = np.mean([probs[i, j] for i in rows for j in cols], axis=0)
            np.testing.assert_allclose(maps[:, r, c], expected, rtol=1e-6, err_msg=f"pixel ({r}, {c})")
    # px (2, 2) = level-0 [64, 96)²: under tiles (0, 0), (0, 1), (1, 0), (1, 1)
    np.testing.assert_allclose(maps[:, 2, 2], probs[:2, :2].mean(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(maps[:, 0, 0], probs[0, 0], rtol=1e-6)  # a corner: one tile, not overlapped
    np.testing.assert_allclose(maps[:, 0, 2], probs[0, :2].mean(axis=0), rtol=1e-6)  # an edge: two tiles


def test_chunks_streamed_equal_one_call_and_slide_canvas_with_1x1_tiles() -> None:
    extract, stride = 128, 64
    probs = grid_probabilities(5, 7, seed=2).reshape(-1, 3)
    coords = grid_coords(5, 7, stride)
    g = MapGeometry(512, 384, MPP, MAP_UM)
    canvas = PredictionCanvas(g, 3)
    for start in range(0, len(coords), 6):  # chunks of 6, the last one shorter
        canvas.add_many(coords[start : start + 6], extract, probs[start : start + 6])
    canvas.add_many(np.zeros((0, 2)), extract, np.zeros((0, 3)))  # an empty chunk adds nothing
    assert canvas.tiles == 35
    streamed = canvas.result()
    np.testing.assert_array_equal(streamed, prediction_maps(g, coords, extract, probs))
    for k in range(3):  # the saliency map's rule: each tile a 1 x 1 values array on a SlideCanvas
        reference = SlideCanvas(g)
        reference.add_many(coords, extract, probs[:, k, None, None])
        np.testing.assert_allclose(streamed[k], reference.result(), rtol=1e-6)
        np.testing.assert_allclose(canvas.weight, reference.weight, rtol=1e-12)


def test_nan_outside_tiles_and_partial_pixels() -> None:
    g = MapGeometry(512, 384, MPP, MAP_UM)  # (12, 16) map px
    coords = [(0, 0), (128, 64), (368, 208)]  # the last one: map box [11.5, 15.5) x [6.5, 10.5)
    probs = np.array([[0.9, 0.1], [0.25, 0.75], [0.5, 0.5]])
    canvas = PredictionCanvas(g, 2)
    canvas.add_many(coords, 128, probs)
    maps = canvas.result()
    covered = np.zeros(g.shape, bool)
    covered[0:4, 0:4] = covered[2:6, 4:8] = covered[6:11, 11:16] = True
    for k in range(2):
        np.testing.assert_array_equal(~np.isnan(maps[k]), covered)
    np.testing.assert_allclose(maps[:, 1, 1], probs[0], rtol=1e-6)
    np.testing.assert_allclose(maps[:, 8, 13], probs[2], rtol=1e-6)
    np.testing.assert_allclose(maps[:, 6, 11], probs[2], rtol=1e-6)  # a quarter covered: still its probability
    assert canvas.weight[6, 11] == 0.25 and canvas.weight[6, 12] == 0.5 and canvas.weight[7, 12] == 1.0


def test_memory_is_classes_times_map_size() -> None:
    g = MapGeometry(40_000, 40_000, 0.25)  # 10 x 10 mm at 8 µm: 1250 x 1250
    canvas = PredictionCanvas(g, 4)
    assert canvas.nbytes == 5 * 1250 * 1250 * 8
    arrays = [v for v in vars(canvas).values() if isinstance(v, np.ndarray)]
    assert sorted(a.shape for a in arrays) == [(4, 1250, 1250), (1250, 1250)]


def test_probabilities_within_tolerance_are_clipped() -> None:
    g = MapGeometry(256, 256, MPP, MAP_UM)
    maps = prediction_maps(g, [(0, 0), (128, 0)], 64, [[1 + 5e-7, -5e-7], [0.0, 1.0]])
    np.testing.assert_array_equal(maps[:, 0, 0], [1.0, 0.0])
    assert np.nanmax(maps) <= 1 and np.nanmin(maps) >= 0


# --------------------------------------------------------------------------
# overlay and figure
# --------------------------------------------------------------------------


def slide_fixture() -> tuple[MapGeometry, np.ndarray, np.ndarray]:
    """A 1024 x 512 px slide (0.25 µm/px), its 256 x 128 thumbnail (4 px per thumbnail px, 8 per map px),
    and 3-class maps of tiles covering its left half only (stride_div 2)."""
    g = MapGeometry(1024, 512, MPP, MAP_UM)
    rng = np.random.default_rng(3)
    thumb = rng.integers(60, 230, size=(128, 256, 3), dtype=np.uint8)
    coords = grid_coords(3, 3, 128)  # tiles of 256 px: level-0 x < 512, y < 512
    probs = grid_probabilities(3, 3, seed=4).reshape(-1, 3)
    probs[0] = (1.0, 0.0, 0.0)
    return g, thumb, prediction_maps(g, coords, 256, probs)


def test_overlay_is_the_map_over_the_faded_thumbnail() -> None:
    g, thumb, maps = slide_fixture()
    over = prediction_overlay(thumb, maps[0], g)
    assert over.shape == thumb.shape and over.dtype == np.uint8
    luma = thumb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = np.clip((255 - 0.6 * (255 - luma)).round(), 0, 255)
    np.testing.assert_array_equal(over[:, 128:], np.repeat(grey[:, 128:, None], 3, axis=2))  # outside tiles
    # thumbnail px (0..15, 0..15) = level-0 [0, 64)²: under tile 0 only (probability 1 of class 0)
    red = np.round(np.asarray(colormaps["coolwarm"](1.0)[:3]) * 255)
    expected = np.round(0.4 * grey[:16, :16, None] + 0.6 * red)
    assert np.abs(over[:16, :16].astype(float) - expected).max() <= 1
    in_colour = prediction_overlay(thumb, maps[0], g, fade=False, alpha=0.5)
    np.testing.assert_array_equal(in_colour[:, 128:], thumb[:, 128:])


def test_figure_has_one_panel_per_class_and_reruns_are_byte_identical(tmp_path: Path) -> None:
    g, thumb, maps = slide_fixture()
    first = [tmp_path / "a" / "pred.png", tmp_path / "a" / "pred.pdf", tmp_path / "a" / "pred.svg"]
    fig = prediction_figure(thumb, maps, LABELS, g, first, title="slide s1", dpi=100)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == LABELS
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "probability"]
    assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 1.0)
    for ax, k in zip(panels, range(3)):
        np.testing.assert_array_equal(ax.images[0].get_array(), prediction_overlay(thumb, maps[k], g))
        assert any("µm" in text.get_text() for text in ax.texts)  # the scale bar
    assert fig._suptitle.get_text() == "slide s1"
    second = [tmp_path / "b" / p.name for p in first]
    prediction_figure(thumb, maps, LABELS, g, second, title="slide s1", dpi=100)
    for a, b in zip(first, second):
        assert a.stat().st_size > 1000 and a.read_bytes() == b.read_bytes(), a.name
    with Image.open(first[0]) as png:
        width, height = png.size
    assert 3 * height < width < 6 * height  # three 2:1 panels in one row and a colour bar


# --------------------------------------------------------------------------
# the .npz file
# --------------------------------------------------------------------------


def test_npz_round_trip_is_exact_and_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g, _, maps = slide_fixture()
    write_prediction_npz(tmp_path / "a.npz", maps, LABELS, g)
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)  # a rerun years later: no date in the file
    write_prediction_npz(tmp_path / "b.npz", maps, LABELS, g)
    monkeypatch.undo()
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]  # no temporary file left
    read = read_prediction_npz(tmp_path / "a.npz")
    np.testing.assert_array_equal(read.maps, maps)  # NaN where NaN
    assert read.maps.dtype == np.float32 and read.labels == LABELS and read.geometry == g
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:  # plain numpy reads it
        assert data["maps"].shape == (3, *g.shape) and list(data["labels"]) == LABELS
        assert (int(data["width"]), int(data["height"]), float(data["mpp"]), float(data["map_um"])) == (
            1024, 512, MPP, MAP_UM,
        )  # fmt: skip


# --------------------------------------------------------------------------
# bad input: one line each
# --------------------------------------------------------------------------


G = MapGeometry(256, 192, MPP, MAP_UM)
TWO = [(0, 0), (64, 64)]


@pytest.mark.parametrize(
    ("call", "needles"),
    [
        (lambda: prediction_maps(G, TWO, 64, [[0.5, np.nan], [0.2, 0.8]]), ["tile 0 at x=0, y=0", "NaN or inf"]),
        (lambda: prediction_maps(G, TWO, 64, [[0.5, 0.5], [np.inf, 0.0]]), ["tile 1 at x=64, y=64", "NaN or inf"]),
        (lambda: prediction_maps(G, TWO, 64, [[0.5, 0.5], [1.01, 0.0]]), ["x=64, y=64", "(1.01, 0)", "outside [0, 1]"]),
        (lambda: prediction_maps(G, TWO, 64, [[-0.1, 1.0], [0.5, 0.5]]), ["x=0, y=0", "outside [0, 1]"]),
        (lambda: prediction_maps(G, TWO, 64, [[0.5, 0.5]]), ["coords must be (N, 2)", "1 tiles", "(2, 2)"]),
        (lambda: prediction_maps(G, TWO, 64, [0.5, 0.5]), ["probabilities must be (N, C)", "(2,)"]),
        (lambda: prediction_maps(G, [0, 64], 64, [[0.5, 0.5], [0.2, 0.8]]), ["coords must be (N, 2)"]),
        (lambda: prediction_maps(G, TWO, 64, [["a", "b"], ["c", "d"]]), ["probabilities must be numbers"]),
        (lambda: prediction_maps(G, [(0, 0), (224, 0)], 64, np.full((2, 2), 0.5)), ["x=224, y=0", "outside the slide"]),
        (lambda: PredictionCanvas(G, 3).add_many(TWO, 64, np.full((2, 2), 0.5)), ["2 classes, expected 3"]),
        (lambda: PredictionCanvas(G, 0), ["n_classes must be an integer >= 1"]),
        (lambda: PredictionCanvas((256, 192), 2), ["expected a MapGeometry"]),
    ],
)
def test_bad_probabilities_and_tiles(call, needles: list[str]) -> None:
    with pytest.raises(InputError) as err:
        call()
    assert_one_line(err, *needles)


def test_a_bad_tile_in_a_chunk_adds_nothing() -> None:
    canvas = PredictionCanvas(G, 2)
    with pytest.raises(InputError) as err:
        canvas.add_many([(0, 0), (64, 0), (128, 64)], 64, [[0.5, 0.5], [0.1, 0.9], [0.5, 1.5]])
    assert_one_line(err, "tile 2 at x=128, y=64")
    assert canvas.tiles == 0 and not canvas.weight.any() and np.isnan(canvas.result()).all()


def test_bad_figure_and_file_arguments(tmp_path: Path) -> None:
    g, thumb, maps = slide_fixture()
    png = [tmp_path / "f.png"]
    cases = [
        (lambda: prediction_figure(thumb, maps, LABELS[:2], g, png), "2 labels for 3 class maps"),
        (lambda: prediction_figure(thumb[:100], maps, LABELS, g, png), "does not have the slide's aspect"),
        (lambda: prediction_figure(thumb, maps[:, :5], LABELS, g, png), "(C, rows, cols)"),
        (lambda: prediction_figure(thumb, maps + 1, LABELS, g, png), "in [0, 1] or NaN"),
        (lambda: prediction_figure(thumb, maps, LABELS, g, [tmp_path / "f.jpg"]), "expected a .pdf, .png or .svg"),
        (lambda: prediction_figure(thumb, maps, LABELS, g, png, cmap="nope"), "not a matplotlib colour map"),
        (lambda: prediction_overlay(thumb.astype(float), maps[0], g), "thumbnail must be uint8 (h, w, 3)"),
        (lambda: write_prediction_npz(tmp_path / "m.npz", maps, "abc", g), "labels must be a list"),
        (lambda: write_prediction_npz(tmp_path / "m.npz", maps[0], LABELS, g), "(C, rows, cols)"),
    ]  # fmt: skip
    for call, needle in cases:
        with pytest.raises(InputError) as err:
            call()
        assert_one_line(err, needle)
    assert list(tmp_path.iterdir()) == []


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_missing_or_corrupt_npz_is_one_line_naming_it(tmp_path: Path) -> None:
    g, _, maps = slide_fixture()
    good = tmp_path / "good.npz"
    write_prediction_npz(good, maps, LABELS, g)
    data = good.read_bytes()
    garbled = bytearray(data)
    start = len(data) // 3
    garbled[start : start + 64] = bytes(64)  # inside the deflated maps: bad CRC or a zlib error
    np.save(tmp_path / "plain.npy", maps)
    np.savez(tmp_path / "other.npz", maps=maps)
    stale = dict(np.load(good, allow_pickle=False))
    stale["maps"] = maps[:2]
    np.savez(tmp_path / "stale.npz", **stale)
    cases = [
        (tmp_path / "missing.npz", ["file not found"]),
        (write_bytes(tmp_path / "empty.npz", b""), ["truncated or corrupt"]),
        (write_bytes(tmp_path / "short.npz", data[: len(data) // 2]), ["truncated or corrupt"]),
        (write_bytes(tmp_path / "garbled.npz", bytes(garbled)), ["truncated or corrupt"]),
        (write_bytes(tmp_path / "text.npz", b"not an archive at all\n" * 8), ["truncated or corrupt"]),
        (tmp_path / "plain.npy", ["not a .npz archive"]),
        (tmp_path / "other.npz", ["not a slidegrad prediction map file", "no version"]),
        (tmp_path / "stale.npz", ["labels", "3 labels for 2 class maps"]),
    ]
    for path, needles in cases:
        with pytest.raises(InputError) as err:
            read_prediction_npz(path)
        assert_one_line(err, "prediction map", f"'{path}'", *needles)
    assert zipfile.is_zipfile(good) and read_prediction_npz(good).labels == LABELS
