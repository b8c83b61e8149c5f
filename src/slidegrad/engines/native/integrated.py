"""Integrated gradients (Sundararajan et al. 2017) from a black baseline, with a choice of quadrature rule
and adaptive steps (tiles whose completeness error exceeds a tolerance rerun with twice the steps)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ...completeness import completeness_error
from ...errors import check
from ...methods import INTEGRATION_RULES, Method
from ..base import ClassScores
from .protocol import MethodOutput


def integrated_gradients(
    engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None, baseline: Any = None
) -> MethodOutput:
    """``(N, H, W, C)`` IG from ``baseline`` (zeros): ``(x − baseline) · Σ_k w_k ∇f(baseline + α_k (x − baseline))``.

    ``params["integration"]``: a rule of :func:`quadrature` (``riemann_mean``, PAIR's, by default).
    ``params["tolerance"]`` > 0: adaptive steps (:func:`refine`).  The output's ``steps``: each tile's count.
    """
    ops = engine.ops
    baseline = ops.zeros_like(x) if baseline is None else baseline
    rule, steps = params.get("integration", "riemann_mean"), int(params["x_steps"])
    raw = ig_path(engine, x, classes, baseline, rule, steps)
    tolerance = float(params.get("tolerance", 0.0))
    if tolerance <= 0:
        return MethodOutput(raw, steps=np.full(int(x.shape[0]), steps))
    path = (x, classes, baseline, rule)
    return refine(engine, raw, path, steps, tolerance, int(params["max_steps"]))


def ig_path(engine: Any, x: Any, classes: Any, baseline: Any, rule: str, steps: int) -> Any:
    """IG with a fixed rule and step count, every tile batched over its (tile, step) items; ``(N, H, W, C)``."""
    ops = engine.ops
    nodes, weights = quadrature(rule, steps)
    alphas = ops.tensor(nodes.reshape(-1, 1, 1, 1), ops.dtype(x))
    diff = x - baseline

    def point(tile: np.ndarray, step: np.ndarray) -> Any:
        t = ops.tensor(tile, "int64")
        return ops.gather(baseline, t) + ops.gather(alphas, ops.tensor(step, "int64")) * ops.gather(diff, t)

    n, *shape = x.shape
    if rule == "riemann_mean":  # equal weights: PAIR's arithmetic (sum, then / steps)
        return engine.path_sum(n, steps, classes, point, None, tuple(shape), ops.dtype(x)) * diff / steps
    w = ops.tensor(weights.reshape(-1, 1, 1, 1), ops.dtype(x))

    def weight(tile: np.ndarray, step: np.ndarray, points: Any) -> Any:
        return ops.gather(w, ops.tensor(step, "int64"))

    return engine.path_sum(n, steps, classes, point, weight, tuple(shape), ops.dtype(x)) * diff


def refine(
    engine: Any, raw: Any, path: tuple[Any, Any, Any, str], steps: int, tolerance: float, max_steps: int
) -> MethodOutput:
    """Adaptive steps: tiles whose completeness error exceeds ``tolerance`` are recomputed with twice
    the steps (at most ``max_steps``) until they meet it.  ``path``: ``(x, classes, baseline, rule)``.

    The class scores of ``x`` and ``baseline`` cost two forward passes per tile; they are returned
    (the completeness inputs), with each tile's final step count.
    """
    ops = engine.ops
    x, classes, baseline, rule = path
    host_classes = ops.numpy(classes)
    rows = np.arange(int(x.shape[0]))
    scores = ClassScores(
        engine.logits(ops.numpy(x))[rows, host_classes], engine.logits(ops.numpy(baseline))[rows, host_classes]
    )
    delta = scores.at_input - scores.at_baseline
    out = ops.numpy(raw)
    tile_steps = np.full(len(rows), steps)

    def unmet(tiles: np.ndarray) -> np.ndarray:
        errors = [completeness_error(float(np.sum(out[t], dtype=np.float64)), float(delta[t]), 0.0) for t in tiles]
        return tiles[[e is not None and e > tolerance for e in errors]]

    pending = unmet(rows)
    while pending.size and steps < max_steps:
        steps = min(2 * steps, max_steps)
        index = ops.tensor(pending, "int64")
        subset = (ops.gather(x, index), ops.gather(classes, index), ops.gather(baseline, index))
        part = ig_path(engine, *subset, rule, steps)
        out[pending] = ops.numpy(part)
        tile_steps[pending] = steps
        pending = unmet(pending)
    return MethodOutput(ops.tensor(out, ops.dtype(x)), steps=tile_steps, scores=scores)


@functools.lru_cache(maxsize=16)
def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(nodes, weights)``, each ``(steps,)`` float64, of ``rule`` on [0, 1] (weights sum to 1).

    ``riemann_mean``: PAIR's ``linspace(0, 1, steps)`` with weights ``1/steps`` (exact on constants only;
    its error is O(1/steps)); ``trapezoid``: the same nodes, weights ``1/(steps − 1)`` with the two ends
    halved (exact on degree ≤ 1; one step is the midpoint); ``gauss_legendre``: Gauss–Legendre, exact on
    polynomials of degree ≤ ``2·steps − 1``.
    """
    check(steps >= 1, f"integration: steps must be ≥ 1, got {steps}")
    check(
        rule in INTEGRATION_RULES, f"integration: unknown rule {rule!r}; expected one of {', '.join(INTEGRATION_RULES)}"
    )
    if rule == "riemann_mean":
        return np.linspace(0, 1, steps), np.full(steps, 1.0 / steps)
    if rule == "trapezoid":
        if steps == 1:
            return np.array([0.5]), np.array([1.0])
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0, 1, steps), weights
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2
