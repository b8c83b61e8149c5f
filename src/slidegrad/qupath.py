"""QuPath GeoJSON: a slide's explained tiles as detection objects, with their numbers as measurements.

:func:`slide_features` turns the run's summary table (``summary.csv`` / ``.parquet``, one row per
(slide, tile, method)) and optionally the evaluation table (``evaluation.csv``, one row per
(slide, tile, method)) into one GeoJSON ``FeatureCollection`` per slide; :func:`write_geojson`
writes it.  QuPath opens it with File > Import objects from file, or by dragging the file onto
the open slide; Measure > Show measurement maps then colours the tiles by any measurement.

One Feature per **tile** (not per tile × method):

* ``geometry``: a Polygon, the tile's level-0 square ``[x, x + extract_px] × [y, y + extract_px]``
  in level-0 pixels (image coordinates: origin top-left, y down, QuPath's own), one closed ring
  ``(x, y) → (x + e, y) → (x + e, y + e) → (x, y + e) → (x, y)``: the order QuPath writes a
  rectangle in, counter-clockwise by the signed area (RFC 7946's exterior ring order).
* ``properties`` in the form QuPath 0.4 and later write and read (checked against QuPath 0.5.1's
  ``GsonTools`` / ``QuPathTypeAdapters``; QuPath 0.3 and earlier wrote ``measurements`` as a list
  of ``{name, value}`` and a class colour as ``colorRGB``, and do not read this form):

  - ``objectType``: ``"detection"``;
  - ``name``: the tile name (``x{x}_y{y}``);
  - ``classification``: ``{"name": class_label, "color": [r, g, b]}``, the class the masks
    explain, coloured as in the overview figure (:func:`slidegrad.overview.class_colours` over
    the model's labels, so colours agree across slides).  QuPath splits a name at ``:`` into a
    derived class;
  - ``measurements``: a flat object name → number (see :func:`measurement_names`): ``p_<label>``
    per class (the summary's columns), ``<method>: mask mean`` and ``<method>: top-10% mass`` per
    method, and with an evaluation table ``<method>: <column>`` per metric column
    (``deletion_auc``, ``insertion_chance``, ``sanity_passes`` as 1 / 0, …).  Only finite numbers:
    empty or NaN cells are left out (JSON has no NaN).

The summary's rows of one tile must agree on ``x``, ``y``, ``extract_px``, the explained class and
the class probabilities (within :data:`PROBABILITY_ATOL`, as each method's job runs the model
itself; the values written are the row of the method first by name); else an
:class:`~slidegrad.errors.InputError` names the tile.  Features are in reading order (``y``, then
``x``) and every object's keys sorted, so the same tables give the same bytes in any row order.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import InputError, check, first_line, listed, quote
from .files import atomic_write

__all__ = [
    "MASK_MEAN",
    "TOP10_MASS",
    "PROBABILITY_ATOL",
    "EVALUATION_IDS",
    "measurement_names",
    "slide_features",
    "write_geojson",
]

MASK_MEAN = "mask mean"  # measurement "<method>: mask mean", from the summary's mask_mean
TOP10_MASS = "top-10% mass"  # measurement "<method>: top-10% mass", from the summary's top10_mass
PROBABILITY_ATOL = 1e-4  # a tile's methods' rows may differ this much in p_<label> (6-decimal CSV, float noise)
SUMMARY_REQUIRED = (
    "slide", "tile", "x", "y", "method", "class_idx", "class_label", "extract_px", "mask_mean", "top10_mass",
)  # fmt: skip
EVALUATION_REQUIRED = ("slide", "tile", "method")
EVALUATION_IDS = ("slide", "tile", "method", "class_idx", "class_label")  # slidegrad.evaluate.jobs.ID_COLUMNS
EVALUATION_TEXT = ("baseline", "reference_tile")  # provenance columns of evaluation.csv that are not numbers


@dataclass
class _Tile:
    """One tile's feature, gathered from its rows: level-0 ``x``, ``y``, side ``extract`` (px)."""

    slide: str
    name: str
    x: int | float
    y: int | float
    extract: int | float
    label: str
    class_idx: int
    first_method: str
    probabilities: dict[str, float | None]  # p_<label> column -> value
    measurements: dict[str, float] = field(default_factory=dict)
    methods: set[str] = field(default_factory=set)


def measurement_names(labels: Sequence[str], methods: Sequence[str], metrics: Sequence[str] = ()) -> list[str]:
    """Every measurement name a feature can carry: ``p_<label>`` per class label, then per method
    ``<method>: mask mean``, ``<method>: top-10% mass`` and ``<method>: <metric>`` per evaluation
    column in ``metrics``."""
    per_method = [MASK_MEAN, TOP10_MASS, *metrics]
    return [*(f"p_{label}" for label in labels), *(f"{m}: {what}" for m in methods for what in per_method)]


# -- cells -------------------------------------------------------------------------------
def _missing(value: object) -> bool:
    """None, pandas' NA / NaT, a float NaN, or a blank string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    if isinstance(value, (str, bool, np.bool_)):
        return False
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array: not one missing cell
        return False


def _number(value: object, where: str, booleans: bool = False) -> float | None:
    """A cell as a float: None where empty or NaN or inf; ``booleans``: True / False (or the CSV's
    ``true`` / ``false``) as 1 / 0.  Anything else is an InputError naming ``where``."""
    if _missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        check(booleans, f"{where}: expected a number, got {value!r}")
        return 1.0 if value else 0.0
    if isinstance(value, str):
        text = value.strip()
        if booleans and text.lower() in ("true", "false"):
            return 1.0 if text.lower() == "true" else 0.0
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{where}: expected a number, got {quote(text)}") from None
    check(isinstance(value, numbers.Real), f"{where}: expected a number, got {value!r}")
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _exact(value: float) -> int | float:
    """An integral float as an int (``256``, not ``256.0``, in the JSON), else the float."""
    return int(value) if value.is_integer() else value


def _required(value: object, where: str) -> float:
    number = _number(value, where)
    check(number is not None, f"{where}: empty or not finite")
    return number  # type: ignore[return-value]


def _rows_of(frame: Any, slide: str) -> list[dict[str, Any]]:
    """``frame``'s rows whose ``slide`` is ``slide``, as dicts, in table order."""
    column = frame["slide"]
    return frame.loc[column.notna() & (column.astype(str) == slide)].to_dict("records")


def _columns(frame: Any, required: Iterable[str], what: str) -> None:
    check(hasattr(frame, "columns") and hasattr(frame, "loc"), f"qupath: the {what} table must be a pandas DataFrame")
    missing = [c for c in required if c not in frame.columns]
    check(not missing, f"qupath: the {what} table has no column(s) {listed(missing)}")


# -- the summary -------------------------------------------------------------------------
def _tiles(rows: list[dict[str, Any]], slide: str, p_columns: Sequence[str]) -> dict[str, _Tile]:
    """The slide's tiles from its summary rows, checking that each tile's rows agree."""
    tiles: dict[str, _Tile] = {}
    for row in sorted(rows, key=lambda r: str(r["method"])):  # a tile's first row: its first method by name
        empty = _missing(row["tile"]) or _missing(row["method"])
        check(not empty, f"summary: slide {quote(slide)}: a row has an empty tile or method")
        name, method = str(row["tile"]), str(row["method"])
        where = f"summary: slide {quote(slide)}, tile {quote(name)}, method {quote(method)}"
        x, y = _required(row["x"], f"{where}: x"), _required(row["y"], f"{where}: y")
        extract = _required(row["extract_px"], f"{where}: extract_px")
        check(extract > 0, f"{where}: extract_px must be > 0, got {_exact(extract)}")
        class_idx = _required(row["class_idx"], f"{where}: class_idx")
        label = "" if _missing(row["class_label"]) else str(row["class_label"])
        check(label != "", f"{where}: class_label is empty")
        probabilities = {c: _number(row[c], f"{where}: {c}") for c in p_columns}
        tile = tiles.get(name)
        if tile is None:
            corner, side = (_exact(x), _exact(y)), _exact(extract)
            tile = _Tile(slide, name, *corner, side, label, int(class_idx), method, probabilities)
            tiles[name] = tile
        else:
            check(method not in tile.methods, f"{where}: two rows for this tile and method")
            _agree(tile, method, "x", tile.x, x)
            _agree(tile, method, "y", tile.y, y)
            _agree(tile, method, "extract_px", tile.extract, extract)
            _agree(tile, method, "class_label", tile.label, label)
            _agree(tile, method, "class_idx", tile.class_idx, int(class_idx))
            for column, value in probabilities.items():
                _agree(tile, method, column, tile.probabilities[column], value, PROBABILITY_ATOL)
        tile.methods.add(method)
        for what, column in ((MASK_MEAN, "mask_mean"), (TOP10_MASS, "top10_mass")):
            _put(tile, f"{method}: {what}", _number(row[column], f"{where}: {column}"), f"{where}: {column}")
    return tiles


def _agree(tile: _Tile, method: str, column: str, first: object, value: object, atol: float = 0.0) -> None:
    """InputError unless ``value`` (``method``'s row) matches ``first`` (the tile's first row)."""
    if isinstance(first, (int, float)) and isinstance(value, (int, float)):
        same = abs(first - value) <= atol
    else:
        same = first == value
    check(
        same,
        f"summary: slide {quote(tile.slide)}, tile {quote(tile.name)}: its rows disagree on {column} "
        f"(method {quote(tile.first_method)}: {_shown(first)}, method {quote(method)}: {_shown(value)})",
    )


def _shown(value: object) -> str:
    if value is None:
        return "empty"
    if isinstance(value, float):
        return repr(_exact(value))
    return quote(value) if isinstance(value, str) else str(value)


def _put(tile: _Tile, name: str, value: float | None, where: str) -> None:
    """Set a measurement (None: left out); a name set twice is an InputError."""
    check(name not in tile.measurements, f"{where}: measurement {quote(name)} of tile {quote(tile.name)} is set twice")
    if value is not None:
        tile.measurements[name] = value


# -- the evaluation ------------------------------------------------------------------------
def _add_metrics(tiles: dict[str, _Tile], evaluation: Any, slide: str) -> None:
    """Each evaluation row of ``slide`` as ``<method>: <column>`` measurements of its tile."""
    _columns(evaluation, EVALUATION_REQUIRED, "evaluation")
    metrics = [str(c) for c in evaluation.columns if c not in (*EVALUATION_IDS, *EVALUATION_TEXT)]
    seen: set[tuple[str, str]] = set()
    for row in _rows_of(evaluation, slide):
        name, method = str(row["tile"]), str(row["method"])
        where = f"evaluation: slide {quote(slide)}, tile {quote(name)}, method {quote(method)}"
        check(name in tiles, f"{where}: the summary has no such tile on this slide (tables from different runs?)")
        check(method in tiles[name].methods, f"{where}: the summary has no row for this tile and method")
        check((name, method) not in seen, f"{where}: two rows for this tile and method")
        seen.add((name, method))
        for column in metrics:
            value = _number(row[column], f"{where}: {column}", booleans=True)
            _put(tiles[name], f"{method}: {column}", value, f"{where}: {column}")


# -- the collection ----------------------------------------------------------------------------
def _rgb(labels: Sequence[str], used: Iterable[str]) -> dict[str, list[int]]:
    """Per class label, its overview colour as ``[r, g, b]`` 0–255 (labels not in ``labels`` after them)."""
    from .overview import class_colours

    ordered = list(dict.fromkeys([*labels, *sorted(set(used) - set(labels))]))
    return {label: [round(v * 255) for v in rgb] for label, rgb in class_colours(ordered).items()}


def _feature(tile: _Tile, colour: list[int], p_columns: Sequence[str]) -> dict[str, Any]:
    x0, y0, e = tile.x, tile.y, tile.extract
    x1, y1 = _exact(float(x0 + e)), _exact(float(y0 + e))
    measurements = {c: v for c, v in tile.probabilities.items() if v is not None}
    clash = sorted(set(measurements) & set(tile.measurements))
    where = f"summary: slide {quote(tile.slide)}, tile {quote(tile.name)}"
    check(not clash, f"{where}: measurement name(s) {listed(clash)} clash (a method named p_…?)")
    measurements.update(tile.measurements)
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
        "properties": {
            "objectType": "detection",
            "name": tile.name,
            "classification": {"name": tile.label, "color": colour},
            "measurements": measurements,
        },
    }


def slide_features(summary: Any, slide: str, evaluation: Any | None = None) -> dict[str, Any]:
    """``slide``'s explained tiles as a GeoJSON FeatureCollection dict for QuPath (module docstring).

    ``summary``: the summary table as a pandas DataFrame (:func:`slidegrad.jobs.summary_columns`;
    needs ``slide, tile, x, y, method, class_idx, class_label, extract_px, mask_mean, top10_mass``
    and reads every ``p_<label>`` column); ``evaluation``: ``evaluation.csv`` as a DataFrame (needs
    ``slide, tile, method``; every column but :data:`EVALUATION_IDS` is a metric) or None.
    Returns ``{"type": "FeatureCollection", "features": [...]}``, one Feature per tile, in reading
    order (by ``y``, ``x``, name); coordinates in level-0 pixels.  Bad input is a one-line InputError.
    """
    _columns(summary, SUMMARY_REQUIRED, "summary")
    slide = str(slide)
    slides = sorted({str(s) for s in summary["slide"].dropna().unique()})
    check(slide in slides, f"summary: slide {quote(slide)} is not in the summary (slides: {listed(slides) or 'none'})")
    p_columns = [str(c) for c in summary.columns if str(c).startswith("p_")]
    tiles = _tiles(_rows_of(summary, slide), slide, p_columns)
    if evaluation is not None:
        _add_metrics(tiles, evaluation, slide)
    colours = _rgb([c[2:] for c in p_columns], (t.label for t in tiles.values()))
    order = sorted(tiles.values(), key=lambda t: (t.y, t.x, t.name))
    features = [_feature(tile, colours[tile.label], p_columns) for tile in order]
    return {"type": "FeatureCollection", "features": features}


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def write_geojson(path: str | os.PathLike[str], collection: dict[str, Any]) -> None:
    """Write ``collection`` (a FeatureCollection dict, e.g. :func:`slide_features`) to ``path`` as
    UTF-8 GeoJSON, atomically: strict JSON (NaN or inf is an InputError), keys sorted, one feature
    per line, so the same collection always gives the same bytes."""
    where = f"qupath: {quote(os.fspath(path))}"
    check(
        isinstance(collection, dict) and collection.get("type") == "FeatureCollection"
        and isinstance(collection.get("features"), list),
        f"{where}: expected a GeoJSON FeatureCollection dict with a 'features' list",
    )  # fmt: skip
    try:
        head = [f"{_dumps(k)}:{_dumps(v)}" for k, v in sorted(collection.items()) if k != "features"]
        lines = [_dumps(feature) for feature in collection["features"]]
    except (TypeError, ValueError) as err:  # allow_nan=False: NaN / inf; TypeError: not JSON
        raise InputError(f"{where}: cannot write the collection as strict JSON ({first_line(err)})") from None
    body = "[\n" + ",\n".join(lines) + "\n]" if lines else "[]"
    text = '{"features":' + body + "".join("," + item for item in head) + "}\n"
    with atomic_write(path, where=where) as handle:
        handle.write(text)
