"""Faithfulness table of a run's evaluation.csv, per method (the README's "Vision transformers (ViT)" table).

    .venv/bin/python bench/vit_faithfulness.py [results/vit/evaluation.csv]

Prints one markdown row per method (in the file's order): mean deletion AUC and its chance level
(the same tiles in a seeded random pixel order; lower than chance is better), mean insertion AUC and
its chance level (higher than chance is better), the tiles beating chance on each, the mean pointing
ratio at DAB (where measured), and the model-randomisation check: mean Spearman with the fully
re-initialised model and the tiles that pass (Spearman < 0.5).  Columns a run did not measure are '–'.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def faithfulness_table(path: str | Path) -> str:
    """The markdown table of ``path`` (an evaluation.csv)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_method: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)

    def column(group: list[dict[str, str]], key: str) -> list[float]:
        return [float(r[key]) for r in group if r.get(key) not in (None, "")]

    def beats(group: list[dict[str, str]], key: str, lower: bool) -> str:
        pairs = [(float(r[f"{key}_auc"]), float(r[f"{key}_chance"])) for r in group if r.get(f"{key}_auc")]
        if not pairs:
            return "–"
        return f"{sum((a < c) if lower else (a > c) for a, c in pairs)}/{len(pairs)}"

    lines = [
        "| method | deletion AUC ↓ | chance | tiles < chance | insertion AUC ↑ | chance | tiles > chance "
        "| pointing (DAB) | sanity Spearman | tiles passing |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, group in by_method.items():
        passes = [r["sanity_passes"] for r in group if r.get("sanity_passes")]
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{method}`",
                    _fmt(_mean(column(group, "deletion_auc"))),
                    _fmt(_mean(column(group, "deletion_chance"))),
                    beats(group, "deletion", lower=True),
                    _fmt(_mean(column(group, "insertion_auc"))),
                    _fmt(_mean(column(group, "insertion_chance"))),
                    beats(group, "insertion", lower=False),
                    _fmt(_mean(column(group, "pointing_ratio"))),
                    _fmt(_mean(column(group, "sanity_spearman"))),
                    f"{passes.count('true')}/{len(passes)}" if passes else "–",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluation", nargs="?", default="results/vit/evaluation.csv")
    print(faithfulness_table(parser.parse_args().evaluation))


if __name__ == "__main__":
    main()
