"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022).

Pixels are removed by **noisy linear imputation** instead of a fixed baseline, so a removed region
carries no shape of its own for the model to read (the "class information leakage" of a constant
fill): each removed pixel becomes the weighted mean of its 8 neighbours (weights 1/6 orthogonal,
1/12 diagonal; neighbours outside the tile drop out and the remaining weights are used unnormalised,
as the paper's reference code does), solved for all removed pixels of a tile at once as one sparse
linear system (one right-hand side per channel), plus Gaussian noise of std ``noise`` (0.01).
Imputation acts on the tile as the model sees it: the preprocessed tensor.

Removal sets are thresholds on the mask, as pytorch-grad-cam 1.5.7's ``RemoveMostRelevantFirst``:
at percentile ``p``, MoRF removes the pixels with ``mask >= np.percentile(mask, p)`` (the top
``100 − p`` %, every pixel tied at the threshold included) and LeRF those with
``1 − mask >= np.percentile(1 − mask, p)`` (the bottom ``100 − p`` %), the mask in float32.  A tile
whose every pixel is removed (a constant mask) has no neighbour to impute from: it becomes its
per-channel mean, plus the noise.

Scores: the softmax probability of the explained class.  ``road_morf`` / ``road_lerf``: the mean
probability over the percentiles (10, 20, …, 90 as the paper's and pytorch-grad-cam's default);
``road = (road_lerf − road_morf) / 2``, pytorch-grad-cam's ``ROADCombined`` (its score differences
from the unmodified tile cancel in the difference).  Higher ``road`` is better.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import check, is_int
from ..metrics import MetricInputs, MetricResult
from .inputs import preprocessed_batch

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
NOISE = 0.01
# (row offset, column offset, weight) of the 8 neighbours
NEIGHBOURS = (
    (-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
    (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12),
)  # fmt: skip
ORDERS = ("morf", "lerf")


def linear_imputation(image: np.ndarray, removed: np.ndarray, noise: float = NOISE, rng: Any = None) -> np.ndarray:
    """``image`` ``(H, W, C)`` with its ``removed`` ``(H, W)`` bool pixels imputed (float64).

    Each removed pixel solves ``Σ_valid w · x_i = Σ_neighbours w · x_j`` (known neighbours' values,
    unknown ones as variables): one sparse system, ``C`` right-hand sides.  ``noise`` > 0 adds
    ``noise · rng.standard_normal((C, n_removed))`` (transposed; removed pixels in row-major order);
    ``rng``: a numpy Generator (needed when ``noise`` > 0).
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    h, w, c = image.shape
    flat = np.asarray(image, np.float64).reshape(-1, c)
    out = flat.copy()
    removed_flat = np.asarray(removed, bool).ravel()
    index = np.flatnonzero(removed_flat)
    n = index.size
    if n == 0:
        return out.reshape(h, w, c)
    if n == h * w:  # nothing known to impute from
        values = np.broadcast_to(flat.mean(axis=0), (n, c)).copy()
    else:
        variable = np.full(h * w, -1, np.int64)
        variable[index] = np.arange(n)
        rows, cols = np.divmod(index, w)
        weight_sum = np.zeros(n)
        rhs = np.zeros((n, c))
        a_rows, a_cols, a_vals = [np.arange(n)], [np.arange(n)], []
        for dr, dc, weight in NEIGHBOURS:
            r, q = rows + dr, cols + dc
            inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
            weight_sum[inside] += weight
            equation = np.flatnonzero(inside)
            neighbour = r[inside] * w + q[inside]
            unknown = removed_flat[neighbour]
            a_rows.append(equation[unknown])
            a_cols.append(variable[neighbour[unknown]])
            a_vals.append(np.full(int(unknown.sum()), weight))
            rhs[equation[~unknown]] -= weight * flat[neighbour[~unknown]]
        entries = (np.concatenate([-weight_sum, *a_vals]), (np.concatenate(a_rows), np.concatenate(a_cols)))
        matrix = csc_matrix(entries, shape=(n, n))
        values = np.asarray(spsolve(matrix, rhs)).reshape(n, c)
    if noise > 0:
        values = values + noise * rng.standard_normal((c, n)).T
    out[index] = values
    return out.reshape(h, w, c)


def removal_sets(mask: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """``(2, P, H, W)`` bool: the pixels MoRF (0) and LeRF (1) remove at each percentile (see the module)."""
    mask = np.asarray(mask, np.float32)
    inverse = np.float32(1) - mask
    out = np.empty((2, len(percentiles), *mask.shape), bool)
    for k, p in enumerate(percentiles):
        out[0, k] = ~(mask < np.percentile(mask, p))
        out[1, k] = ~(inverse < np.percentile(inverse, p))
    return out


def removed_fractions(percentiles: Sequence[float]) -> np.ndarray:
    """``(P + 1,)`` nominal fractions removed: 0 (the unmodified tile), then ``1 − p / 100`` ascending."""
    return np.concatenate([[0.0], np.sort(1.0 - np.asarray(percentiles, np.float64) / 100.0)])


def _check_percentiles(percentiles: Any) -> tuple[float, ...]:
    values = list(percentiles) if isinstance(percentiles, (list, tuple)) else None
    ok = bool(values) and all(
        isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p < 100 for p in values
    ) and len(set(values)) == len(values)
    check(ok, f"percentiles: expected distinct numbers in (0, 100), e.g. {list(PERCENTILES)}, got {percentiles!r}")
    return tuple(float(p) for p in values)


def road(
    model: Any,
    batch: np.ndarray,
    masks: np.ndarray | None,
    class_idx: Any = None,
    percentiles: Sequence[float] = PERCENTILES,
    noise: float = NOISE,
    seed: int = 0,
    device: str = "auto",
    memory_budget: int | None = None,
    order: str = "mask",
) -> dict[str, np.ndarray]:
    """ROAD of ``masks`` ``(N, H, W)`` on preprocessed float ``batch`` ``(N, H, W, 3)`` (the model's input).

    ``model``: a ``LoadedModel`` or a ``SaliencyMap`` of one (scored through the native engine, batched
    under ``memory_budget``).  ``class_idx``: an int, one per tile, or ``None`` (each tile's predicted
    class).  ``noise``: the imputation noise's std in preprocessed units (0: none), drawn from
    ``np.random.default_rng(seed)`` tile after tile, MoRF then LeRF, percentiles in the given order.
    ``order="random"``: the masks are ``default_rng(seed + 1)`` uniform maps (the chance level; ``masks`` unused).

    Returns ``road_morf``, ``road_lerf``, ``road`` ``(N,)``; ``morf_curve``, ``lerf_curve`` ``(N, P + 1)``
    (probability at :func:`removed_fractions`: the unmodified tile, then increasing removal);
    ``fractions`` ``(P + 1,)``; ``class_idx`` ``(N,)``.
    """
    from .perturbation import _check_masks, _resolve_classes
    from .scoring import TileScorer

    batch = preprocessed_batch(batch)
    n, h, w, _ = batch.shape
    percentiles = _check_percentiles(percentiles)
    check(
        isinstance(noise, (int, float)) and not isinstance(noise, bool) and np.isfinite(noise) and noise >= 0,
        f"noise: expected a number >= 0, got {noise!r}",
    )
    check(is_int(seed), f"seed: expected an int, got {seed!r}")
    check(order in ("mask", "random"), f"order: unknown order {order!r}; expected mask or random")
    if order == "mask":
        check(masks is not None, "masks: expected (N, H, W) masks for order='mask', got None")
        masks = _check_masks(masks, (n, h, w)).astype(np.float32)
    else:
        masks = np.random.default_rng(int(seed) + 1).random((n, h, w)).astype(np.float32)
    score = TileScorer(model, device, memory_budget)
    start = score.probabilities(batch)
    classes = _resolve_classes(class_idx, n, start.shape[1])
    if classes is None:
        classes = start.argmax(axis=1).astype(np.int64)
    probs = _imputed_probabilities(score, batch, masks, percentiles, float(noise), np.random.default_rng(seed))
    picked = probs[np.arange(n), :, :, classes].astype(np.float64)  # (N, 2, P)
    ascending = np.argsort(1.0 - np.asarray(percentiles) / 100.0, kind="stable")
    first = start[np.arange(n), classes].astype(np.float64)[:, None]
    morf, lerf = picked[:, 0].mean(axis=1), picked[:, 1].mean(axis=1)
    return {
        "road_morf": morf,
        "road_lerf": lerf,
        "road": (lerf - morf) / 2.0,
        "morf_curve": np.concatenate([first, picked[:, 0, ascending]], axis=1),
        "lerf_curve": np.concatenate([first, picked[:, 1, ascending]], axis=1),
        "fractions": removed_fractions(percentiles),
        "class_idx": classes,
    }


def _imputed_probabilities(
    score: Any, batch: np.ndarray, masks: np.ndarray, percentiles: Sequence[float], noise: float, rng: Any
) -> np.ndarray:
    """``(N, 2, P, K)`` probabilities of the imputed tiles (item order: tile, MoRF/LeRF, percentile),
    built and scored a model batch at a time."""
    n, h, w, c = batch.shape
    per_tile = 2 * len(percentiles)
    total = n * per_tile
    size = score.chunk((h, w, c), total)
    parts, sets, current = [], None, -1
    for start in range(0, total, size):
        items = []
        for item in range(start, min(start + size, total)):
            tile, rest = divmod(item, per_tile)
            if tile != current:
                sets, current = removal_sets(masks[tile], percentiles), tile
            which, k = divmod(rest, len(percentiles))
            items.append(linear_imputation(batch[tile], sets[which, k], noise, rng))
        parts.append(score.probabilities(np.stack(items).astype(np.float32)))
    probs = np.concatenate(parts)
    return probs.reshape(n, 2, len(percentiles), probs.shape[-1])


# -- the metric's unit (slidegrad.metrics: road) ----------------------------------------------------
def _options(inputs: MetricInputs) -> dict[str, Any]:
    settings = inputs.settings
    return {
        "class_idx": inputs.classes, "percentiles": settings["road_percentiles"], "noise": settings["road_noise"],
        "seed": settings["seed"],
    }  # fmt: skip


def _result(values: dict[str, np.ndarray], columns: dict[str, np.ndarray]) -> MetricResult:
    """``columns`` and the MoRF / LeRF curves, at their removed fractions."""
    curves = {"road_morf": values["morf_curve"], "road_lerf": values["lerf_curve"]}
    return MetricResult(columns, curves, {kind: values["fractions"] for kind in curves})


def road_result(inputs: MetricInputs) -> MetricResult:
    """``road_morf``, ``road_lerf`` (mean probabilities over the percentiles) and ``road`` ``(N,)``, and the curves."""
    values = road(inputs.scorer, inputs.batch, inputs.masks, **_options(inputs))
    return _result(values, {key: values[key] for key in ("road_morf", "road_lerf", "road")})


def road_chance(inputs: MetricInputs) -> MetricResult:
    """``road_chance``: ROAD of a seeded uniform random map, and ``road_chance_morf``, its mean MoRF probability
    (equal to the unmodified tile's where imputation changes nothing: :class:`~slidegrad.metrics.Flat`);
    its curves are the chance curves."""
    values = road(inputs.scorer, inputs.batch, None, order="random", **_options(inputs))
    return _result(values, {"road_chance": values["road"], "road_chance_morf": values["road_morf"]})
