"""Tests for slidegrad.tiling: tissue detection, tile choice, batched scoring and top-k.

Slides are written here: white 2048 x 1536 canvases at 1 µm/px (64 µm tiles
are 64 level-0 px) with tissue — a crop of skimage's immunohistochemistry
image (epithelium, DAB-rich) — pasted in one region.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from skimage.color import rgb2hsv
from skimage.data import immunohistochemistry
from skimage.filters import threshold_otsu

from slidegrad import batching, tiling
from slidegrad.errors import InputError
from slidegrad.model import scale
from slidegrad.slide import WSI, write_pyramidal_tiff

from .conftest import REPO, make_tiny_cnn, write_test_slide

WIDTH, HEIGHT = 2048, 1536
MPP = 1.0
TILE = 64  # tile_px = tile_um = 64 at 1 µm/px: 64 level-0 px per tile
CROP = (slice(32, 224), slice(0, 256))  # IHC epithelium, 192 rows x 256 cols: nearly all tissue
CROP_H, CROP_W = 192, 256
ALIGNED = (384, 256)  # paste corner on the tile grid: tiles cols 6..9, rows 4..6
SHIFTED = (400, 272)  # 16 px off the grid: tissue overlaps cols 6..10, rows 4..7


def write_canvas_slide(path: Path, corner: tuple[int, int] | None, fill: int = 255) -> Path:
    canvas = np.full((HEIGHT, WIDTH, 3), fill, np.uint8)
    if corner is not None:
        x, y = corner
        canvas[y : y + CROP_H, x : x + CROP_W] = immunohistochemistry()[CROP]
    write_pyramidal_tiff(path, canvas, mpp=MPP, min_level_size=256)
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiling")
    return {
        "aligned": write_canvas_slide(folder / "aligned.tiff", ALIGNED),
        "shifted": write_canvas_slide(folder / "shifted.tiff", SHIFTED),
        "blank": write_canvas_slide(folder / "blank.tiff", None),
        "grey": write_canvas_slide(folder / "grey.tiff", None, fill=200),
    }


def open_slide(path: Path, stride_div: int = 1) -> WSI:
    return WSI(path, TILE, TILE, stride_div=stride_div)


def overlapping(corner: tuple[int, int], wsi: WSI) -> list[tuple[int, int]]:
    """Grid tiles (row-major) whose square overlaps the pasted region, by geometry alone."""
    x0, y0 = corner
    n_cols, n_rows = wsi.grid_shape
    out = []
    for row in range(n_rows):
        for col in range(n_cols):
            x, y = wsi.grid_to_xy(col, row)
            if x < x0 + CROP_W and x + wsi.extract_px > x0 and y < y0 + CROP_H and y + wsi.extract_px > y0:
                out.append((x, y))
    return out


# --------------------------------------------------------------------------
# tissue_mask
# --------------------------------------------------------------------------


def test_tissue_mask_follows_the_saturation_otsu_rule(slides):
    with open_slide(slides["aligned"]) as wsi:
        mask, scale_ = tiling.tissue_mask(wsi)
        thumb = wsi.thumbnail(1024)
    assert mask.dtype == bool and mask.shape == thumb.shape[:2] == (768, 1024)
    assert scale_ == 2.0
    # independent reference: skimage's HSV saturation, 7x7 median, Otsu, tissue = S > t
    from scipy.ndimage import median_filter

    sat = np.rint(rgb2hsv(thumb)[..., 1] * 255).astype(np.uint8)
    sat = median_filter(sat, size=7, mode="nearest")
    np.testing.assert_array_equal(mask, sat > threshold_otsu(sat))
    # all tissue lies in the pasted region (thumbnail px = level-0 px / 2), and most of it is found
    x, y = ALIGNED
    inside = np.zeros_like(mask)
    inside[y // 2 : (y + CROP_H) // 2, x // 2 : (x + CROP_W) // 2] = True
    assert not mask[~inside].any()
    assert mask[inside].mean() > 0.8


@pytest.mark.parametrize("name", ["blank", "grey"])
def test_uniform_slide_has_no_tissue(slides, name):
    with open_slide(slides[name]) as wsi:
        mask, _ = tiling.tissue_mask(wsi)
        assert not mask.any()
        assert tiling.tissue_tiles(wsi) == []
        assert tiling.tissue_tiles(wsi, min_tissue=0.01) == []


def test_tissue_mask_respects_max_size(slides):
    with open_slide(slides["aligned"]) as wsi:
        mask, scale_ = tiling.tissue_mask(wsi, max_size=256)
    assert mask.shape == (192, 256) and scale_ == 8.0


# --------------------------------------------------------------------------
# tissue_tiles
# --------------------------------------------------------------------------


def test_tissue_tiles_are_the_tiles_of_the_pasted_region(slides):
    with open_slide(slides["aligned"]) as wsi:
        tiles = tiling.tissue_tiles(wsi)
        expected = overlapping(ALIGNED, wsi)
    assert expected == [(x, y) for y in (256, 320, 384) for x in (384, 448, 512, 576)]
    assert tiles == expected


@pytest.mark.parametrize("stride_div", [1, 2])
def test_tiles_overlapping_an_off_grid_region(slides, stride_div):
    """Any tissue (min_tissue small) = exactly the tiles overlapping the region; default = mostly-tissue ones."""
    with open_slide(slides["shifted"], stride_div) as wsi:
        mask, _ = tiling.tissue_mask(wsi)
        fractions = tiling.tissue_fractions(wsi, mask)
        any_tissue = tiling.tissue_tiles(wsi, min_tissue=0.01)
        mostly = tiling.tissue_tiles(wsi)
        expected = overlapping(SHIFTED, wsi)
        e = wsi.extract_px
    assert any_tissue == expected
    if stride_div == 1:
        assert expected == [(x, y) for y in (256, 320, 384, 448) for x in (384, 448, 512, 576, 640)]
    # a tile's tissue share never exceeds its geometric overlap with the region (plus one thumbnail px)
    x0, y0 = SHIFTED
    for row in range(fractions.shape[0]):
        for col in range(fractions.shape[1]):
            x, y = col * wsi.stride_px, row * wsi.stride_px
            ox = max(0, min(x + e, x0 + CROP_W) - max(x, x0))
            oy = max(0, min(y + e, y0 + CROP_H) - max(y, y0))
            assert fractions[row, col] <= (ox + 2) * (oy + 2) / e**2
    assert set(mostly) < set(any_tissue)
    # 16 px slivers (at most 1/4 of a tile) are never "mostly tissue"
    for x, y in mostly:
        assert x0 - 16 <= x and x + e <= x0 + CROP_W + 16 and y0 - 16 <= y and y + e <= y0 + CROP_H + 16
    assert mostly == sorted(mostly, key=lambda t: (t[1], t[0]))


def test_min_tissue_bounds(slides):
    with open_slide(slides["aligned"]) as wsi:
        n_cols, n_rows = wsi.grid_shape
        assert len(tiling.tissue_tiles(wsi, min_tissue=0)) == n_cols * n_rows
        strict = tiling.tissue_tiles(wsi, min_tissue=1.0)
        assert set(strict) <= set(tiling.tissue_tiles(wsi))
        for bad in (-0.1, 1.5, "half", None, True):
            with pytest.raises(InputError, match="min_tissue"):
                tiling.tissue_tiles(wsi, min_tissue=bad)


def test_roi_keeps_tiles_entirely_inside(slides):
    with open_slide(slides["aligned"]) as wsi:
        all_tiles = tiling.tissue_tiles(wsi)
        inside = tiling.tissue_tiles(wsi, roi=(448, 256, 640, 448))
        assert inside == [t for t in all_tiles if t[0] >= 448]
        # one pixel short on the right / below drops that column / row
        assert tiling.tissue_tiles(wsi, roi=(448, 256, 639, 447)) == [
            t for t in all_tiles if 448 <= t[0] <= 512 and t[1] <= 320
        ]
        # a box smaller than a tile holds none; the whole slide holds all
        assert tiling.tissue_tiles(wsi, roi=(400, 300, 460, 360)) == []
        assert tiling.tissue_tiles(wsi, roi=(0, 0, WIDTH, HEIGHT)) == all_tiles
        assert tiling.tissue_tiles(wsi, roi=np.array([448, 256, 640, 448])) == inside


@pytest.mark.parametrize(
    "roi, words",
    [
        ((0, 0, 10), "not 4 integers"),
        ((0, 0, 10.0, 10), "not 4 integers"),
        ((0, 0, True, 10), "not 4 integers"),
        ("abcd", "not 4 integers"),
        (5, "not 4 integers"),
        ((100, 0, 100, 50), "empty"),
        ((0, 60, 50, 10), "empty"),
        ((0, 0, WIDTH + 1, 10), "outside the slide"),
        ((-5, 0, 100, 100), "outside the slide"),
    ],
)
def test_bad_roi(slides, roi, words):
    with open_slide(slides["aligned"]) as wsi:
        with pytest.raises(InputError, match=words) as info:
            tiling.tissue_tiles(wsi, roi=roi)
    message = str(info.value)
    assert "aligned.tiff" in message and "\n" not in message and "(x0, y0, x1, y1)" in message


def test_conftest_slide_is_tissue_almost_everywhere(tmp_path):
    """The all-IHC test slide: tissue tiles are a large, row-major subset of the grid."""
    path = write_test_slide(tmp_path / "ihc.tiff", immunohistochemistry())
    with WSI(path, 64, 64) as wsi:
        tiles = tiling.tissue_tiles(wsi, min_tissue=0.25)
        n_cols, n_rows = wsi.grid_shape
    grid = [(c * 128, r * 128) for r in range(n_rows) for c in range(n_cols)]
    assert set(tiles) <= set(grid) and len(tiles) >= len(grid) // 2
    assert tiles == sorted(tiles, key=lambda t: (t[1], t[0]))


# --------------------------------------------------------------------------
# sample_tiles (random mode: a seeded draw from tissue_tiles' output)
# --------------------------------------------------------------------------


def test_sample_tiles_are_seeded_tissue_tiles(slides):
    with open_slide(slides["shifted"], 2) as wsi:
        tissue = tiling.tissue_tiles(wsi)
        in_box = tiling.tissue_tiles(wsi, roi=(448, 288, 704, 480))
    name = "slide 'shifted'"
    a = tiling.sample_tiles(tissue, 5, 7, name)
    b = tiling.sample_tiles(tissue, 5, 7, name)
    c = tiling.sample_tiles(tissue, 5, 8, name)
    in_roi = tiling.sample_tiles(in_box, 3, 7, name)
    assert tiling.sample_tiles(tissue, 0, 7, name) == []
    assert len(tissue) > 10 and len(in_box) > 3
    assert a == b and a != c
    assert len(a) == 5 and len(set(a)) == 5 and set(a) <= set(tissue)
    assert a == sorted(a, key=lambda t: (t[1], t[0]))
    rng = np.random.default_rng(7)
    assert a == [tissue[i] for i in sorted(rng.choice(len(tissue), 5, replace=False))]
    assert len(in_roi) == 3 and set(in_roi) <= set(in_box)
    for x, y in in_roi:
        assert 448 <= x and x + 64 <= 704 and 288 <= y and y + 64 <= 480


def test_sample_tiles_warns_when_too_few(slides):
    with open_slide(slides["aligned"]) as wsi:
        tissue = tiling.tissue_tiles(wsi)
        outside = tiling.tissue_tiles(wsi, roi=(0, 0, 200, 200))
    name = f"slide '{slides['aligned']}'"
    with pytest.warns(UserWarning, match=r"aligned.tiff': asked for 100 random tissue tiles but only 12 exist"):
        got = tiling.sample_tiles(tissue, 100, 0, name)
    assert got == tissue
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tiling.sample_tiles(tissue, 12, 0, name) == tissue
    assert outside == []
    with pytest.warns(UserWarning, match="only 0 exist"):
        assert tiling.sample_tiles(outside, 1, 0, name) == []
    for bad in ({"n": -1, "seed": 0}, {"n": 2.0, "seed": 0}, {"n": 2, "seed": -1}, {"n": 2, "seed": "x"}):
        with pytest.raises(InputError, match="aligned.tiff"):
            tiling.sample_tiles(tissue, name=name, **bad)


# --------------------------------------------------------------------------
# score_tiles
# --------------------------------------------------------------------------


class SpyBackend:
    """A backend that records the size of every probabilities() call."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def probabilities(self, x):
        self.calls.append(len(x))
        return self.inner.probabilities(x)


@pytest.fixture(scope="module")
def torch_backend():
    from slidegrad.backends.torch_backend import TorchBackend

    return TorchBackend(make_tiny_cnn(seed=1), device="cpu", tile_px=TILE)


@pytest.fixture(scope="module")
def scored(slides, torch_backend):
    """Coordinates (tissue and background) and their unbatched probabilities."""
    with open_slide(slides["shifted"], 2) as wsi:
        coords = tiling.tissue_tiles(wsi, min_tissue=0.01) + [(0, 0), (WIDTH - 64, HEIGHT - 64)]
        tiles = np.stack([wsi.read(x, y) for x, y in coords])
    direct = torch_backend.probabilities(scale(tiles))
    return coords, direct


@pytest.mark.parametrize("per_batch", [None, 1, 3])
def test_score_tiles_matches_one_unbatched_pass(slides, torch_backend, scored, per_batch):
    coords, direct = scored
    spy = SpyBackend(torch_backend)
    shape = (TILE, TILE, 3)
    budget = None
    if per_batch is not None:
        budget = per_batch * batching.item_bytes(torch_backend.activation_bytes(shape), int(np.prod(shape)))
    with open_slide(slides["shifted"], 2) as wsi:
        probs = tiling.score_tiles(spy, wsi, coords, scale, memory_budget=budget)
    assert probs.dtype == np.float32 and probs.shape == (len(coords), 2)
    np.testing.assert_allclose(probs, direct, rtol=1e-5, atol=1e-6)
    assert sum(spy.calls) == len(coords)
    if per_batch is None:
        assert max(spy.calls) == min(batching.CPU_MAX_BATCH, len(coords))
    else:
        assert len(coords) > 3 * per_batch
        assert spy.calls == [per_batch] * (len(coords) // per_batch) + ([len(coords) % per_batch] if len(coords) % per_batch else [])


def test_score_tiles_reads_in_bounded_chunks(slides, torch_backend, monkeypatch):
    """With MAX_READ_TILES = 4 no more than 4 tiles are read before their probabilities are computed."""
    monkeypatch.setattr(tiling, "MAX_READ_TILES", 4)
    spy = SpyBackend(torch_backend)
    with open_slide(slides["shifted"], 2) as wsi:
        coords = tiling.tissue_tiles(wsi, min_tissue=0.01)
        read = wsi.read
        pending = []

        def counting_read(x, y):
            pending.append((x, y))
            assert len(pending) - sum(spy.calls) <= 4
            return read(x, y)

        monkeypatch.setattr(wsi, "read", counting_read)
        probs = tiling.score_tiles(spy, wsi, coords, scale)
    assert len(pending) == len(coords) == probs.shape[0] and max(spy.calls) <= 4


def test_score_tiles_edge_cases(slides, torch_backend):
    with open_slide(slides["aligned"]) as wsi:
        empty = tiling.score_tiles(torch_backend, wsi, [], scale)
        assert empty.shape == (0, 2) and empty.dtype == np.float32
        with pytest.raises(InputError, match=r"coords\[1\]"):
            tiling.score_tiles(torch_backend, wsi, [(0, 0), (1.5, 0)], scale)
        with pytest.raises(InputError, match="outside the slide"):
            tiling.score_tiles(torch_backend, wsi, [(WIDTH, 0)], scale)


def test_tiling_imports_no_framework():
    code = (
        "import sys, slidegrad.tiling; "
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------
# top_k_tiles
# --------------------------------------------------------------------------

# 9 tiles (coordinates deliberately not in row-major order), 3 classes; ties on purpose
COORDS = [(64, 64), (0, 64), (128, 0), (0, 0), (64, 0), (0, 128), (128, 128), (64, 128), (128, 64)]
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],  # class 0, tied with rows 1 and 3
        [0.7, 0.1, 0.2],  # class 0
        [0.2, 0.5, 0.3],  # class 1
        [0.7, 0.3, 0.0],  # class 0
        [0.1, 0.5, 0.4],  # class 1, tied with row 2
        [0.9, 0.05, 0.05],  # class 0, top
        [0.2, 0.2, 0.6],  # class 2
        [0.4, 0.4, 0.2],  # argmax tie 0/1 -> class 0
        [0.3, 0.6, 0.1],  # class 1, top
    ],
    np.float32,
)


def reference_top_k(coords, probs, k, labels):
    coords = np.asarray(coords)
    xs, ys = coords[:, 0], coords[:, 1]
    row_major = np.lexsort((xs, ys))
    rows = []
    for c in range(probs.shape[1]):
        members = row_major[np.argmax(probs[row_major], axis=1) == c]
        ranked = members[np.argsort(-probs[members, c], kind="stable")][:k]
        rows += [(int(xs[i]), int(ys[i]), c, labels[c], float(probs[i, c])) for i in ranked]
    return rows


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_matches_argsort(k):
    labels = ["tumor", "stroma", "necrosis"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = tiling.top_k_tiles(COORDS, PROBS, k, labels)
    got = [(r["x"], r["y"], r["class_idx"], r["label"], r["score"]) for r in rows]
    assert got == reference_top_k(COORDS, PROBS, k, labels)
    assert all(set(r) == {"x", "y", "class_idx", "label", "score"} for r in rows)


def test_top_k_ties_and_predicted_class():
    with pytest.warns(UserWarning, match="fewer than k=4"):
        rows = tiling.top_k_tiles(COORDS, PROBS, 4)
    by_class = {c: [(r["x"], r["y"]) for r in rows if r["class_idx"] == c] for c in range(3)}
    # class 0: 0.9 first, then the three 0.7 ties in row-major order; (64, 128) (argmax tie) is 5th
    assert by_class[0] == [(0, 128), (0, 0), (0, 64), (64, 64)]
    # class 1: 0.6, then the 0.5 tie row-major ((128, 0) and (64, 0) -> (64, 0) first); (64, 128) joins none
    assert by_class[1] == [(128, 64), (64, 0), (128, 0)]
    assert by_class[2] == [(128, 128)]
    assert [r["label"] for r in rows] == ["0"] * 4 + ["1"] * 3 + ["2"]
    assert len(rows) == len({(r["x"], r["y"]) for r in rows})  # a tile appears once


def test_top_k_warns_for_short_classes():
    with pytest.warns(UserWarning, match=r"fewer than k=3 tiles are predicted as class 'c' \(1\)"):
        tiling.top_k_tiles(COORDS, PROBS, 3, ["a", "b", "c"])
    with pytest.warns(UserWarning, match=r"'a' \(0\)"):
        rows = tiling.top_k_tiles([(0, 0)], np.array([[0.1, 0.9]]), 1, ["a", "b"])
    assert rows == [{"x": 0, "y": 0, "class_idx": 1, "label": "b", "score": pytest.approx(0.9)}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiling.top_k_tiles(COORDS, PROBS, 1)


@pytest.mark.parametrize(
    "args, words",
    [
        ((COORDS, PROBS[:5], 1), "shape"),
        ((COORDS, PROBS[:, 0], 1), "shape"),
        ((COORDS, np.where(PROBS > 0.8, np.nan, PROBS), 1), "finite"),
        ((COORDS, PROBS, 0), "k must be"),
        ((COORDS, PROBS, 1, ["a", "b"]), "2 labels for 3 classes"),
        (([(0, 0)] * 8 + [(0.5, 0)], PROBS, 1), r"coords\[8\]"),
    ],
)
def test_top_k_bad_input(args, words):
    with pytest.raises(InputError, match=words):
        tiling.top_k_tiles(*args)
