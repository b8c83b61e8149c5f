"""What each workflow rule does, as plain functions over paths and the rule's params
(scripts only glue).  Every job logs through :mod:`slidegrad.progress`.

Masks are ``(H, W)`` float32 ``.npy`` files in [0, 1]; each has a ``.json`` sidecar
with the class explained, the model's probabilities, the method's parameters and
the provenance of the tile and the run (geometry, engine, Grad-CAM layer, versions),
which the summary and figure rules read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from . import __version__
from .config import MethodSpec
from .errors import InputError, check, first_line, listed, nonfinite_tiles
from .failures import corrupt_file, load_npy, rerun_hint
from .files import write_csv, write_text
from .layout import TILE_SOURCE, Layout
from .methods import get_method
from .model import ModelParams, model_params
from .planning import geometry_mismatches, resolve_geometry
from .progress import LOGGER, Progress
from .sources import SourceStamp, check_unchanged, write_stamp
from .tables import GEOMETRY_COLUMNS, Tile, check_in_grid, read_tile_table, row_geometry, write_tile_table

PROVENANCE_COLUMNS = [
    *GEOMETRY_COLUMNS, "engine", "device", "gradcam_layer", "prefix_tokens", "slidegrad_version", "framework",
    "framework_version",
    "pair_version",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "slide", "tile", "x", "y", "method", "class_idx", "class_label", "probability",
    "mask_mean", "mask_max", "top10_mass", "completeness_error", "selected_for", "selection_score", "mask", "model_sha256",
    "method_params", *PROVENANCE_COLUMNS,
]  # fmt: skip


def read_png(path: str | Path) -> np.ndarray:
    """uint8 ``(H, W, 3)``; a truncated or corrupt file is one InputError line naming it (and the rule that wrote it)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as err:
        if err.errno is not None:  # the file system's error (missing, unreadable): run_job's one line
            raise
        raise corrupt_file(path, "image", err) from None


def write_png(path: str | Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, format="PNG", optimize=False)


def software_versions(framework: str) -> dict[str, str]:
    """Versions of slidegrad, the model's framework (``torch`` or ``tensorflow``) and PAIR's ``saliency``."""

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return ""

    return {
        "slidegrad_version": __version__,  # the code that ran (a conda run imports it from src/, uninstalled)
        "framework": framework,
        "framework_version": version(framework),
        "pair_version": version("saliency"),
    }


def claim_device(device: str, lock_dir: str | None, framework: str) -> tuple[str, Any]:
    """The device this job runs on: its own GPU when it runs on CUDA (see :mod:`slidegrad.devices`);
    ``auto`` is the CPU where the ``framework`` (the model's, loaded already) can use no GPU (e.g. a GPU
    it was given is not CUDA's)."""
    from .backends import get_framework
    from .devices import job_device

    if device == "auto" and not get_framework(framework).sees_gpu():
        device = "cpu"
    chosen, handle = job_device(device, lock_dir or ".")
    LOGGER.info("device: %s", chosen)
    return chosen, handle


# -- tiles -------------------------------------------------------------------------
def select_tiles(
    source: str,
    table_path: str,
    tile_dir: str,
    params: dict[str, Any],
    model_path: str | None = None,
    threads: int = 1,
    device: str = "auto",
    memory_budget_mb: int | None = None,
    lock_dir: str | None = None,
) -> None:
    """Choose one slide's tiles; write its tile table and ``{tile_dir}/{tile}.png``.

    ``params`` (:meth:`slidegrad.planning.Plan.tiles_params`): ``mode``, the geometry
    (``tile_px``, ``tile_um``, ``stride_div``, ``mpp``; ``None`` tile_px/tile_um: the model's
    ``params.json``), ``tiles_per_job``, and per mode: ``table``/``tfrecords`` the table's
    ``locations`` (``grid``: col,row); ``grid``/``random``/``top_k`` ``min_tissue``, ``roi``,
    ``n``, ``seed``, ``k`` and the model's load options.  ``model_path``: the model, for top_k
    and where tile_px/tile_um come from its ``params.json`` (else ``None``).  Every location is
    checked before anything is written; no tiles is an error.  PNGs are ``tile_px`` square uint8 RGB.
    The tile folder also gets the record of the slide file read (:mod:`slidegrad.sources`), checked
    again before the table is written: a slide that changed meanwhile is an error.
    """
    source_stamp = SourceStamp.of(source) if Path(source).is_file() else None  # a missing file: its reader says so
    read = model_params(model_path) if model_path else None  # the model's params.json, read once
    tile_px, tile_um = resolve_geometry(params["tile_px"], params["tile_um"], model_path, read)
    for line in geometry_mismatches(params["tile_px"], params["tile_um"], model_path, read) if read else []:
        LOGGER.warning(line)
    slide, mode, out = params["slide"], params["mode"], Path(tile_dir)
    if mode == "tfrecords":
        from .tfrecords import TFRecordTiles

        records = TFRecordTiles(source)
        tiles = [Tile(slide, x, y) for x, y in params["locations"]]
        for tile in tiles:  # every location, before anything is written
            records.check(tile.x, tile.y)
        mpp = params["mpp"]
        geometry = {"tile_px": tile_px, "tile_um": tile_um, "mpp": mpp, "level": None,
                    "extract_px": round(float(tile_um) / mpp) if mpp and not isinstance(tile_um, str) else None}  # fmt: skip
        LOGGER.info("slide %s: %d tiles from '%s'", slide, len(tiles), source)
        _write_tiles(out, tiles, lambda t: _record_tile(records, t, tile_px, source))
    else:
        from .slide import WSI

        with WSI(source, tile_px, tile_um, stride_div=params["stride_div"], mpp=params["mpp"]) as wsi:
            geometry = {"tile_px": tile_px, "tile_um": tile_um, "mpp": wsi.mpp, "level": wsi.level,
                        "extract_px": wsi.extract_px}  # fmt: skip
            LOGGER.info(
                "slide %s: tile_px %d, tile_um %s, %s µm/px, level %d, %d px at level 0",
                slide, tile_px, tile_um, wsi.mpp, wsi.level, wsi.extract_px,
            )  # fmt: skip
            if mode in ("table", "tfrecords"):
                tiles = _table_tiles(wsi, params)
            else:
                tiles = _choose(wsi, params, read, threads, device, memory_budget_mb, lock_dir)
            for tile in tiles:
                wsi.check_tile(tile.x, tile.y)
            _write_tiles(out, tiles, lambda t: wsi.read(t.x, t.y))
    if source_stamp is not None:
        rerun = "rerun once it is complete (was it still being copied?)"
        check_unchanged(slide, source_stamp, "while its tiles job read it", rerun)
        write_stamp(out / TILE_SOURCE, source_stamp)
    write_tile_table(table_path, tiles, params["tiles_per_job"], geometry)


def _write_tiles(out: Path, tiles: list[Tile], read: Any) -> None:
    """``{out}/{tile}.png`` for every tile, one in memory at a time, logging progress."""
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress("writing tiles", len(tiles))
    for i, tile in enumerate(tiles, start=1):
        write_png(out / f"{tile.name}.png", read(tile))
        progress(i)


def _record_tile(records: Any, tile: Tile, tile_px: int, source: str) -> np.ndarray:
    image = records.read(tile.x, tile.y)
    check(
        image.shape[:2] == (tile_px, tile_px),
        f"'{source}': tile at loc_x={tile.x}, loc_y={tile.y} is {image.shape[1]}×{image.shape[0]} px; "
        f"expected tile_px={tile_px}",
    )
    return image


def _table_tiles(wsi: Any, params: dict[str, Any]) -> list[Tile]:
    """The table's tiles for this slide; grid ``col,row`` checked against the slide's grid and turned into x,y."""
    slide, locations = params["slide"], params["locations"]
    if not params["grid"]:
        return [Tile(slide, x, y) for x, y in locations]
    for col, row in locations:
        check_in_grid(f"tile table '{params['table']}'", slide, col, row, wsi.grid_shape)
    return [Tile(slide, *wsi.grid_to_xy(col, row)) for col, row in locations]


def _choose(
    wsi: Any,
    params: dict[str, Any],
    read: ModelParams | None,
    threads: int,
    device: str,
    memory_budget_mb: int | None,
    lock_dir: str | None,
) -> list[Tile]:
    """grid / random / top_k: tissue tiles of the slide (inside its roi), as the mode picks them.

    top_k: ``params["k"]`` per class; ``params["min_distance"]`` (absent or 0: none) spreads the chosen
    tiles of the slide, all classes together, at least that many tile widths apart (see
    :func:`slidegrad.tiling.top_k_tiles`).  Too few tiles is a warning (in the job's log)."""
    from . import tiling

    slide, roi = params["slide"], params["roi"]
    coords = tiling.tissue_tiles(wsi, roi=roi, min_tissue=params["min_tissue"])
    where = f"slide '{wsi.path}'" + (f" in roi {list(roi)}" if roi else "")
    check(
        bool(coords),
        f"{where}: no tissue tiles (Otsu on the thumbnail's saturation found none with "
        f"min_tissue={params['min_tissue']}); nothing to explain",
    )
    LOGGER.info("slide %s: %d tissue tiles (min_tissue %s)", slide, len(coords), params["min_tissue"])
    if params["mode"] == "random":
        coords = tiling.sample_tiles(coords, params["n"], params["seed"], f"slide '{wsi.path}'")
    if params["mode"] != "top_k":
        return [Tile(slide, x, y) for x, y in coords]
    from .model import get_preprocess_fn
    from .saliency import SaliencyMap
    from .stain import BlankTileError

    check(read is not None, f"top_k on slide '{wsi.path}': needs a model to score the tiles with")
    model_path = str(read.model_path)
    model = load_with_threads(read, threads, params["model_options"])
    chosen, _lock = claim_device(device, lock_dir, model.framework)
    budget = budget_bytes(memory_budget_mb)
    backend = SaliencyMap(model, device=chosen, memory_budget=budget).backend
    LOGGER.info("top_k: scoring %d tissue tiles with model '%s'", len(coords), model_path)
    start = time.monotonic()
    try:
        probs = tiling.score_tiles(backend, wsi, coords, get_preprocess_fn(model), memory_budget=budget)
    except BlankTileError:
        raise InputError(
            f"top_k on slide '{wsi.path}': stain normalizer {model.normalizer.method!r} cannot normalise some "
            "tissue tiles (blank: no stain or no contrast); raise tiles.min_tissue"
        ) from None
    seconds = time.monotonic() - start
    LOGGER.info("top_k: scored %d tiles in %.1f s (%.3f s/tile)", len(coords), seconds, seconds / len(coords))
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    if bad.size:
        names = [Tile(slide, *coords[i]).name for i in bad]
        raise nonfinite_tiles(model_path, "outputs are", slide, names)
    min_distance = params.get("min_distance") or 0
    if min_distance:
        LOGGER.info("top_k: chosen tiles at least %d tile widths (%d px) apart", min_distance, min_distance * wsi.extract_px)
    rows = tiling.top_k_tiles(  # too few tiles: a UserWarning, on stderr = the job's log
        coords, probs, params["k"], labels=model.outcome_labels, min_distance=min_distance, tile_width=wsi.extract_px
    )
    return [Tile(slide, r["x"], r["y"], r["class_idx"], r["label"], r["score"]) for r in rows]


# -- masks -------------------------------------------------------------------------
def load_with_threads(params: ModelParams, threads: int | None, load_options: dict[str, Any] | None = None) -> Any:
    """Pin the CPU thread pools of the model's framework to ``threads`` (results depend on it: keep it fixed
    to reproduce; before the framework initialises its pools), then load the model (``params``: read once)."""
    from .model import detect_framework, load_model

    if threads:
        detect_framework(params).set_threads(threads)
    return load_model(params, **(load_options or {}))


def budget_bytes(memory_budget_mb: int | None) -> int | None:
    """The config's ``memory_budget_mb`` in bytes (``None``: the engine's default)."""
    return memory_budget_mb * (1 << 20) if memory_budget_mb else None


@dataclass
class ChunkInput:
    """What a model job over one chunk starts from: the loaded model, the chunk's tile-table rows,
    their tile names and PNG paths, and the tiles, uint8 ``(N, H, W, 3)``."""

    model: Any
    rows: list[dict[str, str]]
    names: list[str]
    tile_pngs: list[Path]
    images: np.ndarray


def load_chunk(
    model_path: str,
    table_path: str,
    chunk: str,
    tile_dir: str,
    load_options: dict[str, Any] | None = None,
    threads: int | None = None,
) -> ChunkInput:
    """Pin ``threads``, load the model once and read ``chunk``'s tiles; a chunk with no tiles, or tiles
    of another size than the model's ``tile_px``, is an :class:`InputError`."""
    model = load_with_threads(model_params(model_path), threads, load_options)
    rows = read_tile_table(table_path, chunk)
    names = [row["tile"] for row in rows]
    check(bool(names), f"tile table '{table_path}': no tiles in {chunk}")
    tile_pngs = [Path(tile_dir) / f"{name}.png" for name in names]
    images = np.stack([read_png(p) for p in tile_pngs])
    if model.tile_px is not None:
        check(
            images.shape[1] == model.tile_px,
            f"model '{model_path}': expects {model.tile_px} px tiles, got {images.shape[1]} px tiles",
        )
    return ChunkInput(model, rows, names, tile_pngs, images)


def model_input(model: Any, model_path: str, images: np.ndarray, slide: str, names: Sequence[str]) -> np.ndarray:
    """Tiles as the model sees them: its stain normaliser (if any), then its preprocessing → float32
    ``(N, H, W, 3)``.  A tile the normaliser cannot normalise is one InputError line naming it."""
    from .model import get_preprocess_fn
    from .stain import BlankTileError

    try:
        return get_preprocess_fn(model)(images)
    except BlankTileError as err:
        raise InputError(
            f"model '{model_path}': stain normalizer {model.normalizer.method!r} cannot normalise slide '{slide}' "
            f"tile(s) {listed([names[i] for i in err.indices])}: blank (no stain or no contrast)"
        ) from None


def run_mask_job(
    model_path: str,
    table_path: str,
    chunk: str,
    tile_dir: str,
    method: MethodSpec,
    out_dir: str,
    class_idx: int | None = None,
    device: str = "auto",
    engine: str = "native",
    threads: int | None = None,
    memory_budget_mb: int | None = None,
    save_raw: bool = False,
    load_options: dict[str, Any] | None = None,
    lock_dir: str | None = None,
) -> None:
    """Load the model once, compute ``method`` for every tile of ``chunk``, write into ``out_dir``.

    ``load_options``: :func:`~slidegrad.model.load_model` keywords (preprocessing, architecture, allow_code,
    tile_px).  On CUDA the job takes a GPU of its own (lock files in ``lock_dir``).  NaN or inf model
    outputs or attributions are an error naming the slide, tiles and model.

    Per tile: ``{tile}.npy`` (``(H, W)`` float32 in [0, 1]), ``{tile}.json`` (class, probabilities,
    method parameters, model hash, provenance) and, with ``save_raw``, ``{tile}.raw.npy``.
    """
    from .completeness import completeness_errors
    from .saliency import NonFiniteError, SaliencyMap

    job = load_chunk(model_path, table_path, chunk, tile_dir, load_options, threads)
    model, rows, names, tile_pngs, images = job.model, job.rows, job.names, job.tile_pngs, job.images
    batch = model_input(model, model_path, images, rows[0]["slide"], names)
    if model.normalizer is not None:
        from .model import describe_preprocessing

        prep = describe_preprocessing(model.preprocessing)
        LOGGER.info("stain normalizer %s, then %s preprocessing", model.normalizer.describe(), prep)
    budget = budget_bytes(memory_budget_mb)
    chosen, _lock = claim_device(device, lock_dir, model.framework)
    sal = SaliencyMap(model, class_idx=class_idx, device=chosen, engine=engine, memory_budget=budget)
    spec = get_method(method.name)
    layer, prefix = _layer_and_prefix(sal.backend, spec, method)
    LOGGER.info("%s (%s engine%s) on %s: %s", method.id, engine, f", layer {layer}" if layer else "", chunk, method.params)
    try:
        probabilities = sal.probabilities(batch)
        classes = sal.resolve_classes(batch, probabilities=probabilities)
        progress = Progress(method.id, len(names))
        result = sal.explain(
            batch, method.name, class_idx=classes, smooth=method.smooth, progress=progress, **method.params
        )
    except NonFiniteError as err:
        raise nonfinite_tiles(model_path, err.what, rows[0]["slide"], [names[i] for i in err.indices]) from None
    masks, raws, ran = result.masks, result.raws, result.engine
    completeness = completeness_errors(
        sal.backend, batch, classes, raws, spec, method.params, method.smooth, ran.item_batch, ran.scores
    )
    provenance = {
        "engine": engine, "device": chosen, "gradcam_layer": ran.layer, "prefix_tokens": prefix,
        **software_versions(model.framework),
    }  # fmt: skip
    adaptive = method.params.get("tolerance") and not method.smooth  # IG's adaptive steps: each tile's count
    steps = (ran.tile_steps or []) if adaptive else []
    provenance["stain_normalizer"] = model.normalizer.record() if model.normalizer else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, (row, name) in enumerate(zip(rows, names)):
        np.save(out / f"{name}.npy", masks[i])
        if save_raw:
            np.save(out / f"{name}.raw.npy", raws[i])
        k = int(classes[i])
        meta = {
            "tile_png": str(tile_pngs[i]), **_method_record(method, model),
            "class_idx": k, "class_label": model.outcome_labels[k], "probability": float(probabilities[i, k]),
            "probabilities": [float(p) for p in probabilities[i]], "completeness_error": completeness[i],
            **({"ig_steps": steps[i]} if len(steps) == len(names) else {}), **row_geometry(row), **provenance,
        }  # fmt: skip
        write_text(out / f"{name}.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")


def _layer_and_prefix(backend: Any, spec: Any, method: MethodSpec) -> tuple[str | None, int | None]:
    """The layer a layer-reading method (Grad-CAM) uses, and the prefix tokens its maps drop: a vision
    transformer's maps on patch tokens (a token layer, or the attention) drop them (``None`` otherwise)."""
    layer = backend.gradcam_layer(method.params.get("layer")) if spec.layer else None
    on_tokens = spec.layer and backend.token_prefix() is not None and layer not in backend.conv_layer_names()
    prefix = backend.token_prefix() if on_tokens or spec.kind == "attention" else None
    return layer, prefix


def _method_record(method: MethodSpec, model: Any) -> dict[str, Any]:
    """A sidecar's method and model fields (the same for every tile of a job)."""
    return {
        "method": method.id, "method_name": method.name, "smooth": method.smooth, "params": method.params,
        "backend": model.framework, "outcome_labels": model.outcome_labels, "model_sha256": model.sha256,
    }  # fmt: skip


# -- overlays ------------------------------------------------------------------------
def write_overlays(
    table_path: str,
    chunk: str,
    tile_dir: str,
    mask_dirs: dict[str, str],
    overlay_dir: str,
    heatmap_dir: str,
    cmap: str | None = None,
    alpha: float | None = None,
) -> None:
    """Per tile of ``chunk`` and method: ``plot.overlay(tile, mask, cmap, alpha)`` and the mask in ``cmap``
    (the heatmap), as ``{overlay_dir,heatmap_dir}/{method}/{tile}.png``; ``mask_dirs`` maps method id → mask
    folder.  ``None``: the library's defaults (``plot.OVERLAY_CMAP``, ``plot.OVERLAY_ALPHA``)."""
    from . import plot

    cmap = plot.check_cmap(plot.OVERLAY_CMAP if cmap is None else cmap)
    alpha = plot.check_alpha(plot.OVERLAY_ALPHA if alpha is None else alpha)
    rows = read_tile_table(table_path, chunk)
    for method_id, mask_dir in mask_dirs.items():
        for folder in (overlay_dir, heatmap_dir):
            (Path(folder) / method_id).mkdir(parents=True, exist_ok=True)
        for row in rows:
            name = row["tile"]
            mask = load_npy(Path(mask_dir) / f"{name}.npy")
            overlay = plot.overlay(read_png(Path(tile_dir) / f"{name}.png"), mask, cmap=cmap, alpha=alpha)
            write_png(Path(overlay_dir) / method_id / f"{name}.png", overlay)
            write_png(Path(heatmap_dir) / method_id / f"{name}.png", plot.colormap(mask, cmap))
    LOGGER.info(
        "%s: overlays (%s at alpha %g) and heatmaps of %d tiles × %d methods", chunk, cmap, alpha, len(rows),
        len(mask_dirs),
    )  # fmt: skip


# -- summary -------------------------------------------------------------------------
def mask_stats(mask: np.ndarray) -> dict[str, float]:
    """Mean, max and the fraction of total mask mass in the top 10% of pixels."""
    flat = np.sort(mask.ravel())[::-1]
    total = float(flat.sum())
    top = flat[: max(1, int(np.ceil(0.1 * flat.size)))]
    return {
        "mask_mean": float(flat.mean()),
        "mask_max": float(flat[0]),
        "top10_mass": float(top.sum()) / total if total > 0 else 0.0,
    }


def format_cell(value: Any) -> str:
    """A CSV cell: empty for None, ``true``/``false`` for booleans, 6 decimals for floats (reruns are
    byte-identical), else ``str``."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    return f"{float(value):.6f}" if isinstance(value, (float, np.floating)) else str(value)


def read_sidecar(path: str | Path, keys: Sequence[str] = ()) -> dict[str, Any]:
    """A mask's ``.json`` sidecar; a missing file, bad JSON or a missing one of ``keys`` is an
    :class:`InputError` naming the file."""
    path = Path(path)
    check(path.is_file(), f"mask sidecar '{path}': file not found (did the masks job run?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:  # truncated or corrupt: which rule wrote it, what to delete
        raise InputError(f"mask sidecar '{path}': not valid JSON ({first_line(err)}){rerun_hint(path)}") from None
    missing = [k for k in keys if k not in meta] if isinstance(meta, dict) else ["all"]
    check(not missing, f"mask sidecar '{path}': missing key(s) {', '.join(missing)}")
    return meta


def mask_file(layout: Layout, row: dict[str, str], method_id: str, ext: str = ".npy") -> Path:
    """A tile's mask (``.npy``) or sidecar (``.json``) for one method, from its tile-table row."""
    return Path(layout.mask_dir(row["slide"], row["chunk"], method_id)) / f"{row['tile']}{ext}"


def summary_columns(labels: Sequence[str]) -> list[str]:
    """:data:`SUMMARY_COLUMNS` with one ``p_<label>`` column per class label inserted after ``probability``."""
    at = SUMMARY_COLUMNS.index("probability") + 1
    return [*SUMMARY_COLUMNS[:at], *(f"p_{label}" for label in labels), *SUMMARY_COLUMNS[at:]]


# Parquet types of the summary's columns (the rest are strings); p_<label> columns are float64.
SUMMARY_INTS = ("x", "y", "class_idx", "tile_px", "level", "extract_px")
SUMMARY_FLOATS = (
    "probability", "mask_mean", "mask_max", "top10_mass", "completeness_error", "selection_score", "mpp",
)  # fmt: skip


def write_summary(
    table_paths: Sequence[str],
    outdir: str,
    method_ids: Sequence[str],
    out_path: str,
    parquet_path: str | None = None,
) -> None:
    """One CSV row per (slide, tile, method), in tile-table then method order, with each mask's provenance.

    Columns: :func:`summary_columns` — the fixed :data:`SUMMARY_COLUMNS` and, after ``probability``, the
    model's probability of every class as ``p_<label>`` (``outcome_labels`` of the sidecars, which must
    agree).  Numbers are written with 6 decimals, so reruns are byte-identical.  ``parquet_path``: the
    same table as Parquet too, numbers as numbers (``SUMMARY_INTS`` nullable Int64, ``SUMMARY_FLOATS``
    and ``p_`` float64, empty number cells null; the rest strings as in the CSV), parsed from the CSV's
    text so both hold the same values.
    """
    layout = Layout(outdir)
    rows = []
    labels: list[str] | None = None
    labels_from = ""
    for table_path in table_paths:
        for tile in read_tile_table(table_path):
            for method_id in method_ids:
                mask_path = mask_file(layout, tile, method_id)
                sidecar = mask_file(layout, tile, method_id, ".json")
                meta = read_sidecar(sidecar)
                these = [str(label) for label in meta["outcome_labels"]]
                if labels is None:
                    labels, labels_from = these, str(sidecar)
                check(
                    these == labels,
                    f"summary: mask sidecars disagree on the class labels: '{labels_from}' has {labels}, "
                    f"'{sidecar}' has {these}",
                )
                probabilities = [float(v) for v in meta["probabilities"]]
                check(
                    len(probabilities) == len(labels),
                    f"summary: mask sidecar '{sidecar}': {len(probabilities)} probabilities for {len(labels)} labels",
                )
                row = {
                    "slide": tile["slide"], "tile": tile["tile"], "x": tile["x"], "y": tile["y"],
                    "method": meta["method"], "class_idx": meta["class_idx"], "class_label": meta["class_label"],
                    "probability": meta["probability"], **{f"p_{k}": v for k, v in zip(labels, probabilities)},
                    **mask_stats(load_npy(mask_path)), "completeness_error": meta.get("completeness_error"),
                    "selected_for": tile["label"], "selection_score": tile["score"], "mask": str(mask_path),
                    "model_sha256": meta["model_sha256"], "method_params": json.dumps(meta["params"], sort_keys=True),
                    **{key: "" if meta.get(key) is None else str(meta[key]) for key in PROVENANCE_COLUMNS},
                }  # fmt: skip
                rows.append({k: format_cell(v) for k, v in row.items()})
    columns = summary_columns(labels or [])
    check(len(set(columns)) == len(columns), f"summary: class labels {labels} give columns that clash")
    write_csv(out_path, columns, rows)
    if parquet_path is not None:
        write_parquet(parquet_path, summary_frame(rows, columns))
    LOGGER.info("summary: %d rows", len(rows))


def summary_frame(rows: Sequence[dict[str, str]], columns: Sequence[str]) -> Any:
    """The summary's text rows as a typed pandas DataFrame (see :func:`write_summary`)."""
    import pandas as pd

    data = {}
    for column in columns:
        values = [row.get(column, "") for row in rows]
        if column in SUMMARY_INTS:
            data[column] = pd.array([int(v) if v != "" else None for v in values], dtype="Int64")
        elif column in SUMMARY_FLOATS or column.startswith("p_"):
            data[column] = pd.array([float(v) if v != "" else np.nan for v in values], dtype="float64")
        else:
            data[column] = pd.array(values, dtype=object)
    return pd.DataFrame(data, columns=list(columns))


def write_parquet(path: str | Path, frame: Any) -> None:
    """``frame`` as a Parquet file (atomic), without the pandas index; no timestamps, so reruns are byte-identical."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .files import atomic_write

    table = pa.Table.from_pandas(frame, preserve_index=False)  # its pandas metadata: Int64 columns read back as Int64
    with atomic_write(path, "wb") as handle:
        pq.write_table(table, handle, compression="zstd", write_statistics=True)


# -- figure --------------------------------------------------------------------------
def figure_rows(table_path: str, max_tiles: int) -> list[dict[str, str]]:
    """The tile-table rows a slide's figure shows: its first ``max_tiles``."""
    return read_tile_table(table_path)[:max_tiles]


def tile_um_per_px(row: dict[str, str]) -> float | None:
    """µm per pixel of a tile-table row's tile: ``tile_um / tile_px``, or with a magnification
    ``tile_um`` (``"20x"``) ``extract_px · mpp / tile_px``; ``None`` where the geometry does not say."""
    geometry = row_geometry(row)
    tile_px, tile_um = geometry["tile_px"], geometry["tile_um"]
    if not tile_px:
        return None
    if isinstance(tile_um, (int, float)) and tile_um > 0:
        return float(tile_um) / tile_px
    if geometry["extract_px"] and geometry["mpp"]:
        return geometry["extract_px"] * geometry["mpp"] / tile_px
    return None


def write_figure(
    slide: str,
    table_path: str,
    outdir: str,
    method_ids: Sequence[str],
    method_titles: Sequence[str],
    max_tiles: int,
    out_paths: Sequence[str],
    overlay: bool = False,
    cmap: str | None = None,
    alpha: float | None = None,
    dpi: int = 300,
) -> Any:
    """The slide's figure: tiles in rows (the first ``max_tiles``), original + one column per method.

    Row labels give the tile, the explained class's name (``outcome_labels``) and its probability.
    Method panels show the mask in ``cmap`` or, with ``overlay``, over the tile (``plot.overlay`` at
    ``alpha``); ``None``: ``plot.OVERLAY_CMAP`` / ``plot.OVERLAY_ALPHA``.  The first tile panel has a µm
    scale bar where the tile table gives the geometry (:func:`tile_um_per_px`).  ``out_paths``: .pdf,
    .png and/or .svg files (``dpi`` for rasters), byte-identical on reruns.  Returns the figure.
    """
    from . import plot

    cmap = plot.check_cmap(plot.OVERLAY_CMAP if cmap is None else cmap)
    alpha = plot.check_alpha(plot.OVERLAY_ALPHA if alpha is None else alpha)
    layout = Layout(outdir)
    rows = figure_rows(table_path, max_tiles)
    images = [read_png(Path(layout.tile_dir(slide)) / f"{r['tile']}.png") for r in rows]
    masks = {
        t: np.stack([load_npy(mask_file(layout, r, m)) for r in rows]) for m, t in zip(method_ids, method_titles)
    }
    labels = []
    for row in rows:
        meta = read_sidecar(mask_file(layout, row, method_ids[0], ".json"))
        labels.append(f"{row['tile']}\n{meta['class_label']}\np = {meta['probability']:.3f}")
    fig = plot.comparison_figure(
        images, masks, labels, title=f"slide {slide}", cmap=cmap, overlay=overlay, alpha=alpha,
        um_per_px=[tile_um_per_px(r) for r in rows],
    )  # fmt: skip
    plot.save_figures(fig, out_paths, dpi=dpi)
    LOGGER.info("figure of slide %s: %d tiles × %d methods", slide, len(rows), len(method_ids))
    return fig
