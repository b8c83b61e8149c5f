"""One evaluation figure per slide: the curves, then a method × metric panel.

Top: the mean deletion and insertion curves of each method over the slide's
tiles, one row per explained class (up to :data:`MAX_CLASS_ROWS` classes; a
white baseline, say, removes a "negative" class's evidence no more than the
tile's own glass does, so pooling classes would blur the picture) (probability of the explained class against the fraction of pixels
removed / restored), with the random-order curve (chance) dashed in black.
A faithful map's deletion curve falls below chance; its insertion curve rises above.

Bottom: one panel per metric, one row of them per explained class as the curves
(all tiles together beyond :data:`MAX_CLASS_ROWS` classes); each method's tiles as
grey dots, their mean as a coloured dot with a bar of ± one standard deviation, and
the metric's chance level (mean over the tiles) or the sanity check's threshold as a
dashed line.  The arrow in a panel's title says which direction is better.

A class uninformative for a removal (:mod:`slidegrad.evaluate.informative`: its chance
level does not move; the baseline's for deletion and insertion, the imputation's for ROAD)
gets a note on its curves and on that removal's metric panels, which then show its tiles
but no mean; where classes are pooled (all tiles together), its rows are left out of those
curves and means.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.figure
import numpy as np

from ..metrics import METRICS
from ..plot import plt
from .informative import is_flagged, mark_uninformative

# column, panel title, its reference column (chance) or a fixed reference value: every metric's panels
PANELS: tuple[tuple[str, str, str | float | None], ...] = tuple(
    (panel.column, panel.title, panel.reference) for metric in METRICS.values() for panel in metric.panels
)
MAX_CLASS_ROWS = 4  # curves per explained class up to this many classes, else all tiles together
INSIDE_LEGEND = 8  # up to this many methods, a curve panel's legend sits inside it; more go below it
CURVE_XLABELS = {kind: label for metric in METRICS.values() for kind, label in metric.curve_kinds().items()}
# curve kind → a column of its metric (whose flag says whether a class's curves are informative)
KIND_COLUMN = {kind: metric.columns[0] for metric in METRICS.values() for kind in metric.curve_kinds()}
BASELINE_COLUMNS = {column for metric in METRICS.values() if "baseline" in metric.options for column in metric.columns}


def _flagged(rows: Sequence[dict[str, str]], column: str) -> bool:
    """Whether any of ``rows`` is flagged uninformative for ``column``'s removal."""
    return any(is_flagged(r, column) for r in rows)


def _note(ax, rows: Sequence[dict[str, str]], column: str, y: float = 0.78) -> None:
    baseline = next((r.get("baseline") for r in rows if r.get("baseline")), "")
    what = f"baseline {baseline}" if baseline and column in BASELINE_COLUMNS else "this removal"
    ax.text(0.5, y, f"uninformative for {what}:\nits chance level does not move; not pooled",
            transform=ax.transAxes, ha="center", va="center", fontsize=6.5, color="tab:red")  # fmt: skip


def _values(rows: Sequence[dict[str, str]], method: str, column: str) -> np.ndarray:
    out = [float(r[column]) if r.get(column) not in (None, "") else np.nan for r in rows if r["method"] == method]
    return np.asarray(out, np.float64)


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return np.nan, np.nan
    return float(finite.mean()), float(finite.std())


def _auc(curve: np.ndarray, x: np.ndarray) -> float:
    """Mean trapezoid AUC of ``(N, K)`` curves over ``x``, per unit of x: on [0, 1] (deletion, insertion) the
    AUC of ``perturbation.curve_auc``; on ROAD's [0, 0.9] the curve's mean height."""
    if curve.shape[0] == 0:
        return float("nan")
    return float(np.trapezoid(curve, x, axis=1).mean() / (x[-1] - x[0]))


def _curve_panel(ax, kind: str, curves, rows, label: str | None, method_ids, method_titles, colours) -> None:
    """Mean curves of the tiles whose explained class is ``label`` (``None``: all tiles, less the rows
    uninformative for ``kind``'s removal)."""
    column = KIND_COLUMN[kind]
    chance_parts = []
    for method, title, colour in zip(method_ids, method_titles, colours):
        curve = curves.get(f"{method}:{kind}")
        if curve is None:
            continue
        chance = curves[f"{method}:{kind}_chance"]
        own = [r for r in rows if r["method"] == method]
        if label is not None:
            shown = np.array([r["class_label"] == label for r in own], bool)
        else:
            shown = np.array([not is_flagged(r, column) for r in own], bool)
        curve, chance = curve[shown], chance[shown]
        x = curves.get(f"x:{kind}", np.linspace(0.0, 1.0, curve.shape[1]))
        if len(curve):
            ax.plot(x, curve.mean(axis=0), color=colour, lw=1.3, label=f"{title} ({_auc(curve, x):.2f})")
        chance_parts.append(chance)
    if chance_parts and sum(map(len, chance_parts)):
        chance = np.concatenate(chance_parts)
        x = curves.get(f"x:{kind}", np.linspace(0.0, 1.0, chance.shape[1]))
        ax.plot(x, chance.mean(axis=0), color="black", lw=1.6, ls="--", label=f"random order ({_auc(chance, x):.2f})")
        if label is not None and _flagged([r for r in rows if r["class_label"] == label], column):
            _note(ax, rows, column)
    n_tiles = len(chance_parts[0]) if chance_parts else 0
    who = f"class {label}" if label is not None else "all classes"
    ax.set_title(f"{kind}: {who} ({n_tiles} tiles)", fontsize=7.5)
    ax.set_xlabel(CURVE_XLABELS[kind], fontsize=7)
    ax.set_ylabel("probability of the explained class", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.tick_params(labelsize=6)
    ax.grid(alpha=0.3, lw=0.5)
    if len(method_ids) <= INSIDE_LEGEND:
        ax.legend(fontsize=5.5, loc="best", frameon=False, title="mean AUC", title_fontsize=5.5)
    else:  # many methods: below the panel, in two columns, so it hides no curve
        ax.legend(fontsize=5.5, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False,
                  title="mean AUC", title_fontsize=5.5, handlelength=1.5, columnspacing=1.0)  # fmt: skip


def _curve_row_height(n_methods: int) -> float:
    """Inches of one row of curve panels: the panel, and below it the legend when it does not fit inside."""
    if n_methods <= INSIDE_LEGEND:
        return 2.6
    return 2.6 + 0.11 * ((n_methods + 2) // 2) + 0.2


def method_colours(n: int) -> list[tuple[float, ...]]:
    """``n`` RGBA colours, one per method: tab10's up to 10 methods, tab20's up to 20 (no two alike), then cycled."""
    palette = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [palette(i % palette.N) for i in range(n)]


def _metric_panel(ax, rows, column: str, title: str, reference, method_ids, method_titles, colours, first: bool):
    """``rows``: one class's (or, pooled, only the informative rows of a baseline's columns)."""
    ys = np.arange(len(method_ids))[::-1]
    rng = np.random.default_rng(0)  # jitter of the tile dots only
    flagged = _flagged(rows, column)
    for y, method, colour in zip(ys, method_ids, colours):
        values = _values(rows, method, column)
        finite = values[np.isfinite(values)]
        ax.scatter(finite, y + rng.uniform(-0.18, 0.18, finite.size), s=4, color="0.6", lw=0, zorder=1)
        mean, sd = _mean_sd(values)
        if np.isfinite(mean) and not flagged:
            ax.errorbar(mean, y, xerr=sd, fmt="o", ms=4, color=colour, ecolor=colour, elinewidth=1.2, capsize=2, zorder=2)
    if isinstance(reference, str):
        chance = _mean_sd(np.concatenate([_values(rows, m, reference) for m in method_ids]))[0]
        if np.isfinite(chance):
            ax.axvline(chance, color="black", ls="--", lw=1, label="chance")
    elif reference is not None:
        ax.axvline(reference, color="black", ls="--", lw=1, label="threshold")
    ax.set_yticks(ys)
    if first:
        ax.set_yticklabels(method_titles, fontsize=6.5)
    else:
        ax.tick_params(axis="y", labelleft=False)
    ax.set_ylim(-0.6, len(method_ids) - 0.4)
    ax.set_title(title, fontsize=7.5)
    if flagged:
        _note(ax, rows, column, y=0.5)
    ax.tick_params(axis="x", labelsize=6)
    ax.grid(axis="x", alpha=0.3, lw=0.5)
    if reference is not None:
        ax.legend(fontsize=5.5, loc="best", frameon=False)


def evaluation_figure(
    rows: Sequence[dict[str, str]],
    curves: dict[str, np.ndarray],
    method_ids: Sequence[str],
    method_titles: Sequence[str],
    title: str = "",
) -> matplotlib.figure.Figure:
    """The figure for one slide.

    ``rows``: its ``evaluation.csv`` rows (strings, as read); ``curves``: ``"{method}:{kind}"`` →
    ``(N, K)`` curves, ``kind`` a curve kind of a metric (:meth:`slidegrad.metrics.Metric.curve_kinds`:
    deletion, insertion, road_morf, road_lerf) or its ``{kind}_chance`` (absent when no such metric ran),
    and ``"x:{kind}"`` → ``(K,)`` x positions where they are not evenly spaced on [0, 1];
    ``method_ids`` / ``method_titles``: the methods, in order.
    """
    rows = mark_uninformative(rows)
    columns = set(rows[0]) if rows else set()
    panels = [p for p in PANELS if p[0] in columns]
    kinds = [k for k in CURVE_XLABELS if any(key.endswith(f":{k}") for key in curves)]
    colours = method_colours(len(method_ids))
    n_cols = max(len(panels), 1)
    width = max(2.3 * n_cols + 1.0, 7.0)
    labels = sorted({r["class_label"] for r in rows})
    curve_rows: list[str | None] = labels if 1 <= len(labels) <= MAX_CLASS_ROWS else [None]
    panel_height = (0.32 * len(method_ids) + 1.1) * len(curve_rows)
    heights = ([_curve_row_height(len(method_ids)) * len(curve_rows)] if kinds else []) + ([panel_height] if panels else [])
    fig = plt.figure(figsize=(width, sum(heights) + 0.5), layout="constrained")
    parts = fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0] if heights else []
    index = 0
    if kinds:
        axes = parts[index].subplots(len(curve_rows), len(kinds), squeeze=False)
        for row_axes, label in zip(axes, curve_rows):
            for ax, kind in zip(row_axes, kinds):
                _curve_panel(ax, kind, curves, rows, label, method_ids, method_titles, colours)
        index += 1
    if panels:
        axes = parts[index].subplots(len(curve_rows), len(panels), squeeze=False, sharey=True)
        for row_axes, label in zip(axes, curve_rows):
            for i, (ax, (column, panel_title, reference)) in enumerate(zip(row_axes, panels)):
                if label is None:  # pooled: a baseline's column leaves out the uninformative classes
                    shown = [r for r in rows if not is_flagged(r, column)]
                    who = "uninformative classes left out: " if len(shown) < len(rows) else ""
                else:
                    shown, who = [r for r in rows if r["class_label"] == label], f"class {label}: "
                _metric_panel(ax, shown, column, who + panel_title, reference, method_ids, method_titles, colours, i == 0)
    if title:
        fig.suptitle(f"{title}: faithfulness of the maps ({len(rows) // max(len(method_ids), 1)} tiles)", fontsize=9)
    return fig
