"""The tiles job: choose a slide's tiles, read each once, store them chunk by chunk, write the tile table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, check, nonfinite_tiles
from ..layout import TILE_SCORES, TILE_SOURCE, tile_chunk_in
from ..model import ModelParams, model_params
from ..planning import geometry_mismatches, resolve_geometry
from ..progress import LOGGER, Progress
from ..results import write_tile_chunk, write_tile_scores
from ..sources import SourceStamp, check_unchanged, write_stamp
from ..tables import Tile, check_in_grid, chunk_label, write_tile_table
from .common import budget_bytes, claim_device, load_with_threads


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
    """Choose one slide's tiles; write its tile table and, per chunk, ``{tile_dir}/{chunk}.npz``.

    ``params`` (:meth:`slidegrad.planning.Plan.tiles_params`): ``mode``, the geometry
    (``tile_px``, ``tile_um``, ``stride_div``, ``mpp``; ``None`` tile_px/tile_um: the model's
    ``params.json``), ``tiles_per_job``, and per mode: ``table``/``tfrecords`` the table's
    ``locations`` (``grid``: col,row); ``grid``/``random``/``top_k`` ``min_tissue``, ``roi``,
    ``n``, ``seed``, ``k`` and the model's load options.  ``model_path``: the model, for top_k
    and where tile_px/tile_um come from its ``params.json`` (else ``None``).  Every location is
    checked before anything is written; no tiles is an error.  Tiles are ``tile_px`` square uint8 RGB,
    stored ``tiles_per_job`` to a file (:func:`slidegrad.results.write_tile_chunk`); top_k also stores
    every tissue tile's class probabilities (``scores.npz``, :func:`slidegrad.results.write_tile_scores`).
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
        from ..tfrecords import TFRecordTiles

        records = TFRecordTiles(source)
        tiles = [Tile(slide, x, y) for x, y in params["locations"]]
        for tile in tiles:  # every location, before anything is written
            records.check(tile.x, tile.y)
        mpp = params["mpp"]
        geometry = {"tile_px": tile_px, "tile_um": tile_um, "mpp": mpp, "level": None,
                    "extract_px": round(float(tile_um) / mpp) if mpp and not isinstance(tile_um, str) else None}  # fmt: skip
        LOGGER.info("slide %s: %d tiles from '%s'", slide, len(tiles), source)
        _write_tiles(out, tiles, params["tiles_per_job"], lambda t: _record_tile(records, t, tile_px, source))
    else:
        from ..slide import WSI

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
                tiles = _choose(wsi, params, read, threads, device, memory_budget_mb, lock_dir, out / TILE_SCORES)
            for tile in tiles:
                wsi.check_tile(tile.x, tile.y)
            _write_tiles(out, tiles, params["tiles_per_job"], lambda t: wsi.read(t.x, t.y))
    if source_stamp is not None:
        rerun = "rerun once it is complete (was it still being copied?)"
        check_unchanged(slide, source_stamp, "while its tiles job read it", rerun)
        write_stamp(out / TILE_SOURCE, source_stamp)
    write_tile_table(table_path, tiles, params["tiles_per_job"], geometry)


def _write_tiles(out: Path, tiles: list[Tile], per_job: int, read: Any) -> None:
    """``{out}/{chunk}.npz`` for every chunk of ``per_job`` tiles (as the tile table cuts them), one chunk
    in memory at a time, logging progress."""
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress("writing tiles", len(tiles))
    for start in range(0, len(tiles), per_job):
        chunk = tiles[start : start + per_job]
        images = []
        for i, tile in enumerate(chunk, start=start + 1):
            images.append(read(tile))
            progress(i)
        write_tile_chunk(
            tile_chunk_in(out, chunk_label(start // per_job)), [t.name for t in chunk], [t.x for t in chunk],
            [t.y for t in chunk], np.stack(images),
        )  # fmt: skip


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
    scores_path: Path,
) -> list[Tile]:
    """grid / random / top_k: tissue tiles of the slide (inside its roi), as the mode picks them.

    top_k: ``params["k"]`` per class; ``params["min_distance"]`` (absent or 0: none) spreads the chosen
    tiles of the slide, all classes together, at least that many tile widths apart (see
    :func:`slidegrad.tiling.top_k_tiles`).  Too few tiles is a warning (in the job's log).  top_k writes
    every scored tile's probabilities to ``scores_path`` (the prediction heatmap's input)."""
    from .. import tiling

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
    from ..model import get_preprocess_fn
    from ..saliency import SaliencyMap
    from ..stain import BlankTileError

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
    write_tile_scores(scores_path, coords, probs, model.outcome_labels, wsi.extract_px)
    min_distance = params.get("min_distance") or 0
    if min_distance:
        LOGGER.info("top_k: chosen tiles at least %d tile widths (%d px) apart", min_distance, min_distance * wsi.extract_px)
    rows = tiling.top_k_tiles(  # too few tiles: a UserWarning, on stderr = the job's log
        coords, probs, params["k"], labels=model.outcome_labels, min_distance=min_distance, tile_width=wsi.extract_px
    )
    return [Tile(slide, r["x"], r["y"], r["class_idx"], r["label"], r["score"]) for r in rows]


