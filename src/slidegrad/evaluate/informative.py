"""Which explained classes a removal says nothing about, and means that leave them out.

A metric that removes pixels declares a :class:`~slidegrad.metrics.Flat`: a flag column and a chance
column in the explained class's probability units.  A class is **uninformative** for that removal on
a slide when its chance level does not move: over the slide's rows explaining that class, the mean
of ``|chance − probability|`` is at most :data:`FLAT_TOLERANCE` (0.01), ``probability`` being the
explained class's probability on the unmodified tile.  A curve that stays at its start value has an
AUC (or mean) equal to it, so removing pixels changed nothing.

* ``uninformative`` (deletion and insertion: the baseline): the random order's ``deletion_chance``
  (``insertion_chance`` where deletion did not run), e.g. white glass is itself "DAB-negative";
* ``road_uninformative`` (ROAD's imputation): the random map's mean MoRF probability ``road_chance_morf``,
  e.g. a model that keeps its class on a blurred tile.

Flagged rows get ``true`` in ``evaluation.csv``; the figure notes it on the class's panels, and pooled
means of the flag's metrics' columns (:func:`slidegrad.metrics.flagged_columns`) leave them out.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from ..metrics import flag_chances, flagged_columns

FLAT_TOLERANCE = 0.01


def _number(cell: str | None) -> float:
    try:
        return float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan


def uninformative_classes(rows: Sequence[dict[str, str]], chance: str) -> dict[tuple[str, str], bool]:
    """``(slide, class_label)`` → whether the ``chance`` column stays at the class's probability (see the
    module); classes without a chance or probability value are not flagged."""
    gaps: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        gap = abs(_number(row.get(chance)) - _number(row.get("probability")))
        gaps.setdefault((row["slide"], row["class_label"]), []).append(gap)
    flags = {}
    for key, values in gaps.items():
        finite = [v for v in values if math.isfinite(v)]
        flags[key] = bool(finite) and sum(finite) / len(finite) <= FLAT_TOLERANCE
    return flags


def mark_uninformative(rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` (``evaluation.csv``'s, strings) with each flag column the table has filled (``true``/``false``),
    decided by the first of the flag's chance columns the table has."""
    rows = [dict(row) for row in rows]
    columns = set(rows[0]) if rows else set()
    for flag, chances in flag_chances().items():
        chance = next((c for c in chances if c in columns), None)
        if flag not in columns or chance is None:
            continue
        flags = uninformative_classes(rows, chance)
        for row in rows:
            row[flag] = str(flags[(row["slide"], row["class_label"])]).lower()
    return rows


def is_flagged(row: Mapping[str, str], column: str) -> bool:
    """Whether ``row``'s class is uninformative for the removal behind ``column``."""
    flag = flagged_columns().get(column)
    return flag is not None and row.get(flag) == "true"


def pooled_means(rows: Sequence[dict[str, str]], columns: Sequence[str]) -> dict[str, dict[str, float]]:
    """Method → column → mean over the rows (NaN ignored), leaving out the rows whose class is flagged
    uninformative for that column's removal.  ``rows`` must already be marked (:func:`mark_uninformative`)."""
    out: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        own = [row for row in rows if row["method"] == method]
        out[method] = {}
        for column in columns:
            values = [_number(row.get(column)) for row in own if not is_flagged(row, column)]
            finite = [v for v in values if math.isfinite(v)]
            out[method][column] = sum(finite) / len(finite) if finite else math.nan
    return out


def flagged_sentence(rows: Sequence[dict[str, str]]) -> str:
    """The methods text's account of this run's flags: for each flag column of ``rows`` (``evaluation.csv``'s,
    marked), the metrics it covers and the classes flagged, with their slides; e.g. ``In this run, for road,
    DAB-negative (slides demo_a and demo_b) was flagged uninformative.``  One sentence; no flag: says so."""
    from ..metrics import METRICS

    parts = []
    for flag in flag_chances():
        if not rows or flag not in rows[0]:
            continue
        covered = [
            m.name for m in METRICS.values() if m.flat and m.flat.flag == flag and any(c in rows[0] for c in m.columns)
        ]
        slides: dict[str, list[str]] = {}
        for row in rows:
            if row.get(flag) == "true" and row["slide"] not in slides.setdefault(row["class_label"], []):
                slides[row["class_label"]].append(row["slide"])
        flagged = [f"{label} (slide{'s' if len(s) > 1 else ''} {_and(s)})" for label, s in slides.items() if s]
        if flagged and covered:
            parts.append(f"for {_and(covered)}, {_and(flagged)} {'were' if len(flagged) > 1 else 'was'} flagged uninformative")
    if not parts:
        return "In this run, no class was flagged uninformative."
    return "In this run, " + "; ".join(parts) + "."


def _and(values: Sequence[str]) -> str:
    values = list(values)
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]
