"""Framework backends: the one contract between saliency algorithms and a framework.

A backend wraps a model on its device and answers, for a channels-last
``(N, H, W, C) float32`` batch and ``(N,)`` class indices:

* :meth:`Backend.probabilities` — ``(N, K)`` softmax probabilities;
* :meth:`Backend.input_gradients` — d(class logit)/d(input), ``(N, H, W, C)``;
* :meth:`Backend.conv_gradients` — a conv layer's activations and the class
  logit's gradients w.r.t. them, both ``(N, h, w, c)`` channels-last (a vision
  transformer's token layer on its patch grid, prefix tokens dropped);
  :meth:`Backend.gradcam_layer` names the layer it uses and :meth:`Backend.token_prefix`
  the prefix tokens dropped (for provenance).

For the native engine a backend also exposes :class:`Ops` (``backend.ops``):
the few device-side array operations every method is written over, so one
implementation of each method runs on torch or TensorFlow tensors, on the
model's device.

Torch and TensorFlow each implement both in one module; nothing else imports a
framework.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from ..model_files import LoadedModel
from .common import AttentionMaps, cache_class_count, cached_class_count, checked_output  # noqa: F401 - API
from .common import nan_where_nonfinite  # noqa: F401 - API


class Ops(Protocol):
    """Device-side array ops over a framework's tensors ``T`` (channels-last images)."""

    inf: float

    def tensor(self, x: np.ndarray, dtype: str = "float32") -> Any: ...  # host → device
    def numpy(self, t: Any) -> np.ndarray: ...  # device → host
    def grad(self, x: Any, class_idx: Any) -> Any: ...  # (B, H, W, C) class-score gradients
    def class_scores(self, x: Any, class_idx: Any) -> Any: ...  # (B,) class scores, forward only (no gradient)
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
    def reduce(self, t: Any, how: str, axis: int) -> Any: ...  # mean, max or min over axis
    def eye(self, n: int, dtype: str = "float32") -> Any: ...
    def attention(self, x: Any, class_idx: Any | None) -> AttentionMaps: ...  # a ViT's attention (+ gradients)


class Backend(Protocol):
    framework: str
    name: str  # the model, for messages: its path, or a bare model's class name
    n_classes: int  # known, or probed at the model's tile size
    ops: Ops
    on_accelerator: bool

    def class_count(self, x: np.ndarray | None = None) -> int | None: ...  # learnt from x[:1] if unknown

    def gradients(self) -> AbstractContextManager[None]: ...  # gradients flow inside, whatever the caller's mode

    def activation_bytes(self, shape: tuple[int, int, int]) -> int: ...

    def free_memory(self) -> int: ...

    def probabilities(self, x: np.ndarray) -> np.ndarray: ...

    def input_gradients(self, x: np.ndarray, class_idx: np.ndarray) -> np.ndarray: ...

    def conv_gradients(
        self, x: np.ndarray, class_idx: np.ndarray, layer: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def conv_layer_names(self) -> list[str]: ...

    def gradcam_layer(self, layer: str | None = None) -> str: ...  # the layer conv_gradients uses for ``layer``

    def token_prefix(self) -> int | None: ...  # prefix tokens a ViT's maps drop; None for other models


def get_backend(model: Any, device: str = "auto") -> Backend:
    """Pick the backend for a :class:`~slidegrad.model.LoadedModel` or a bare framework model."""
    loaded = isinstance(model, LoadedModel)
    module = model.module if loaded else model
    known: dict[str, Any] = {}
    if loaded:
        name = str(model.path or type(module).__name__)
        known = {"n_classes": model.n_classes, "tile_px": model.tile_px, "name": name}
    if _is_torch_module(module):
        from .torch_backend import TorchBackend

        return TorchBackend(module, device=device, **known)
    if _is_keras_model(module):
        from .tf_backend import TensorFlowBackend

        return TensorFlowBackend(module, device=device, **known)
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
