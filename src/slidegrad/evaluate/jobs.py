"""The workflow's evaluation stage, as plain functions over paths (scripts only glue).

One evaluate job per (slide, chunk) loads the model once, reads the chunk's tiles
and every method's masks (and the class each mask explains, from its mask file's records),
and computes the configured metrics: each registered :class:`~slidegrad.metrics.Metric`
in ``evaluate.metrics``, in registry order (:data:`slidegrad.metrics.METRICS` says
what each computes, its columns and its chance level).

It writes ``evaluation/{slide}/{chunk}.csv`` (one row per tile × method) and
``{chunk}.npz`` (the metrics' curves, ``{method}:{kind}`` and ``{method}:{kind}_chance``,
for the figure).  The table rule concatenates the chunks into ``evaluation.csv``; the
figure rule draws one figure per slide (:func:`write_evaluation_figure`).
"""

from __future__ import annotations

import csv
import os
from typing import Any, Sequence

import numpy as np

from ..config import MethodSpec
from ..errors import check, quote
from ..files import atomic_write, write_csv
from ..jobs import format_cell
from ..metrics import Metric, MetricInputs, MetricResult, chosen, flag_columns, metric_columns, uses_baseline
from ..progress import LOGGER
from ..results import read_mask_chunk

ID_COLUMNS = ("slide", "tile", "method", "class_idx", "class_label")
BASELINE_COLUMNS = ("baseline", "reference_tile")
"""With a metric that reads ``evaluate.baseline``: the baseline and the reference baseline's tile for the
row's class (empty for other baselines)."""


def evaluation_columns(metrics: Sequence[str]) -> list[str]:
    """The columns of ``evaluation.csv`` for ``metrics`` (in :data:`slidegrad.metrics.METRICS` order).

    After the ids: with a metric that flags uninformative classes, ``probability`` (the explained class's on
    the unmodified tile, from the mask file); with one that reads the baseline, :data:`BASELINE_COLUMNS`;
    the flags (:func:`slidegrad.metrics.flag_columns`, filled when the chunk tables are joined:
    :mod:`slidegrad.evaluate.informative`); then each metric's columns.
    """
    flags = flag_columns(metrics)
    return [
        *ID_COLUMNS, *(("probability",) if flags else ()), *(BASELINE_COLUMNS if uses_baseline(metrics) else ()),
        *flags, *metric_columns(metrics),
    ]  # fmt: skip


# -- one job ----------------------------------------------------------------------------------
def evaluate_method(inputs: MetricInputs, metrics: Sequence[Metric]) -> MetricResult:
    """Every metric of one method's masks: per-tile columns (``(N,)`` arrays) and curves, each curve
    kind followed by its chance (``{kind}_chance``).  Chance levels are computed once per set of
    explained classes (the same for every method unless class_idx differs)."""
    columns: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    curve_x: dict[str, Any] = {}
    chance_curves: dict[str, Any] = {}
    for metric in metrics:
        own = metric.function("compute")(inputs)
        chance_of = metric.function("chance")
        chance = inputs.once(f"chance:{metric.name}", lambda: chance_of(inputs), per="classes") if chance_of else None
        parts = [own] if chance is None else [own, chance]
        returned = [column for part in parts for column in part.columns]
        if sorted(returned) != sorted(metric.columns):
            raise RuntimeError(f"metric {metric.name}: returned columns {returned}, declared {list(metric.columns)}")
        for part in parts:
            columns.update(part.columns)
        curves.update(own.curves)
        curve_x.update(own.curve_x)
        chance_curves.update(chance.curves if chance is not None else {})
    ordered: dict[str, Any] = {}
    for kind, curve in curves.items():
        ordered[kind] = curve
        if kind in chance_curves:
            ordered[f"{kind}_chance"] = chance_curves[kind]
    return MetricResult(columns, ordered, curve_x)


def run_evaluation_job(
    model_path: str,
    table_path: str,
    chunk: str,
    tile_file: str,
    mask_files: dict[str, str],
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

    ``tile_file``: the chunk's tiles; ``mask_files``: method id → the chunk's mask file; ``methods``: method id → :class:`MethodSpec`
    JSON (the native engine's parameters); ``settings``: the config's ``evaluate`` section.
    Scores run through the native engine (batched, on ``device``, under ``memory_budget_mb``).
    """
    from ..jobs import budget_bytes, claim_device, load_chunk
    from ..model import get_preprocess_fn
    from ..saliency import SaliencyMap
    from .reference import SlideTiles, reference_names

    job = load_chunk(model_path, table_path, chunk, tile_file, load_options, threads)
    model, names, tiles = job.model, job.names, job.images
    slide = job.rows[0]["slide"]
    chosen_device, _lock = claim_device(device, lock_dir, model.framework)
    budget = budget_bytes(memory_budget_mb)
    sal = SaliencyMap(model, device=chosen_device, memory_budget=budget)
    metrics = chosen(settings["metrics"])
    slide_tiles = SlideTiles(table_path, os.path.dirname(tile_file))
    chunk_inputs = MetricInputs(
        sal, tiles, get_preprocess_fn(model)(tiles), settings, slide, names, chosen_device, budget, slide_tiles
    )
    for metric in metrics:  # before any method: a missing ground truth fails at once
        prepare = metric.function("prepare")
        if prepare is not None:
            prepare(chunk_inputs)
    columns = evaluation_columns(settings["metrics"])
    table_rows, curve_arrays = [], {"tiles": np.array(names)}
    for method_id, mask_file in mask_files.items():
        method = MethodSpec.from_json(methods[method_id])
        result = read_mask_chunk(mask_file)
        check(
            result.names == names,
            f"mask file {quote(mask_file)}: holds other tiles than {chunk} of '{table_path}'; delete it and rerun",
        )
        masks, metas = result.masks, result.records
        classes = np.array([meta["class_idx"] for meta in metas], np.int64)
        LOGGER.info("%s on %s: %d tiles, metrics %s", method_id, chunk, len(names), ", ".join(settings["metrics"]))
        inputs = chunk_inputs.for_method(method, masks, classes)
        result = evaluate_method(inputs, metrics)
        for kind, curve in result.curves.items():
            curve_arrays[f"{method_id}:{kind}"] = curve
        curve_arrays.update({f"x:{kind}": x for kind, x in result.curve_x.items()})
        by_reference = settings.get("baseline") == "reference" and uses_baseline(settings["metrics"])
        references = reference_names(inputs) if by_reference else [""] * len(names)
        for i, (name, meta) in enumerate(zip(names, metas)):
            row = {"slide": slide, "tile": name, "method": method_id, "class_idx": meta["class_idx"]}
            row["class_label"] = meta["class_label"]
            row.update(probability=meta.get("probability"), baseline=settings.get("baseline"))
            row.update(reference_tile=references[i])
            row.update({key: values[i] for key, values in result.columns.items()})
            table_rows.append({key: format_cell(row.get(key)) for key in columns})
    with atomic_write(out_curves, "wb") as handle:
        np.savez(handle, **curve_arrays)
    write_csv(out_table, columns, table_rows)
    LOGGER.info("evaluation of %s: %d tiles × %d methods", chunk, len(names), len(mask_files))


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
    """``evaluation.csv``: the chunk tables' rows, slide by slide and chunk by chunk, each row's
    flags (``uninformative``, ...) filled over its slide (:func:`~slidegrad.evaluate.informative.mark_uninformative`)."""
    from .informative import mark_uninformative

    columns, rows = read_evaluation(chunk_tables)
    rows = mark_uninformative(rows)
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
                if key.startswith("x:"):
                    curves[key] = [data[key]]
                elif key != "tiles":
                    curves.setdefault(key, []).append(data[key])
    stacked = {key: np.concatenate(parts) for key, parts in curves.items()}
    fig = evaluation_figure(rows, stacked, list(method_ids), list(method_titles), title=f"slide {slide}")
    plot.save_figures(fig, out_paths, dpi=dpi)
    LOGGER.info("evaluation figure of slide %s: %d rows", slide, len(rows))
