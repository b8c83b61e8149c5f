"""The saliency methods slidegrad offers, their defaults and how their maps are normalized.

Defaults follow Slideflow's ``slideflow.grad.SaliencyMap`` (which calls PAIR's
``saliency.core``); PAIR's own defaults apply where Slideflow sets none.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, check, is_int


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


@dataclass(frozen=True)
class Param:
    """A method parameter's type and range.

    ``kind``: ``int``, ``float`` (an int is accepted too), ``bool`` or ``layer`` (a
    string or ``None``); bools are never numbers.  ``low``/``high`` bound numbers,
    inclusively unless ``low_open``/``high_open``.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        """What is expected, e.g. ``an integer ≥ 1`` or ``a number > 0 and ≤ 1``."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "layer":
            return "a layer name or null"
        bounds = [
            f"{sign} {bound}"
            for bound, sign in ((self.low, ">" if self.low_open else "≥"), (self.high, "<" if self.high_open else "≤"))
            if bound is not None
        ]
        return f"{'an integer' if self.kind == 'int' else 'a number'} {' and '.join(bounds)}".strip()

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this type and lies in this range."""
        if self.kind == "bool":
            return isinstance(value, (bool, np.bool_))
        if self.kind == "layer":
            return value is None or isinstance(value, str)
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        number = is_int(value) or (self.kind == "float" and real)
        if not number or not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def convert(self, value: Any) -> Any:
        """``value`` as a plain Python ``int``/``float``/``bool`` (JSON-safe), kept as is otherwise."""
        return {"int": int, "float": float, "bool": bool}.get(self.kind, lambda v: v)(value)


PARAMS: dict[str, Param] = {
    "x_steps": Param("int", 1),
    "batch_size": Param("int", 1),
    "max_dist": Param("float", 0, 1),
    "fraction": Param("float", 0, 1, low_open=True),
    "max_sigma": Param("float", 0, low_open=True),
    "steps": Param("int", 1),
    "grad_step": Param("float", 0, low_open=True),
    "sqrt": Param("bool"),
    "layer": Param("layer"),
    "stdev_spread": Param("float", 0),
    "nsamples": Param("int", 1),
    "magnitude": Param("bool"),
    "seed": Param("int", 0, 2**32 - 1),
}
"""Every method parameter's type and range (one entry per name, shared by the methods using it)."""

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
    """Method defaults overlaid with ``params``, each checked against :data:`PARAMS`;
    smoothing keys are allowed only with ``smooth``."""
    allowed = set(method.defaults) | (set(SMOOTH_DEFAULTS) if smooth else set())
    unknown = sorted(set(params) - allowed)
    check(
        not unknown,
        f"method {method.name}: unknown parameter(s) {', '.join(unknown)}; expected any of "
        f"{', '.join(sorted(allowed)) or '(none)'}",
    )
    check(not smooth or method.smoothable, f"method {method.name}: does not support smooth=True")
    resolved = {**method.defaults, **(SMOOTH_DEFAULTS if smooth else {})}
    for key, value in params.items():
        spec = PARAMS[key]
        if not spec.accepts(value):
            raise InputError(f"method {method.name}: parameter {key!r} must be {spec.describe()}, got {value!r}")
        resolved[key] = spec.convert(value)
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
