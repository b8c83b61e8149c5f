"""RISE (Petsiuk, Das & Saenko 2018): the class probability of the tile under random masks, each mask weighted
by it.  Forward passes only: ``n_masks`` per tile, batched across (mask, tile) items by the engine's budget.

The masks are the paper's reference code's: ``n_masks`` binary ``grid × grid`` grids whose cells are kept with
probability ``p``, upsampled bilinearly (``skimage.transform.resize(order=1, mode='reflect')``, done here as
row and column interpolation matrices) to ``(grid + 1) · ceil(H / grid)`` and cropped at a random shift in
``[0, cell)`` along each axis.  They are drawn once per call with ``numpy.random.default_rng(seed)`` (grids,
then shifts) and shared by every tile, so a tile's map does not depend on its batch or the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import batching
from ...methods import Method


@dataclass(frozen=True)
class RiseMasks:
    """The random masks of one call, kept coarse: ``grids`` ``(N, s, s)`` float32 of 0/1, ``shifts`` ``(N, 2)``
    (row, column) crop offsets, each in ``[0, cell)``; :meth:`masks` upsamples any of them."""

    grids: np.ndarray
    shifts: np.ndarray
    rows: np.ndarray  # (up_h, s) bilinear interpolation matrix of the rows
    cols: np.ndarray  # (up_w, s) of the columns
    shape: tuple[int, int]

    def masks(self, index: np.ndarray) -> np.ndarray:
        """``(len(index), H, W)`` float32 in [0, 1]: the masks ``index`` upsampled and cropped."""
        height, width = self.shape
        out = np.empty((len(index), height, width), np.float32)
        for j, i in enumerate(index):
            top, left = self.shifts[i]
            out[j] = self.rows[top : top + height] @ self.grids[i] @ self.cols[left : left + width].T
        return out


def interpolation_matrix(cells: int, size: int) -> np.ndarray:
    """``(size, cells)`` float64: linear interpolation of ``cells`` samples onto ``size`` pixels, pixel centres
    aligned and the edges mirrored, as ``skimage.transform.resize(order=1, mode='reflect')``."""
    pixel = np.arange(size)
    source = np.abs((pixel + 0.5) * cells / size - 0.5)  # mirrored about the first sample
    source = np.where(source > cells - 1, 2 * (cells - 1) - source, source)  # and about the last
    low = np.clip(np.floor(source).astype(int), 0, cells - 1)
    high = np.minimum(low + 1, cells - 1)
    weight = source - low
    matrix = np.zeros((size, cells))
    np.add.at(matrix, (pixel, low), 1 - weight)
    np.add.at(matrix, (pixel, high), weight)
    return matrix


def rise_masks(n_masks: int, grid: int, p: float, seed: int, shape: tuple[int, int]) -> RiseMasks:
    """The masks of a call for ``(H, W)`` tiles (see the module's docstring); the same for the same arguments."""
    rng = np.random.default_rng(seed)
    grids = (rng.random((n_masks, grid, grid)) < p).astype(np.float32)
    cells = [int(np.ceil(side / grid)) for side in shape]
    shifts = np.stack([rng.integers(0, cell, n_masks) for cell in cells], axis=1)
    rows, cols = (interpolation_matrix(grid, (grid + 1) * cell).astype(np.float32) for cell in cells)
    return RiseMasks(grids, shifts, rows, cols, shape)


def rise(engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None) -> Any:
    """``(N, H, W)`` RISE maps of ``x`` (``(N, H, W, C)``): ``Σ_i P(class | x ⊙ M_i) · M_i / (n_masks · p)``,
    ≥ 0 (at most ``1 / p``), with P the softmax probability of the explained class."""
    height, width = int(x.shape[1]), int(x.shape[2])
    n_masks, p = int(params["n_masks"]), float(params["p"])
    drawn = rise_masks(n_masks, int(params["grid"]), p, int(params["seed"]), (height, width))
    return masked_probability_sum(engine, x, classes, drawn.masks, n_masks) / (n_masks * p)


def masked_probability_sum(engine: Any, x: Any, classes: Any, masks_of: Any, n_masks: int) -> Any:
    """``(N, H, W)`` ``Σ_i P(class | x ⊙ M_i) · M_i`` over the masks ``masks_of(index)`` → ``(len(index), H, W)``,
    batched across (mask, tile) items by the budget, mask-major (each mask is upsampled about once)."""
    ops = engine.ops
    n, height, width, channels = (int(d) for d in x.shape)
    total = None
    for items in batching.chunks(n * n_masks, engine.item_batch((height, width, channels), n * n_masks)):
        k = np.arange(items.start, items.stop)
        mask, tile = k // n, k % n
        first = int(mask[0])
        block = ops.tensor(masks_of(np.arange(first, int(mask[-1]) + 1))[..., None])  # (masks, H, W, 1)
        tile_t = ops.tensor(tile, "int64")
        item_masks = ops.gather(block, ops.tensor(mask - first, "int64"))
        engine.seen(len(k))
        probs = ops.class_probabilities(ops.gather(x, tile_t) * item_masks, ops.gather(classes, tile_t))
        weighted = ops.reshape(ops.cast(probs, "float32"), (len(k), 1, 1, 1)) * item_masks
        part = ops.segment_sum(weighted, tile_t, n)
        total = part if total is None else total + part
    return ops.reshape(total, (n, height, width))
