"""Vanilla gradients (Simonyan et al. 2014): the class logit's gradient at the image itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...methods import Method


def vanilla(engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None) -> Any:
    """``(N, H, W, C)`` gradients of the class logit w.r.t. ``x`` (``(N, H, W, C)``), batched by the budget."""
    ops = engine.ops
    n, *shape = x.shape

    def point(tile: np.ndarray, step: np.ndarray) -> Any:
        return ops.gather(x, ops.tensor(tile, "int64"))

    return engine.path_sum(n, 1, classes, point, None, tuple(shape), ops.dtype(x))
