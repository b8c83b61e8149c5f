"""Float comparisons that survive another CPU (shared by the torch and TF tests; numpy only).

Where two maps come from the same computation (same engine, same batch, same kernels) the tests
compare them exactly.  Where batch composition, memory layout, kernel or engine differ, conv outputs
may differ by an ulp, and near a max-pool tie the argmax may flip: a few pixels of a gradient then
change a lot while the map as a whole barely moves.  A max-abs bound cannot hold across CPUs there;
these whole-map measures can.
"""

from __future__ import annotations

import numpy as np


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / ||b||`` over the whole array (float64); 0 when both are zero, inf when only ``b`` is."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff, norm = float(np.linalg.norm(a - b)), float(np.linalg.norm(b))
    if norm == 0:
        return 0.0 if diff == 0 else float("inf")
    return diff / norm


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; two constant maps correlate perfectly only if they are equal."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.allclose(a, b, atol=1e-7) else 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# Normalized [0, 1] masks of the same tiles computed with another batch composition, kernel or framework.
# Measured: a single conv-kernel change (channels-last weights) moved a Blur-IG mask by relative L2 7.2e-3,
# corr 0.99985; every other method stayed below 1e-6.  Mixing up images, classes or noise moves a mask by O(0.1).
MASK_REL_L2 = 0.05
MASK_CORR = 0.999


def assert_masks_close(
    actual: np.ndarray, expected: np.ndarray, rel: float = MASK_REL_L2, min_corr: float = MASK_CORR
) -> dict[str, float]:
    """Each ``(H, W)`` map of ``actual`` against ``expected`` (same shape): relative L2 and correlation bars.

    Returns the worst values measured (largest relative L2, smallest correlation).
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    pairs = list(zip(actual.reshape(-1, *actual.shape[-2:]), expected.reshape(-1, *expected.shape[-2:])))
    worst = {"rel_l2": max(rel_l2(a, b) for a, b in pairs), "corr": min(corr(a, b) for a, b in pairs)}
    assert worst["rel_l2"] <= rel and worst["corr"] >= min_corr, worst
    return worst
