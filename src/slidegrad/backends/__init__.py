"""Framework backends: the one contract between saliency algorithms and a framework.

A backend wraps a model on its device and answers, for a channels-last
``(N, H, W, C) float32`` batch and ``(N,)`` class indices:

* :meth:`Backend.probabilities` — ``(N, K)`` softmax probabilities;
* :meth:`Backend.input_gradients` — d(class logit)/d(input), ``(N, H, W, C)``;
* :meth:`Backend.conv_gradients` — a conv layer's activations and the class
  logit's gradients w.r.t. them, both ``(N, h, w, c)`` channels-last.

Torch and TensorFlow each implement it in one module; nothing else imports a
framework.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    framework: str
    n_classes: int

    def probabilities(self, x: np.ndarray) -> np.ndarray: ...

    def input_gradients(self, x: np.ndarray, class_idx: np.ndarray) -> np.ndarray: ...

    def conv_gradients(
        self, x: np.ndarray, class_idx: np.ndarray, layer: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def conv_layer_names(self) -> list[str]: ...


def get_backend(model: Any, device: str = "auto") -> Backend:
    """Pick the backend for a :class:`~slidegrad.model.LoadedModel` or a bare framework model."""
    from ..model import LoadedModel

    module = model.module if isinstance(model, LoadedModel) else model
    n_classes = model.n_classes if isinstance(model, LoadedModel) else None
    tile_px = model.tile_px if isinstance(model, LoadedModel) else None
    if _is_torch_module(module):
        from .torch_backend import TorchBackend

        return TorchBackend(module, device=device, n_classes=n_classes, tile_px=tile_px)
    if _is_keras_model(module):
        from .tf_backend import TensorFlowBackend

        return TensorFlowBackend(module, device=device, n_classes=n_classes, tile_px=tile_px)
    raise TypeError(
        f"model: unsupported model type {type(module).__name__}; expected a torch.nn.Module or a keras.Model"
    )


def _is_torch_module(module: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(module, torch.nn.Module)


def _is_keras_model(module: Any) -> bool:
    """Keras 3, tf_keras or a signature-wrapped SavedModel: decided by class module, importing nothing."""
    names = [cls.__module__ for cls in type(module).__mro__]
    return any(n.startswith(("keras", "tf_keras", "tensorflow", "slidegrad.backends.tf_backend")) for n in names)
