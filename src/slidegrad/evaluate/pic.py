"""Performance Information Curves (PIC): SIC and AIC of Kapishnikov et al. (XRAI, 2019), batched.

:func:`pic_metric` gives, for a batch of uint8 tiles and their saliency maps,
the same per-tile curves and AUCs as PAIR's
``saliency.metrics.pic.compute_pic_metric`` called once per tile, but scores
the images of all tiles together through the model in budget-sized batches
(:meth:`slidegrad.SaliencyMap.probabilities`) instead of one forward call per
image: first every tile's fully blurred image and original (PAIR's checks),
then every threshold image of the tiles that passed (PAIR blurs no more of a
tile it skips, nor does this).

Per tile, as PAIR does: the tile is blurred (linear interpolation from a
random ~1 % pixel seed, ``random_mask``); for each saliency threshold ``t``
the top-``t`` fraction of saliency pixels (``saliency >= quantile(1 - t)``)
plus the seed is kept and the rest interpolated.  Each image's information is
its lossless-WebP size (``estimate_image_entropy``), its score the softmax of
the class (SIC) or 1.0 when the model's top class is the class, else 0.0
(AIC).  Both are normalised between the fully blurred image and the original,
clipped to [0, 1]; with ``keep_monotonous`` the score only grows.  The points
(plus (0, 0) and (1, 1)) are linearly interpolated at ``num_data_points``
x-values in [0, 1) plus 1.0, and the AUC is the trapezoidal area.

Where PAIR raises ``ComputePicMetricError`` for a tile (the original scores
below ``min_pred_value``; the fully blurred image holds as much information as
the original; the fully blurred image already scores at least as high as the
original, e.g. for AIC when it is still predicted as the class) that tile's
AUC and curve are NaN and :attr:`PicResults.errors` holds PAIR's message; the
other tiles are unaffected.

The blurred images are PAIR's (``create_blurred_image``) exactly: one Delaunay
triangulation per image interpolates all channels at once instead of one per
channel, which gives the same values (the tests check the pixels).

PAIR's module calls ``np.trapz``, which numpy 2.4 removed; as
:mod:`slidegrad.engines.pair` does for Guided IG, PAIR's ``pic`` module sees a
numpy proxy whose ``trapz`` is ``np.trapezoid`` (the same function, renamed);
nothing else in the process is touched.

The registry's ``pic`` metric (:mod:`slidegrad.metrics`) computes through :func:`pic_result`
and :func:`pic_chance`, at the end of this module.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from saliency.metrics import pic as _pair_pic
from scipy import interpolate

from ..errors import InputError, check, is_int
from ..metrics import MetricInputs, MetricResult

__all__ = ["DEFAULT_THRESHOLDS", "PicResults", "blurred_image", "pic_metric", "random_masks"]

# PAIR's example thresholds (compute_pic_metric's docstring and notebook)
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75)
METRICS = ("sic", "aic")
_HOST_BYTES = 256 * 2**20  # preprocessed images held on the host per scoring call


class _NumpyWithTrapzCompat(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


if not hasattr(np, "trapz"):
    _compat_np = _NumpyWithTrapzCompat("numpy_trapz_compat")
    _compat_np.trapz = np.trapezoid  # type: ignore[attr-defined]
    _pair_pic.np = _compat_np


@dataclass
class PicResults:
    """Per-tile PIC results of :func:`pic_metric` (``N`` tiles, ``T`` thresholds, ``P`` = num_data_points).

    ``auc`` ``(N,)`` and ``curve_y`` ``(N, P + 1)`` are NaN for tiles PAIR would
    skip; ``errors[i]`` is then PAIR's ``ComputePicMetricError`` message, else None.
    ``predictions`` ``(N, T + 2)`` (fully blurred, each threshold, original) and
    ``entropies`` (same layout, bytes of lossless WebP); a skipped tile has only its
    first and last columns (its threshold images are never made, as in PAIR), NaN elsewhere.
    ``thresholds`` is PAIR's ``[0.0, *saliency_thresholds, 1.0]``; ``class_idx`` ``(N,)`` the
    class scored; ``random_mask`` ``(N, H, W)`` the seeds used.  ``probability_calls``: how many
    :meth:`~slidegrad.SaliencyMap.probabilities` calls scored the images (the ends of all tiles,
    then the threshold images; one call per 256 MiB of preprocessed images, each split into
    budget-sized forward passes).
    """

    metric: str
    auc: np.ndarray
    curve_x: np.ndarray
    curve_y: np.ndarray
    predictions: np.ndarray
    entropies: np.ndarray
    thresholds: np.ndarray
    class_idx: np.ndarray
    random_mask: np.ndarray
    errors: list[str | None]
    probability_calls: int = 0

    @property
    def valid(self) -> np.ndarray:
        """``(N,)`` bool: the tiles with a curve."""
        return np.array([e is None for e in self.errors], dtype=bool)

    def aggregate(self, method: str = "median") -> Any:
        """PAIR's ``aggregate_individual_pic_results`` over the valid tiles (``method``: 'median' or 'mean')."""
        check(method in ("median", "mean"), f"method: expected 'median' or 'mean', got {method!r}")
        check(bool(self.valid.any()), "aggregate: no tile has a PIC curve (see .errors)")
        results = [
            _pair_pic.PicMetricResult(
                curve_x=self.curve_x, curve_y=self.curve_y[i], blurred_images=[], predictions=list(self.predictions[i]),
                thresholds=list(self.thresholds), auc=float(self.auc[i]),
            )  # fmt: skip
            for i in np.flatnonzero(self.valid)
        ]
        return _pair_pic.aggregate_individual_pic_results(results, method=method)


def random_masks(n: int, height: int, width: int, fraction: float = 0.01, seed: int = 0) -> np.ndarray:
    """``(n, H, W)`` bool seeds as PAIR's ``generate_random_mask`` draws them (``int(H*W*fraction)`` pixels each),
    from ``np.random.default_rng(seed)`` rather than the global numpy state."""
    check(0.0 <= fraction <= 1.0, f"random_mask_fraction: expected a value in [0, 1], got {fraction!r}")
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, height, width), dtype=bool)
    for mask in masks:
        idx = rng.choice(height * width, replace=False, size=int(height * width * fraction))
        mask[np.unravel_index(idx, mask.shape)] = True
    return masks


def blurred_image(img: np.ndarray, pixel_mask: np.ndarray) -> np.ndarray:
    """PAIR's ``create_blurred_image(img, pixel_mask)`` (linear) for a uint8 ``(H, W, C)`` image.

    Same values: PAIR triangulates the kept pixels once per channel; here once for all channels.
    """
    pixel_mask = pixel_mask.copy()
    height, width = pixel_mask.shape
    pixel_mask[[0, 0, height - 1, height - 1], [0, width - 1, 0, width - 1]] = True
    if np.all(pixel_mask):
        return img.copy()
    mean_color = np.mean(img, axis=(0, 1))
    blurred = img * np.expand_dims(pixel_mask, axis=2).astype(np.float32)
    data_points = np.argwhere(pixel_mask > 0)
    unknown_points = np.argwhere(pixel_mask == 0)
    values = img[tuple(data_points.T)]  # (n, C)
    interp = interpolate.LinearNDInterpolator(data_points, values, fill_value=np.nan)(unknown_points)
    outside = np.isnan(interp)  # never with the corners kept, but PAIR fills those with the mean colour
    if outside.any():
        interp[outside] = np.broadcast_to(mean_color, interp.shape)[outside]
    blurred[tuple(unknown_points.T)] = interp
    return np.round(blurred).astype(img.dtype)


def _entropy(image: np.ndarray) -> int:
    return _pair_pic.estimate_image_entropy(image)


def _scoring_model(model: Any, preprocess: Callable | None, memory_budget: int | None):
    """The SaliencyMap that scores, the stain normaliser applied once to the tiles (the identity
    without one) and the preprocessing of each blurred tile."""
    from .. import saliency as _saliency
    from ..model import LoadedModel, get_preprocess_fn, load_model

    if isinstance(model, (str, Path)):
        model = load_model(model)
    sal = model if isinstance(model, _saliency.SaliencyMap) else None  # reuse its backend, device and engine
    if sal is not None:
        model = sal.model
    if preprocess is None:
        check(
            isinstance(model, LoadedModel),
            "preprocess: a bare model needs preprocess= (uint8 (N, H, W, 3) to float32); "
            "or pass a LoadedModel (sg.load_model)",
        )
        normalize, preprocess = get_preprocess_fn(model).normalize, get_preprocess_fn(model, stain_normalize=False)
    else:
        normalize = _unchanged
    check(callable(preprocess), f"preprocess: expected a function, got {type(preprocess).__name__}")
    if sal is None:
        sal = _saliency.SaliencyMap(model, memory_budget=memory_budget)
    return sal, normalize, preprocess


def _unchanged(tiles: np.ndarray) -> np.ndarray:
    return tiles


def _check_args(tiles, saliency, random_mask, thresholds, min_pred_value, keep_monotonous, num_data_points, metric):
    tiles = np.asarray(tiles)
    check(
        tiles.ndim == 4 and tiles.shape[-1] == 3 and len(tiles) > 0,
        f"tiles: expected uint8 (N, H, W, 3) with N >= 1, got shape {tiles.shape}",
    )
    check(tiles.dtype == np.uint8, f"tiles: expected uint8 images, got {tiles.dtype}")
    n, h, w = tiles.shape[:3]
    check(h >= 2 and w >= 2, f"tiles: expected at least 2×2 pixels, got {h}×{w}")
    saliency = np.asarray(saliency)
    check(saliency.shape == (n, h, w), f"saliency: expected shape {(n, h, w)} (one map per tile), got {saliency.shape}")
    check(
        np.issubdtype(saliency.dtype, np.number) and not np.issubdtype(saliency.dtype, np.complexfloating),
        f"saliency: expected real numbers, got {saliency.dtype}",
    )
    check(bool(np.isfinite(saliency).all()), "saliency: holds NaN or inf")
    if random_mask is not None:
        random_mask = np.asarray(random_mask)
        check(random_mask.dtype == bool, f"random_mask: expected a bool mask, got {random_mask.dtype}")
        check(
            random_mask.shape in ((h, w), (n, h, w)),
            f"random_mask: expected shape {(h, w)} or {(n, h, w)}, got {random_mask.shape}",
        )
        random_mask = np.broadcast_to(random_mask, (n, h, w))
    try:
        given = list(thresholds)
        values = np.asarray(given, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"saliency_thresholds: expected a sequence of fractions, got {thresholds!r}") from None
    check(
        values.ndim == 1 and len(values) > 0, f"saliency_thresholds: expected a non-empty 1-D sequence, got {given!r}"
    )
    check(
        bool(np.all((values >= 0) & (values <= 1))), f"saliency_thresholds: expected fractions in [0, 1], got {given!r}"
    )
    check(bool(np.all(np.diff(values) >= 0)), f"saliency_thresholds: expected ascending order, got {given!r}")
    check(
        isinstance(min_pred_value, (int, float, np.floating)) and not isinstance(min_pred_value, bool)
        and np.isfinite(min_pred_value),
        f"min_pred_value: expected a number, got {min_pred_value!r}",
    )  # fmt: skip
    check(
        isinstance(keep_monotonous, (bool, np.bool_)),
        f"keep_monotonous: expected True or False, got {keep_monotonous!r}",
    )
    check(
        is_int(num_data_points) and num_data_points > 0,
        f"num_data_points: expected a positive integer, got {num_data_points!r}",
    )
    check(metric in METRICS, f"metric: expected 'sic' or 'aic', got {metric!r}")
    return tiles, saliency, random_mask, given


def pic_metric(
    model: Any,
    tiles: np.ndarray,
    saliency: np.ndarray,
    class_idx: Any = None,
    random_mask: np.ndarray | None = None,
    saliency_thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    min_pred_value: float = 0.8,
    keep_monotonous: bool = True,
    num_data_points: int = 1000,
    metric: str = "sic",
    memory_budget: int | None = None,
    *,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    random_mask_fraction: float = 0.01,
    seed: int = 0,
) -> PicResults:
    """SIC or AIC of every tile, as PAIR's ``compute_pic_metric`` per tile, scored in batches.

    ``model``: a :class:`~slidegrad.model.LoadedModel` or a model path (its
    preprocessing is used), a :class:`~slidegrad.SaliencyMap` of one (its device
    and budget are reused), or a bare model with ``preprocess=``.
    ``tiles``: uint8 ``(N, H, W, 3)``; ``saliency``: ``(N, H, W)``, higher is
    more important (take ``abs`` first if that is meant).
    ``class_idx``: the class scored, an int (or outcome label) or one per tile;
    None: each original tile's predicted class.
    ``random_mask``: bool ``(H, W)`` or ``(N, H, W)`` seed of the fully blurred
    images; None draws ``random_mask_fraction`` of the pixels per tile from
    ``seed`` (returned in :attr:`PicResults.random_mask`).
    ``saliency_thresholds``, ``min_pred_value`` (PAIR's default 0.8),
    ``keep_monotonous``, ``num_data_points``: as in PAIR.
    ``metric``: ``'sic'`` (softmax of the class) or ``'aic'`` (1.0 when the top
    class is the class, else 0.0).  ``memory_budget``: bytes for the model's
    batches (:class:`~slidegrad.SaliencyMap`).
    """
    tiles, saliency, random_mask, thresholds = _check_args(
        tiles, saliency, random_mask, saliency_thresholds, min_pred_value, keep_monotonous, num_data_points, metric
    )
    n, h, w = tiles.shape[:3]
    if random_mask is None:
        random_mask = random_masks(n, h, w, random_mask_fraction, seed)
    sal, normalize, preprocess = _scoring_model(model, preprocess, memory_budget)
    tiles = normalize(tiles)  # blur the model's input, as the masks explain it
    classes = None
    if class_idx is not None:  # checked before the (slow) blurring
        classes = sal.resolve_classes(np.asarray(preprocess(tiles), np.float32), class_idx)

    n_img = len(thresholds) + 2  # fully blurred, thresholds, original
    scorer = _Scorer(sal, preprocess, np.zeros(0, np.int64) if classes is None else classes, metric)
    preds = np.full((n, n_img), np.nan, dtype=np.float32)
    entropies = np.full((n, n_img), np.nan)

    # 1. the fully blurred images and the originals of every tile: PAIR's checks
    ends = np.stack([blurred_image(tiles[i], random_mask[i]) for i in range(n)])
    entropies[:, 0] = [_entropy(im) for im in ends]
    entropies[:, -1] = [_entropy(im) for im in tiles]
    for part in _parts(n, 2 * h * w):
        probs = scorer.probabilities(np.concatenate([ends[part], tiles[part]]))
        m = len(probs) // 2
        if classes is None:  # each original tile's top class
            scorer.classes = np.concatenate([scorer.classes, probs[m:].argmax(axis=1)])
        preds[part, 0] = scorer.score(probs[:m], np.arange(part.start, part.stop))
        preds[part, -1] = scorer.score(probs[m:], np.arange(part.start, part.stop))
    errors: list[str | None] = [_skip_reason(preds[i], entropies[i], min_pred_value) for i in range(n)]

    # 2. every threshold's image of the tiles that passed, as many tiles per call as the host budget allows
    todo = [i for i in range(n) if errors[i] is None]
    for part in _parts(len(todo), len(thresholds) * h * w):
        group = todo[part]
        images = np.stack([_threshold_images(tiles[i], saliency[i], random_mask[i], thresholds) for i in group])
        for k, i in enumerate(group):
            entropies[i, 1:-1] = [_entropy(im) for im in images[k]]
        owners = np.repeat(group, len(thresholds))
        scores = scorer.score(scorer.probabilities(images.reshape(-1, h, w, 3)), owners)
        preds[group, 1:-1] = scores.reshape(len(group), -1)

    curve_x = np.append(np.linspace(start=0.0, stop=1.0, num=num_data_points, endpoint=False), 1.0)
    curve_y = np.full((n, num_data_points + 1), np.nan)
    auc = np.full(n, np.nan)
    for i in todo:
        curve_y[i] = np.append(_curve(preds[i], entropies[i], keep_monotonous, curve_x[:-1]), 1.0)
        auc[i] = np.trapezoid(curve_y[i], curve_x)
    return PicResults(
        metric=metric, auc=auc, curve_x=curve_x, curve_y=curve_y, predictions=preds, entropies=entropies,
        thresholds=np.array([0.0, *thresholds, 1.0]), class_idx=scorer.classes, random_mask=np.asarray(random_mask),
        errors=errors, probability_calls=scorer.calls,
    )  # fmt: skip


def _parts(n: int, pixels_per_item: int) -> list[slice]:
    """Slices of ``range(n)`` whose preprocessed float32 RGB images (``pixels_per_item`` each) fit the host budget."""
    size = max(1, _HOST_BYTES // (pixels_per_item * 3 * 4))
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


class _Scorer:
    """uint8 images → each one's score for its tile's class (SIC: softmax; AIC: top class is the class)."""

    def __init__(self, sal: Any, preprocess: Callable, classes: np.ndarray, metric: str) -> None:
        self.sal, self.preprocess, self.classes, self.metric = sal, preprocess, classes, metric
        self.calls = 0

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """``(M, K)`` for uint8 ``(M, H, W, 3)``: one SaliencyMap call, batched by its memory budget."""
        self.calls += 1
        return self.sal.probabilities(np.asarray(self.preprocess(images), dtype=np.float32))

    def score(self, probs: np.ndarray, owners: np.ndarray) -> np.ndarray:
        """``(M,)`` scores of ``probs`` rows, each for the class of its tile (``owners``)."""
        cls = self.classes[owners]
        if self.metric == "sic":
            return probs[np.arange(len(probs)), cls]
        return (probs.argmax(axis=1) == cls).astype(probs.dtype)


def _threshold_images(img: np.ndarray, smap: np.ndarray, seed_mask: np.ndarray, thresholds: list) -> np.ndarray:
    """``(T, H, W, 3)``: for each threshold, the top saliency fraction (and the seed) kept, the rest blurred."""
    out = np.empty((len(thresholds), *img.shape), dtype=img.dtype)
    for j, threshold in enumerate(thresholds):
        pixel_mask = np.logical_or(smap >= np.quantile(smap, 1 - threshold), seed_mask)
        out[j] = blurred_image(img, pixel_mask)
    return out


def _skip_reason(preds: np.ndarray, entropies: np.ndarray, min_pred_value: float) -> str | None:
    """PAIR's ComputePicMetricError message for a tile (checked in PAIR's order), or None."""
    original_pred, blurred_pred = preds[-1], preds[0]
    original_entropy, blurred_entropy = int(entropies[-1]), int(entropies[0])
    if original_pred < min_pred_value:
        return (
            "The model prediction score on the original image is lower than `min_pred_value`. Skip this image or "
            f"decrease the value of `min_pred_value` argument. min_pred_value = {min_pred_value}, the image "
            f"prediction = {original_pred}."
        )
    if blurred_entropy >= original_entropy:
        return (
            "The entropy in the completely blurred image is not lower than the entropy in the original image. "
            "Catch the error and exclude this image from evaluation. Blurred entropy: "
            f"{blurred_entropy}, original entropy {original_entropy}"
        )
    if blurred_pred >= original_pred:
        return (
            "The model prediction score on the completely blurred image is not lower than the score on the "
            "original image. Catch the error and exclude this image from the evaluation. Blurred score: "
            f"{blurred_pred}, original score {original_pred}"
        )
    return None


def _curve(preds: np.ndarray, entropies: np.ndarray, keep_monotonous: bool, xs: np.ndarray) -> np.ndarray:
    """PAIR's normalisation and interpolation of one tile's points at ``xs`` (without the final 1.0)."""
    blurred_pred, original_pred = preds[0], preds[-1]
    blurred_entropy, original_entropy = int(entropies[0]), int(entropies[-1])
    # in the predictions' own dtype, as PAIR's scalar arithmetic on them
    norm_pred = np.clip((preds[1:-1] - blurred_pred) / (original_pred - blurred_pred), 0.0, 1.0)
    norm_entropy = np.clip(
        (entropies[1:-1].astype(np.float64) - blurred_entropy) / (original_entropy - blurred_entropy), 0.0, 1.0
    )
    if keep_monotonous:
        norm_pred = np.maximum.accumulate(np.maximum(norm_pred, 0.0))
    x = np.append(norm_entropy, [0.0, 1.0])
    y = np.append(norm_pred.astype(np.float64), [0.0, 1.0])
    return np.asarray(interpolate.interp1d(x=x, y=y)(xs), dtype=np.float64)


# -- the metric's unit (slidegrad.metrics): pic -----------------------------------------------------
def _sic_aic(inputs: MetricInputs, saliency: np.ndarray, suffix: str) -> MetricResult:
    seed = inputs.settings["seed"]
    return MetricResult({
        f"{kind}{suffix}": pic_metric(inputs.scorer, inputs.tiles, saliency, inputs.classes, metric=kind, seed=seed).auc
        for kind in METRICS
    })  # fmt: skip


def pic_result(inputs: MetricInputs) -> MetricResult:
    """``sic`` and ``aic`` ``(N,)`` in [0, 1] (higher is better; NaN where PAIR would skip the tile)."""
    return _sic_aic(inputs, inputs.masks, "")


def pic_chance(inputs: MetricInputs) -> MetricResult:
    """``sic_chance`` and ``aic_chance``: the same of a uniform random map seeded with ``evaluate.seed``."""
    noise = np.random.default_rng(inputs.settings["seed"]).random(inputs.tiles.shape[:3])
    return _sic_aic(inputs, noise, "_chance")
