"""GradientSHAP (Lundberg & Lee 2017) as Captum's ``GradientShap`` computes it: expected gradients over a
distribution of baselines, along random points of the straight path, of an optionally noisy input.

Per sample ``s`` of a tile ``x``: a baseline ``b`` drawn from the tile's three (:data:`BASELINES`), ``α ~ U(0, 1)``
and ``x̃ = x + N(0, stdevs²)``; the sample's attribution is ``∇f(α x̃ + (1 − α) b) ⊙ (x̃ − b)`` (Captum's
``InputBaselineXGradient`` inside its ``NoiseTunnel``: the noise is added to the input, and the difference
multiplied is the noisy input's), and the map is their mean.  ``f`` is the class logit.

Baselines, in the model's preprocessed space: ``black`` zeros (IG's ``black_baseline``), ``white`` the tile's
maximum over pixels and channels everywhere (PAIR's and slidegrad's XRAI white baseline), ``blurred`` the tile
blurred by a Gaussian of σ = :data:`BLUR_SIGMA` px per channel (``scipy.ndimage.gaussian_filter``, edges
reflected: the evaluation's ``blur`` baseline's filter and σ).  The draws come from
``numpy.random.default_rng(seed)`` (baseline indices, then α) and, for the noise, one child of
``SeedSequence(seed)`` per sample; every tile gets the same draws, so a tile's map does not depend on its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...methods import Method

BASELINES = ("black", "white", "blurred")
"""The baseline distribution of each tile, in the order of :attr:`ShapDraws.baseline`'s indices."""

BLUR_SIGMA = 8.0
"""σ in px of the ``blurred`` baseline's Gaussian (the evaluation's default ``blur`` σ)."""


@dataclass(frozen=True)
class ShapDraws:
    """The random draws of one call, shared by every tile: ``baseline`` ``(S,)`` indices into :data:`BASELINES`,
    ``alpha`` ``(S,)`` in [0, 1); the noise of the samples comes from :meth:`noise`."""

    baseline: np.ndarray
    alpha: np.ndarray
    stdevs: float
    seed: int

    def noise(self, samples: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
        """``(len(samples), H, W, C)`` float32 normal noise of σ ``stdevs`` for those samples (each sample's
        always the same); ``None`` when ``stdevs`` is 0."""
        if self.stdevs == 0:
            return None
        children = np.random.SeedSequence(self.seed).spawn(len(self.alpha))
        draws = [np.random.default_rng(children[int(s)]).normal(0.0, self.stdevs, shape) for s in samples]
        return np.stack(draws).astype(np.float32)


def shap_draws(n_samples: int, stdevs: float, seed: int) -> ShapDraws:
    """The draws of a call with these parameters (the same for the same arguments)."""
    rng = np.random.default_rng(seed)
    baseline = rng.integers(0, len(BASELINES), n_samples)
    return ShapDraws(baseline, rng.uniform(0.0, 1.0, n_samples), float(stdevs), int(seed))


def baselines(ops: Any, x: Any) -> Any:
    """``(3 N, H, W, C)`` device tensor: the black, white and blurred baselines of the ``N`` tiles of ``x``
    (baseline ``k`` of tile ``n`` at row ``k · N + n``)."""
    from scipy.ndimage import gaussian_filter

    batch = ops.numpy(x)
    white = np.broadcast_to(batch.max(axis=(1, 2, 3), keepdims=True), batch.shape)
    blurred = np.stack([gaussian_filter(image, sigma=[BLUR_SIGMA, BLUR_SIGMA, 0]) for image in batch])
    return ops.tensor(np.concatenate([np.zeros_like(batch), white, blurred]), str(batch.dtype))


def gradient_shap(engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None) -> Any:
    """``(N, H, W, C)`` GradientSHAP of ``x`` (``(N, H, W, C)``), batched over (tile, sample) items by the budget."""
    ops = engine.ops
    n, *shape = (int(d) for d in x.shape)
    samples = int(params["n_samples"])
    draws = shap_draws(samples, float(params["stdevs"]), int(params["seed"]))
    base = baselines(ops, x)
    dtype = ops.dtype(x)
    alphas = ops.tensor(draws.alpha.reshape(-1, 1, 1, 1), dtype)
    held: dict[str, Any] = {}

    def point(tile: np.ndarray, step: np.ndarray) -> Any:
        noisy = ops.gather(x, ops.tensor(tile, "int64"))
        drawn, which = np.unique(step, return_inverse=True)
        noise = draws.noise(drawn, tuple(shape))
        if noise is not None:
            noisy = noisy + ops.gather(ops.tensor(noise, dtype), ops.tensor(which, "int64"))
        start = ops.gather(base, ops.tensor(draws.baseline[step] * n + tile, "int64"))
        alpha = ops.gather(alphas, ops.tensor(step, "int64"))
        held["difference"] = noisy - start
        return alpha * noisy + (1 - alpha) * start

    def weight(tile: np.ndarray, step: np.ndarray, points: Any) -> Any:
        return held.pop("difference")

    return engine.path_sum(n, samples, classes, point, weight, tuple(shape), dtype) / samples
