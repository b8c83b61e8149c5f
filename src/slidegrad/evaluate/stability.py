"""Explanation stability: max-sensitivity (Yeh et al. 2019, "On the (in)fidelity and sensitivity of explanations").

:func:`max_sensitivity` perturbs each preprocessed tile ``x`` ``n`` times with
seeded uniform noise ``δ_i ~ U[-r, r]`` (every value independently) and returns,
per tile::

    max_i ||m(x + δ_i) − m(x)||_2 / ||m(x)||_2

The class explained is fixed to the unperturbed tile's class (the call's
``class_idx``, else the SaliencyMap's, else the unperturbed tile's argmax).

``m`` is, by default (``on="raw"``), the *raw* attribution (signed, no absolute
value, no normalisation, flattened), as Quantus' ``MaxSensitivity`` does by
default (``abs=False``, ``normalise=False``, Frobenius norms of the difference and
of the unperturbed attribution).  ``on="mask"`` measures the [0, 1] masks instead (a signed
method's, with ``signed=True`` among its options, in [−1, 1]).
Where ``||m(x)|| = 0`` the score is 0 if no perturbation changed the map, else inf.

Quantus' default noise is ``U[-0.2, 0.2]`` (its ``lower_bound``) in absolute
input units; here the default radius is 0.02 × the batch's value range
(``max − min`` over the whole batch), Yeh et al.'s and Captum's 0.02 for inputs in [0, 1].

The registry's ``stability`` metric (:mod:`slidegrad.metrics`) computes through :func:`stability_result`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ..errors import check, is_int
from ..methods import get_method
from ..metrics import MetricInputs, MetricResult
from .inputs import preprocessed_batch

DEFAULT_N = 10
DEFAULT_RELATIVE_RADIUS = 0.02
"""The default radius, as a fraction of the batch's value range (max − min)."""


def default_radius(batch: np.ndarray) -> float:
    """:data:`DEFAULT_RELATIVE_RADIUS` × the batch's value range."""
    batch = np.asarray(batch)
    return DEFAULT_RELATIVE_RADIUS * float(batch.max() - batch.min())


def perturbations(shape: tuple[int, ...], n: int, radius: float, seed: int = 0) -> np.ndarray:
    """The noise :func:`max_sensitivity` adds: ``(N, n, H, W, C)`` float32 ~ U[-radius, radius].

    ``shape``: the batch's ``(N, H, W, C)``; drawn from ``numpy.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    return rng.uniform(-radius, radius, size=(shape[0], n, *shape[1:])).astype(np.float32)


def max_sensitivity(
    saliency_map: Any,
    batch: np.ndarray,
    method: str,
    n: int = DEFAULT_N,
    radius: float | None = None,
    seed: int = 0,
    class_idx: Any = None,
    on: str = "raw",
    method_options: dict[str, Any] | None = None,
    **params: Any,
) -> np.ndarray:
    """Max-sensitivity of ``method``'s maps: ``(N,)`` float64 (a float for one ``(H, W, 3)`` tile).

    ``saliency_map``: a :class:`~slidegrad.saliency.SaliencyMap`.  ``batch``: preprocessed
    channels-last float tiles ``(N, H, W, 3)``.  ``n``: perturbations per tile.  ``radius``:
    the noise's half-width in preprocessed units (``None``: :func:`default_radius`).
    ``seed``: the noise's seed (:func:`perturbations`).  ``class_idx``: as for
    :meth:`SaliencyMap.get`, resolved once on the unperturbed tiles.  ``on``: ``"raw"``
    (default) or ``"mask"`` (see the module docstring).  ``params``: the method's parameters
    (and ``smooth=``); ``method_options``: more of them as a dict, e.g. a smooth method's own
    ``seed`` (which ``seed=`` here does not set).

    All tiles and their ``n`` perturbed copies, ``N·(n + 1)`` images, go to one
    :meth:`SaliencyMap.attributions` call (held in host memory at once).
    """
    from ..saliency import SaliencyMap

    check(
        isinstance(saliency_map, SaliencyMap),
        f"saliency_map: expected a slidegrad SaliencyMap, got {type(saliency_map).__name__}",
    )
    spec = get_method(method)
    params = {**(method_options or {}), **params}
    check(is_int(n) and n >= 1, f"n: expected a positive int, got {n!r}")
    check(is_int(seed), f"seed: expected an int, got {seed!r}")
    check(on in ("raw", "mask"), f"on: expected 'raw' or 'mask', got {on!r}")
    single = isinstance(batch, np.ndarray) and batch.ndim == 3
    batch = preprocessed_batch(batch)
    if radius is None:
        radius = default_radius(batch)
    check(
        isinstance(radius, numbers.Real) and not isinstance(radius, bool) and math.isfinite(radius) and radius >= 0,
        f"radius: expected a finite number >= 0, got {radius!r}",
    )

    n_tiles = len(batch)
    classes = saliency_map.resolve_classes(batch, class_idx)
    noisy = batch[:, None] + perturbations(batch.shape, n, float(radius), seed)  # (N, n, H, W, C)
    images = np.concatenate([batch, noisy.reshape(n_tiles * n, *batch.shape[1:])])
    image_classes = np.concatenate([classes, np.repeat(classes, n)])
    masks, raws = saliency_map.attributions(images, spec.name, class_idx=image_classes, **params)
    maps = masks if on == "mask" else np.stack([np.asarray(r) for r in raws])
    maps = maps.reshape(len(images), -1).astype(np.float64)
    base, perturbed = maps[:n_tiles], maps[n_tiles:].reshape(n_tiles, n, -1)
    numerators = np.linalg.norm(perturbed - base[:, None], axis=-1).max(axis=1)
    denominators = np.linalg.norm(base, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(denominators > 0, numerators / np.where(denominators > 0, denominators, 1), 0.0)
    scores = np.where((denominators == 0) & (numerators > 0), np.inf, scores)
    return float(scores[0]) if single else scores


# -- the metric's unit (slidegrad.metrics): stability -------------------------------------------------
def stability_result(inputs: MetricInputs) -> MetricResult:
    """``max_sensitivity`` ``(N,)`` ≥ 0 (lower is more stable) of the method's raw attribution under
    ``evaluate.perturbations`` (``n`` copies, ``radius``), noise seeded with ``evaluate.seed``."""
    noise, seed = inputs.settings["perturbations"], inputs.settings["seed"]
    scores = max_sensitivity(
        inputs.scorer, inputs.batch, inputs.method.name, noise["n"], noise["radius"], seed, inputs.classes,
        method_options=inputs.method_options,
    )  # fmt: skip
    return MetricResult({"max_sensitivity": scores})
