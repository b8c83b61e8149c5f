"""Framework backends: the one contract between saliency algorithms and a framework.

A backend wraps a model on its device and answers, for a channels-last
``(N, H, W, C) float32`` batch and ``(N,)`` class indices:

* :meth:`Backend.probabilities` — ``(N, K)`` softmax probabilities;
* :meth:`Backend.input_gradients` — d(class logit)/d(input), ``(N, H, W, C)``;
* :meth:`Backend.conv_gradients` — a conv layer's activations and the class
  logit's gradients w.r.t. them, both ``(N, h, w, c)`` channels-last.

For the native engine a backend also exposes :class:`Ops` (``backend.ops``):
the few device-side array operations every method is written over, so one
implementation of each method runs on torch or TensorFlow tensors, on the
model's device.

Torch and TensorFlow each implement both in one module; nothing else imports a
framework.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import numpy as np


class Ops(Protocol):
    """Device-side array ops over a framework's tensors ``T`` (channels-last images)."""

    inf: float

    def tensor(self, x: np.ndarray, dtype: str = "float32") -> Any: ...  # host → device
    def numpy(self, t: Any) -> np.ndarray: ...  # device → host
    def grad(self, x: Any, class_idx: Any) -> Any: ...  # (B, H, W, C) class-score gradients
    def conv(self, x: Any, class_idx: Any, layer: str | None) -> tuple[Any, Any]: ...
    def cast(self, t: Any, dtype: str) -> Any: ...
    def dtype(self, t: Any) -> str: ...  # "float32", "float64", ...
    def where(self, cond: Any, a: Any, b: Any) -> Any: ...
    def abs(self, t: Any) -> Any: ...
    def sum(self, t: Any, axis: Any) -> Any: ...
    def maximum(self, t: Any, value: float) -> Any: ...
    def any(self, t: Any) -> bool: ...
    def kth_smallest(self, t: Any, k: int) -> Any: ...  # per row of (N, D), 0-based rank
    def gather(self, t: Any, index: Any) -> Any: ...  # rows along axis 0
    def segment_sum(self, t: Any, index: Any, n: int) -> Any: ...  # sum rows into n groups
    def reshape(self, t: Any, shape: tuple[int, ...]) -> Any: ...
    def concat(self, ts: list[Any]) -> Any: ...
    def zeros_like(self, t: Any) -> Any: ...
    def einsum(self, spec: str, *ts: Any) -> Any: ...


class Backend(Protocol):
    framework: str
    n_classes: int
    ops: Ops
    on_accelerator: bool

    def activation_bytes(self, shape: tuple[int, int, int]) -> int: ...

    def free_memory(self) -> int: ...

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
