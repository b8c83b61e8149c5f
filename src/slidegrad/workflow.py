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
import os
import re
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from .errors import InputError, check, is_int
from .methods import get_method, resolve_params, title
from .model import detect_backend, read_params, require_param

SLIDE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
TILE_NAME = r"x[0-9]+_y[0-9]+"
CHUNK_NAME = r"chunk[0-9][0-9][0-9][0-9]+"


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


def chunk_label(index: int) -> str:
    """Wildcard value of a slide's ``index``-th mask-job chunk: ``chunk0000``."""
    return f"chunk{index:04d}"


@dataclass(frozen=True)
class Chunk:
    """The tiles of one mask job: a slice of one slide's tiles."""

    slide: str
    index: int
    tiles: tuple[Tile, ...]

    @property
    def label(self) -> str:
        return chunk_label(self.index)


@dataclass(frozen=True)
class Layout:
    """Where every output lives under ``outdir``; arguments may be wildcard patterns (``"{slide}"``).

    Snakemake tracks folders, one per job, not one file per tile, so DAGs of 100k
    tiles × methods stay fast:

    * ``tiles/{slide}.csv`` (the tile table) and ``tiles/{slide}/{tile}.png``;
    * ``masks/{slide}/{chunk}/{method}/{tile}.npy`` + ``{tile}.json`` sidecar;
    * ``overlays/…`` and ``heatmaps/{slide}/{chunk}/{method}/{tile}.png``.
    """

    outdir: str

    def tile_table(self, slide: str) -> str:
        return f"{self.outdir}/tiles/{slide}.csv"

    def tile_dir(self, slide: str) -> str:
        return f"{self.outdir}/tiles/{slide}"

    def mask_dir(self, slide: str, chunk: str, method: str) -> str:
        return f"{self.outdir}/masks/{slide}/{chunk}/{method}"

    def picture_dir(self, kind: str, slide: str, chunk: str) -> str:
        """``kind`` is ``overlays`` or ``heatmaps``: one folder per method inside."""
        return f"{self.outdir}/{kind}/{slide}/{chunk}"

    def summary(self) -> str:
        return f"{self.outdir}/summary.csv"

    def figure(self, slide: str, ext: str) -> str:
        return f"{self.outdir}/figures/{slide}.{ext}"

    def folders(self) -> list[str]:
        """``outdir`` and the folders the jobs write directly inside it."""
        return [self.outdir] + [f"{self.outdir}/{sub}" for sub in ("tiles", "masks", "overlays", "heatmaps", "figures")]


@dataclass
class Plan:
    """What the DAG expands over.

    ``selection`` is the normalised ``tiles:`` config (``mode`` plus its fields).  In the
    static modes (``table``, ``tfrecords``) ``tiles`` and ``chunks`` are known at start-up; in
    the dynamic ones (``grid``, ``random``, ``top_k``) a checkpoint chooses them per slide and
    ``tiles`` is empty.  ``warnings`` are one-line notes for the user (the workflow logs them).
    """

    config: dict[str, Any]
    backend: str
    slides: dict[str, Slide]
    tiles: dict[str, list[Tile]]
    methods: list[MethodSpec]
    selection: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def dynamic(self) -> bool:
        return self.selection.get("mode") in DYNAMIC_MODES

    @property
    def chunks(self) -> list[Chunk]:
        return chunk_tiles(self.tiles, self.config["tiles_per_job"])

    @property
    def method_ids(self) -> list[str]:
        return [m.id for m in self.methods]

    def method(self, method_id: str) -> MethodSpec:
        return next(m for m in self.methods if m.id == method_id)


TILE_MODES = ("table", "grid", "top_k", "random", "tfrecords")
DYNAMIC_MODES = ("grid", "top_k", "random")
MODE_FIELDS = {
    "table": {"required": ["path"], "optional": []},
    "tfrecords": {"required": ["path", "directory"], "optional": []},
    "grid": {"required": [], "optional": ["roi", "min_tissue"]},
    "random": {"required": ["n"], "optional": ["seed", "roi", "min_tissue"]},
    "top_k": {"required": ["k"], "optional": ["roi", "min_tissue"]},
}


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


# a schema "integer" is an int: not 1.0 (which JSON Schema counts as one), not a bool
StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", lambda _, value: is_int(value)),
)


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate against the JSON schema and fill defaults; the first error names its field."""
    schema = load_schema()
    validator = StrictValidator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        error = errors[0]
        best = jsonschema.exceptions.best_match([error])
        if best.validator == "oneOf" and isinstance(best.instance, dict):  # the mapping form: its own error
            best = min(
                (e for e in best.context if e.validator != "type"),
                key=lambda e: len(e.absolute_path),
                default=best,
            )
        message = best.message.replace("\n", " ")
        if best.validator == "oneOf":
            shapes = {"methods": "a method name or a mapping with 'name'", "tiles": "a CSV path or a mapping with 'mode'"}
            message = f"{best.instance!r} must be {shapes.get(str(best.absolute_path[0]), 'a string or a mapping')}"
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


# -- tile selection ------------------------------------------------------------------
def parse_selection(tiles: Any) -> dict[str, Any]:
    """``tiles:`` (a CSV path, or a mapping with ``mode``) → ``{"mode": ..., **fields}`` with defaults."""
    selection = {"mode": "table", "path": tiles} if isinstance(tiles, str) else dict(tiles)
    mode = selection["mode"]
    fields = MODE_FIELDS[mode]
    for key in fields["required"]:
        check(key in selection, f"config field 'tiles.{key}': required for mode {mode!r}")
    allowed = {"mode", *fields["required"], *fields["optional"]}
    extra = sorted(set(selection) - allowed)
    check(not extra, f"config field 'tiles': {', '.join(extra)} not used by mode {mode!r} (it takes {', '.join(sorted(allowed))})")
    if "roi" in selection:
        selection["roi"] = parse_roi(selection["roi"], "config field 'tiles.roi'")
    if mode in DYNAMIC_MODES:
        selection.setdefault("min_tissue", 0.5)
        selection.setdefault("roi", None)
    if mode == "random":
        selection.setdefault("seed", 0)
    return selection


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


# -- tables ----------------------------------------------------------------------
def _read_csv(path: str, what: str, required: list[str]) -> list[dict[str, str]]:
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
    for line, row in enumerate(_read_csv(path, "sample sheet", ["slide", "path"]), start=2):
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


def read_tiles(path: str, samples_path: str | None, slides: dict[str, Slide], config: dict[str, Any]) -> dict[str, list[Tile]]:
    """Tile table CSV (``slide`` + ``x,y`` or ``col,row``) → tiles per slide, in table order, unique.

    With ``samples_path`` None (tfrecords mode without a sample sheet) every slide named is accepted.
    """
    rows = _read_csv(path, "tile table", ["slide"])
    columns = set(rows[0])
    by_xy, by_grid = {"x", "y"} <= columns, {"col", "row"} <= columns
    check(by_xy or by_grid, f"tile table '{path}': needs level-0 'x','y' or grid 'col','row' columns")
    check(
        not (by_xy and by_grid),
        f"tile table '{path}': has both level-0 'x','y' and grid 'col','row' columns; keep one pair",
    )
    tiles: dict[str, list[Tile]] = {name: [] for name in slides}
    seen: set[Tile] = set()
    wsis: dict[str, Any] = {}
    for line, row in enumerate(rows, start=2):
        where = f"tile table '{path}' line {line}"
        name = _slide_name(row["slide"], where)
        if samples_path is None:
            tiles.setdefault(name, [])
        check(name in tiles, f"{where}: slide {name!r} is not in the sample sheet '{samples_path}'")
        if by_xy:
            x, y = _int_field(row, "x", where), _int_field(row, "y", where)
        else:
            col, row_idx = _int_field(row, "col", where), _int_field(row, "row", where)
            if name not in wsis:
                check(name in slides, f"{where}: grid col,row needs a sample sheet with the slide (or give x,y)")
                wsis[name] = open_slide_for_grid(slides[name], config, where)
            n_cols, n_rows = wsis[name].grid_shape
            check(
                col < n_cols and row_idx < n_rows,
                f"{where}: tile col={col}, row={row_idx} lies outside the grid of slide {name!r} "
                f"({n_cols} cols x {n_rows} rows)",
            )
            x, y = wsis[name].grid_to_xy(col, row_idx)
        tile = Tile(name, x, y)
        if tile not in seen:
            seen.add(tile)
            tiles[name].append(tile)
    for wsi in wsis.values():
        wsi.close()
    return {name: found for name, found in tiles.items() if found}


TILE_TABLE_COLUMNS = ["slide", "tile", "x", "y", "chunk", "class_idx", "label", "score"]


def write_tile_table(path: str | Path, tiles: list[Tile], per_job: int) -> None:
    """The workflow's tile table for one slide (atomic): one row per tile with its mask-job chunk."""
    rows = [
        {
            "slide": t.slide, "tile": t.name, "x": t.x, "y": t.y, "chunk": chunk_label(i // per_job),
            "class_idx": "" if t.class_idx is None else t.class_idx, "label": t.label,
            "score": "" if t.score is None else f"{t.score:.6f}",
        }  # fmt: skip
        for i, t in enumerate(tiles)
    ]
    write_csv(path, TILE_TABLE_COLUMNS, rows)


def write_csv(path: str | Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """A CSV with ``columns`` (``\\n`` line ends), written to ``{path}.tmp`` then renamed: never half a file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_tile_table(path: str | Path, chunk: str | None = None) -> list[dict[str, str]]:
    """Rows of a tile table written by :func:`write_tile_table` (only ``chunk``'s, if given)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [row for row in rows if chunk is None or row["chunk"] == chunk]


def table_chunks(path: str | Path) -> list[str]:
    """The chunk labels of a tile table, in order."""
    return list(dict.fromkeys(row["chunk"] for row in read_tile_table(path)))


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
        if tile_px is None:
            tile_px = require_param(model_path, "tile_px", params, "or set tile_px in the config")
        if tile_um is None:
            tile_um = require_param(model_path, "tile_um", params, "or set tile_um in the config")
    return int(tile_px), tile_um


def model_options(config: dict[str, Any]) -> dict[str, Any]:
    """``load_model`` keywords from the config's ``model`` section, and its ``tile_px`` where set."""
    model = config["model"]
    keys = ("preprocessing", "architecture", "architecture_kwargs", "allow_pickle")
    options = {key: model[key] for key in keys if model.get(key) is not None}
    if config.get("tile_px") is not None:
        options["tile_px"] = config["tile_px"]
    return options


def open_slide_for_grid(slide: Slide, config: dict[str, Any], where: str) -> Any:
    """Open a slide to turn grid ``col,row`` into level-0 coordinates."""
    from .slide import WSI

    check(Path(slide.path).exists(), f"{where}: grid col,row needs slide '{slide.path}' to exist (or give x,y)")
    tile_px, tile_um = tile_geometry(config)
    return WSI(slide.path, tile_px, tile_um, stride_div=config.get("stride_div", 1), mpp=slide.mpp)


def chunk_tiles(tiles: dict[str, list[Tile]], per_job: int) -> list[Chunk]:
    """Cut each slide's tiles into chunks of at most ``per_job`` (the same cut as :func:`write_tile_table`)."""
    return [
        Chunk(slide, i // per_job, tuple(found[i : i + per_job]))
        for slide, found in tiles.items()
        for i in range(0, len(found), per_job)
    ]


def check_class_idx(config: dict[str, Any]) -> int | str | None:
    """``model.class_idx`` as a class index of the model: a label is looked up in its ``outcome_labels``.

    Checked when the model exists; until then (the demo builds it) the value is returned as is.
    """
    class_idx, model_path = config["model"].get("class_idx"), config["model"]["path"]
    if class_idx is None or not Path(model_path).exists():
        return class_idx
    labels = [str(label) for label in read_params(model_path).get("outcome_labels") or []]
    where = "config field 'model.class_idx'"
    if isinstance(class_idx, str):
        check(
            bool(labels),
            f"{where}: label {class_idx!r} needs 'outcome_labels' in the params.json of model '{model_path}'; "
            "give a class index instead",
        )
        check(
            class_idx in labels,
            f"{where}: unknown label {class_idx!r}; model '{model_path}' has labels {', '.join(labels)}",
        )
        return labels.index(class_idx)
    if labels:
        check(
            class_idx < len(labels),
            f"{where}: {class_idx} is out of range; model '{model_path}' has "
            f"{len(labels)} classes ({', '.join(labels)})",
        )
    return class_idx


def _writable(folder: Path) -> bool:
    """A real probe: create and remove a file (``os.access`` trusts mode bits, which root ignores)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        handle, probe = tempfile.mkstemp(prefix=".slidegrad-probe-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(probe)
    return True


def check_outdir(outdir: str) -> None:
    """``outdir`` must be a writable folder, or creatable in one; so must the result folders already in it."""
    where = "config field 'outdir'"
    path = Path(outdir)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path:
        check(existing.is_dir(), f"{where}: '{outdir}' cannot be created: '{existing}' is a file, not a folder")
        check(_writable(existing), f"{where}: '{outdir}' cannot be created: folder '{existing}' is not writable")
        return
    for folder in map(Path, Layout(outdir).folders()):
        if folder.exists():
            check(folder.is_dir(), f"{where}: '{folder}' is a file; expected a folder")
            check(_writable(folder), f"{where}: folder '{folder}' is not writable")


def model_backend(config: dict[str, Any]) -> str:
    """The mask jobs' framework: ``model.backend``, else detected from the model (torch if not built yet)."""
    backend, path = config["model"].get("backend", "auto"), Path(config["model"]["path"])
    if backend != "auto":
        return backend
    return detect_backend(path, read_params(path)) if path.exists() else "torch"


def tfrecord_slides(tiles: dict[str, list[Tile]], directory: str, samples: dict[str, Slide]) -> dict[str, Slide]:
    """tfrecords mode: each slide's ``path`` is ``{directory}/{slide}.tfrecords``."""
    check(Path(directory).is_dir(), f"config field 'tiles.directory': '{directory}' is not a directory")
    slides = {}
    for name in tiles:
        path = Path(directory) / f"{name}.tfrecords"
        check(path.is_file(), f"config field 'tiles.directory': no '{path.name}' in '{directory}' for slide {name!r}")
        slides[name] = Slide(name, str(path), samples[name].mpp if name in samples else None)
    return slides


def build_plan(config: dict[str, Any]) -> Plan:
    """Validate ``config`` and expand it into slides, tiles (static modes) and methods."""
    config = validate_config(config)
    methods = parse_methods(config["methods"])
    selection = parse_selection(config["tiles"])
    check_outdir(config["outdir"])
    mode = selection["mode"]
    samples_path = config.get("samples")
    check(
        samples_path is not None or mode == "tfrecords",
        f"config field 'samples': required for tiles mode {mode!r} (only tfrecords mode can do without)",
    )
    slides = read_samples(samples_path) if samples_path else {}
    tiles: dict[str, list[Tile]] = {}
    warnings: list[str] = []
    if mode in ("table", "tfrecords"):
        tiles = read_tiles(selection["path"], samples_path, slides, config)
        unused = [name for name in slides if name not in tiles]
        if unused:
            warnings.append(
                f"sample sheet '{samples_path}': slide(s) {', '.join(unused)} have no rows in tile table "
                f"'{selection['path']}'; skipped"
            )
        slides = tfrecord_slides(tiles, selection["directory"], slides) if mode == "tfrecords" else slides
        slides = {name: slides[name] for name in tiles}
    config["model"]["class_idx"] = check_class_idx(config)  # the mask jobs get the index
    return Plan(config, model_backend(config), slides, tiles, methods, selection, warnings)
