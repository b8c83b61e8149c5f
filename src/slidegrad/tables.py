"""The workflow's CSV tables: the sample sheet, the tile table a user gives, and the
per-slide tile tables the tiles jobs write (one row per tile, with its mask-job chunk
and the geometry it was read at)."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, check
from .files import write_csv

SLIDE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
CHUNK_NAME = r"chunk[0-9][0-9][0-9][0-9]+"


def tile_name(x: int, y: int) -> str:
    """A tile's file stem: its level-0 top-left corner, ``x{x}_y{y}``."""
    return f"x{x}_y{y}"


def chunk_label(index: int) -> str:
    """Wildcard value of a slide's ``index``-th mask-job chunk: ``chunk0000``."""
    return f"chunk{index:04d}"


def chunk_labels(n_tiles: int, per_job: int) -> list[str]:
    """The chunk labels of a slide with ``n_tiles`` tiles cut ``per_job`` per mask job."""
    return [chunk_label(i) for i in range(math.ceil(n_tiles / per_job))]


@dataclass(frozen=True)
class Slide:
    """A sample-sheet row: ``path`` is the slide file (a ``.tfrecords`` file in tfrecords mode)."""

    name: str
    path: str
    mpp: float | None = None
    roi: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class Tile:
    """A chosen tile: level-0 top-left ``(x, y)``; top_k tiles also carry their class and score."""

    slide: str
    x: int
    y: int
    class_idx: int | None = field(default=None, compare=False)
    label: str = field(default="", compare=False)
    score: float | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return tile_name(self.x, self.y)


@dataclass(frozen=True)
class TileLocations:
    """A user's tile table: per slide, its unique locations in table order.

    ``grid``: the locations are grid ``(col, row)`` (turned into level-0 ``(x, y)`` by the
    slide's tiles job, which opens the slide); else level-0 top-left ``(x, y)``.  ``lines``:
    the table line each location was first given on (for messages).
    """

    path: str
    grid: bool
    by_slide: dict[str, list[tuple[int, int]]]
    lines: dict[str, list[int]] = field(default_factory=dict)


def parse_roi(value: Any, where: str) -> tuple[int, int, int, int] | None:
    """A region of interest: ``[x0, y0, x1, y1]`` level-0 px (or ``"x0 y0 x1 y1"``); ``None``/empty: whole slide."""
    if value is None or value == "":
        return None
    parts = value.split() if isinstance(value, str) else value
    try:
        roi = tuple(int(v) for v in parts)
    except (TypeError, ValueError):
        roi = ()
    check(
        len(roi) == 4 and all(v >= 0 for v in roi) and roi[2] > roi[0] and roi[3] > roi[1],
        f"{where}: expected 'x0 y0 x1 y1' level-0 pixels with x1 > x0 and y1 > y0, got {value!r}",
    )
    return roi  # type: ignore[return-value]


def read_csv(path: str | Path, what: str, required: list[str]) -> list[dict[str, str]]:
    """Rows of a UTF-8 CSV (a byte-order mark, as Excel writes, is skipped) with ``required`` columns."""
    file = Path(path)
    check(file.is_file(), f"{what} '{path}': file not found")
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            check(not missing, f"{what} '{path}': missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}")
            rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except UnicodeDecodeError as err:
        raise InputError(f"{what} '{path}': not UTF-8 text (byte {err.start}); save it as CSV UTF-8") from None
    check(bool(rows), f"{what} '{path}': no rows")
    return rows


def _slide_name(name: str, where: str) -> str:
    check(re.fullmatch(SLIDE_NAME, name) is not None, f"{where}: slide name {name!r} must match {SLIDE_NAME}")
    return name


def read_samples(path: str) -> dict[str, Slide]:
    """Sample sheet CSV (``slide``, ``path``, optional ``mpp`` and ``roi``) → slides by name."""
    slides: dict[str, Slide] = {}
    for line, row in enumerate(read_csv(path, "sample sheet", ["slide", "path"]), start=2):
        where = f"sample sheet '{path}' line {line}"
        name = _slide_name(row["slide"], where)
        check(name not in slides, f"{where}: slide {name!r} is listed twice")
        check(bool(row["path"]), f"{where}: empty 'path'")
        mpp = None
        if row.get("mpp"):
            try:
                mpp = float(row["mpp"])
            except ValueError:
                mpp = -1.0
            check(math.isfinite(mpp) and mpp > 0, f"{where}: 'mpp' must be a positive number, got {row['mpp']!r}")
        slides[name] = Slide(name, row["path"], mpp, parse_roi(row.get("roi"), f"{where}: 'roi'"))
    return slides


def _int_field(row: dict[str, str], key: str, where: str) -> int:
    try:
        value = int(row[key])
    except (TypeError, ValueError):
        raise InputError(f"{where}: '{key}' must be a non-negative integer, got {row.get(key)!r}") from None
    check(value >= 0, f"{where}: '{key}' must be a non-negative integer, got {value}")
    return value


def read_tile_locations(path: str, samples_path: str | None, slides: dict[str, Slide]) -> TileLocations:
    """Tile table CSV (``slide`` + ``x,y`` or ``col,row``) → unique locations per slide, in table order.

    No slide is opened: grid ``col,row`` are checked against the slide's grid by its tiles job.
    With ``samples_path`` None (tfrecords mode without a sample sheet) every slide named is accepted.
    """
    rows = read_csv(path, "tile table", ["slide"])
    columns = set(rows[0])
    by_xy, by_grid = {"x", "y"} <= columns, {"col", "row"} <= columns
    check(by_xy or by_grid, f"tile table '{path}': needs level-0 'x','y' or grid 'col','row' columns")
    check(
        not (by_xy and by_grid),
        f"tile table '{path}': has both level-0 'x','y' and grid 'col','row' columns; keep one pair",
    )
    keys = ("x", "y") if by_xy else ("col", "row")
    found: dict[str, dict[tuple[int, int], int]] = {name: {} for name in slides}
    for line, row in enumerate(rows, start=2):
        where = f"tile table '{path}' line {line}"
        name = _slide_name(row["slide"], where)
        if samples_path is None:
            found.setdefault(name, {})
        check(name in found, f"{where}: slide {name!r} is not in the sample sheet '{samples_path}'")
        check(
            by_xy or name in slides,
            f"{where}: grid col,row needs a sample sheet with the slide (or give x,y)",
        )
        found[name].setdefault((_int_field(row, keys[0], where), _int_field(row, keys[1], where)), line)
    found = {name: locs for name, locs in found.items() if locs}
    return TileLocations(
        path, by_grid, {name: list(locs) for name, locs in found.items()}, {n: list(l.values()) for n, l in found.items()}
    )


def check_in_grid(where: str, slide: str, col: int, row: int, grid_shape: tuple[int, int]) -> None:
    """Grid tile ``(col, row)`` of a tile table lies inside ``slide``'s grid of ``(n_cols, n_rows)``."""
    n_cols, n_rows = grid_shape
    check(
        col < n_cols and row < n_rows,
        f"{where}: tile col={col}, row={row} lies outside the grid of slide {slide!r} ({n_cols} cols x {n_rows} rows)",
    )


TILE_TABLE_COLUMNS = [
    "slide", "tile", "x", "y", "chunk", "class_idx", "label", "score",
    "tile_px", "tile_um", "mpp", "level", "extract_px",
]  # fmt: skip
GEOMETRY_COLUMNS = TILE_TABLE_COLUMNS[-5:]


def write_tile_table(path: str | Path, tiles: list[Tile], per_job: int, geometry: dict[str, Any]) -> None:
    """The workflow's tile table for one slide (atomic): one row per tile with its mask-job chunk
    and ``geometry`` (``GEOMETRY_COLUMNS``: how every tile was read; ``None`` where unknown)."""
    shared = {key: "" if geometry.get(key) is None else geometry[key] for key in GEOMETRY_COLUMNS}
    rows = [
        {
            "slide": t.slide, "tile": t.name, "x": t.x, "y": t.y, "chunk": chunk_label(i // per_job),
            "class_idx": "" if t.class_idx is None else t.class_idx, "label": t.label,
            "score": "" if t.score is None else f"{t.score:.6f}", **shared,
        }  # fmt: skip
        for i, t in enumerate(tiles)
    ]
    write_csv(path, TILE_TABLE_COLUMNS, rows)


def row_geometry(row: dict[str, str]) -> dict[str, Any]:
    """A tile-table row's geometry, typed: ``tile_px``, ``level``, ``extract_px`` ints, ``mpp`` a float,
    ``tile_um`` a number (or a magnification string like ``"20x"``); ``None`` where unknown."""

    def number(text: str) -> int | float | str | None:
        if text == "":
            return None
        try:
            value = float(text)
        except ValueError:
            return text
        return int(value) if value.is_integer() and "." not in text else value

    out = {key: number(row.get(key, "")) for key in GEOMETRY_COLUMNS}
    if isinstance(out["mpp"], int):
        out["mpp"] = float(out["mpp"])
    return out


def read_tile_table(path: str | Path, chunk: str | None = None) -> list[dict[str, str]]:
    """Rows of a tile table written by :func:`write_tile_table` (only ``chunk``'s, if given)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row for row in rows if chunk is None or row["chunk"] == chunk]


def table_chunks(path: str | Path) -> list[str]:
    """The chunk labels of a tile table, in order."""
    return list(dict.fromkeys(row["chunk"] for row in read_tile_table(path)))
