"""Occlusion (Zeiler & Fergus 2014), as PAIR's ``saliency.core.Occlusion``: a ``size × size`` window of
``value`` slides over the tile; every pixel adds up ``f(x) − f(occluded)`` (the class logit) of the windows
covering it.  Forward passes only, batched across tiles and window positions by the engine's budget.

``stride`` 1 (PAIR's): every position, ``(H − size + 1) · (W − size + 1)`` per tile, each pixel the sum of its
windows' drops.  ``stride`` s > 1, a cheaper estimate of that map: the positions every s pixels plus the last one
(``H − size``, so every pixel is covered), ``≈ ((H − size) / s + 2)²`` per tile; each pixel gets the *mean* drop
of the windows covering it (Captum's ``Occlusion``) times the number of stride-1 windows that cover it (``size²``
away from the edges, fewer near them), an estimate of PAIR's sum.  The same formula is PAIR's sum at stride 1.
Not the plain sum: the number of strided windows covering a pixel varies with it (periodically where s does not
divide ``size``, and more near the last position), a grid pattern the model has no part in.  Not the plain mean
either: it lacks the sum's fall-off at the edges, so its maps are not comparable across strides (on the test
CNN with 16 px windows of 0.25, stride 8's mean correlated 0.006–0.56 with stride 1's mask, the estimate 0.95–0.98).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import batching
from ...errors import check
from ...methods import Method


def occlusion(
    engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None
) -> list[np.ndarray]:
    """``(H, W, C)`` float32 occlusion scores per tile of ``x`` (``(N, H, W, C)``), the same in every channel;
    positive where hiding the pixel lowers the class logit."""
    ops = engine.ops
    n, height, width, channels = (int(d) for d in x.shape)
    size, value, stride = int(params["size"]), float(params["value"]), int(params.get("stride", 1))
    check(
        size <= min(height, width),
        f"method occlusion: parameter 'size' must be at most the tile's side ({min(height, width)} px), got {size}",
    )
    check(
        stride <= size,
        f"method occlusion: parameter 'stride' must be at most 'size' ({size}, so windows cover every pixel), "
        f"got {stride}",
    )
    starts = window_starts(height, size, stride), window_starts(width, size, stride)
    rows, cols = len(starts[0]), len(starts[1])
    original = ops.numpy(engine.class_scores(x, classes)).astype(np.float64)
    drops = np.empty((n, rows * cols), np.float64)
    positions = rows * cols
    for items in batching.chunks(n * positions, engine.item_batch((height, width, channels), n * positions)):
        k = np.arange(items.start, items.stop)
        tile, where = k // positions, k % positions
        tile_t = ops.tensor(tile, "int64")
        hidden = ops.tensor(_windows(where, starts, size, (height, width)), "bool")
        occluded = ops.where(hidden, value, ops.gather(x, tile_t))
        scores = ops.numpy(engine.class_scores(occluded, ops.gather(classes, tile_t))).astype(np.float64)
        drops[tile, where] = original[tile] - scores
    coverage = _coverage(starts[0], size, height), _coverage(starts[1], size, width)
    return [_spread(d.reshape(rows, cols), coverage, size, channels) for d in drops]


def window_starts(side: int, size: int, stride: int) -> np.ndarray:
    """Where the windows start along one axis: every ``stride`` pixels, plus ``side − size`` if not already."""
    starts = np.arange(0, side - size + 1, stride)
    return starts if starts[-1] == side - size else np.append(starts, side - size)


def _windows(where: np.ndarray, starts: tuple[np.ndarray, np.ndarray], size: int, shape: tuple[int, int]) -> np.ndarray:
    """``(B, H, W, 1)`` bool: the window at each position ``where`` (row-major over the column starts)."""
    cols = len(starts[1])
    masks = np.zeros((len(where), *shape, 1), bool)
    for b, (row, col) in enumerate(zip(starts[0][where // cols], starts[1][where % cols])):
        masks[b, row : row + size, col : col + size] = True
    return masks


def _coverage(starts: np.ndarray, size: int, side: int) -> np.ndarray:
    """``(side, len(starts))`` float64: 1 where a pixel (row) lies in a window (column) along one axis."""
    pixels = np.arange(side)[:, None]
    return ((pixels >= starts[None, :]) & (pixels < starts[None, :] + size)).astype(np.float64)


def _spread(drops: np.ndarray, coverage: tuple[np.ndarray, np.ndarray], size: int, channels: int) -> np.ndarray:
    """``(H, W, C)`` float32: each pixel's mean of the ``drops`` ``(rows, cols)`` of the windows covering it, times
    the number of stride-1 windows covering it (at stride 1: the sum of its windows' drops), in float64; windows
    are separable (row coverage · drops · column coverageᵀ)."""
    by_rows, by_cols = coverage
    mean = (by_rows @ drops @ by_cols.T) / np.outer(by_rows.sum(1), by_cols.sum(1))
    every = [_coverage(window_starts(side, size, 1), size, side).sum(1) for side in (len(by_rows), len(by_cols))]
    total = mean * np.outer(*every)  # the stride-1 window count of each pixel
    return np.repeat(total[..., None], channels, axis=-1).astype(np.float32)
