"""The summary job: one table row per (slide, tile, method), CSV and Parquet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import check, quote
from ..files import write_csv
from ..layout import Layout
from ..progress import LOGGER
from ..results import read_mask_records
from ..tables import GEOMETRY_COLUMNS, read_tile_table
from .common import format_cell

PROVENANCE_COLUMNS = [
    *GEOMETRY_COLUMNS, "engine", "device", "gradcam_layer", "prefix_tokens", "slidegrad_version", "framework",
    "framework_version",
    "pair_version",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "slide", "tile", "x", "y", "method", "class_idx", "class_label", "probability",
    "mask_mean", "mask_max", "top10_mass", "positive_share", "completeness_error", "selected_for", "selection_score", "mask", "model_sha256",
    "method_params", *PROVENANCE_COLUMNS,
]  # fmt: skip


def mask_stats(mask: np.ndarray, signed: bool = False) -> dict[str, float]:
    """A ``(H, W)`` mask's mean, max and the fraction of its total mass in its top 10% of pixels (the
    mask job stores them per tile, so the summary reads no masks).

    ``signed`` (a mask in [−1, 1]): the same three on ``|mask|`` (mean and max magnitude in [0, 1]; the share
    of the ``|mask|`` mass in the top 10 % of pixels by ``|mask|``), and ``positive_share``: the share of the
    ``|mask|`` mass that is positive (0 for an all-zero mask).
    """
    values = np.asarray(mask).ravel()
    flat = np.sort(np.abs(values) if signed else values)[::-1]
    total = float(flat.sum())
    top = flat[: max(1, int(np.ceil(0.1 * flat.size)))]
    stats = {
        "mask_mean": float(flat.mean()),
        "mask_max": float(flat[0]),
        "top10_mass": float(top.sum()) / total if total > 0 else 0.0,
    }
    if signed:
        stats["positive_share"] = float(values[values > 0].sum()) / total if total > 0 else 0.0
    return stats


def summary_columns(labels: Sequence[str]) -> list[str]:
    """:data:`SUMMARY_COLUMNS` with one ``p_<label>`` column per class label inserted after ``probability``."""
    at = SUMMARY_COLUMNS.index("probability") + 1
    return [*SUMMARY_COLUMNS[:at], *(f"p_{label}" for label in labels), *SUMMARY_COLUMNS[at:]]


# Parquet types of the summary's columns (the rest are strings); p_<label> columns are float64.
SUMMARY_INTS = ("x", "y", "class_idx", "tile_px", "level", "extract_px")
SUMMARY_FLOATS = (
    "probability", "mask_mean", "mask_max", "top10_mass", "positive_share", "completeness_error", "selection_score",
    "mpp",
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
    model's probability of every class as ``p_<label>`` (``outcome_labels`` of the mask files, which must
    agree).  It reads the mask files' records, not their masks.  Numbers are written with 6 decimals, so reruns are byte-identical.  ``parquet_path``: the
    same table as Parquet too, numbers as numbers (``SUMMARY_INTS`` nullable Int64, ``SUMMARY_FLOATS``
    and ``p_`` float64, empty number cells null; the rest strings as in the CSV), parsed from the CSV's
    text so both hold the same values.
    """
    layout = Layout(outdir)
    rows = []
    labels: list[str] | None = None
    labels_from = ""
    for table_path in table_paths:
        tiles = read_tile_table(table_path)
        for chunk in dict.fromkeys(tile["chunk"] for tile in tiles):
            in_chunk = [tile for tile in tiles if tile["chunk"] == chunk]
            by_method = {}
            for method_id in method_ids:
                path = layout.mask_file(in_chunk[0]["slide"], chunk, method_id)
                records = {r["tile"]: r for r in read_mask_records(path)}
                missing = [t["tile"] for t in in_chunk if t["tile"] not in records]
                check(not missing, f"summary: mask file {quote(path)} has no tile(s) {missing[:3]} of '{table_path}'")
                these = [str(label) for label in next(iter(records.values()))["outcome_labels"]]
                if labels is None:
                    labels, labels_from = these, path
                check(
                    these == labels,
                    f"summary: mask files disagree on the class labels: {quote(labels_from)} has {labels}, "
                    f"{quote(path)} has {these}",
                )
                by_method[method_id] = (path, records)
            for tile in in_chunk:
                for method_id, (path, records) in by_method.items():
                    rows.append(_summary_row(tile, records[tile["tile"]], path, labels or []))
    columns = summary_columns(labels or [])
    check(len(set(columns)) == len(columns), f"summary: class labels {labels} give columns that clash")
    write_csv(out_path, columns, rows)
    if parquet_path is not None:
        write_parquet(parquet_path, summary_frame(rows, columns))
    LOGGER.info("summary: %d rows", len(rows))


def _summary_row(tile: dict[str, str], meta: dict[str, Any], mask_path: str, labels: list[str]) -> dict[str, str]:
    """One summary row (text cells) from a tile-table row and its record in a mask file."""
    probabilities = [float(v) for v in meta["probabilities"]]
    check(
        len(probabilities) == len(labels),
        f"summary: mask file {quote(mask_path)}: {len(probabilities)} probabilities for {len(labels)} labels",
    )
    row = {
        "slide": tile["slide"], "tile": tile["tile"], "x": tile["x"], "y": tile["y"],
        "method": meta["method"], "class_idx": meta["class_idx"], "class_label": meta["class_label"],
        "probability": meta["probability"], **{f"p_{k}": v for k, v in zip(labels, probabilities)},
        **{k: meta[k] for k in ("mask_mean", "mask_max", "top10_mass")}, "positive_share": meta.get("positive_share"),
        "completeness_error": meta.get("completeness_error"),
        "selected_for": tile["label"], "selection_score": tile["score"], "mask": str(mask_path),
        "model_sha256": meta["model_sha256"], "method_params": json.dumps(meta["params"], sort_keys=True),
        **{key: "" if meta.get(key) is None else str(meta[key]) for key in PROVENANCE_COLUMNS},
    }  # fmt: skip
    return {k: format_cell(v) for k, v in row.items()}


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

    from ..files import atomic_write

    table = pa.Table.from_pandas(frame, preserve_index=False)  # its pandas metadata: Int64 columns read back as Int64
    with atomic_write(path, "wb") as handle:
        pq.write_table(table, handle, compression="zstd", write_statistics=True)


