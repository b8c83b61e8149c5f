"""Blur integrated gradients (Xu et al. 2020): IG along a path of Gaussian blurs, the blurs on the device as
row and column operators that reproduce ``scipy.ndimage.gaussian_filter(mode='constant')``."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ...methods import Method

# Blur IG operators' dtype for float32 inputs; float32 operators measured 1.5e-3 relative L2 to PAIR (bar 1e-3)
BLUR_OPERATOR_DTYPE = "float64"


def blur_integrated_gradients(
    engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None
) -> Any:
    """Blur IG along Gaussian blurs σ = 0 … max_sigma (PAIR's defaults), blurs on the device; ``(N, H, W, C)``.

    Each step ``i`` is weighted by its own ``σ_{i+1} − σ_i``.  PAIR's BlurIG
    weights every member of a batch with the batch's *last* step (wrong with
    ``sqrt=True`` and ``batch_size > 1``); this computes the integral as written.
    Blur operators are cached per (size, σ schedule, dtype), in :data:`BLUR_OPERATOR_DTYPE`
    for float32 inputs (float64: float32 operators missed the 1e-3 parity bar) and float64 otherwise.
    """
    ops = engine.ops
    n, height, width, channels = x.shape
    steps, max_sigma, grad_step = int(params["steps"]), float(params["max_sigma"]), float(params["grad_step"])
    sigmas = sigma_schedule(steps, max_sigma, bool(params["sqrt"]))
    step_weights = ops.tensor((sigmas[1:] - sigmas[:-1]).reshape(-1, 1, 1, 1), "float64")
    out_dtype = ops.dtype(x)
    work = BLUR_OPERATOR_DTYPE if out_dtype == "float32" else "float64"
    rows, cols = blur_operators(engine, tuple(sigmas[:-1]), grad_step, (height, width), work)
    x_work = ops.cast(x, work)

    def blurred(which: int, tile: np.ndarray, step: np.ndarray) -> Any:
        """SciPy's order (axis 0, then 1), each pass stored in the image's dtype; in float64 SciPy's arithmetic."""
        s = ops.tensor(step, "int64")
        image = ops.gather(x_work, ops.tensor(tile, "int64"))
        first = ops.cast(ops.cast(ops.einsum("bhi,bijc->bhjc", ops.gather(rows[which], s), image), out_dtype), work)
        return ops.cast(ops.einsum("bhjc,bwj->bhwc", first, ops.gather(cols[which], s)), out_dtype)

    def weight(tile: np.ndarray, step: np.ndarray, points: Any) -> Any:
        direction = (blurred(1, tile, step) - points) / grad_step
        return ops.cast(ops.gather(step_weights, ops.tensor(step, "int64")), out_dtype) * direction

    total = engine.path_sum(
        n, steps, classes, lambda t, s: blurred(0, t, s), weight, (height, width, channels), out_dtype
    )
    return total * -1.0


def sigma_schedule(steps: int, max_sigma: float, sqrt: bool) -> np.ndarray:
    """``(steps + 1,)`` float64 σ from 0 to ``max_sigma``: linear, or square-root spaced (PAIR's ``sqrt``)."""
    i = np.arange(steps + 1, dtype=np.float64)
    return np.sqrt(i * max_sigma / steps) if sqrt else i * max_sigma / steps


def blur_operators(
    engine: Any, sigmas: tuple[float, ...], grad_step: float, size: tuple[int, int], dtype: str
) -> tuple[list[Any], list[Any]]:
    """Row and column blur operators ``(S, size, size)`` at σ and σ + ``grad_step``, on the device.

    Host matrices come from :func:`cached_blur_matrices`; the engine keeps the last set on the device
    (``engine.device_cache``).
    """
    key = (sigmas, grad_step, size, dtype)
    cache = engine.device_cache.get(__name__, {})
    if key not in cache:
        ops = engine.ops

        def operators(length: int) -> list[Any]:
            return [
                ops.tensor(cached_blur_matrices(tuple(np.add(sigmas, d)), length, dtype), dtype)
                for d in (0.0, grad_step)
            ]

        rows = operators(size[0])
        cols = rows if size[1] == size[0] else operators(size[1])
        cache = engine.device_cache[__name__] = {key: (rows, cols)}  # one set: they are large (S × size² each)
    return cache[key]


def blur_matrices(sigmas: np.ndarray, size: int, truncate: float = 4.0) -> np.ndarray:
    """``(S, size, size)`` float64 matrices ``M`` with ``M @ v`` = ``scipy.ndimage.gaussian_filter1d(v, σ, mode='constant')``.

    Same kernel as SciPy (radius ``int(truncate·σ + 0.5)``, normalized); σ = 0 is the identity.
    """
    offsets = np.arange(size)[None, :] - np.arange(size)[:, None]
    out = np.zeros((len(sigmas), size, size), np.float64)
    for k, sigma in enumerate(sigmas):
        if sigma <= 1e-15:
            out[k] = np.eye(size)
            continue
        radius = int(truncate * float(sigma) + 0.5)
        taps = np.arange(-radius, radius + 1)
        phi = np.exp(-0.5 / (sigma * sigma) * taps**2)
        phi /= phi.sum()
        inside = np.abs(offsets) <= radius
        out[k][inside] = phi[offsets[inside] + radius]
    return out


@functools.lru_cache(maxsize=4)
def cached_blur_matrices(sigmas: tuple[float, ...], size: int, dtype: str = "float64") -> np.ndarray:
    """:func:`blur_matrices` in ``dtype``, cached per (σ schedule, size, dtype); the caller must not write to it.

    Bounded: at 512 px and 100 steps one entry is 100 MB (float32); a Blur IG call uses two (σ, σ + grad_step).
    """
    return blur_matrices(np.asarray(sigmas, np.float64), size).astype(dtype)
