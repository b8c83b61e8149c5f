"""IG's completeness check: how far a map's total is from the class score's change along its path.

For a path method from ``baseline`` to ``x``, ``Σ attributions = f(x) − f(baseline)`` in exact
arithmetic (Sundararajan et al. 2017); the quadrature's error shows in

    ``|Σ attributions − (f(x) − f(baseline))| / |f(x) − f(baseline)|``

with ``f`` the class logit (the output the backends differentiate).  Defined for
``integrated_gradients`` and ``guided_integrated_gradients`` (black baseline) and
``blur_integrated_gradients`` (baseline: the image blurred at the last σ); ``None`` for
the others, for SmoothGrad and where ``f(x) = f(baseline)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import batching

COMPLETENESS_METHODS = ("integrated_gradients", "guided_integrated_gradients", "blur_integrated_gradients")
FORWARD_CHUNK = 32  # images per forward pass of the score check, unless the caller sizes it


def baseline(method: str, params: dict[str, Any], image: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` start of ``method``'s path for ``image``: zeros, or (Blur IG) the most blurred image."""
    if method != "blur_integrated_gradients":
        return np.zeros_like(image)
    from scipy.ndimage import gaussian_filter

    sigma = np.sqrt(params["max_sigma"]) if params["sqrt"] else float(params["max_sigma"])
    return gaussian_filter(image, sigma=[sigma, sigma, 0], mode="constant")


def completeness_error(total: float, f_x: float, f_baseline: float) -> float | None:
    """``|total − Δ| / |Δ|`` with ``Δ = f_x − f_baseline``; ``None`` where ``Δ`` is 0 or not finite."""
    delta = f_x - f_baseline
    if not np.isfinite(delta) or delta == 0 or not np.isfinite(total):
        return None
    return float(abs(total - delta) / abs(delta))


def completeness_errors(
    backend: Any,
    batch: np.ndarray,
    classes: np.ndarray,
    raws: Sequence[np.ndarray],
    method: str,
    params: dict[str, Any],
    smooth: bool = False,
    forward_batch: int = FORWARD_CHUNK,
) -> list[float | None]:
    """Per tile of ``batch`` ``(N, H, W, C)``: the completeness error of its raw map ``raws[i]``.

    Class scores of the images and their baselines come from ``backend.logits`` in forward
    batches of ``forward_batch`` images; all ``None`` when the method has no completeness.
    """
    if smooth or method not in COMPLETENESS_METHODS:
        return [None] * len(batch)
    starts = np.stack([baseline(method, params, image) for image in batch]).astype(np.float32)
    scores = []
    for part in (np.asarray(batch, np.float32), starts):
        chunks = batching.chunks(len(part), max(1, forward_batch))
        scores.append(np.concatenate([backend.logits(part[c.start : c.stop]) for c in chunks]))
    rows = np.arange(len(batch))
    f_x, f_b = scores[0][rows, classes], scores[1][rows, classes]
    return [
        completeness_error(float(np.sum(raw, dtype=np.float64)), float(a), float(b))
        for raw, a, b in zip(raws, f_x, f_b)
    ]
