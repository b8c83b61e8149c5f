"""Guided integrated gradients (Kapishnikov et al. 2021) from a black baseline: PAIR's ``GuidedIG`` in its
float64 arithmetic, sequential over steps, vectorised over tiles."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...methods import Method

GUIDED_IG_EPSILON = 1e-9  # PAIR's EPSILON for math.isclose
MAX_GUIDED_IG_INNER = 100_000


def guided_integrated_gradients(
    engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None
) -> Any:
    """``(N, H, W, C)`` float32 Guided IG of ``x``; a tile whose gradients are NaN or inf ends as inf (refused)."""
    ops = engine.ops
    n = x.shape[0]
    shape = tuple(x.shape)
    x_in = ops.reshape(ops.cast(x, "float64"), (n, -1))
    base = ops.zeros_like(x_in)
    diff = x_in - base
    steps, fraction, max_dist = int(params["x_steps"]), float(params["fraction"]), float(params["max_dist"])
    kth = int(np.floor(fraction * (x_in.shape[1] - 1)))
    current = base + 0.0
    attr = ops.zeros_like(x_in)
    l1_total = ops.sum(ops.abs(x_in - base), 1)
    moving = l1_total > 0
    broken = moving & False  # rows whose gradients were NaN or inf: they stop, and end as inf
    nonzero = diff != 0
    for step in range(steps):
        engine.seen(n)
        grad_actual = ops.reshape(ops.cast(ops.grad(ops.reshape(ops.cast(current, "float32"), shape), classes), "float64"), (n, -1))
        grad = grad_actual
        alpha = (step + 1.0) / steps
        alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_min, x_max = base + diff * alpha_min, base + diff * alpha_max
        l1_target = l1_total * (1 - (step + 1) / steps)
        broken = broken | (ops.sum(ops.where(ops.abs(grad_actual) < ops.inf, 0.0, 1.0), 1) > 0)
        active = moving & ~broken
        for _ in range(MAX_GUIDED_IG_INNER):
            if not ops.any(active):
                break
            x_old = current
            x_alpha = ops.where(nonzero, (current - base) / ops.where(nonzero, diff, 1.0), alpha_max)
            current = ops.where(active[:, None] & (x_alpha < alpha_min), x_min, current)
            l1_current = ops.sum(ops.abs(current - x_in), 1)
            close = ops.abs(l1_target - l1_current) <= ops.maximum(
                GUIDED_IG_EPSILON * _pairwise_max(ops, l1_target, l1_current), GUIDED_IG_EPSILON
            )
            still = active & ~close
            grad = ops.where(current == x_max, ops.inf, grad)
            magnitude = ops.abs(grad)
            # gradients are float32 values: rank them in float32 (exact, and faster)
            threshold = ops.cast(ops.kth_smallest(ops.cast(magnitude, "float32"), kth), "float64")
            selected = (magnitude <= threshold[:, None]) & (grad != ops.inf)
            l1_s = ops.sum(ops.where(selected, ops.abs(current - x_max), 0.0), 1)
            gamma = ops.where(l1_s > 0, (l1_current - l1_target) / ops.where(l1_s > 0, l1_s, 1.0), ops.inf)
            jump = ops.where(selected, x_max, current)
            partial = ops.where(selected, current + (x_max - current) * gamma[:, None], current)
            moved = ops.where((gamma > 1.0)[:, None], jump, partial)
            current = ops.where(still[:, None], moved, current)
            # rows that closed in this round moved only by the clamp; the rest by clamp + step
            attr = attr + ops.where(active[:, None], (current - x_old) * grad_actual, 0.0)
            active = still & (gamma > 1.0)
    return ops.reshape(ops.cast(ops.where(broken[:, None], ops.inf, attr), "float32"), shape)


def _pairwise_max(ops: Any, a: Any, b: Any) -> Any:
    a, b = ops.abs(a), ops.abs(b)
    return ops.where(a > b, a, b)
