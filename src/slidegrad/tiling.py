"""Choosing tiles of a slide: tissue detection, ROI filtering, random and top-k selection.

The workflow calls these from one job per slide:

* :func:`tissue_mask` — Otsu's threshold on the thumbnail's saturation
  (Slideflow's ``qc.Otsu`` rule, see its docstring);
* :func:`tissue_tiles` — grid tiles (Slideflow geometry, :class:`~slidegrad.slide.WSI`)
  that are mostly tissue, optionally inside a level-0 ROI box;
* :func:`sample_tiles` — a seeded sample of those;
* :func:`score_tiles` — class probabilities of tiles, read and inferred in
  memory-bounded chunks;
* :func:`top_k_tiles` — the k most confident tiles of each predicted class.

Coordinates are always level-0 top-left ``(x, y)`` pixels, as
:meth:`WSI.grid_to_xy` returns and :meth:`WSI.read` takes; lists of tiles are
in row-major order (by ``y``, then ``x``).  Bad input raises
:class:`~slidegrad.errors.InputError` with one line naming the slide or
argument.  This module imports no deep-learning framework.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError, is_int
from .slide import WSI

__all__ = ["tissue_mask", "tissue_tiles", "sample_tiles", "score_tiles", "top_k_tiles"]

MEDIAN_KERNEL = 7  # Slideflow's qc.Otsu: cv2.medianBlur(saturation, 7)
MAX_READ_TILES = 256  # score_tiles never holds more tiles than this on the host at once




def _name(wsi: WSI) -> str:
    return f"slide '{wsi.path}'"


# --------------------------------------------------------------------------
# tissue
# --------------------------------------------------------------------------


def _saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of a uint8 RGB image as uint8 0..255, as OpenCV's ``COLOR_RGB2HSV`` computes it.

    ``S = round(255 * (max - min) / max)`` over R, G, B; 0 where ``max == 0``.
    """
    rgb = rgb.astype(np.int32)
    high = rgb.max(axis=-1)
    low = rgb.min(axis=-1)
    sat = np.zeros(high.shape, np.float64)
    np.divide(255.0 * (high - low), high, out=sat, where=high > 0)
    return np.rint(sat).astype(np.uint8)


def tissue_mask(wsi: WSI, max_size: int = 1024) -> tuple[np.ndarray, float]:
    """Boolean tissue mask of the slide's thumbnail, and its scale.

    The rule follows Slideflow's ``slideflow.slide.qc.Otsu`` (thumbnail → HSV →
    median blur of the saturation channel with a 7×7 kernel → Otsu), in
    numpy/scikit-image instead of OpenCV:

    1. ``thumb = wsi.thumbnail(max_size)``: uint8 RGB, longer side ≤ ``max_size``;
    2. saturation ``S = round(255 · (max(R,G,B) − min(R,G,B)) / max(R,G,B))``
       (0 for black), uint8 — OpenCV's HSV ``S`` channel;
    3. ``S`` is median-filtered with a 7×7 window, edges replicated
       (``scipy.ndimage.median_filter(size=7, mode="nearest")``, like
       ``cv2.medianBlur(S, 7)``);
    4. ``t = skimage.filters.threshold_otsu(S_blurred)``;
    5. **tissue = ``S_blurred > t``** (strictly more saturated than the
       threshold; Slideflow's ``THRESH_BINARY_INV`` marks ``S <= t`` as background).

    White or grey background has low saturation; stained tissue (H&E, IHC) is
    more saturated, and unlike a grayscale threshold this does not take dark
    but unstained debris, shadows or black margins for tissue.  When the
    blurred saturation is uniform (a blank slide: Otsu is undefined) the mask
    is all False: no tissue.  As in Slideflow, a slide with background only
    but noisy saturation is still split in two by Otsu's threshold.

    Returns
    -------
    mask:
        bool ``(h, w)``, True = tissue, one entry per thumbnail pixel.
    scale:
        Level-0 pixels per thumbnail pixel along x, ``dimensions[0] / w``.
        (Along y it is ``dimensions[1] / h``; the two differ only by the
        thumbnail's rounding to whole pixels.)
    """
    from scipy.ndimage import median_filter
    from skimage.filters import threshold_otsu

    thumb = wsi.thumbnail(max_size)
    sat = median_filter(_saturation(thumb), size=MEDIAN_KERNEL, mode="nearest")
    if sat.min() == sat.max():
        mask = np.zeros(sat.shape, bool)
    else:
        mask = sat > threshold_otsu(sat)
    return mask, wsi.dimensions[0] / mask.shape[1]


def _check_roi(wsi: WSI, roi: Any) -> tuple[int, int, int, int]:
    width, height = wsi.dimensions
    expected = f"expected (x0, y0, x1, y1) level-0 pixel integers with 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
    try:
        values = tuple(roi)
    except TypeError:
        values = ()
    if len(values) != 4 or not all(is_int(v) for v in values):
        raise InputError(f"{_name(wsi)}: roi {roi!r} is not 4 integers; {expected}")
    x0, y0, x1, y1 = (int(v) for v in values)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"{_name(wsi)}: roi {roi!r} is empty (x1 <= x0 or y1 <= y0); {expected}")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise InputError(f"{_name(wsi)}: roi {roi!r} lies outside the slide ({width} x {height}); {expected}")
    return x0, y0, x1, y1


def _overlap(starts: np.ndarray, extent: int, n_pixels: int, scale: float) -> np.ndarray:
    """``(len(starts), n_pixels)``: level-0 length of ``[s, s + extent)`` inside each thumbnail pixel."""
    edges = np.arange(n_pixels + 1, dtype=np.float64) * scale
    lo = np.maximum(starts[:, None].astype(np.float64), edges[None, :-1])
    hi = np.minimum((starts + extent)[:, None].astype(np.float64), edges[None, 1:])
    return np.clip(hi - lo, 0.0, None)


def tissue_fractions(wsi: WSI, mask: np.ndarray) -> np.ndarray:
    """``(n_rows, n_cols)`` float: the tissue share of every grid tile's area on the thumbnail ``mask``.

    Each tile's level-0 square is laid over the thumbnail (pixel ``j`` spans
    ``[j·sx, (j+1)·sx)`` with ``sx = width / w``, likewise in y) and the mask
    is averaged weighted by the exact overlap area, so partly covered
    thumbnail pixels count in proportion.
    """
    n_cols, n_rows = wsi.grid_shape
    h, w = mask.shape
    width, height = wsi.dimensions
    step, size = wsi.stride_px, wsi.extract_px
    wx = _overlap(np.arange(n_cols) * step, size, w, width / w)
    wy = _overlap(np.arange(n_rows) * step, size, h, height / h)
    return (wy @ mask.astype(np.float64) @ wx.T) / float(size * size)


def tissue_tiles(
    wsi: WSI, roi: Sequence[int] | None = None, min_tissue: float = 0.5, max_size: int = 1024
) -> list[tuple[int, int]]:
    """Level-0 top-left ``(x, y)`` of every grid tile that is at least ``min_tissue`` tissue.

    The grid is Slideflow's (``wsi.grid_shape``, ``wsi.grid_to_xy``); a tile's
    tissue share is the area-weighted mean of :func:`tissue_mask` over the
    tile's square (:func:`tissue_fractions`).  ``min_tissue`` in [0, 1]
    (0 keeps every tile).  ``roi = (x0, y0, x1, y1)`` (level-0 pixels) keeps
    only tiles entirely inside the box: ``x0 <= x`` and ``x + extract_px <= x1``
    (likewise in y).  Row-major order (``y``, then ``x``).
    """
    box = None if roi is None else _check_roi(wsi, roi)
    if isinstance(min_tissue, bool) or not isinstance(min_tissue, numbers.Real) or not 0 <= min_tissue <= 1:
        raise InputError(f"{_name(wsi)}: min_tissue must be a number in [0, 1], got {min_tissue!r}")
    n_cols, n_rows = wsi.grid_shape
    if n_cols == 0 or n_rows == 0:
        return []
    mask, _ = tissue_mask(wsi, max_size)
    keep = tissue_fractions(wsi, mask) >= float(min_tissue)
    tiles = []
    size = wsi.extract_px
    for row, col in zip(*np.nonzero(keep)):  # np.nonzero walks row-major
        x, y = wsi.grid_to_xy(int(col), int(row))
        if box is not None:
            x0, y0, x1, y1 = box
            if not (x0 <= x and x + size <= x1 and y0 <= y and y + size <= y1):
                continue
        tiles.append((x, y))
    return tiles


def sample_tiles(tiles: list[tuple[int, int]], n: int, seed: int, name: str) -> list[tuple[int, int]]:
    """``n`` of the tissue ``tiles`` (:func:`tissue_tiles`) drawn without replacement, in row-major order.

    Drawn with ``numpy.random.default_rng(seed).choice(len(tiles), n, replace=False)``,
    so the same tiles, ``n`` and ``seed`` give the same sample.  With fewer
    than ``n`` tiles all are returned and a warning says so.  ``name`` (e.g.
    ``slide '…'``) starts the warning and the InputError for a bad ``n`` or ``seed``.
    """
    if not is_int(n) or n < 0:
        raise InputError(f"{name}: n must be an integer >= 0, got {n!r}")
    if not is_int(seed) or seed < 0:
        raise InputError(f"{name}: seed must be an integer >= 0, got {seed!r}")
    if len(tiles) <= n:
        if len(tiles) < n:
            warnings.warn(
                f"{name}: asked for {n} random tissue tiles but only {len(tiles)} exist; using all of them",
                stacklevel=2,
            )
        return list(tiles)
    chosen = np.random.default_rng(int(seed)).choice(len(tiles), size=int(n), replace=False)
    return [tiles[i] for i in np.sort(chosen)]


# --------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------


def score_tiles(
    backend: Any,
    wsi: WSI,
    coords: Sequence[tuple[int, int]],
    preprocess: Callable[[np.ndarray], np.ndarray],
    memory_budget: int | None = None,
) -> np.ndarray:
    """``(N, K)`` float32 class probabilities of the tiles at ``coords`` (level-0 top-left).

    Tiles are read with ``wsi.read(x, y)`` in chunks, each chunk preprocessed
    (``preprocess``: uint8 ``(n, H, W, 3)`` → float32 channels-last) and passed
    to the native engine's :meth:`~slidegrad.engines.native.NativeEngine.probabilities`,
    which splits it into forward batches under ``memory_budget`` bytes (None:
    half the free device memory).  A chunk is one such batch (at most
    :data:`MAX_READ_TILES` tiles), so memory stays bounded for any number of tiles.
    """
    from .engines.native import NativeEngine

    coords = list(coords)
    for i, c in enumerate(coords):
        if not isinstance(c, (tuple, list, np.ndarray)) or len(c) != 2 or not all(is_int(v) for v in c):
            raise InputError(f"{_name(wsi)}: coords[{i}] = {c!r} is not an (x, y) pair of integers")
    if not coords:
        return np.zeros((0, int(backend.n_classes)), np.float32)
    engine = NativeEngine(backend, memory_budget)
    shape = (wsi.tile_px, wsi.tile_px, 3)
    chunk = min(engine.item_batch(shape, len(coords)), MAX_READ_TILES)
    parts = []
    for start in range(0, len(coords), chunk):
        tiles = np.stack([wsi.read(int(x), int(y)) for x, y in coords[start : start + chunk]])
        batch = np.asarray(preprocess(tiles), np.float32)
        parts.append(np.asarray(engine.probabilities(batch), np.float32))
    return np.concatenate(parts)


def top_k_tiles(
    coords: Sequence[tuple[int, int]],
    probs: np.ndarray,
    k: int,
    labels: Sequence[str] | None = None,
    min_distance: int = 0,
    tile_width: int | None = None,
) -> list[dict[str, Any]]:
    """The ``k`` most confident tiles of each class, one row per tile.

    A tile counts only for its predicted class, ``argmax(probs[i])`` (the
    lowest class index on a tie), so it appears at most once.  For class
    ``c`` the tiles predicted as ``c`` are ranked by ``probs[:, c]``, highest
    first; equal scores go in row-major order of their coordinates (smaller
    ``y``, then smaller ``x``).  Rows come class by class (0, 1, …), each
    ``{"x", "y", "class_idx": c, "label": labels[c] (or str(c)), "score": probs[i, c]}``.
    A class with fewer than ``k`` predicted tiles keeps those it has, with a warning.

    ``min_distance`` (an integer >= 0, in tile widths; ``tile_width``: the tiles'
    level-0 side, ``WSI.extract_px``) spreads the chosen tiles of the slide, of
    all classes together: no two are closer than ``min_distance`` tile widths,
    in Chebyshev distance ``max(|dx|, |dy|) / tile_width`` between their corners.
    1 keeps chosen tiles from overlapping (with ``stride_div`` > 1); 2 leaves at
    least one tile width between them.  Greedy: all tiles, each scored for its
    predicted class, go highest score first (ties row-major) and a tile is
    skipped when its class has ``k`` already or it lies closer than the distance
    to a tile chosen before it.  A class left with fewer than ``k`` keeps those,
    with a warning.  0 (the default) is the plain per-class top ``k``.
    """
    coords = list(coords)
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != len(coords) or probs.shape[1] < 1:
        raise InputError(
            f"top_k_tiles: probs must have shape (N, K) with N = {len(coords)} tiles, got {probs.shape}"
        )
    if not np.issubdtype(probs.dtype, np.number) or not np.all(np.isfinite(probs)):
        raise InputError("top_k_tiles: probs must be finite numbers")
    if not is_int(k) or k < 1:
        raise InputError(f"top_k_tiles: k must be an integer >= 1, got {k!r}")
    if not is_int(min_distance) or min_distance < 0:
        raise InputError(f"top_k_tiles: min_distance must be an integer >= 0 (tile widths), got {min_distance!r}")
    if min_distance and (not is_int(tile_width) or tile_width < 1):
        raise InputError(f"top_k_tiles: min_distance needs tile_width, the tiles' level-0 side in px, got {tile_width!r}")
    for i, c in enumerate(coords):
        if not isinstance(c, (tuple, list, np.ndarray)) or len(c) != 2 or not all(is_int(v) for v in c):
            raise InputError(f"top_k_tiles: coords[{i}] = {c!r} is not an (x, y) pair of integers")
    n_classes = probs.shape[1]
    if labels is not None:
        labels = [str(label) for label in labels]
        if len(labels) != n_classes:
            raise InputError(f"top_k_tiles: {len(labels)} labels for {n_classes} classes")
    names = [labels[c] if labels is not None else str(c) for c in range(n_classes)]
    predicted = probs.argmax(axis=1)
    members = {c: [i for i in range(len(coords)) if predicted[i] == c] for c in range(n_classes)}
    for c in members:
        members[c].sort(key=lambda i: (-float(probs[i, c]), int(coords[i][1]), int(coords[i][0])))
    if min_distance:
        chosen = _spread(coords, probs, predicted, k, int(min_distance) * int(tile_width))
        picked = {c: [i for i in chosen if predicted[i] == c] for c in range(n_classes)}
    else:
        picked = {c: members[c][:k] for c in range(n_classes)}
    rows: list[dict[str, Any]] = []
    for c in range(n_classes):
        for i in picked[c]:
            rows.append(
                {"x": int(coords[i][0]), "y": int(coords[i][1]), "class_idx": c, "label": names[c],
                 "score": float(probs[i, c])}  # fmt: skip
            )
    short = [f"'{names[c]}' ({len(members[c])})" for c in range(n_classes) if len(members[c]) < k]
    if short:
        warnings.warn(
            f"top_k_tiles: fewer than k={k} tiles are predicted as class {', '.join(short)}; keeping those",
            stacklevel=2,
        )
    spread_short = [
        f"'{names[c]}' ({len(picked[c])} of {len(members[c])})"
        for c in range(n_classes)
        if len(picked[c]) < min(k, len(members[c]))
    ]
    if spread_short:
        warnings.warn(
            f"top_k_tiles: min_distance={min_distance} tile widths leaves fewer than k={k} tiles of class "
            f"{', '.join(spread_short)}; keeping those",
            stacklevel=2,
        )
    return rows


def _spread(
    coords: Sequence[tuple[int, int]], probs: np.ndarray, predicted: np.ndarray, k: int, min_px: int
) -> list[int]:
    """Greedy choice for :func:`top_k_tiles` with a least distance: tile indices in choice order."""
    xy = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    score = probs[np.arange(len(coords)), predicted]
    order = sorted(range(len(coords)), key=lambda i: (-float(score[i]), int(xy[i, 1]), int(xy[i, 0])))
    taken = {c: 0 for c in range(probs.shape[1])}
    chosen: list[int] = []
    for i in order:
        c = int(predicted[i])
        if taken[c] >= k:
            continue
        if chosen and int(np.abs(xy[chosen] - xy[i]).max(axis=1).min()) < min_px:
            continue
        chosen.append(i)
        taken[c] += 1
        if all(n >= k for n in taken.values()):
            break
    return chosen
