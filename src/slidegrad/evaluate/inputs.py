"""Argument checks the evaluation functions share."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import check


def preprocessed_batch(batch: Any, min_side: int = 1, why: str = "") -> np.ndarray:
    """``batch`` as ``(N, H, W, 3)`` float32 preprocessed tiles (one ``(H, W, 3)`` tile becomes N = 1).

    Tiles must be at least ``min_side`` px on each side (``why``: what needs it) and finite.
    """
    check(isinstance(batch, np.ndarray), f"batch: expected a numpy array, got {type(batch).__name__}")
    if batch.ndim == 3:
        batch = batch[None]
    check(
        batch.ndim == 4 and batch.shape[-1] == 3 and len(batch) > 0,
        f"batch: expected preprocessed tiles (N, H, W, 3) or one (H, W, 3), got shape {batch.shape}",
    )
    check(
        np.issubdtype(batch.dtype, np.floating),
        f"batch: expected preprocessed float tiles, got {batch.dtype} (apply sg.get_preprocess_fn(model) first)",
    )
    check(
        min(batch.shape[1:3]) >= min_side,
        f"batch: tiles of {batch.shape[1]}×{batch.shape[2]} px are too small{why}; need at least {min_side}",
    )
    check(bool(np.isfinite(batch).all()), "batch: holds NaN or inf values")
    return batch.astype(np.float32, copy=False)
