"""The workflow's evaluation stage, as plain functions over paths (scripts only glue).

One evaluate job per (slide, chunk) loads the model once, reads the chunk's tiles
and every method's masks (and the class each mask explains, from its sidecar),
and computes the configured metrics:

* ``deletion`` / ``insertion`` — AUCs (:func:`~.perturbation.deletion_insertion`) and
  their chance level, the same curves in a seeded random pixel order;
* ``pic`` — SIC and AIC (:func:`~.pic.pic_metric`), chance: a seeded uniform random map;
* ``pointing`` — :func:`~.perturbation.pointing_ratio` against the ground truth
  (DAB, or a folder of masks); chance is 1 by definition;
* ``sanity`` — :func:`~.sanity.model_randomisation` (Spearman and SSIM against the fully
  randomised model, and whether the tile passes);
* ``stability`` — :func:`~.stability.max_sensitivity` of the raw attribution.

It writes ``evaluation/{slide}/{chunk}.csv`` (one row per tile × method) and
``{chunk}.npz`` (the deletion / insertion curves, for the figure).  The table rule
concatenates the chunks into ``evaluation.csv``; the figure rule draws one figure
per slide (:func:`write_evaluation_figure`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import MethodSpec
from ..errors import check
from ..failures import load_npy
from ..files import atomic_write, write_csv
from ..jobs import format_cell, read_sidecar
from ..progress import LOGGER
from ..tables import read_tile_table

METRICS = ("deletion", "insertion", "pic", "pointing", "sanity", "stability")
METRIC_COLUMNS = {
    "deletion": ("deletion_auc", "deletion_chance"),
    "insertion": ("insertion_auc", "insertion_chance"),
    "pic": ("sic", "sic_chance", "aic", "aic_chance"),
    "pointing": ("pointing_ratio", "pointing_chance"),
    "sanity": ("sanity_spearman", "sanity_ssim", "sanity_passes"),
    "stability": ("max_sensitivity",),
}
ID_COLUMNS = ("slide", "tile", "method", "class_idx", "class_label")
CURVES = ("deletion", "insertion")


def evaluation_columns(metrics: Sequence[str]) -> list[str]:
    """The columns of ``evaluation.csv`` for ``metrics`` (in :data:`METRICS` order)."""
    return [*ID_COLUMNS, *(c for m in METRICS if m in metrics for c in METRIC_COLUMNS[m])]


# -- ground truth ---------------------------------------------------------------------------
def ground_truth(source: str, tiles: np.ndarray, slide: str, names: Sequence[str], dab_threshold: float) -> np.ndarray:
    """Boolean ``(N, H, W)`` truth masks: ``dab`` (rgb2hed DAB > ``dab_threshold``), or a folder's
    ``{slide}/{tile}.png`` (non-zero pixels are inside; any channel of an RGB mask)."""
    from PIL import Image

    from .perturbation import dab_truth

    if source == "dab":
        return dab_truth(tiles, dab_threshold)
    truths = []
    for name in names:
        path = Path(source) / slide / f"{name}.png"
        check(path.is_file(), f"evaluate.ground_truth: no mask '{path}' for tile {name} of slide {slide}")
        mask = np.asarray(Image.open(path))
        truth = (mask != 0).any(axis=-1) if mask.ndim == 3 else mask != 0
        check(
            truth.shape == tiles.shape[1:3],
            f"evaluate.ground_truth: mask '{path}' is {truth.shape[1]}×{truth.shape[0]} px; "
            f"its tile is {tiles.shape[2]}×{tiles.shape[1]} px",
        )
        truths.append(truth)
    return np.stack(truths)


# -- one job ----------------------------------------------------------------------------------
class _ChunkEvaluator:
    """The metrics of one chunk's tiles, one method at a time; the chance levels are computed once per
    distinct set of explained classes (the same for every method unless class_idx differs)."""

    def __init__(self, sal: Any, tiles: np.ndarray, settings: dict[str, Any], device: str, budget: int | None) -> None:
        from ..model import get_preprocess_fn

        self.sal, self.tiles, self.settings = sal, tiles, settings
        self.device, self.budget = device, budget  # for the randomised models' SaliencyMaps
        self.batch = get_preprocess_fn(sal.model)(tiles)
        self.curve_options = {"steps": settings["steps"], "baseline": settings["baseline"], "sigma": settings["sigma"]}
        self._chance: dict[tuple[int, ...], dict[str, Any]] = {}

    def chance(self, classes: np.ndarray) -> dict[str, Any]:
        from .perturbation import random_order_deletion_insertion
        from .pic import pic_metric

        key = tuple(int(c) for c in classes)
        if key in self._chance:
            return self._chance[key]
        metrics, seed, out = self.settings["metrics"], self.settings["seed"], {}
        if "deletion" in metrics or "insertion" in metrics:
            out.update(random_order_deletion_insertion(self.sal, self.tiles, seed, class_idx=classes, **self.curve_options))
        if "pic" in metrics:
            noise = np.random.default_rng(seed).random(self.tiles.shape[:3])
            for kind in ("sic", "aic"):
                out[kind] = pic_metric(self.sal, self.tiles, noise, classes, metric=kind, seed=seed).auc
        self._chance[key] = out
        return out

    def evaluate(self, method: MethodSpec, masks: np.ndarray, classes: np.ndarray, truth: Any) -> dict[str, Any]:
        """Per-tile columns (``(N,)`` arrays) and the method's curves."""
        from .perturbation import deletion_insertion, pointing_ratio
        from .pic import pic_metric
        from .sanity import model_randomisation
        from .stability import max_sensitivity

        metrics, seed, n = self.settings["metrics"], self.settings["seed"], len(masks)
        cols: dict[str, Any] = {}
        curves: dict[str, np.ndarray] = {}
        chance = self.chance(classes)
        if "deletion" in metrics or "insertion" in metrics:
            result = deletion_insertion(self.sal, self.tiles, masks, class_idx=classes, **self.curve_options)
            for kind in CURVES:
                if kind in metrics:
                    cols[f"{kind}_auc"], cols[f"{kind}_chance"] = result[f"{kind}_auc"], chance[f"{kind}_auc"]
                curves[kind], curves[f"{kind}_chance"] = result[f"{kind}_curve"], chance[f"{kind}_curve"]
        if "pic" in metrics:
            for kind in ("sic", "aic"):
                cols[kind] = pic_metric(self.sal, self.tiles, masks, classes, metric=kind, seed=seed).auc
                cols[f"{kind}_chance"] = chance[kind]
        if "pointing" in metrics:
            cols["pointing_ratio"] = pointing_ratio(masks, truth, self.settings["top"])
            cols["pointing_chance"] = np.where(truth.reshape(n, -1).any(axis=1), 1.0, np.nan)
        params = {"smooth": method.smooth, **method.params}
        if "sanity" in metrics:
            result = model_randomisation(
                self.sal.model, self.batch, method.name, classes, seed, device=self.device, memory_budget=self.budget,
                method_options=params,
            )
            cols["sanity_spearman"], cols["sanity_ssim"] = result["spearman_full"], result["ssim_full"]
            cols["sanity_passes"] = result["passes"]
        if "stability" in metrics:
            noise = self.settings["perturbations"]
            cols["max_sensitivity"] = max_sensitivity(
                self.sal, self.batch, method.name, noise["n"], noise["radius"], seed, classes, method_options=params
            )
        return {"columns": cols, "curves": curves}


def run_evaluation_job(
    model_path: str,
    table_path: str,
    chunk: str,
    tile_dir: str,
    mask_dirs: dict[str, str],
    methods: dict[str, str],
    settings: dict[str, Any],
    out_table: str,
    out_curves: str,
    device: str = "auto",
    load_options: dict[str, Any] | None = None,
    threads: int | None = None,
    memory_budget_mb: int | None = None,
    lock_dir: str | None = None,
) -> None:
    """Evaluate every method's masks of ``chunk``; write its rows of ``evaluation.csv`` and its curves.

    ``mask_dirs``: method id → the chunk's mask folder; ``methods``: method id → :class:`MethodSpec`
    JSON (the native engine's parameters); ``settings``: the config's ``evaluate`` section.
    Scores run through the native engine (batched, on ``device``, under ``memory_budget_mb``).
    """
    from ..jobs import budget_bytes, claim_device, load_chunk
    from ..saliency import SaliencyMap

    job = load_chunk(model_path, table_path, chunk, tile_dir, load_options, threads)
    model, names, tiles = job.model, job.names, job.images
    slide = job.rows[0]["slide"]
    chosen, _lock = claim_device(device, lock_dir, model.framework)
    budget = budget_bytes(memory_budget_mb)
    sal = SaliencyMap(model, device=chosen, memory_budget=budget)
    truth = None
    if "pointing" in settings["metrics"]:
        truth = ground_truth(settings["ground_truth"], tiles, slide, names, settings["dab_threshold"])
    evaluator = _ChunkEvaluator(sal, tiles, settings, chosen, budget)
    columns = evaluation_columns(settings["metrics"])
    table_rows, curve_arrays = [], {"tiles": np.array(names)}
    for method_id, mask_dir in mask_dirs.items():
        method = MethodSpec.from_json(methods[method_id])
        masks = np.stack([load_npy(Path(mask_dir) / f"{name}.npy") for name in names])
        metas = [read_sidecar(Path(mask_dir) / f"{name}.json") for name in names]
        classes = np.array([meta["class_idx"] for meta in metas], np.int64)
        LOGGER.info("%s on %s: %d tiles, metrics %s", method_id, chunk, len(names), ", ".join(settings["metrics"]))
        result = evaluator.evaluate(method, masks, classes, truth)
        for kind, curve in result["curves"].items():
            curve_arrays[f"{method_id}:{kind}"] = curve
        for i, (name, meta) in enumerate(zip(names, metas)):
            row = {"slide": slide, "tile": name, "method": method_id, "class_idx": meta["class_idx"]}
            row["class_label"] = meta["class_label"]
            row.update({key: values[i] for key, values in result["columns"].items()})
            table_rows.append({key: format_cell(row[key]) for key in columns})
    with atomic_write(out_curves, "wb") as handle:
        np.savez(handle, **curve_arrays)
    write_csv(out_table, columns, table_rows)
    LOGGER.info("evaluation of %s: %d tiles × %d methods", chunk, len(names), len(mask_dirs))


# -- the table and the figure -------------------------------------------------------------------
def read_evaluation(paths: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows of the chunk tables at ``paths``, in order."""
    columns: list[str] = []
    rows: list[dict[str, str]] = []
    for path in paths:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or columns)
            rows.extend(reader)
    return columns, rows


def write_evaluation_table(chunk_tables: Sequence[str], out_path: str) -> None:
    """``evaluation.csv``: the chunk tables' rows, slide by slide and chunk by chunk."""
    columns, rows = read_evaluation(chunk_tables)
    write_csv(out_path, columns, rows)
    LOGGER.info("evaluation: %d rows", len(rows))


def write_evaluation_figure(
    slide: str,
    chunk_tables: Sequence[str],
    chunk_curves: Sequence[str],
    method_ids: Sequence[str],
    method_titles: Sequence[str],
    out_paths: Sequence[str],
    dpi: int = 300,
) -> None:
    """The slide's evaluation figure, to each of ``out_paths`` (.pdf, .png or .svg; png at ``dpi``).

    See :func:`slidegrad.evaluate.figure.evaluation_figure`.
    """
    from .. import plot
    from .figure import evaluation_figure

    _, rows = read_evaluation(chunk_tables)
    curves: dict[str, list[np.ndarray]] = {}
    for path in chunk_curves:
        with np.load(path) as data:
            for key in data.files:
                if key != "tiles":
                    curves.setdefault(key, []).append(data[key])
    stacked = {key: np.concatenate(parts) for key, parts in curves.items()}
    fig = evaluation_figure(rows, stacked, list(method_ids), list(method_titles), title=f"slide {slide}")
    plot.save_figures(fig, out_paths, dpi=dpi)
    LOGGER.info("evaluation figure of slide %s: %d rows", slide, len(rows))
