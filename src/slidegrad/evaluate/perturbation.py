"""Perturbation metrics of saliency masks: deletion / insertion curves and the pointing ratio.

Deletion (Petsiuk et al., RISE) removes a tile's pixels in the mask's order —
most salient first — and follows the explained class's probability; a good
mask makes it fall fast (low AUC).  Insertion starts from a baseline and puts
the pixels back in the same order; a good mask makes it rise fast (high AUC).
:func:`random_order_deletion_insertion` gives each tile's chance level: the
same curves in a seeded random pixel order.

Pixels are ordered by ``np.argsort(-mask.ravel(), kind="stable")``: descending,
ties in row-major order.  Step ``k`` of ``steps`` (``k = 0..steps``) acts on the
first ``round(k·H·W/steps)`` pixels (Python's ``round``).  All
``N × 2 × (steps + 1)`` perturbed tiles are built in chunks and scored in model
batches sized by the native engine's memory budget.

The registry's ``deletion``, ``insertion`` and ``pointing`` metrics (:mod:`slidegrad.metrics`)
compute through :func:`deletion_result`, :func:`insertion_result`, :func:`pointing_result` and
their ``*_chance`` functions, at the end of this module.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import check, is_int
from ..metrics import MetricInputs, MetricResult
from .scoring import TileScorer

BASELINES = ("white", "black", "blur", "mean", "reference")
ORDERS = ("mask", "random")


# -- argument checks ---------------------------------------------------------------------------
def _check_tiles(tiles: Any) -> np.ndarray:
    tiles = np.asarray(tiles)
    check(
        tiles.ndim == 4 and tiles.shape[-1] == 3 and tiles.shape[0] > 0 and tiles.shape[1] > 0 and tiles.shape[2] > 0,
        f"tiles: expected (N, H, W, 3) RGB tiles, got shape {tiles.shape}",
    )
    check(tiles.dtype == np.uint8, f"tiles: expected dtype uint8 (raw RGB, not preprocessed), got {tiles.dtype}")
    return tiles


def _check_masks(masks: Any, shape: tuple[int, ...], name: str = "masks") -> np.ndarray:
    masks = np.asarray(masks)
    check(
        masks.dtype == bool or np.issubdtype(masks.dtype, np.integer) or np.issubdtype(masks.dtype, np.floating),
        f"{name}: expected real numbers, got dtype {masks.dtype}",
    )
    check(masks.shape == shape, f"{name}: expected shape {shape} to match the tiles, got {masks.shape}")
    masks = masks.astype(np.float64)
    bad = np.flatnonzero(np.isnan(masks).reshape(len(masks), -1).any(axis=1))
    check(bad.size == 0, f"{name}: NaN in the mask(s) of tile(s) {', '.join(map(str, bad[:8]))}")
    return masks


def _check_number(value: Any, name: str, low: float, high: float | None = None, closed_high: bool = True) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value) and value > low
    if ok and high is not None:
        ok = value <= high if closed_high else value < high
    bounds = f"> {low}" if high is None else f"in ({low}, {high}{']' if closed_high else ')'}"
    check(ok, f"{name}: expected a number {bounds}, got {value!r}")
    return float(value)


# -- pixel orders and perturbed tiles ----------------------------------------------------------
def pixel_order(mask: np.ndarray) -> np.ndarray:
    """Flat pixel indices of ``mask`` by descending value, ties in row-major order (a stable sort)."""
    return np.argsort(-np.asarray(mask, np.float64).ravel(), kind="stable")


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """``(steps + 1,)`` pixels acted on at each step: ``round(k · n_pixels / steps)``."""
    return np.array([round(k * n_pixels / steps) for k in range(steps + 1)], np.int64)


def baseline_tiles(
    tiles: np.ndarray, baseline: str = "white", sigma: float = 8.0, reference: np.ndarray | None = None
) -> np.ndarray:
    """The baseline of each ``(N, H, W, 3)`` uint8 tile: white 255, black 0, its Gaussian blur, its mean colour,
    or (``reference``) the given ``(N, H, W, 3)`` uint8 ``reference`` tiles."""
    tiles = _check_tiles(tiles)
    check(baseline in BASELINES, f"baseline: unknown baseline {baseline!r}; expected one of {', '.join(BASELINES)}")
    sigma = _check_number(sigma, "sigma", 0.0)
    if baseline == "reference":
        check(
            reference is not None,
            "reference: baseline 'reference' needs reference tiles (N, H, W, 3) uint8, one per tile "
            "(e.g. tiles of the slide the model gives another class); got None",
        )
        reference = np.asarray(reference)
        check(
            reference.shape == tiles.shape and reference.dtype == np.uint8,
            f"reference: expected uint8 tiles of shape {tiles.shape}, got {reference.dtype} {reference.shape}",
        )
        return reference
    if baseline == "white":
        return np.full_like(tiles, 255)
    if baseline == "black":
        return np.zeros_like(tiles)
    if baseline == "mean":
        means = np.rint(tiles.reshape(len(tiles), -1, 3).mean(axis=1))
        return np.broadcast_to(means[:, None, None, :], tiles.shape).astype(np.uint8)
    from scipy.ndimage import gaussian_filter

    out = np.empty_like(tiles)
    for n in range(len(tiles)):
        for c in range(3):
            blurred = gaussian_filter(tiles[n, :, :, c].astype(np.float64), sigma)
            out[n, :, :, c] = np.clip(np.rint(blurred), 0, 255)
    return out


def _resolve_classes(class_idx: Any, n: int, n_classes: int | None) -> np.ndarray | None:
    """``(N,)`` int64 class indices, or ``None`` for each tile's predicted class."""
    if class_idx is None:
        return None
    values = np.asarray(class_idx, dtype=object)
    check(values.ndim <= 1, f"class_idx: expected an int or one per tile, got shape {values.shape}")
    check(
        all(is_int(v) for v in values.ravel()),
        f"class_idx: expected an int or one int per tile, got {class_idx!r}",
    )
    check(
        values.ndim == 0 or len(values) == n, f"class_idx: {values.size} values for {n} tiles; give one or one per tile"
    )
    classes = np.broadcast_to(values.astype(np.int64), (n,)).copy()
    if n_classes is not None:
        for c in np.unique(classes):
            check(0 <= c < n_classes, f"class_idx: {int(c)} is out of range; the model has {n_classes} classes")
    return classes


def _curve_probabilities(
    score: TileScorer, tiles: np.ndarray, base: np.ndarray, ranks: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """``(N, 2, steps + 1, K)`` probabilities: deletion (0) and insertion (1) at every step.

    Item ``i`` is tile ``i // (2 (steps + 1))``, curve ``(i // (steps + 1)) % 2``, step ``i % (steps + 1)``;
    its pixels with ``rank < counts[step]`` come from the baseline (deletion) or the tile (insertion).
    """
    n, h, w, _ = tiles.shape
    n_steps = len(counts)
    per_tile = 2 * n_steps
    total = n * per_tile
    size = score.chunk((h, w, 3), total)
    parts = []
    for start in range(0, total, size):
        items = np.arange(start, min(start + size, total))
        tile, curve, step = items // per_tile, (items // n_steps) % 2, items % n_steps
        acted = (ranks[tile] < counts[step][:, None, None])[..., None]  # (B, H, W, 1)
        deleted = np.where(acted, base[tile], tiles[tile])
        inserted = np.where(acted, tiles[tile], base[tile])
        batch = np.where((curve == 0)[:, None, None, None], deleted, inserted)
        parts.append(score(batch))
    probs = np.concatenate(parts)
    return probs.reshape(n, 2, n_steps, probs.shape[-1])


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid rule over ``x_k = k / steps`` in [0, 1], per row."""
    steps = curves.shape[1] - 1
    return (curves[:, :-1] + curves[:, 1:]).sum(axis=1) / (2.0 * steps)


def deletion_insertion(
    model: Any,
    tiles: np.ndarray,
    masks: np.ndarray | None,
    class_idx: Any = None,
    steps: int = 20,
    baseline: str = "white",
    sigma: float = 8.0,
    device: str = "auto",
    memory_budget: int | None = None,
    seed: int | None = None,
    order: str = "mask",
    reference: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Deletion and insertion curves of ``masks`` for raw ``(N, H, W, 3)`` uint8 ``tiles``.

    ``model``: a :class:`~slidegrad.model.LoadedModel` (scored after its own preprocessing,
    :func:`~slidegrad.model.get_preprocess_fn`, on ``device``, batches capped by
    ``memory_budget`` bytes) or a :class:`~slidegrad.saliency.SaliencyMap` of one (its backend
    and native engine are reused; ``device`` is then unused).  ``masks``: ``(N, H, W)``.

    Pixels go most-salient first (ties in row-major order); step ``k`` of ``steps`` acts on the
    first ``round(k·H·W/steps)`` of them.  Deletion replaces them with the ``baseline``'s pixels;
    insertion starts from the baseline and puts the tile's pixels back.  ``baseline``: ``white``
    (255, glass), ``black`` (0), ``blur`` (Gaussian, ``sigma`` px, per channel, rounded) or
    ``mean`` (the tile's mean colour, rounded) or ``reference`` (the raw uint8 ``(N, H, W, 3)``
    ``reference`` tiles, one per tile, stain-normalised as the tiles are;
    :mod:`slidegrad.evaluate.reference` chooses them in the workflow).

    Scores are the softmax probability of ``class_idx`` (an int or one per tile; ``None``: each
    tile's predicted class on the unmodified tile).  ``order="random"`` orders each tile's pixels
    by ``np.random.default_rng(seed).permutation(H·W)`` drawn tile after tile (``seed`` ``None``
    means 0; ``masks`` may be ``None``) — the chance level.

    Returns ``deletion_auc``, ``insertion_auc`` ``(N,)``; ``deletion_curve``, ``insertion_curve``
    ``(N, steps + 1)`` (x = k / steps; AUC by the trapezoid rule over [0, 1]); ``class_idx`` ``(N,)``.
    """
    tiles = _check_tiles(tiles)
    n, h, w, _ = tiles.shape
    check(order in ORDERS, f"order: unknown order {order!r}; expected one of {', '.join(ORDERS)}")
    check(is_int(steps) and steps >= 1, f"steps: expected an int >= 1, got {steps!r}")
    check(baseline in BASELINES, f"baseline: unknown baseline {baseline!r}; expected one of {', '.join(BASELINES)}")
    _check_number(sigma, "sigma", 0.0)
    check(seed is None or is_int(seed), f"seed: expected an int or None, got {seed!r}")
    if order == "mask":
        check(masks is not None, "masks: expected (N, H, W) masks for order='mask', got None")
        masks = _check_masks(masks, (n, h, w))
        orders = [pixel_order(m) for m in masks]
    else:
        if masks is not None:
            _check_masks(masks, (n, h, w))
        rng = np.random.default_rng(0 if seed is None else seed)
        orders = [rng.permutation(h * w) for _ in range(n)]

    score = TileScorer(model, device, memory_budget)
    tiles = score.normalize(tiles)
    classes = _resolve_classes(class_idx, n, score.backend.class_count(score.preprocess(tiles[:1])))
    ranks = np.empty((n, h * w), np.int64)
    for i, o in enumerate(orders):
        ranks[i, o] = np.arange(h * w)
    counts = step_counts(h * w, int(steps))
    if baseline == "reference" and reference is not None:
        reference = score.normalize(baseline_tiles(tiles, "reference", sigma, reference))
    base = baseline_tiles(tiles, baseline, sigma, reference)
    probs = _curve_probabilities(score, tiles, base, ranks.reshape(n, h, w), counts)
    if classes is None:
        classes = probs[:, 0, 0].argmax(axis=1).astype(np.int64)  # deletion step 0 is the unmodified tile
    picked = probs[np.arange(n), :, :, classes]  # (N, 2, steps + 1)
    deletion, insertion = picked[:, 0].astype(np.float64), picked[:, 1].astype(np.float64)
    return {
        "deletion_auc": curve_auc(deletion),
        "insertion_auc": curve_auc(insertion),
        "deletion_curve": deletion,
        "insertion_curve": insertion,
        "class_idx": classes,
    }


def random_order_deletion_insertion(model: Any, tiles: np.ndarray, seed: int = 0, **options: Any) -> dict[str, np.ndarray]:
    """:func:`deletion_insertion` in a seeded random pixel order per tile: each tile's chance level.

    ``options``: :func:`deletion_insertion`'s other keywords (``class_idx``, ``steps``, ``baseline``, ...).
    """
    return deletion_insertion(model, tiles, None, seed=seed, order="random", **options)


# -- ground truth --------------------------------------------------------------------------------
def pointing_ratio(masks: np.ndarray, truth: np.ndarray, top: float = 0.1) -> np.ndarray:
    """``(N,)``: share of each mask's top ``top`` fraction of pixels inside ``truth``, over the tile's truth share.

    The top pixels are the first ``max(1, round(top·H·W))`` in the mask's stable descending order
    (ties in row-major order).  1 is chance, ``1 / truth share`` is perfect; NaN where the tile's
    ``truth`` (boolean ``(N, H, W)``) has no pixel.
    """
    truth = np.asarray(truth)
    check(
        truth.ndim == 3 and truth.shape[1] > 0 and truth.shape[2] > 0,
        f"truth: expected boolean (N, H, W) masks, got shape {truth.shape}",
    )
    check(truth.dtype == bool, f"truth: expected dtype bool, got {truth.dtype}")
    masks = _check_masks(masks, truth.shape)
    top = _check_number(top, "top", 0.0, 1.0)
    n, h, w = truth.shape
    k = max(1, round(top * h * w))
    flat = truth.reshape(n, -1)
    out = np.full(n, np.nan)
    for i in range(n):
        share = flat[i].mean()
        if share > 0:
            out[i] = flat[i][pixel_order(masks[i])[:k]].mean() / share
    return out


def dab_truth(tiles: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Boolean DAB masks ``(N, H, W)``: ``skimage.color.rgb2hed(tile)[..., 2] > threshold`` per uint8 tile."""
    from skimage.color import rgb2hed

    tiles = _check_tiles(tiles)
    check(
        isinstance(threshold, numbers.Real) and not isinstance(threshold, bool) and np.isfinite(threshold),
        f"threshold: expected a finite number, got {threshold!r}",
    )
    return np.stack([rgb2hed(tile)[..., 2] > threshold for tile in tiles])


def ground_truth(source: str, tiles: np.ndarray, slide: str, names: Sequence[str], dab_threshold: float) -> np.ndarray:
    """Boolean ``(N, H, W)`` truth masks: ``dab`` (rgb2hed DAB > ``dab_threshold``), or a folder's
    ``{slide}/{tile}.png`` (non-zero pixels are inside; any channel of an RGB mask)."""
    from PIL import Image

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


# -- the metrics' units (slidegrad.metrics): deletion, insertion, pointing ------------------------
CURVE_KINDS = ("deletion", "insertion")


def _curve_options(inputs: MetricInputs) -> dict[str, Any]:
    settings = inputs.settings
    options = {key: settings[key] for key in ("steps", "baseline", "sigma")}
    if settings["baseline"] == "reference":
        from .reference import reference_images

        options["reference"] = reference_images(inputs)
    return {"class_idx": inputs.classes, **options}


def _curves(inputs: MetricInputs) -> dict[str, np.ndarray]:
    """The method's deletion and insertion curves, computed once for both metrics."""
    options = _curve_options(inputs)
    return inputs.once("deletion_insertion", lambda: deletion_insertion(inputs.scorer, inputs.tiles, inputs.masks, **options))


def _chance_curves(inputs: MetricInputs) -> dict[str, np.ndarray]:
    """The random-order curves of the explained classes, computed once for both metrics."""
    seed = inputs.settings["seed"]
    return inputs.once(
        "random_order_deletion_insertion",
        lambda: random_order_deletion_insertion(inputs.scorer, inputs.tiles, seed, **_curve_options(inputs)),
        per="classes",
    )


def _curve_result(curves: dict[str, np.ndarray], kind: str, column: str) -> MetricResult:
    """``kind``'s AUC as ``column``, and both curves (the figure draws each that is saved)."""
    return MetricResult({column: curves[f"{kind}_auc"]}, {k: curves[f"{k}_curve"] for k in CURVE_KINDS})


def deletion_result(inputs: MetricInputs) -> MetricResult:
    """``deletion_auc`` ``(N,)`` in [0, 1] (lower is better) and the curves ``(N, steps + 1)``."""
    return _curve_result(_curves(inputs), "deletion", "deletion_auc")


def deletion_chance(inputs: MetricInputs) -> MetricResult:
    """``deletion_chance``: the deletion AUC in a seeded random pixel order."""
    return _curve_result(_chance_curves(inputs), "deletion", "deletion_chance")


def insertion_result(inputs: MetricInputs) -> MetricResult:
    """``insertion_auc`` ``(N,)`` in [0, 1] (higher is better) and the curves ``(N, steps + 1)``."""
    return _curve_result(_curves(inputs), "insertion", "insertion_auc")


def insertion_chance(inputs: MetricInputs) -> MetricResult:
    """``insertion_chance``: the insertion AUC in a seeded random pixel order."""
    return _curve_result(_chance_curves(inputs), "insertion", "insertion_chance")


def load_ground_truth(inputs: MetricInputs) -> np.ndarray:
    """The chunk's boolean ``(N, H, W)`` ground truth (``evaluate.ground_truth``), read once."""
    settings = inputs.settings
    return inputs.once(
        "ground_truth",
        lambda: ground_truth(settings["ground_truth"], inputs.tiles, inputs.slide, inputs.names, settings["dab_threshold"]),
        per="chunk",
    )


def pointing_result(inputs: MetricInputs) -> MetricResult:
    """``pointing_ratio`` ``(N,)`` (:func:`pointing_ratio` at ``evaluate.top``; NaN without truth pixels)."""
    return MetricResult({"pointing_ratio": pointing_ratio(inputs.masks, load_ground_truth(inputs), inputs.settings["top"])})


def pointing_chance(inputs: MetricInputs) -> MetricResult:
    """``pointing_chance``: 1 by definition (NaN where the tile has no truth pixel)."""
    truth = load_ground_truth(inputs)
    return MetricResult({"pointing_chance": np.where(truth.reshape(len(truth), -1).any(axis=1), 1.0, np.nan)})
