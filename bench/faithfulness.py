"""Faithfulness table of a run's evaluation.csv, per method (the README's faithfulness tables).

    .venv/bin/python bench/faithfulness.py [results/evaluation.csv] [--by-class]

Prints one markdown row per method (in the file's order), or per method and explained class with
``--by-class``: mean deletion AUC and its chance level (the same tiles in a seeded random pixel order;
lower than chance is better), mean insertion AUC and its chance level (higher than chance is better),
the tiles beating chance on each, the mean pointing ratio at DAB (where measured), ROAD (LeRF − MoRF,
higher is better), and the model-randomisation check: mean Spearman with the fully re-initialised
model and the tiles that pass (Spearman < 0.5); the ROAD and sanity columns only where the run
measured them, other unmeasured cells '–'.  Rows of a class flagged uninformative for a removal
(``uninformative``, ``road_uninformative``: ``slidegrad.evaluate.informative``) are left out of that
removal's means, as the evaluation figure does; a cell with only such rows reads ``flagged``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from slidegrad.evaluate.informative import is_flagged  # noqa: E402


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def faithfulness_table(path: str | Path, by_class: bool = False) -> str:
    """The markdown table of ``path`` (an evaluation.csv)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row.get("class_label", "") if by_class else "")].append(row)

    def kept(group: list[dict[str, str]], key: str) -> list[dict[str, str]]:
        return [r for r in group if r.get(key) not in (None, "") and not is_flagged(r, key)]

    def mean(group: list[dict[str, str]], key: str) -> str:
        measured = [r for r in group if r.get(key) not in (None, "")]
        if measured and not kept(group, key):
            return "flagged"
        return _fmt(_mean([float(r[key]) for r in kept(group, key)]))

    def beats(group: list[dict[str, str]], key: str, lower: bool) -> str:
        pairs = [(float(r[f"{key}_auc"]), float(r[f"{key}_chance"])) for r in kept(group, f"{key}_auc")]
        if not pairs:
            return "flagged" if any(r.get(f"{key}_auc") for r in group) else "–"
        return f"{sum((a < c) if lower else (a > c) for a, c in pairs)}/{len(pairs)}"

    measured = {key: any(r.get(key) not in (None, "") for r in rows) for key in ("road", "sanity_spearman")}
    head = "| method | class " if by_class else "| method "
    head += "| deletion AUC ↓ | chance | tiles < chance | insertion AUC ↑ | chance | tiles > chance | pointing (DAB) |"
    head += " ROAD ↑ |" if measured["road"] else ""
    head += " sanity Spearman | tiles passing |" if measured["sanity_spearman"] else ""
    lines = [head, "|" + "---|" * head.count(" |")]
    for (method, label), group in groups.items():
        cells = [f"`{method}`", *([label] if by_class else [])]
        cells += [
            mean(group, "deletion_auc"), mean(group, "deletion_chance"), beats(group, "deletion", lower=True),
            mean(group, "insertion_auc"), mean(group, "insertion_chance"), beats(group, "insertion", lower=False),
            mean(group, "pointing_ratio"),
        ]  # fmt: skip
        if measured["road"]:
            cells.append(mean(group, "road"))
        if measured["sanity_spearman"]:
            passes = [r["sanity_passes"] for r in group if r.get("sanity_passes")]
            cells += [mean(group, "sanity_spearman"), f"{passes.count('true')}/{len(passes)}" if passes else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluation", nargs="?", default="results/evaluation.csv")
    parser.add_argument("--by-class", action="store_true", help="one row per method and explained class")
    args = parser.parse_args()
    print(faithfulness_table(args.evaluation, args.by_class))


if __name__ == "__main__":
    main()
