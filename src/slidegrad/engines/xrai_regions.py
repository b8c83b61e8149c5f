"""XRAI's regions and their greedy selection, fast and with PAIR's result.

Segments: PAIR's Felzenszwalb parameters (scales 50…1200, σ 0.8, min size 150
on a 224×224 resize scaled to [−1, 1]); each segment dilated with ``disk(5)``
— here inside its bounding box (± the radius) instead of over the whole image,
which gives the same mask.  Selection works on a sparse (segment × pixel)
matrix whose per-segment counts and sums are updated incrementally, instead of
re-scanning every mask each round.
"""

from __future__ import annotations

import numpy as np
from saliency.core import xrai as pair_xrai
from scipy import ndimage, sparse
from skimage.morphology import disk

DILATION_RADIUS = 5
MIN_PIXEL_DIFF = 50  # PAIR's experimental_params['min_pixel_diff']


def segments(image: np.ndarray) -> sparse.csr_matrix:
    """``(n_segments, H·W)`` boolean CSR matrix of PAIR's dilated Felzenszwalb segments for one image."""
    masks = pair_xrai._get_segments_felzenszwalb(image, dilation_rad=0)
    footprint = disk(DILATION_RADIUS)
    height, width = image.shape[:2]
    rows, cols = [], []
    for k, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            continue
        y0, y1 = max(ys.min() - DILATION_RADIUS, 0), min(ys.max() + DILATION_RADIUS + 1, height)
        x0, x1 = max(xs.min() - DILATION_RADIUS, 0), min(xs.max() + DILATION_RADIUS + 1, width)
        grown = ndimage.binary_dilation(mask[y0:y1, x0:x1], structure=footprint)
        gy, gx = np.nonzero(grown)
        rows.append(np.full(gy.size, k))
        cols.append((gy + y0) * width + gx + x0)
    data = np.ones(sum(r.size for r in rows), bool)
    return sparse.csr_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(len(masks), height * width))


def _density(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``values`` over ``mask`` as PAIR computes it (float32 mean of the selected pixels)."""
    return values[mask].mean() if mask.any() else -np.inf


def xrai_full(attr: np.ndarray, segs: sparse.csr_matrix, min_pixel_diff: int = MIN_PIXEL_DIFF) -> np.ndarray:
    """PAIR's full XRAI: greedily add the segment with the highest attribution density over uncovered pixels.

    Each segment's uncovered pixel count and attribution sum are kept up to date
    incrementally (only the columns of newly covered pixels are touched), so the
    whole selection costs about one pass over the segment matrix.
    ``attr`` ``(H, W)``; returns the XRAI map ``(H, W)`` float (each pixel: its region's gain).
    """
    shape = attr.shape
    flat = attr.ravel()
    by_pixel = segs.astype(np.float64).tocsc()
    counts = np.asarray(segs.sum(axis=1), np.float64).ravel()
    sums = segs.astype(np.float64) @ flat.astype(np.float64)
    alive = np.ones(segs.shape[0], bool)
    output = np.full(flat.shape, -np.inf)
    covered = np.zeros(flat.shape, bool)
    while True:
        alive &= counts >= min_pixel_diff
        if not alive.any():
            break
        gains = np.where(alive, sums / np.maximum(counts, 1), -np.inf)
        best = int(np.argmax(gains))  # first maximum, as PAIR's loop keeps the first strictly better
        pixels = segs.indices[segs.indptr[best] : segs.indptr[best + 1]]
        added = pixels[~covered[pixels]]
        mask = np.zeros(flat.shape, bool)
        mask[added] = True
        output[mask] = _density(flat, mask)
        covered[added] = True
        newly = by_pixel[:, added]
        counts -= np.asarray(newly.sum(axis=1)).ravel()
        sums -= newly @ flat[added].astype(np.float64)
        alive[best] = False
    uncomputed = output == -np.inf
    if uncomputed.any():
        output[uncomputed] = _density(flat, uncomputed)
    return output.reshape(shape)


def xrai_fast(attr: np.ndarray, segs: sparse.csr_matrix, min_pixel_diff: int = MIN_PIXEL_DIFF) -> np.ndarray:
    """PAIR's fast XRAI: rank segments once by density, then paint them in order over uncovered pixels."""
    shape = attr.shape
    flat = attr.ravel()
    output = np.full(flat.shape, -np.inf)
    covered = np.zeros(flat.shape, bool)
    counts = np.asarray(segs.sum(axis=1), np.float64).ravel()
    gains = np.where(counts > 0, (segs.astype(np.float64) @ flat.astype(np.float64)) / np.maximum(counts, 1), -np.inf)
    for k in np.argsort(-gains, kind="stable"):  # PAIR: sorted(..., key=-gain), a stable sort
        pixels = segs.indices[segs.indptr[k] : segs.indptr[k + 1]]
        added = pixels[~covered[pixels]]
        if added.size < min_pixel_diff:
            continue
        mask = np.zeros(flat.shape, bool)
        mask[added] = True
        output[mask] = _density(flat, mask)
        covered[pixels] = True
    uncomputed = output == -np.inf
    if uncomputed.any():
        output[uncomputed] = _density(flat, uncomputed)
    return output.reshape(shape)
