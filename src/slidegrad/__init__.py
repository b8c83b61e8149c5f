"""slidegrad: saliency maps for whole-slide-image tile classifiers.

>>> import slidegrad as sg
>>> model = sg.load_model("resources/demo/model")
>>> preprocess = sg.get_preprocess_fn(model)
>>> wsi = sg.WSI("slide.tiff", tile_px=128, tile_um=128)
>>> mask = sg.SaliencyMap(model, class_idx=0).integrated_gradients(preprocess(wsi[10, 5]))

Submodules load on first use, so ``import slidegrad`` imports no framework.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import InputError, SlidegradError

__version__ = "0.1.0"

_LAZY = {
    "WSI": ("slide", "WSI"),
    "SaliencyMap": ("saliency", "SaliencyMap"),
    "load_model": ("model", "load_model"),
    "get_preprocess_fn": ("model", "get_preprocess_fn"),
    "LoadedModel": ("model_files", "LoadedModel"),
    "METHODS": ("methods", "METHODS"),
    "METRICS": ("metrics", "METRICS"),
}
_SUBMODULES = {
    "plot", "slide", "model", "methods", "metrics", "saliency", "demo", "config", "tables", "layout", "planning",
    "jobs", "progress", "files", "devices", "backends", "engines", "evaluate", "slide_map", "prediction_map",
    "results", "qupath",
}  # fmt: skip

__all__ = ["InputError", "SlidegradError", *_LAZY, *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'slidegrad' has no attribute {name!r}")
