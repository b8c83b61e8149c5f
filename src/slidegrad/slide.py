"""Whole-slide images: tile geometry, tile reading and pyramidal-TIFF writing.

:class:`WSI` mimics the tile geometry of Slideflow's ``slideflow.WSI``: a tile
is ``tile_um`` microns (or a magnification such as ``"20x"``) wide at level 0,
i.e. ``extract_px`` level-0 pixels, read from the best pyramid level and
resized to ``tile_px`` pixels.  Tiles lie on a grid with a step of
``stride_px = extract_px // stride_div`` level-0 pixels.

Slides are opened with OpenSlide; files OpenSlide cannot open (for example a
stripped, non-tiled TIFF) are opened with tiffslide instead.

:func:`write_pyramidal_tiff` writes an RGB (or RGBA) array as a tiled pyramidal
TIFF that OpenSlide reads as a multi-level ``generic-tiff`` slide (or, with an
Aperio ``description``, as an ``aperio`` slide), with its microns-per-pixel.

Every bad input raises :class:`~slidegrad.errors.InputError` with one line
that names the file or argument and says what was expected.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slidegrad.errors import InputError, first_line, is_int, quote
from slidegrad.files import atomic_write

__all__ = ["WSI", "write_pyramidal_tiff"]

# A magnification given as tile_um, e.g. "20x", "40X", "2.5x".
_MAG_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*[xX]\s*$")

_READERS = ("auto", "openslide", "tiffslide")
LOGGER = logging.getLogger("slidegrad")

# Compression schemes write_pyramidal_tiff accepts (all read by OpenSlide).
_COMPRESSIONS = ("none", "zlib", "lzw", "jpeg")


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------








def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_float(value: object) -> float | None:
    """``float(value)`` if it is a finite number > 0, else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number


def _tiff_damage(path: str) -> str | None:
    """Why a TIFF file is truncated or damaged, or None if it looks whole.

    Walks the IFD chain (every next-IFD offset must lie inside the file) and
    checks that every tile/strip of every page lies inside the file.  Files
    that are not TIFF, or that tifffile cannot parse, return None: the
    slide readers themselves decide about those.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(16)
            if len(head) < 8 or head[:2] not in (b"II", b"MM"):
                return None
            endian = "<" if head[:2] == b"II" else ">"
            (magic,) = struct.unpack(endian + "H", head[2:4])
            if magic == 42:
                offset_fmt, count_fmt, entry_size = "I", "H", 12
                (offset,) = struct.unpack(endian + "I", head[4:8])
            elif magic == 43 and len(head) >= 16:
                offset_fmt, count_fmt, entry_size = "Q", "Q", 20
                (offset,) = struct.unpack(endian + "Q", head[8:16])
            else:
                return None
            count_size = struct.calcsize(count_fmt)
            offset_size = struct.calcsize(offset_fmt)
            seen: set[int] = set()
            while offset != 0:
                if offset in seen:
                    return f"the IFD chain loops at offset {offset}"
                seen.add(offset)
                if offset + count_size > size:
                    return f"an IFD offset ({offset}) points past the end of the file ({size} bytes)"
                fh.seek(offset)
                (count,) = struct.unpack(endian + count_fmt, fh.read(count_size))
                next_pos = offset + count_size + count * entry_size
                if next_pos + offset_size > size:
                    return f"an IFD at offset {offset} is cut off by the end of the file ({size} bytes)"
                fh.seek(next_pos)
                (offset,) = struct.unpack(endian + offset_fmt, fh.read(offset_size))
    except (OSError, struct.error):
        return None

    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            for index, page in enumerate(tif.pages):
                offsets = getattr(page, "dataoffsets", ()) or ()
                counts = getattr(page, "databytecounts", ()) or ()
                for off, cnt in zip(offsets, counts):
                    if cnt and off + cnt > size:
                        return (
                            f"image data of page {index} ends at byte {off + cnt}, "
                            f"past the end of the file ({size} bytes)"
                        )
    except Exception:  # noqa: BLE001 - tifffile cannot parse it: not our call
        return None
    return None


# --------------------------------------------------------------------------
# WSI
# --------------------------------------------------------------------------


def _reader_keyword(name: str, reader: str, backend: str | None) -> tuple[str, str]:
    """The slide reader asked for and the keyword that asked (``reader``, or ``backend``: its deprecated
    old name, which logs one warning line); both given and different is an InputError."""
    if backend is None:
        return reader, "reader"
    LOGGER.warning("WSI: backend= is deprecated; use reader= (the library that reads the slide)")
    if reader not in ("auto", backend):
        raise InputError(
            f"{name}: reader={reader!r} and backend={backend!r} (its old name) disagree; pass reader alone"
        )
    return backend, "backend"


class WSI:
    """A whole-slide image cut into a grid of square tiles (Slideflow geometry).

    Parameters
    ----------
    path:
        Slide file (anything OpenSlide reads; tiffslide is the fallback).
    tile_px:
        Output tile side in pixels (int >= 1).
    tile_um:
        Tile side at level 0: microns (number > 0), or a magnification
        string such as ``"20x"`` (then ``extract_px = tile_px *
        objective_power / 20``, using the slide's ``openslide.objective-power``).
    stride_div:
        Grid step is ``extract_px // stride_div`` (int >= 1; 2 = half-overlapping tiles).
    mpp:
        Microns per level-0 pixel; overrides the value in the file.  Needed
        when ``tile_um`` is in microns and the file has none.
    reader:
        The library that reads the file: ``"auto"`` (OpenSlide, then tiffslide),
        ``"openslide"`` or ``"tiffslide"``.  ``backend=``: its deprecated old name.

    Attributes
    ----------
    path, tile_px, tile_um, mpp (float or None), extract_px (level-0 px per
    tile side), stride_px (level-0 px per grid step), dimensions (level-0
    (width, height)), vendor (str or None), level (pyramid level read),
    reader (``"openslide"`` or ``"tiffslide"``; ``backend``: its old name), grid_shape ((n_cols, n_rows)).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        tile_px: int,
        tile_um: int | float | str,
        stride_div: int = 1,
        mpp: float | None = None,
        *,
        reader: str = "auto",
        backend: str | None = None,
    ) -> None:
        self.path = Path(path)
        self._name = f"slide {quote(self.path)}"
        self._slide: Any = None

        # -- arguments that do not need the file -------------------------
        if not is_int(tile_px) or tile_px < 1:
            raise InputError(f"{self._name}: tile_px must be an integer >= 1, got {tile_px!r}")
        if not is_int(stride_div) or stride_div < 1:
            raise InputError(f"{self._name}: stride_div must be an integer >= 1, got {stride_div!r}")
        reader, keyword = _reader_keyword(self._name, reader, backend)
        if reader not in _READERS:
            raise InputError(
                f"{self._name}: {keyword} must be one of {', '.join(_READERS)}, got {reader!r}"
            )
        magnification: float | None = None
        if isinstance(tile_um, str):
            match = _MAG_RE.match(tile_um)
            magnification = float(match.group(1)) if match else None
            if magnification is None or magnification <= 0:
                raise InputError(
                    f"{self._name}: tile_um {tile_um!r} is not a magnification like '20x' "
                    "(or give microns as a number > 0)"
                )
        elif _positive_float(tile_um) is None or not _is_number(tile_um):
            raise InputError(
                f"{self._name}: tile_um must be microns (a number > 0) or a magnification "
                f"like '20x', got {tile_um!r}"
            )
        mpp_override: float | None = None
        if mpp is not None:
            mpp_override = _positive_float(mpp) if _is_number(mpp) else None
            if mpp_override is None:
                raise InputError(
                    f"{self._name}: mpp must be a number > 0 (microns per pixel), got {mpp!r}"
                )

        self.tile_px: int = int(tile_px)
        self.tile_um: int | float | str = tile_um
        self.stride_div: int = int(stride_div)

        # -- open ---------------------------------------------------------
        self._slide, self.reader = self._open(reader)
        try:
            self._setup(magnification, mpp_override)
        except BaseException:
            self.close()
            raise

    # -- opening -----------------------------------------------------------

    def _open(self, reader: str) -> tuple[Any, str]:
        path = self.path
        if not path.exists():
            raise InputError(f"{self._name}: file not found")
        if path.is_dir():
            raise InputError(f"{self._name}: is a directory, expected a slide file")
        if not os.access(path, os.R_OK):
            raise InputError(f"{self._name}: permission denied, cannot read the file")

        reasons: list[str] = []
        slide: Any = None
        used = ""
        if reader in ("auto", "openslide"):
            import openslide

            try:
                slide = openslide.OpenSlide(str(path))
                used = "openslide"
            except Exception as exc:  # noqa: BLE001 - OpenSlide(UnsupportedFormat)Error and kin
                reasons.append(f"OpenSlide: {first_line(exc)}")
        if slide is not None:
            # NDPI stores >4 GiB offsets outside the TIFF fields: skip the walk there.
            ndpi = slide.properties.get("openslide.vendor") == "hamamatsu"
            damage = None if ndpi else _tiff_damage(str(path))
            if damage is not None:
                _close_quietly(slide)
                raise InputError(
                    f"{self._name}: not a readable whole-slide image "
                    f"(truncated or damaged file: {damage})"
                )
            return slide, used

        # Check the TIFF structure before tiffslide: tifffile opens truncated
        # files and silently drops the missing pages.
        damage = _tiff_damage(str(path))
        if damage is not None:
            reasons.append(f"truncated or damaged file: {damage}")
            raise InputError(
                f"{self._name}: not a readable whole-slide image ({'; '.join(reasons)})"
            )
        if reader in ("auto", "tiffslide"):
            import tiffslide

            try:
                slide = tiffslide.TiffSlide(str(path))
                used = "tiffslide"
                if slide.level_count < 1:
                    raise ValueError("no image levels")
            except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds
                if slide is not None:
                    _close_quietly(slide)
                slide = None
                reasons.append(f"tiffslide: {first_line(exc)}")
        if slide is None:
            raise InputError(
                f"{self._name}: not a readable whole-slide image ({'; '.join(reasons)})"
            )
        return slide, used

    def _prop(self, *suffixes: str) -> str | None:
        """First property found among ``openslide.<s>`` / ``tiffslide.<s>``."""
        props = self._slide.properties
        for suffix in suffixes:
            for prefix in ("openslide.", "tiffslide."):
                value = props.get(prefix + suffix)
                if value is not None and str(value).strip() != "":
                    return str(value)
        return None

    def _setup(self, magnification: float | None, mpp_override: float | None) -> None:
        slide = self._slide
        width, height = (int(v) for v in slide.dimensions)
        self.dimensions: tuple[int, int] = (width, height)
        if width < 1 or height < 1:
            raise InputError(f"{self._name}: the slide has no pixels ({width} x {height})")

        vendor = self._prop("vendor")
        self.vendor: str | None = vendor

        file_mpp = _positive_float(self._prop("mpp-x"))
        self.mpp: float | None = mpp_override if mpp_override is not None else file_mpp

        if magnification is not None:
            power = _positive_float(self._prop("objective-power"))
            if power is None:
                raise InputError(
                    f"{self._name}: no objective power in the file, so tile_um "
                    f"{self.tile_um!r} cannot be used; give tile_um in microns instead"
                )
            self.objective_power: float | None = power
            extract = round(self.tile_px * power / magnification)
            size_text = f"tile_um {self.tile_um!r} ({extract} px at level 0)"
        else:
            self.objective_power = _positive_float(self._prop("objective-power"))
            if self.mpp is None:
                raise InputError(
                    f"{self._name}: no microns-per-pixel in the file; give an 'mpp' value "
                    "(sample sheet column 'mpp')"
                )
            extract = round(float(self.tile_um) / self.mpp)
            size_text = f"tile_um={self.tile_um} µm ({extract} px at level 0, mpp {self.mpp:g})"
        if extract < 1:
            raise InputError(
                f"{self._name}: {size_text} is smaller than one pixel; expected a larger tile_um"
            )
        if extract > width or extract > height:
            raise InputError(
                f"{self._name}: {size_text} is larger than the slide ({width} x {height} px)"
            )
        self.extract_px: int = int(extract)
        self.stride_px: int = self.extract_px // self.stride_div
        if self.stride_px < 1:
            raise InputError(
                f"{self._name}: stride_div={self.stride_div} is larger than the tile "
                f"({self.extract_px} px at level 0); expected 1 <= stride_div <= {self.extract_px}"
            )
        self.level: int = int(slide.get_best_level_for_downsample(self.extract_px / self.tile_px))
        self.level_downsample: float = float(slide.level_downsamples[self.level])
        self._read_size: int = max(1, round(self.extract_px / self.level_downsample))

    # -- geometry ----------------------------------------------------------

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(n_cols, n_rows): how many whole tiles fit across and down the slide."""
        width, height = self.dimensions

        def fit(extent: int) -> int:
            if extent < self.extract_px:
                return 0
            return (extent - self.extract_px) // self.stride_px + 1

        return fit(width), fit(height)

    def grid_to_xy(self, col: int, row: int) -> tuple[int, int]:
        """Level-0 top-left (x, y) of grid tile (col, row): ``(col, row) * stride_px``."""
        if not is_int(col) or not is_int(row):
            raise InputError(
                f"{self._name}: tile col/row must be integers, got col={col!r}, row={row!r}"
            )
        return int(col) * self.stride_px, int(row) * self.stride_px

    # -- reading -----------------------------------------------------------

    def _require_open(self) -> Any:
        if self._slide is None:
            raise InputError(f"{self._name}: the slide is closed")
        return self._slide

    def check_tile(self, x: int, y: int) -> tuple[int, int]:
        """``(x, y)`` as ints if the tile at that level-0 top-left corner lies inside the slide, else InputError."""
        if not is_int(x) or not is_int(y):
            raise InputError(f"{self._name}: tile x/y must be integers, got x={x!r}, y={y!r}")
        x, y = int(x), int(y)
        width, height = self.dimensions
        e = self.extract_px
        if x < 0 or y < 0 or x + e > width or y + e > height:
            raise InputError(
                f"{self._name}: tile at x={x}, y={y} ({e} px at level 0) lies outside "
                f"the slide ({width} x {height})"
            )
        return x, y

    def read(self, x: int, y: int) -> np.ndarray:
        """The tile whose level-0 top-left corner is (x, y).

        Returns a uint8 array of shape (tile_px, tile_px, 3), RGB in 0..255
        (transparent pixels composited onto white).
        """
        slide = self._require_open()
        x, y = self.check_tile(x, y)
        size = self._read_size
        try:
            region = slide.read_region((x, y), self.level, (size, size))
            if not isinstance(region, Image.Image):
                region = Image.fromarray(np.asarray(region))
            if region.mode in ("RGBA", "LA", "PA") or "transparency" in region.info:
                rgba = region.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                region = Image.alpha_composite(white, rgba)
            region = region.convert("RGB")
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenSlideError, codec errors, ...
            raise InputError(
                f"{self._name}: cannot read the tile at x={x}, y={y} "
                f"({self.reader}: {first_line(exc)}); the file may be damaged"
            ) from exc
        if region.size != (self.tile_px, self.tile_px):
            region = region.resize((self.tile_px, self.tile_px), Image.Resampling.LANCZOS)
        tile = np.asarray(region, dtype=np.uint8)
        return np.ascontiguousarray(tile)

    def __getitem__(self, index: tuple[int, int]) -> np.ndarray:
        """``wsi[col, row]``: the grid tile, uint8 (tile_px, tile_px, 3)."""
        if not isinstance(index, tuple) or len(index) != 2:
            raise InputError(f"{self._name}: index tiles as wsi[col, row], got {index!r}")
        col, row = index
        if not is_int(col) or not is_int(row):
            raise InputError(
                f"{self._name}: tile col/row must be integers, got col={col!r}, row={row!r}"
            )
        n_cols, n_rows = self.grid_shape
        if not (0 <= col < n_cols and 0 <= row < n_rows):
            raise InputError(
                f"{self._name}: tile col={col}, row={row} lies outside the grid "
                f"({n_cols} cols x {n_rows} rows)"
            )
        return self.read(*self.grid_to_xy(col, row))

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """Whole-slide thumbnail, uint8 (h, w, 3) RGB, longer side <= max_size."""
        slide = self._require_open()
        if not is_int(max_size) or max_size < 1:
            raise InputError(f"{self._name}: max_size must be an integer >= 1, got {max_size!r}")
        try:
            image = slide.get_thumbnail((int(max_size), int(max_size)))
            if not isinstance(image, Image.Image):
                image = Image.fromarray(np.asarray(image))
            if image.mode in ("RGBA", "LA", "PA"):
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, rgba)
            image = image.convert("RGB")
        except Exception as exc:  # noqa: BLE001
            raise InputError(
                f"{self._name}: cannot read a thumbnail ({self.reader}: {first_line(exc)}); "
                "the file may be damaged"
            ) from exc
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Release the slide file (safe to call twice)."""
        slide, self._slide = self._slide, None
        if slide is not None:
            _close_quietly(slide)

    def __enter__(self) -> WSI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        """The old name of :attr:`reader` (deprecated)."""
        return self.reader

    def __repr__(self) -> str:
        return (
            f"WSI({str(self.path)!r}, tile_px={self.tile_px}, tile_um={self.tile_um!r}, "
            f"stride_div={self.stride_div}, reader={getattr(self, 'reader', None)!r})"
        )


def _close_quietly(slide: Any) -> None:
    try:
        slide.close()
    except Exception:  # noqa: BLE001 - closing must not mask the real error
        pass


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------


def _halve(image: np.ndarray) -> np.ndarray:
    """2x2 mean downsample (rounded half up); odd edges are repeated. uint8 in, uint8 out."""
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    h2, w2 = image.shape[0] // 2, image.shape[1] // 2
    blocks = image.reshape(h2, 2, w2, 2, image.shape[2]).astype(np.uint16)
    total = blocks.sum(axis=(1, 3), dtype=np.uint16)
    return ((total + 2) // 4).astype(np.uint8)


def _halve_rgba(image: np.ndarray) -> np.ndarray:
    """2x2 downsample of uint8 RGBA with unassociated alpha: alpha is the 2x2 mean (rounded half up), colour
    the alpha-weighted mean (rounded half up), so transparent pixels add no colour; fully transparent → 0."""
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    h2, w2 = image.shape[0] // 2, image.shape[1] // 2
    blocks = image.reshape(h2, 2, w2, 2, 4).astype(np.uint32)
    alpha = blocks[..., 3:]
    weight = alpha.sum(axis=(1, 3))  # (h2, w2, 1), 0..1020
    colour = (blocks[..., :3] * alpha).sum(axis=(1, 3))
    out = np.zeros((h2, w2, 4), np.uint8)
    np.floor_divide(2 * colour + weight, 2 * weight, out=colour, where=weight > 0)
    out[..., :3] = np.where(weight > 0, colour, 0)
    out[..., 3] = ((weight[..., 0] + 2) // 4).astype(np.uint8)
    return out


def _check_tiff_arguments(
    target: Path,
    where: str,
    image: Any,
    mpp: Any,
    tile_size: Any,
    compression: Any,
    min_level_size: Any,
    description: Any,
) -> float:
    """:func:`write_pyramidal_tiff`'s arguments checked (one InputError line naming ``where``); returns the mpp."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{where}: image must be a numpy array (H, W, 3) uint8, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(
            f"{where}: image must be uint8 with shape (H, W, 3) (or (H, W, 4) RGBA), got {image.dtype} {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{where}: image is empty, shape {image.shape}")
    mpp_value = _positive_float(mpp) if _is_number(mpp) else None
    if mpp_value is None:
        raise InputError(f"{where}: mpp must be a number > 0 (microns per pixel), got {mpp!r}")
    if not is_int(tile_size) or tile_size < 16 or tile_size % 16:
        raise InputError(f"{where}: tile_size must be a positive multiple of 16, got {tile_size!r}")
    if not isinstance(compression, str) or compression.lower() not in _COMPRESSIONS:
        raise InputError(
            f"{where}: compression must be one of {', '.join(_COMPRESSIONS)}, got {compression!r}"
        )
    if not is_int(min_level_size) or min_level_size < 1:
        raise InputError(f"{where}: min_level_size must be an integer >= 1, got {min_level_size!r}")
    if description is not None and not isinstance(description, str):
        raise InputError(f"{where}: description must be a string, got {type(description).__name__}")
    if description is not None:
        try:
            description.encode("ascii")
        except UnicodeEncodeError:
            raise InputError(f"{where}: description must be ASCII text") from None
    folder = target.parent
    if target.is_dir():
        raise InputError(f"{where}: is a directory, expected a file path")
    if not folder.is_dir():
        raise InputError(f"{where}: folder {quote(folder)} does not exist")
    if image.shape[2] == 4 and compression.lower() == "jpeg":
        raise InputError(f"{where}: jpeg compression takes an RGB image (H, W, 3); write RGBA with zlib, lzw or none")
    return mpp_value


def _pyramid_levels(image: np.ndarray, min_level_size: int, halve: Any) -> list[np.ndarray]:
    """``image`` and its half-size levels while the new level's shorter side is >= ``min_level_size``."""
    levels = [image]
    while True:
        h, w = levels[-1].shape[:2]
        if min((h + 1) // 2, (w + 1) // 2) < min_level_size:
            break
        levels.append(halve(levels[-1]))
    return levels


def _svs_thumbnail(levels: list[np.ndarray], halve: Any) -> np.ndarray:
    """The smallest level, halved until its longer side is <= 1024 px (an SVS file's thumbnail page)."""
    thumbnail = levels[-1]
    while max(thumbnail.shape[:2]) > 1024:
        thumbnail = halve(thumbnail)
    return thumbnail


def write_pyramidal_tiff(
    path: str | os.PathLike[str],
    image: np.ndarray,
    mpp: float,
    tile_size: int = 256,
    compression: str = "zlib",
    min_level_size: int = 512,
    description: str | None = None,
    pyramid: bool = True,
) -> None:
    """Write an RGB (or RGBA) image as a tiled (pyramidal) TIFF that OpenSlide reads.

    Parameters
    ----------
    path:
        Output file; written to a temporary file in the same folder and then
        renamed, so a failure leaves no partial file.
    image:
        uint8 array (H, W, 3), RGB 0..255; level 0.  (H, W, 4) is RGBA with unassociated
        alpha (TIFF ExtraSamples 2; OpenSlide returns alpha 0 there as transparent); lower
        levels then average colour weighted by alpha; ``"jpeg"`` compression takes RGB only.
    mpp:
        Microns per level-0 pixel (> 0); stored as X/YResolution in pixels
        per centimetre, which OpenSlide reports as ``openslide.mpp-x``.
    tile_size:
        TIFF tile side in pixels (multiple of 16).
    compression:
        ``"zlib"`` (lossless, default), ``"lzw"``, ``"none"`` or ``"jpeg"``.
    min_level_size:
        Half-size levels (deterministic 2x2 means) are added while the new
        level's shorter side is at least this many pixels.
    description:
        ImageDescription of the first page.  One starting with ``"Aperio"``
        (e.g. ``"Aperio Image Library v12.0.0\\r\\n...|AppMag = 20|MPP = 0.5"``)
        makes the file an SVS look-alike: OpenSlide reports vendor
        ``aperio`` and takes mpp / objective power from the description; a
        stripped thumbnail page is then written after level 0, as in SVS files.
    pyramid:
        False writes level 0 only.

    The file is byte-for-byte identical for identical arguments (no date tag).
    """
    import tifffile

    target = Path(path)
    where = f"output {quote(target)}"
    mpp_value = _check_tiff_arguments(target, where, image, mpp, tile_size, compression, min_level_size, description)
    comp = compression.lower()
    rgba = image.shape[2] == 4
    codec = None if comp == "none" else comp
    image = np.ascontiguousarray(image)
    halve = _halve_rgba if rgba else _halve
    levels = _pyramid_levels(image, min_level_size, halve) if pyramid else [image]

    svs_like = description is not None and description.startswith("Aperio")
    thumbnail = _svs_thumbnail(levels, halve) if svs_like and len(levels) > 1 else None

    raw_bytes = sum(level.nbytes for level in levels)
    bigtiff = raw_bytes > 2**32 - 2**28
    resolution = (1e4 / mpp_value, 1e4 / mpp_value)
    common: dict[str, Any] = dict(
        photometric="rgb",
        compression=codec,
        resolution=resolution,
        resolutionunit="CENTIMETER",
        metadata=None,
        software="slidegrad",
        **({"extrasamples": ("unassalpha",)} if rgba else {}),
    )

    # a temporary file in the same folder, renamed onto ``target`` once complete
    with atomic_write(target, "wb", where=where, make_parents=False) as fh:
        with tifffile.TiffWriter(fh, bigtiff=bigtiff) as tw:
            tw.write(levels[0], tile=(tile_size, tile_size), description=description, **common)
            if thumbnail is not None:
                # SVS: page 1 is a stripped thumbnail; levels follow with NewSubfileType 0.
                tw.write(thumbnail, rowsperstrip=16, **common)
            for level in levels[1:]:
                tw.write(level, tile=(tile_size, tile_size), subfiletype=0 if svs_like else 1, **common)
