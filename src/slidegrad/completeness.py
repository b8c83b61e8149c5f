"""IG's completeness check: how far a map's total is from the class score's change along its path.

For a path method from ``baseline`` to ``x``, ``Σ attributions = f(x) − f(baseline)`` in exact
arithmetic (Sundararajan et al. 2017); the quadrature's error shows in

    ``|Σ attributions − (f(x) − f(baseline))| / |f(x) − f(baseline)|``

with ``f`` the class logit (the output the backends differentiate).  Defined for the path methods, those
whose declaration names where their path starts (:attr:`~slidegrad.methods.Method.path_start`: ``black``,
zeros; ``blurred``, the image blurred at the last σ); ``None`` for the others, for SmoothGrad and where
``f(x) = f(baseline)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from . import batching
from .methods import METHODS, Method

if TYPE_CHECKING:
    from .engines.base import ClassScores

FORWARD_CHUNK = 32  # images per forward pass of the score check, unless the caller sizes it


def _black(params: dict[str, Any], image: np.ndarray) -> np.ndarray:
    return np.zeros_like(image)


def _blurred(params: dict[str, Any], image: np.ndarray) -> np.ndarray:
    """The image blurred at Blur IG's last σ (``max_sigma``, or its square root with ``sqrt``)."""
    from scipy.ndimage import gaussian_filter

    sigma = np.sqrt(params["max_sigma"]) if params["sqrt"] else float(params["max_sigma"])
    return gaussian_filter(image, sigma=[sigma, sigma, 0], mode="constant")


PATH_STARTS: dict[str, Callable[[dict[str, Any], np.ndarray], np.ndarray]] = {"black": _black, "blurred": _blurred}
""":attr:`~slidegrad.methods.Method.path_start` → ``(params, image)`` → the path's ``(H, W, C)`` start."""


def _method(method: str | Method) -> Method | None:
    return METHODS.get(method) if isinstance(method, str) else method


def baseline(method: str | Method, params: dict[str, Any], image: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` start of ``method``'s path for ``image`` (zeros for a method without a declared start)."""
    spec = _method(method)
    start = spec.path_start if spec is not None and spec.path_start else "black"
    return PATH_STARTS[start](params, image)


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
    method: str | Method,
    params: dict[str, Any],
    smooth: bool = False,
    forward_batch: int = FORWARD_CHUNK,
    scores: ClassScores | None = None,
) -> list[float | None]:
    """Per tile of ``batch`` ``(N, H, W, C)``: the completeness error of its raw map ``raws[i]``.

    ``scores``: the class scores of the images and their path starts where the engine computed them
    (:attr:`~slidegrad.engines.base.EngineResult.scores`); else they come from ``backend.logits`` in forward
    batches of ``forward_batch`` images.  All ``None`` when the method has no path start (or with ``smooth``).
    """
    spec = _method(method)
    if smooth or spec is None or spec.path_start is None:
        return [None] * len(batch)
    if scores is not None:
        f_x, f_b = scores.at_input, scores.at_baseline
    else:
        f_x, f_b = _class_scores(backend, batch, classes, spec, params, forward_batch)
    return [
        completeness_error(float(np.sum(raw, dtype=np.float64)), float(a), float(b))
        for raw, a, b in zip(raws, f_x, f_b)
    ]


def _class_scores(
    backend: Any, batch: np.ndarray, classes: np.ndarray, method: Method, params: dict[str, Any], forward_batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` class logits of the images and of their path starts, in forward batches of ``forward_batch``."""
    starts = np.stack([baseline(method, params, image) for image in batch]).astype(np.float32)
    scores = []
    for part in (np.asarray(batch, np.float32), starts):
        chunks = batching.chunks(len(part), max(1, forward_batch))
        scores.append(np.concatenate([backend.logits(part[c.start : c.stop]) for c in chunks]))
    rows = np.arange(len(batch))
    return scores[0][rows, classes], scores[1][rows, classes]
