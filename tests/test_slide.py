"""Tests for slidegrad.slide: WSI tile geometry/reading and pyramidal TIFF writing.

Slides are made in temporary folders from skimage's immunohistochemistry
image (512 x 512 RGB), tiled to 2048 x 1536 (W x H; not square, so a swapped
width/height shows up).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
import tiffslide
from PIL import Image
from skimage import data

from slidegrad.errors import InputError
from slidegrad.slide import WSI, write_pyramidal_tiff

MPP = 0.25
WIDTH, HEIGHT = 2048, 1536
APERIO_DESC = (
    "Aperio Image Library v12.0.0\r\n"
    f"{WIDTH}x{HEIGHT} [0,0 {WIDTH}x{HEIGHT}] (256x256) JPEG/RGB Q=75"
    "|AppMag = 20|MPP = 0.5"
)


# --------------------------------------------------------------------------
# fixtures: slides written once per module
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """uint8 (1536, 2048, 3) histology image."""
    img = np.tile(data.immunohistochemistry(), (3, 4, 1))
    assert img.shape == (HEIGHT, WIDTH, 3) and img.dtype == np.uint8
    return img


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("slides")
    paths = {
        "generic": folder / "generic.tiff",
        "aperio": folder / "aperio.svs",
        "flat": folder / "flat.tiff",
    }
    # levels 2048x1536, 1024x768, 512x384
    write_pyramidal_tiff(paths["generic"], image, MPP, min_level_size=256)
    write_pyramidal_tiff(
        paths["aperio"], image, 0.5, compression="jpeg", min_level_size=256, description=APERIO_DESC
    )
    write_pyramidal_tiff(paths["flat"], image, MPP, pyramid=False)
    return paths


def lanczos(region: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(region).resize((size, size), Image.Resampling.LANCZOS))


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_one_line(err: pytest.ExceptionInfo[InputError], *needles: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


# --------------------------------------------------------------------------
# write_pyramidal_tiff, as read by OpenSlide / tiffslide
# --------------------------------------------------------------------------


def test_generic_pyramid_opens_in_openslide(slides: dict[str, Path], image: np.ndarray) -> None:
    with openslide.OpenSlide(str(slides["generic"])) as osr:
        assert osr.properties["openslide.vendor"] == "generic-tiff"
        assert osr.level_count == 3
        assert osr.level_dimensions == ((2048, 1536), (1024, 768), (512, 384))
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(MPP, rel=1e-6)
        assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(MPP, rel=1e-6)
        region = np.asarray(osr.read_region((300, 200), 0, (100, 50)).convert("RGB"))
    np.testing.assert_array_equal(region, image[200:250, 300:400])


def test_aperio_jpeg_file(slides: dict[str, Path], image: np.ndarray) -> None:
    with openslide.OpenSlide(str(slides["aperio"])) as osr:
        assert osr.properties["openslide.vendor"] == "aperio"
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert float(osr.properties["openslide.objective-power"]) == 20
        assert osr.level_count == 3
        assert "thumbnail" in osr.associated_images
    # tiffslide reads the same SVS layout (levels, not a single baseline).
    with tiffslide.TiffSlide(str(slides["aperio"])) as tsr:
        assert tsr.level_count == 3
        assert tsr.properties["tiffslide.vendor"] == "aperio"
    with WSI(slides["aperio"], tile_px=256, tile_um=128) as wsi:
        assert wsi.vendor == "aperio"
        assert wsi.mpp == pytest.approx(0.5)
        assert wsi.extract_px == 256 and wsi.level == 0
        tile = wsi[2, 1]
    assert mad(tile, image[256:512, 512:768]) < 4  # JPEG


def test_flat_tiff(slides: dict[str, Path], image: np.ndarray) -> None:
    with openslide.OpenSlide(str(slides["flat"])) as osr:
        assert osr.level_count == 1
    with WSI(slides["flat"], tile_px=256, tile_um=128) as wsi:  # 512 px from level 0
        assert wsi.backend == "openslide" and wsi.level == 0 and wsi.extract_px == 512
        tile = wsi[1, 1]
    assert tile.shape == (256, 256, 3)
    np.testing.assert_array_equal(tile, lanczos(image[512:1024, 512:1024], 256))


def test_write_is_deterministic_and_atomic(tmp_path: Path, image: np.ndarray) -> None:
    small = image[:1024, :1024]
    for kwargs in (dict(), dict(compression="jpeg", description=APERIO_DESC)):
        a, b = tmp_path / "a.tiff", tmp_path / "b.tiff"
        write_pyramidal_tiff(a, small, 0.5, **kwargs)
        write_pyramidal_tiff(b, small, 0.5, **kwargs)
        assert a.read_bytes() == b.read_bytes()
    write_pyramidal_tiff(a, small[:512], 0.5)  # overwrites in place
    with tifffile.TiffFile(a) as tif:
        assert tif.pages[0].shape == (512, 1024, 3)
        assert "DateTime" not in tif.pages[0].tags
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tiff", "b.tiff"]


def test_write_failure_leaves_no_file(
    tmp_path: Path, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tifffile.TiffWriter, "write", boom)
    with pytest.raises(RuntimeError):
        write_pyramidal_tiff(tmp_path / "out.tiff", image[:512, :512], 0.5)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(image=np.zeros((64, 64), np.uint8)), "image must be uint8"),
        (dict(image=np.zeros((64, 64, 3), np.float32)), "image must be uint8"),
        (dict(mpp=0), "mpp must be"),
        (dict(mpp=float("nan")), "mpp must be"),
        (dict(tile_size=100), "tile_size"),
        (dict(compression="jpeg2000"), "compression"),
        (dict(min_level_size=0), "min_level_size"),
    ],
)
def test_write_bad_arguments(tmp_path: Path, kwargs: dict, needle: str) -> None:
    args = dict(path=tmp_path / "x.tiff", image=np.zeros((64, 64, 3), np.uint8), mpp=0.5)
    args.update(kwargs)
    with pytest.raises(InputError) as err:
        write_pyramidal_tiff(**args)
    assert_one_line(err, "x.tiff", needle)
    assert list(tmp_path.iterdir()) == []


def test_write_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        write_pyramidal_tiff(tmp_path / "nope" / "x.tiff", np.zeros((64, 64, 3), np.uint8), 0.5)
    assert_one_line(err, "x.tiff", "does not exist")


# --------------------------------------------------------------------------
# WSI geometry and pixels
# --------------------------------------------------------------------------


def test_tile_exact_at_level0(slides: dict[str, Path], image: np.ndarray) -> None:
    with WSI(slides["generic"], tile_px=256, tile_um=64) as wsi:  # 64 um / 0.25 = 256 px
        assert wsi.backend == "openslide" and wsi.vendor == "generic-tiff"
        assert wsi.dimensions == (WIDTH, HEIGHT)
        assert wsi.mpp == pytest.approx(MPP)
        assert (wsi.extract_px, wsi.stride_px, wsi.level) == (256, 256, 0)
        assert wsi.grid_shape == (8, 6)
        for col, row in [(0, 0), (7, 5), (3, 2)]:
            tile = wsi[col, row]
            assert tile.dtype == np.uint8 and tile.shape == (256, 256, 3)
            np.testing.assert_array_equal(tile, wsi.read(*wsi.grid_to_xy(col, row)))
            x, y = wsi.grid_to_xy(col, row)
            np.testing.assert_array_equal(tile, image[y : y + 256, x : x + 256])


def test_tile_from_downsampled_level(slides: dict[str, Path], image: np.ndarray) -> None:
    with WSI(slides["generic"], tile_px=256, tile_um=128) as wsi:  # 512 px -> level 1
        assert (wsi.extract_px, wsi.level) == (512, 1)
        x, y = wsi.grid_to_xy(2, 1)
        assert (x, y) == (1024, 512)
        tile = wsi[2, 1]
    assert tile.shape == (256, 256, 3)
    assert mad(tile, lanczos(image[y : y + 512, x : x + 512], 256)) < 3
    # the level is an exact 2x2 mean of level 0
    halved = image[y : y + 512, x : x + 512].reshape(256, 2, 256, 2, 3).astype(np.uint16)
    np.testing.assert_array_equal(tile, ((halved.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8))


def test_tile_resized_between_levels(slides: dict[str, Path], image: np.ndarray) -> None:
    # 100 um = 400 px at level 0; downsample 400/299 -> level 0 read, resized to 299
    with WSI(slides["generic"], tile_px=299, tile_um=100) as wsi:
        assert (wsi.extract_px, wsi.level) == (400, 0)
        assert wsi.grid_shape == ((2048 - 400) // 400 + 1, (1536 - 400) // 400 + 1) == (5, 3)
        tile = wsi[4, 2]
    np.testing.assert_array_equal(tile, lanczos(image[800:1200, 1600:2000], 299))


def test_grid_stride_div(slides: dict[str, Path]) -> None:
    with WSI(slides["generic"], tile_px=256, tile_um=128, stride_div=2) as wsi:
        assert (wsi.extract_px, wsi.stride_px) == (512, 256)
        assert wsi.grid_shape == ((2048 - 512) // 256 + 1, (1536 - 512) // 256 + 1) == (7, 5)
        assert wsi.grid_to_xy(3, 2) == (768, 512)
        last = wsi[6, 4]  # bottom-right tile touches the slide corner
        np.testing.assert_array_equal(last, wsi.read(1536, 1024))
    with WSI(slides["generic"], tile_px=256, tile_um=128) as wsi:
        assert wsi.grid_shape == (4, 3)


def test_magnification_string_on_aperio(slides: dict[str, Path], image: np.ndarray) -> None:
    with WSI(slides["aperio"], tile_px=256, tile_um="20x") as wsi:
        assert wsi.tile_um == "20x"
        assert (wsi.extract_px, wsi.level) == (256, 0)
        assert wsi.grid_shape == (8, 6)
        assert mad(wsi[1, 1], image[256:512, 256:512]) < 4
    with WSI(slides["aperio"], tile_px=256, tile_um="10x") as wsi:
        assert (wsi.extract_px, wsi.level) == (512, 1)
        x, y = wsi.grid_to_xy(1, 2)
        assert mad(wsi[1, 2], lanczos(image[y : y + 512, x : x + 512], 256)) < 6


def test_mpp_override(slides: dict[str, Path], tmp_path: Path, image: np.ndarray) -> None:
    with WSI(slides["generic"], tile_px=256, tile_um=128, mpp=0.5) as wsi:
        assert wsi.mpp == 0.5 and wsi.extract_px == 256
    no_mpp = tmp_path / "nompp.tiff"
    tifffile.imwrite(no_mpp, image, photometric="rgb", tile=(256, 256), metadata=None)
    with WSI(no_mpp, tile_px=128, tile_um=64, mpp=0.25) as wsi:
        assert wsi.backend == "openslide" and wsi.mpp == 0.25 and wsi.extract_px == 256
        np.testing.assert_array_equal(wsi[0, 0], lanczos(image[:256, :256], 128))


def test_thumbnail_and_close(slides: dict[str, Path]) -> None:
    with WSI(slides["generic"], tile_px=256, tile_um=64) as wsi:
        thumb = wsi.thumbnail(400)
        assert thumb.dtype == np.uint8 and thumb.shape == (300, 400, 3)
        assert thumb.mean() > 50  # not blank
    with pytest.raises(InputError) as err:
        wsi.read(0, 0)
    assert_one_line(err, "generic.tiff", "closed")
    wsi.close()  # twice is fine


# --------------------------------------------------------------------------
# tiffslide fallback
# --------------------------------------------------------------------------


def test_tiffslide_fallback_same_pixels(
    slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with WSI(slides["generic"], tile_px=256, tile_um=128) as wsi:
        expected = [wsi[c, r] for c, r in [(0, 0), (3, 2), (1, 2)]]
        expected_level = wsi.level

    def refuse(path: str) -> None:
        raise openslide.OpenSlideUnsupportedFormatError("Unsupported or missing image file")

    monkeypatch.setattr(openslide, "OpenSlide", refuse)
    with WSI(slides["generic"], tile_px=256, tile_um=128) as wsi:
        assert wsi.backend == "tiffslide"
        assert wsi.mpp == pytest.approx(MPP) and wsi.level == expected_level == 1
        got = [wsi[c, r] for c, r in [(0, 0), (3, 2), (1, 2)]]
        assert wsi.thumbnail(256).shape == (192, 256, 3)
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


def test_tiffslide_explicit_backend_on_aperio(slides: dict[str, Path]) -> None:
    with WSI(slides["aperio"], 256, "20x") as a, WSI(slides["aperio"], 256, "20x", backend="tiffslide") as b:
        assert b.backend == "tiffslide" and b.vendor == "aperio"
        assert b.mpp == pytest.approx(0.5) and (b.extract_px, b.level) == (256, 0)
        assert mad(a[3, 2], b[3, 2]) < 1  # same JPEG data, maybe another decoder


def test_stripped_tiff_falls_back_to_tiffslide(tmp_path: Path, image: np.ndarray) -> None:
    # OpenSlide's generic-tiff needs tiles; tiffslide reads strips.
    path = tmp_path / "stripped.tif"
    tifffile.imwrite(
        path, image, photometric="rgb", metadata=None,
        resolution=(1e4 / MPP, 1e4 / MPP), resolutionunit="CENTIMETER",
    )
    with WSI(path, tile_px=256, tile_um=64) as wsi:
        assert wsi.backend == "tiffslide" and wsi.vendor is None
        assert wsi.mpp == pytest.approx(MPP)
        np.testing.assert_array_equal(wsi[2, 1], image[256:512, 512:768])


# --------------------------------------------------------------------------
# bad input: one-line InputError naming the file / argument
# --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        WSI(tmp_path / "absent.tiff", 256, 128)
    assert_one_line(err, "absent.tiff", "file not found")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        WSI(tmp_path, 256, 128)
    assert_one_line(err, str(tmp_path), "is a directory")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.svs"
    path.write_text("this is not a slide\n")
    with pytest.raises(InputError) as err:
        WSI(path, 256, 128)
    assert_one_line(err, "notes.svs", "not a readable whole-slide image", "OpenSlide:")
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_truncated_file(slides: dict[str, Path], tmp_path: Path, fraction: float) -> None:
    raw = slides["generic"].read_bytes()
    path = tmp_path / "cut.tiff"
    path.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(InputError) as err:
        WSI(path, 256, 128)
    assert_one_line(err, "cut.tiff", "not a readable whole-slide image", "truncated")


def test_no_mpp(tmp_path: Path, image: np.ndarray) -> None:
    path = tmp_path / "nompp.tiff"
    tifffile.imwrite(path, image, photometric="rgb", tile=(256, 256), metadata=None)
    with pytest.raises(InputError) as err:
        WSI(path, 256, 128)
    assert_one_line(err, "nompp.tiff", "no microns-per-pixel", "'mpp'")


def test_no_objective_power(slides: dict[str, Path]) -> None:
    with pytest.raises(InputError) as err:
        WSI(slides["generic"], 256, "20x")
    assert_one_line(err, "generic.tiff", "objective power", "20x")


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        (dict(stride_div=0), ["stride_div", ">= 1"]),
        (dict(stride_div=1.5), ["stride_div"]),
        (dict(stride_div=1024), ["stride_div", "larger than the tile"]),
        (dict(tile_px=0), ["tile_px"]),
        (dict(tile_um=-5), ["tile_um"]),
        (dict(tile_um="twenty"), ["tile_um", "20x"]),
        (dict(tile_um=600), ["tile_um=600", "2400 px", "larger than the slide", "2048 x 1536"]),
        (dict(mpp=-1.0), ["mpp"]),
        (dict(backend="vips"), ["backend"]),
    ],
)
def test_bad_arguments(slides: dict[str, Path], kwargs: dict, needles: list[str]) -> None:
    args: dict = dict(tile_px=256, tile_um=128)
    args.update(kwargs)
    with pytest.raises(InputError) as err:
        WSI(slides["generic"], **args)
    assert_one_line(err, "generic.tiff", *needles)


def test_tile_outside_slide(slides: dict[str, Path]) -> None:
    with WSI(slides["generic"], tile_px=256, tile_um=64) as wsi:
        for x, y in [(1800, 0), (0, 1300), (-1, 0), (0, -256)]:
            with pytest.raises(InputError) as err:
                wsi.read(x, y)
            assert_one_line(
                err, "generic.tiff", f"x={x}, y={y}", "256 px at level 0", "outside the slide",
                "2048 x 1536",
            )
        wsi.read(2048 - 256, 1536 - 256)  # the last full tile is fine


def test_col_row_outside_grid(slides: dict[str, Path]) -> None:
    with WSI(slides["generic"], tile_px=256, tile_um=128) as wsi:  # grid 4 x 3
        for col, row in [(4, 0), (0, 3), (-1, 0)]:
            with pytest.raises(InputError) as err:
                wsi[col, row]
            assert_one_line(err, "generic.tiff", f"col={col}, row={row}", "4 cols x 3 rows")
        with pytest.raises(InputError) as err:
            wsi[1]  # type: ignore[index]
        assert_one_line(err, "generic.tiff", "wsi[col, row]")
