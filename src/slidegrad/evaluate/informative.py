"""Which explained classes a removal baseline says nothing about, and means that leave them out.

A class is **uninformative for the baseline** on a slide when its random-order curve does not move:
over the slide's rows explaining that class, the mean of ``|chance AUC − probability|`` is at most
:data:`FLAT_TOLERANCE` (0.01), with the chance AUC ``deletion_chance`` (``insertion_chance`` where
deletion did not run) and ``probability`` the explained class's probability on the unmodified tile.
A curve that stays at its start value has an AUC equal to it, so deleting (or restoring) pixels to
the baseline changed nothing: e.g. white glass is itself "DAB-negative".  Such rows get
``uninformative = true`` in ``evaluation.csv``; the figure notes it on the class's panels, and pooled
means of the baseline's columns (:func:`slidegrad.metrics.baseline_columns`) leave them out.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

FLAT_TOLERANCE = 0.01
FLAG = "uninformative"
CHANCE_COLUMNS = ("deletion_chance", "insertion_chance")  # the first present decides


def _number(cell: str | None) -> float:
    try:
        return float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan


def uninformative_classes(rows: Sequence[dict[str, str]]) -> dict[tuple[str, str], bool]:
    """``(slide, class_label)`` → whether its chance curve is flat (see the module); classes without a
    chance AUC or probability are not flagged."""
    columns = set(rows[0]) if rows else set()
    chance = next((c for c in CHANCE_COLUMNS if c in columns), None)
    gaps: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        key = (row["slide"], row["class_label"])
        gap = abs(_number(row.get(chance)) - _number(row.get("probability"))) if chance else math.nan
        gaps.setdefault(key, []).append(gap)
    flags = {}
    for key, values in gaps.items():
        finite = [v for v in values if math.isfinite(v)]
        flags[key] = bool(finite) and sum(finite) / len(finite) <= FLAT_TOLERANCE
    return flags


def mark_uninformative(rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` (``evaluation.csv``'s, strings) with their ``uninformative`` cell filled (``true``/``false``),
    where the table has that column; other rows are returned unchanged."""
    if not rows or FLAG not in rows[0]:
        return list(rows)
    flags = uninformative_classes(rows)
    return [{**row, FLAG: str(flags[(row["slide"], row["class_label"])]).lower()} for row in rows]


def informative_rows(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The rows not flagged uninformative."""
    return [row for row in rows if row.get(FLAG) != "true"]


def pooled_means(rows: Sequence[dict[str, str]], columns: Sequence[str], baseline_columns: Iterable[str]) -> dict[str, dict[str, float]]:
    """Method → column → mean over the slide's tiles (NaN ignored); a ``baseline_columns`` column leaves
    out the rows flagged uninformative.  ``rows`` must already be marked (:func:`mark_uninformative`)."""
    affected = set(baseline_columns)
    out: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        own = [row for row in rows if row["method"] == method]
        out[method] = {}
        for column in columns:
            kept = informative_rows(own) if column in affected else own
            values = [v for v in (_number(row.get(column)) for row in kept) if math.isfinite(v)]
            out[method][column] = sum(values) / len(values) if values else math.nan
    return out
