"""Occlusion (Zeiler & Fergus 2014), as PAIR's ``saliency.core.Occlusion``: a ``size × size`` window of
``value`` slides over the tile at stride 1; every pixel adds up ``f(x) − f(occluded)`` (the class logit) of
the windows covering it.  Forward passes only, ``(H − size + 1) · (W − size + 1)`` per tile, batched across
tiles and window positions by the engine's budget."""

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
    size, value = int(params["size"]), float(params["value"])
    check(
        size <= min(height, width),
        f"method occlusion: parameter 'size' must be at most the tile's side ({min(height, width)} px), got {size}",
    )
    rows, cols = height - size + 1, width - size + 1
    original = ops.numpy(engine.class_scores(x, classes)).astype(np.float64)
    drops = np.empty((n, rows * cols), np.float64)
    positions = rows * cols
    for items in batching.chunks(n * positions, engine.item_batch((height, width, channels), n * positions)):
        k = np.arange(items.start, items.stop)
        tile, where = k // positions, k % positions
        tile_t = ops.tensor(tile, "int64")
        hidden = ops.tensor(_windows(where, cols, size, (height, width)), "bool")
        occluded = ops.where(hidden, value, ops.gather(x, tile_t))
        scores = ops.numpy(engine.class_scores(occluded, ops.gather(classes, tile_t))).astype(np.float64)
        drops[tile, where] = original[tile] - scores
    return [_spread(d.reshape(rows, cols), size, channels) for d in drops]


def _windows(where: np.ndarray, cols: int, size: int, shape: tuple[int, int]) -> np.ndarray:
    """``(B, H, W, 1)`` bool: the window at each position ``where`` (row-major over ``cols`` columns)."""
    masks = np.zeros((len(where), *shape, 1), bool)
    for b, (row, col) in enumerate(zip(where // cols, where % cols)):
        masks[b, row : row + size, col : col + size] = True
    return masks


def _spread(drops: np.ndarray, size: int, channels: int) -> np.ndarray:
    """``(H, W, C)`` float32: each pixel's sum of the ``drops`` ``(H − size + 1, W − size + 1)`` of the windows
    covering it (a box sum by cumulative sums, in float64)."""
    rows, cols = drops.shape
    padded = np.zeros((rows + 2 * size - 1, cols + 2 * size - 1))
    padded[size : size + rows, size : size + cols] = drops
    table = padded.cumsum(0).cumsum(1)
    box = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return np.repeat(box[..., None], channels, axis=-1).astype(np.float32)
