"""What each workflow rule does, as plain functions over paths (scripts only glue).

Masks are ``(H, W)`` float32 ``.npy`` files in [0, 1]; each has a ``.json``
sidecar with the class explained, the model's probabilities and the method's
parameters, which the summary and figure rules read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .errors import check, nonfinite_tiles
from .workflow import Layout, MethodSpec, Tile, model_options, read_tile_table, tile_geometry, write_csv

SUMMARY_COLUMNS = [
    "slide", "tile", "x", "y", "method", "class_idx", "class_label", "probability",
    "mask_mean", "mask_max", "top10_mass", "selected_for", "selection_score", "mask", "model_sha256",
    "method_params",
]  # fmt: skip


def _mkparents(paths: Sequence[str | Path]) -> None:
    for parent in {Path(p).parent for p in paths}:
        parent.mkdir(parents=True, exist_ok=True)


def read_png(path: str | Path) -> np.ndarray:
    """uint8 ``(H, W, 3)``."""
    return np.asarray(Image.open(path).convert("RGB"))


def write_png(path: str | Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, format="PNG", optimize=False)


# -- tiles -------------------------------------------------------------------------
def select_tiles(config: dict[str, Any], slide: str, table_path: str, tile_dir: str) -> None:
    """Choose one slide's tiles by ``tiles.mode``; write its tile table and ``{tile_dir}/{tile}.png``.

    ``table``/``tfrecords``: the configured table's rows (each checked: inside the slide, or
    stored in the ``.tfrecords`` file); ``grid``: every tissue tile (see
    :func:`slidegrad.tiling.tissue_tiles`); ``random``: ``n`` of them, seeded; ``top_k``: the
    ``k`` most confident tissue tiles per class, scored by the model.  No tiles is an error.
    The slide is opened once; PNGs are ``tile_px`` square uint8 RGB.
    """
    from .workflow import build_plan, write_tile_table

    plan = build_plan(config)
    info = plan.slides[slide]
    tile_px, tile_um = tile_geometry(plan.config)
    out = Path(tile_dir)
    if plan.selection["mode"] == "tfrecords":
        from .tfrecords import TFRecordTiles

        tiles, records = plan.tiles[slide], TFRecordTiles(info.path)
        for tile in tiles:  # every location, before anything is written
            records.check(tile.x, tile.y)
        out.mkdir(parents=True, exist_ok=True)
        for tile in tiles:  # one tile in memory at a time
            image = records.read(tile.x, tile.y)
            check(
                image.shape[:2] == (tile_px, tile_px),
                f"'{info.path}': tile at loc_x={tile.x}, loc_y={tile.y} is {image.shape[1]}×{image.shape[0]} px; "
                f"expected tile_px={tile_px}",
            )
            write_png(out / f"{tile.name}.png", image)
    else:
        from .slide import WSI

        with WSI(info.path, tile_px, tile_um, stride_div=plan.config["stride_div"], mpp=info.mpp) as wsi:
            tiles = plan.tiles[slide] if not plan.dynamic else _choose(plan, slide, wsi)
            for tile in tiles:
                wsi.check_tile(tile.x, tile.y)
            out.mkdir(parents=True, exist_ok=True)
            for tile in tiles:
                write_png(out / f"{tile.name}.png", wsi.read(tile.x, tile.y))
    write_tile_table(table_path, tiles, plan.config["tiles_per_job"])


def _choose(plan: Any, slide: str, wsi: Any) -> list[Tile]:
    """grid / random / top_k: tissue tiles of the slide (inside its roi), as the mode picks them."""
    from . import tiling

    selection, info = plan.selection, plan.slides[slide]
    roi = info.roi or selection["roi"]
    coords = tiling.tissue_tiles(wsi, roi=roi, min_tissue=selection["min_tissue"])
    where = f"slide '{info.path}'" + (f" in roi {list(roi)}" if roi else "")
    check(
        bool(coords),
        f"{where}: no tissue tiles (Otsu on the thumbnail's saturation found none with "
        f"min_tissue={selection['min_tissue']}); nothing to explain",
    )
    if selection["mode"] == "random":
        coords = tiling.sample_tiles(coords, selection["n"], selection["seed"], f"slide '{info.path}'")
    if selection["mode"] != "top_k":
        return [Tile(slide, x, y) for x, y in coords]
    from .model import get_preprocess_fn, load_model
    from .saliency import SaliencyMap

    config = plan.config
    set_threads(plan.backend, config["threads"])
    model = load_model(config["model"]["path"], **model_options(config))
    budget = config["memory_budget_mb"] * (1 << 20) if config["memory_budget_mb"] else None
    backend = SaliencyMap(model, device=config["device"], memory_budget=budget).backend
    probs = tiling.score_tiles(backend, wsi, coords, get_preprocess_fn(model), memory_budget=budget)
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    if bad.size:
        names = [Tile(slide, *coords[i]).name for i in bad]
        raise nonfinite_tiles(config["model"]["path"], "outputs are", slide, names)
    rows = tiling.top_k_tiles(coords, probs, selection["k"], labels=model.outcome_labels)
    return [Tile(slide, r["x"], r["y"], r["class_idx"], r["label"], r["score"]) for r in rows]


# -- masks -------------------------------------------------------------------------
def set_threads(backend: str, threads: int) -> None:
    """Pin the framework's CPU thread pools (results depend on it; keep it fixed to reproduce)."""
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


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
) -> None:
    """Load the model once, compute ``method`` for every tile of ``chunk``, write into ``out_dir``.

    ``load_options``: :func:`~slidegrad.model.load_model` keywords (preprocessing, architecture, allow_pickle,
    tile_px).  NaN or inf model outputs or attributions are an error naming the slide, tiles and model.

    Per tile: ``{tile}.npy`` (``(H, W)`` float32 in [0, 1]), ``{tile}.json`` (class, probabilities,
    method parameters, model hash) and, with ``save_raw``, ``{tile}.raw.npy``.
    """
    from .model import detect_backend, get_preprocess_fn, load_model, read_params
    from .saliency import NonFiniteError, SaliencyMap

    if threads:  # before the framework initialises its thread pools
        set_threads(detect_backend(Path(model_path), read_params(model_path)), threads)
    model = load_model(model_path, **(load_options or {}))
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
    batch = get_preprocess_fn(model)(images)
    budget = memory_budget_mb * (1 << 20) if memory_budget_mb else None
    sal = SaliencyMap(model, class_idx=class_idx, device=device, engine=engine, memory_budget=budget)
    try:
        probabilities = sal.probabilities(batch)
        classes = sal.resolve_classes(batch, probabilities=probabilities)
        masks, raws = sal.attributions(batch, method.name, class_idx=classes, smooth=method.smooth, **method.params)
    except NonFiniteError as err:
        raise nonfinite_tiles(model_path, err.what, rows[0]["slide"], [names[i] for i in err.indices]) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        np.save(out / f"{name}.npy", masks[i])
        if save_raw:
            np.save(out / f"{name}.raw.npy", raws[i])
        k = int(classes[i])
        meta = {
            "tile_png": str(tile_pngs[i]),
            "method": method.id,
            "method_name": method.name,
            "smooth": method.smooth,
            "params": method.params,
            "engine": engine,
            "backend": model.backend,
            "class_idx": k,
            "class_label": model.outcome_labels[k],
            "probability": float(probabilities[i, k]),
            "probabilities": [float(p) for p in probabilities[i]],
            "outcome_labels": model.outcome_labels,
            "model_sha256": model.sha256,
        }
        (out / f"{name}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


# -- overlays ------------------------------------------------------------------------
def write_overlays(
    table_path: str, chunk: str, tile_dir: str, mask_dirs: dict[str, str], overlay_dir: str, heatmap_dir: str
) -> None:
    """Per tile of ``chunk`` and method: ``plot.overlay`` (Oranges at alpha 0.6) and the ``plot.inferno``
    heatmap, as ``{overlay_dir,heatmap_dir}/{method}/{tile}.png``; ``mask_dirs`` maps method id → mask folder."""
    from . import plot

    rows = read_tile_table(table_path, chunk)
    for method_id, mask_dir in mask_dirs.items():
        for folder in (overlay_dir, heatmap_dir):
            (Path(folder) / method_id).mkdir(parents=True, exist_ok=True)
        for row in rows:
            name = row["tile"]
            mask = np.load(Path(mask_dir) / f"{name}.npy")
            overlay = plot.overlay(read_png(Path(tile_dir) / f"{name}.png"), mask)
            write_png(Path(overlay_dir) / method_id / f"{name}.png", overlay)
            write_png(Path(heatmap_dir) / method_id / f"{name}.png", plot.inferno(mask))


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


def _fmt(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def mask_file(layout: Layout, row: dict[str, str], method_id: str, ext: str = ".npy") -> Path:
    """A tile's mask (``.npy``) or sidecar (``.json``) for one method, from its tile-table row."""
    return Path(layout.mask_dir(row["slide"], row["chunk"], method_id)) / f"{row['tile']}{ext}"


def write_summary(table_paths: Sequence[str], outdir: str, method_ids: Sequence[str], out_path: str) -> None:
    """One CSV row per (slide, tile, method), in tile-table then method order.

    Numbers are written with 6 decimals, so reruns are byte-identical.
    """
    layout = Layout(outdir)
    rows = []
    for table_path in table_paths:
        for tile in read_tile_table(table_path):
            for method_id in method_ids:
                mask_path = mask_file(layout, tile, method_id)
                meta = json.loads(mask_file(layout, tile, method_id, ".json").read_text())
                row = {
                    "slide": tile["slide"], "tile": tile["tile"], "x": tile["x"], "y": tile["y"],
                    "method": meta["method"], "class_idx": meta["class_idx"], "class_label": meta["class_label"],
                    "probability": meta["probability"], **mask_stats(np.load(mask_path)),
                    "selected_for": tile["label"], "selection_score": tile["score"], "mask": str(mask_path),
                    "model_sha256": meta["model_sha256"], "method_params": json.dumps(meta["params"], sort_keys=True),
                }  # fmt: skip
                rows.append({k: _fmt(v) for k, v in row.items()})
    write_csv(out_path, SUMMARY_COLUMNS, rows)


# -- figure --------------------------------------------------------------------------
def figure_rows(table_path: str, max_tiles: int) -> list[dict[str, str]]:
    """The tile-table rows a slide's figure shows: its first ``max_tiles``."""
    return read_tile_table(table_path)[:max_tiles]


def write_figure(
    slide: str,
    table_path: str,
    outdir: str,
    method_ids: Sequence[str],
    method_titles: Sequence[str],
    max_tiles: int,
    out_paths: Sequence[str],
) -> None:
    """The slide's figure: tiles in rows (the first ``max_tiles``), original + one column per method.

    Row labels give the tile, the explained class's name (``outcome_labels``) and its probability.
    """
    from . import plot

    layout = Layout(outdir)
    rows = figure_rows(table_path, max_tiles)
    images = [read_png(Path(layout.tile_dir(slide)) / f"{r['tile']}.png") for r in rows]
    masks = {
        t: np.stack([np.load(mask_file(layout, r, m)) for r in rows]) for m, t in zip(method_ids, method_titles)
    }
    labels = []
    for row in rows:
        meta = json.loads(mask_file(layout, row, method_ids[0], ".json").read_text())
        labels.append(f"{row['tile']}\n{meta['class_label']}\np = {meta['probability']:.3f}")
    fig = plot.comparison_figure(images, masks, labels, title=f"slide {slide}")
    _mkparents(out_paths)
    for path in out_paths:
        plot.save_figure(fig, path)
