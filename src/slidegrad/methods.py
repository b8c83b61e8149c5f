"""The saliency methods slidegrad offers, their defaults and how their maps are normalized.

Defaults follow Slideflow's ``slideflow.grad.SaliencyMap`` (which calls PAIR's
``saliency.core``); PAIR's own defaults apply where Slideflow sets none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import check


@dataclass(frozen=True)
class Method:
    """One attribution method.

    ``kind`` decides normalization: ``gradient`` maps are ``(H, W, C)`` and are
    reduced with :func:`grayscale_p99`; ``xrai`` maps are ``(H, W)`` region
    scores (:func:`xrai_p99`); ``gradcam`` maps are ``(H, W)`` in [0, 1]
    (:func:`max_scaled`).
    """

    name: str
    kind: str
    defaults: dict[str, Any] = field(default_factory=dict)
    smoothable: bool = True


SMOOTH_DEFAULTS: dict[str, Any] = {"stdev_spread": 0.15, "nsamples": 25, "magnitude": True, "seed": 0}

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("vanilla", "gradient"),
        Method("integrated_gradients", "gradient", {"x_steps": 25, "batch_size": 20}),
        Method(
            "guided_integrated_gradients",
            "gradient",
            {"x_steps": 25, "max_dist": 1.0, "fraction": 0.5},
        ),
        Method(
            "blur_integrated_gradients",
            "gradient",
            {"batch_size": 20, "max_sigma": 50.0, "steps": 100, "grad_step": 0.01, "sqrt": False},
        ),
        Method("xrai", "xrai", {"batch_size": 20, "steps": 100}, smoothable=False),
        Method("xrai_fast", "xrai", {"batch_size": 20, "steps": 100}, smoothable=False),
        Method("gradcam", "gradcam", {"layer": None}),
    )
}


TITLES = {
    "vanilla": "Gradient",
    "integrated_gradients": "IG",
    "guided_integrated_gradients": "Guided IG",
    "blur_integrated_gradients": "Blur IG",
    "xrai": "XRAI",
    "xrai_fast": "XRAI (fast)",
    "gradcam": "Grad-CAM",
}


def title(name: str, smooth: bool = False) -> str:
    """Short column title for figures, e.g. ``"IG"``, ``"Gradient (smooth)"``."""
    return TITLES.get(name, name) + (" (smooth)" if smooth else "")


def get_method(name: str) -> Method:
    """Look a method up by name; unknown names list the known ones."""
    check(name in METHODS, f"method: unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


def resolve_params(method: Method, params: dict[str, Any], smooth: bool) -> dict[str, Any]:
    """Method defaults overlaid with ``params``; smoothing keys are allowed only with ``smooth``."""
    allowed = set(method.defaults) | (set(SMOOTH_DEFAULTS) if smooth else set())
    unknown = sorted(set(params) - allowed)
    check(
        not unknown,
        f"method {method.name}: unknown parameter(s) {', '.join(unknown)}; expected any of "
        f"{', '.join(sorted(allowed)) or '(none)'}",
    )
    check(not smooth or method.smoothable, f"method {method.name}: does not support smooth=True")
    resolved = {**method.defaults, **(SMOOTH_DEFAULTS if smooth else {})}
    resolved.update(params)
    return resolved


def grayscale_p99(attr: np.ndarray, percentile: float = 99) -> np.ndarray:
    """PAIR's ``VisualizeImageGrayscale``: ``(H, W, C)`` → ``(H, W)`` float32 in [0, 1].

    Sum of absolute values over channels, scaled to [min, p99] and clipped.
    """
    image_2d = np.sum(np.abs(attr), axis=-1)
    vmax = np.percentile(image_2d, percentile)
    vmin = np.min(image_2d)
    if vmax <= vmin:
        return np.zeros(image_2d.shape, np.float32)
    return np.clip((image_2d - vmin) / (vmax - vmin), 0, 1).astype(np.float32)


def xrai_p99(attr: np.ndarray, percentile: float = 99) -> np.ndarray:
    """Slideflow's XRAI normalization: ``(m − min) / (p99 − min)`` clipped to [0, 1]."""
    vmax = np.percentile(attr, percentile)
    vmin = np.min(attr)
    if vmax <= vmin:
        return np.zeros(attr.shape, np.float32)
    return np.clip((attr - vmin) / (vmax - vmin), 0, 1).astype(np.float32)


def max_scaled(attr: np.ndarray) -> np.ndarray:
    """Grad-CAM maps: ReLU'd and divided by their max; all-zero stays zero. In [0, 1]."""
    attr = np.maximum(attr, 0)
    peak = attr.max()
    return (attr / peak if peak > 0 else np.zeros_like(attr)).astype(np.float32)


NORMALIZERS = {"gradient": grayscale_p99, "xrai": xrai_p99, "gradcam": max_scaled}


def normalize(method: Method, raw: np.ndarray) -> np.ndarray:
    """Raw attribution of one image → ``(H, W)`` float32 mask in [0, 1]."""
    return NORMALIZERS[method.kind](raw)
