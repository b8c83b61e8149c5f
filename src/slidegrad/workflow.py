"""Configuration and planning for the Snakemake workflow (no Snakemake import).

``build_plan(config)`` validates the config against ``schemas/config.schema.json``,
reads the sample sheet and tile table, and returns the slides × tiles × methods
the DAG expands over, cut into mask-job chunks.  Every problem is an
:class:`~slidegrad.errors.InputError` whose one line names the file or field.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from .errors import InputError, check
from .methods import get_method, resolve_params, title
from .model import detect_backend, read_params

SLIDE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
TILE_NAME = r"x[0-9]+_y[0-9]+"


def tile_name(x: int, y: int) -> str:
    """Wildcard value for a tile: its level-0 top-left corner, ``x{x}_y{y}``."""
    return f"x{x}_y{y}"


def parse_tile_name(name: str) -> tuple[int, int]:
    """Inverse of :func:`tile_name`."""
    match = re.fullmatch(r"x([0-9]+)_y([0-9]+)", name)
    check(match is not None, f"tile: {name!r} is not a tile name (expected x<X>_y<Y>)")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class MethodSpec:
    """A configured method: ``id`` names its output folder, ``params`` are fully resolved."""

    id: str
    name: str
    smooth: bool
    params: dict[str, Any] = field(hash=False)

    @property
    def title(self) -> str:
        """Figure column title: the method's short name, or the custom ``id``."""
        default_id = f"{self.name}_smooth" if self.smooth else self.name
        return title(self.name, self.smooth) if self.id == default_id else self.id

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "name": self.name, "smooth": self.smooth, "params": self.params}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MethodSpec:
        data = json.loads(text)
        return cls(data["id"], data["name"], data["smooth"], data["params"])


@dataclass(frozen=True)
class Slide:
    name: str
    path: str
    mpp: float | None


@dataclass(frozen=True)
class Tile:
    slide: str
    x: int
    y: int

    @property
    def name(self) -> str:
        return tile_name(self.x, self.y)


@dataclass(frozen=True)
class Chunk:
    """The tiles of one mask job: a slice of one slide's tiles."""

    slide: str
    index: int
    tiles: tuple[Tile, ...]

    @property
    def label(self) -> str:
        return f"chunk{self.index:04d}"


@dataclass
class Plan:
    config: dict[str, Any]
    backend: str
    slides: dict[str, Slide]
    tiles: dict[str, list[Tile]]
    methods: list[MethodSpec]
    chunks: list[Chunk]

    @property
    def method_ids(self) -> list[str]:
        return [m.id for m in self.methods]

    def method(self, method_id: str) -> MethodSpec:
        return next(m for m in self.methods if m.id == method_id)


# -- config ----------------------------------------------------------------------
def load_schema() -> dict[str, Any]:
    return json.loads(resources.files("slidegrad").joinpath("schemas/config.schema.json").read_text())


def _field_path(error: jsonschema.ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _with_defaults(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(config)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = json.loads(json.dumps(sub["default"]))
        if isinstance(out.get(key), dict) and sub.get("type") == "object":
            out[key] = _with_defaults(out[key], sub)
    return out


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate against the JSON schema and fill defaults; the first error names its field."""
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        error = errors[0]
        best = jsonschema.exceptions.best_match([error])
        message = best.message.replace("\n", " ")
        if best.validator == "oneOf":
            message = f"{best.instance!r} must be a method name or a mapping with 'name'"
        raise InputError(f"config field '{_field_path(best)}': {message}")
    return _with_defaults(config, schema)


def parse_methods(entries: list[Any]) -> list[MethodSpec]:
    """Method entries (a name, or ``{name, id, smooth, **params}``) → resolved specs with unique ids."""
    specs: list[MethodSpec] = []
    for i, entry in enumerate(entries):
        entry = {"name": entry} if isinstance(entry, str) else dict(entry)
        name = entry.pop("name")
        smooth = bool(entry.pop("smooth", False))
        method_id = entry.pop("id", f"{name}_smooth" if smooth else name)
        try:
            method = get_method(name)
            params = resolve_params(method, entry, smooth)
        except InputError as err:
            raise InputError(f"config field 'methods[{i}]': {err}") from None
        check(
            method_id not in {s.id for s in specs},
            f"config field 'methods[{i}]': id {method_id!r} is used twice; give one entry an 'id'",
        )
        specs.append(MethodSpec(method_id, name, smooth, params))
    return specs


# -- tables ----------------------------------------------------------------------
def _read_csv(path: str, what: str, required: list[str]) -> list[dict[str, str]]:
    file = Path(path)
    check(file.is_file(), f"{what} '{path}': file not found")
    with open(file, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        check(not missing, f"{what} '{path}': missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}")
        rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    check(bool(rows), f"{what} '{path}': no rows")
    return rows


def read_samples(path: str) -> dict[str, Slide]:
    """Sample sheet CSV (``slide``, ``path``, optional ``mpp``) → slides by name."""
    slides: dict[str, Slide] = {}
    for line, row in enumerate(_read_csv(path, "sample sheet", ["slide", "path"]), start=2):
        where = f"sample sheet '{path}' line {line}"
        name = row["slide"]
        check(re.fullmatch(SLIDE_NAME, name) is not None, f"{where}: slide name {name!r} must match {SLIDE_NAME}")
        check(name not in slides, f"{where}: slide {name!r} is listed twice")
        check(bool(row["path"]), f"{where}: empty 'path'")
        mpp = None
        if row.get("mpp"):
            try:
                mpp = float(row["mpp"])
            except ValueError:
                mpp = -1.0
            check(math.isfinite(mpp) and mpp > 0, f"{where}: 'mpp' must be a positive number, got {row['mpp']!r}")
        slides[name] = Slide(name, row["path"], mpp)
    return slides


def _int_field(row: dict[str, str], key: str, where: str) -> int:
    try:
        value = int(row[key])
    except (TypeError, ValueError):
        raise InputError(f"{where}: '{key}' must be a non-negative integer, got {row.get(key)!r}") from None
    check(value >= 0, f"{where}: '{key}' must be a non-negative integer, got {value}")
    return value


def read_tiles(path: str, samples_path: str, slides: dict[str, Slide], config: dict[str, Any]) -> dict[str, list[Tile]]:
    """Tile table CSV (``slide`` + ``x,y`` or ``col,row``) → tiles per slide, in table order, unique."""
    rows = _read_csv(path, "tile table", ["slide"])
    columns = set(rows[0])
    by_xy = {"x", "y"} <= columns
    check(
        by_xy or {"col", "row"} <= columns,
        f"tile table '{path}': needs level-0 'x','y' or grid 'col','row' columns",
    )
    tiles: dict[str, list[Tile]] = {name: [] for name in slides}
    wsis: dict[str, Any] = {}
    for line, row in enumerate(rows, start=2):
        where = f"tile table '{path}' line {line}"
        name = row["slide"]
        check(name in slides, f"{where}: slide {name!r} is not in the sample sheet '{samples_path}'")
        if by_xy:
            x, y = _int_field(row, "x", where), _int_field(row, "y", where)
        else:
            col, row_idx = _int_field(row, "col", where), _int_field(row, "row", where)
            if name not in wsis:
                wsis[name] = open_slide_for_grid(slides[name], config, where)
            x, y = wsis[name].grid_to_xy(col, row_idx)
        tile = Tile(name, x, y)
        if tile not in tiles[name]:
            tiles[name].append(tile)
    for wsi in wsis.values():
        wsi.close()
    return {name: found for name, found in tiles.items() if found}


def tile_geometry(config: dict[str, Any]) -> tuple[int, float | str]:
    """``(tile_px, tile_um)`` from the config, else from the model's ``params.json``."""
    tile_px, tile_um = config.get("tile_px"), config.get("tile_um")
    if tile_px is None or tile_um is None:
        model_path = config["model"]["path"]
        check(
            Path(model_path).exists(),
            f"config: tile_px/tile_um are not set and model '{model_path}' does not exist yet to read them from",
        )
        params = read_params(model_path)
        tile_px = tile_px if tile_px is not None else params.get("tile_px")
        tile_um = tile_um if tile_um is not None else params.get("tile_um")
        check(tile_px is not None, f"model '{model_path}': params.json has no 'tile_px' and config sets none")
        check(tile_um is not None, f"model '{model_path}': params.json has no 'tile_um' and config sets none")
    return int(tile_px), tile_um


def open_slide_for_grid(slide: Slide, config: dict[str, Any], where: str) -> Any:
    """Open a slide to turn grid ``col,row`` into level-0 coordinates."""
    from .slide import WSI

    check(Path(slide.path).exists(), f"{where}: grid col,row needs slide '{slide.path}' to exist (or give x,y)")
    tile_px, tile_um = tile_geometry(config)
    return WSI(slide.path, tile_px, tile_um, stride_div=config.get("stride_div", 1), mpp=slide.mpp)


def chunk_tiles(tiles: dict[str, list[Tile]], per_job: int) -> list[Chunk]:
    """Cut each slide's tiles into chunks of at most ``per_job``."""
    return [
        Chunk(slide, i // per_job, tuple(found[i : i + per_job]))
        for slide, found in tiles.items()
        for i in range(0, len(found), per_job)
    ]


def check_class_idx(config: dict[str, Any]) -> None:
    """``model.class_idx`` must name a class of the model (checked when its params.json exists)."""
    class_idx, model_path = config["model"].get("class_idx"), config["model"]["path"]
    if class_idx is None or not Path(model_path).exists():
        return
    labels = read_params(model_path).get("outcome_labels")
    if labels:
        check(
            class_idx < len(labels),
            f"config field 'model.class_idx': {class_idx} is out of range; model '{model_path}' has "
            f"{len(labels)} classes ({', '.join(map(str, labels))})",
        )


def model_backend(config: dict[str, Any]) -> str:
    """The mask jobs' framework: ``model.backend``, else detected from the model (torch if not built yet)."""
    backend, path = config["model"].get("backend", "auto"), Path(config["model"]["path"])
    if backend != "auto":
        return backend
    return detect_backend(path, read_params(path)) if path.exists() else "torch"


def build_plan(config: dict[str, Any]) -> Plan:
    """Validate ``config`` and expand it into slides, tiles, methods and mask-job chunks."""
    config = validate_config(config)
    methods = parse_methods(config["methods"])
    slides = read_samples(config["samples"])
    tiles = read_tiles(config["tiles"], config["samples"], slides, config)
    used = {name: slides[name] for name in tiles}
    check_class_idx(config)
    backend = model_backend(config)
    return Plan(config, backend, used, tiles, methods, chunk_tiles(tiles, config["tiles_per_job"]))
