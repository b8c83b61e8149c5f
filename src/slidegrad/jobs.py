"""What each workflow rule does, as plain functions over paths (scripts only glue).

Masks are ``(H, W)`` float32 ``.npy`` files in [0, 1]; each has a ``.json``
sidecar with the class explained, the model's probabilities and the method's
parameters, which the summary and figure rules read.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .errors import check
from .workflow import MethodSpec, parse_tile_name

SUMMARY_COLUMNS = [
    "slide", "tile", "x", "y", "method", "class_idx", "class_label", "probability",
    "mask_mean", "mask_max", "top10_mass", "model_sha256", "method_params",
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
def extract_tiles(
    slide_path: str,
    tile_names: Sequence[str],
    out_paths: Sequence[str],
    tile_px: int,
    tile_um: float | str,
    mpp: float | None = None,
    stride_div: int = 1,
) -> None:
    """Read each tile (level-0 corner from its name) once and save it as PNG (``tile_px`` square)."""
    from .slide import WSI

    with WSI(slide_path, tile_px, tile_um, stride_div=stride_div, mpp=mpp) as wsi:
        images = [wsi.read(*parse_tile_name(name)) for name in tile_names]  # validate all before writing
    _mkparents(out_paths)
    for path, image in zip(out_paths, images):
        write_png(path, image)


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
    tile_pngs: Sequence[str],
    method: MethodSpec,
    mask_paths: Sequence[str],
    meta_paths: Sequence[str],
    raw_paths: Sequence[str] | None = None,
    class_idx: int | None = None,
    device: str = "auto",
    engine: str = "native",
    threads: int | None = None,
    preprocessing: str | None = None,
    memory_budget_mb: int | None = None,
) -> None:
    """Load the model once, compute ``method`` for every tile, write mask + metadata (+ raw)."""
    from .model import detect_backend, get_preprocess_fn, load_model, read_params
    from .saliency import SaliencyMap

    if threads:  # before the framework initialises its thread pools
        set_threads(detect_backend(Path(model_path), read_params(model_path)), threads)
    model = load_model(model_path, preprocessing=preprocessing)
    images = np.stack([read_png(p) for p in tile_pngs])
    if model.tile_px is not None:
        check(
            images.shape[1] == model.tile_px,
            f"model '{model_path}': expects {model.tile_px} px tiles, got {images.shape[1]} px tiles",
        )
    batch = get_preprocess_fn(model)(images)
    budget = memory_budget_mb * (1 << 20) if memory_budget_mb else None
    sal = SaliencyMap(model, class_idx=class_idx, device=device, engine=engine, memory_budget=budget)
    probabilities = sal.probabilities(batch)
    classes = sal.resolve_classes(batch, probabilities=probabilities)
    masks, raws = sal.attributions(batch, method.name, class_idx=classes, smooth=method.smooth, **method.params)
    _mkparents(mask_paths)
    for i, (mask_path, meta_path) in enumerate(zip(mask_paths, meta_paths)):
        np.save(mask_path, masks[i])
        if raw_paths:
            np.save(raw_paths[i], raws[i])
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
            "model_sha256": model.sha256,
        }
        Path(meta_path).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


# -- overlays ------------------------------------------------------------------------
def write_overlays(
    tile_pngs: Sequence[str], mask_paths: Sequence[str], overlay_paths: Sequence[str], heatmap_paths: Sequence[str]
) -> None:
    """Per tile: ``plot.overlay`` (Oranges at alpha 0.6) and the ``plot.inferno`` heatmap, as PNG."""
    from . import plot

    _mkparents([*overlay_paths, *heatmap_paths])
    for tile_png, mask_path, overlay_path, heatmap_path in zip(tile_pngs, mask_paths, overlay_paths, heatmap_paths):
        mask = np.load(mask_path)
        write_png(overlay_path, plot.overlay(read_png(tile_png), mask))
        write_png(heatmap_path, plot.inferno(mask))


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


def write_summary(entries: Sequence[dict[str, str]], out_path: str) -> None:
    """One CSV row per (slide, tile, method); ``entries`` give slide, tile, mask and meta paths.

    Numbers are written with 6 decimals, so reruns are byte-identical.
    """
    rows = []
    for entry in entries:
        meta = json.loads(Path(entry["meta"]).read_text())
        x, y = parse_tile_name(entry["tile"])
        stats = mask_stats(np.load(entry["mask"]))
        row = {
            "slide": entry["slide"], "tile": entry["tile"], "x": x, "y": y,
            "method": meta["method"], "class_idx": meta["class_idx"], "class_label": meta["class_label"],
            "probability": meta["probability"], **stats, "model_sha256": meta["model_sha256"],
            "method_params": json.dumps(meta["params"], sort_keys=True),
        }  # fmt: skip
        rows.append({k: _fmt(v) for k, v in row.items()})
    _mkparents([out_path])
    tmp = f"{out_path}.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out_path)


# -- figure --------------------------------------------------------------------------
def write_figure(
    slide: str,
    tile_names: Sequence[str],
    tile_pngs: Sequence[str],
    method_ids: Sequence[str],
    method_titles: Sequence[str],
    mask_paths: dict[str, Sequence[str]],
    meta_paths: Sequence[str],
    out_paths: Sequence[str],
) -> None:
    """The slide's figure: tiles in rows, original + one column per method, shared colour bar.

    ``mask_paths[method_id]`` lists masks in tile order, titled ``method_titles``; ``meta_paths`` is one
    sidecar per tile (of the first method) for the row labels.
    """
    from . import plot

    images = [read_png(p) for p in tile_pngs]
    masks = {t: np.stack([np.load(p) for p in mask_paths[m]]) for m, t in zip(method_ids, method_titles)}
    labels = []
    for name, meta_path in zip(tile_names, meta_paths):
        meta = json.loads(Path(meta_path).read_text())
        labels.append(f"{name}\n{meta['class_label']}\np = {meta['probability']:.3f}")
    fig = plot.comparison_figure(images, masks, labels, title=f"slide {slide}")
    _mkparents(out_paths)
    for path in out_paths:
        plot.save_figure(fig, path)
