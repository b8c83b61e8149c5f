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

Torch and TensorFlow each implement both in one module (``torch_backend``, with
``torch_vit`` for vision transformers; ``tf_backend``).  Everything else that depends
on the framework — detecting a model's framework, loading, the output probe, CPU
threads, GPU visibility, devices, the sanity check's re-initialisation and the default
preprocessing — is a :class:`Framework` in :data:`FRAMEWORKS`, which imports its
module on first use: importing slidegrad imports no framework, and no other module
imports one to decide which it is.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Protocol

import numpy as np

from ..errors import InputError
from ..model_files import KERAS_FILE, SAVED_MODEL_FILE, LoadedModel
from .common import AttentionMaps, cache_class_count, cached_class_count, checked_output  # noqa: F401 - API
from .common import nan_where_nonfinite  # noqa: F401 - API


class Ops(Protocol):
    """Device-side array ops over a framework's tensors ``T`` (channels-last images)."""

    inf: float

    def tensor(self, x: np.ndarray, dtype: str = "float32") -> Any: ...  # host → device
    def numpy(self, t: Any) -> np.ndarray: ...  # device → host
    def grad(self, x: Any, class_idx: Any) -> Any: ...  # (B, H, W, C) class-score gradients
    def class_scores(self, x: Any, class_idx: Any) -> Any: ...  # (B,) class scores, forward only (no gradient)
    def class_probabilities(self, x: Any, class_idx: Any) -> Any: ...  # (B,) softmax probabilities, forward only
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
    framework = framework_of(module)
    if framework is None:
        raise TypeError(
            f"model: unsupported model type {type(module).__name__}; expected a torch.nn.Module or a keras.Model"
        )
    return framework.backend(module, device=device, **known)


# -- frameworks ------------------------------------------------------------------------
@dataclass(frozen=True)
class Framework:
    """A deep-learning framework slidegrad runs models of: everything that depends on which one it is.

    ``name`` is the framework string of configs, plans and sidecars.  Detection (:meth:`holds`,
    :meth:`owns`) imports nothing; everything else imports the framework's backend module
    (``module``) on first use.
    """

    name: str  # "torch" or "tensorflow"
    title: str  # for messages: "PyTorch", "TensorFlow"
    aliases: tuple[str, ...]  # other spellings of the name in Slideflow's params.json "backend"
    default_preprocessing: str  # a name of slidegrad.model.PREPROCESSORS (Slideflow's convention)
    stain_percentile: str  # how Slideflow's stain normalisers take percentiles for this framework's models
    builds_architectures: bool  # rebuilds state dicts from an architecture (load_model(architecture=...))
    _holds: Callable[[Path], bool]
    _owns: Callable[[Any], bool]
    _import: Callable[[], ModuleType]

    @property
    def module(self) -> ModuleType:
        """The backend module (imports the framework)."""
        return self._import()

    def holds(self, path: str | Path) -> bool:
        """Whether ``path`` holds a model of this framework, by file layout alone."""
        return self._holds(Path(path))

    def owns(self, model: Any) -> bool:
        """Whether ``model`` (an object) is a model of this framework; imports nothing."""
        return self._owns(model)

    def load(
        self,
        path: Path,
        params: dict[str, Any],
        allow_code: bool = False,
        architecture_from: Path | None = None,
        transformers_type: str | None = None,
    ) -> tuple[Any, list[Path]]:
        """The model at ``path`` (see :mod:`slidegrad.model`) and the files it was read from."""
        return self.module.load(path, params, allow_code, architecture_from, transformers_type)

    def probe_outputs(self, model: Any, tile_px: int | None, where: str) -> np.ndarray:
        """``(1, K)`` outputs of ``model`` on one zero tile (``tile_px``, else the model's input size)."""
        return self.module.probe_outputs(model, tile_px, where)

    def set_threads(self, threads: int) -> None:
        """Pin the framework's CPU thread pools (before it initialises them, i.e. before loading a model)."""
        self.module.set_threads(threads)

    def sees_gpu(self) -> bool:
        """Whether the framework can use a CUDA GPU in this process."""
        return self.module.sees_gpu()

    def resolve_device(self, device: str | None) -> Any:
        """The framework's device for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a GPU it does not see is an error."""
        return self.module.resolve_device(device)

    def backend(self, model: Any, device: str = "auto", **known: Any) -> Backend:
        """``model`` wrapped behind the :class:`Backend` contract on ``device``."""
        return self.module.make_backend(model, device=device, **known)

    def randomisation_copy(self, model: Any) -> Any:
        """A copy of ``model`` with its own weights (the sanity check re-initialises it)."""
        return self.module.randomisation_copy(model)

    def randomisable_layers(self, model: Any) -> list[tuple[str, Any]]:
        """``(name, layer)`` of the layers holding weights, last first; one it cannot re-initialise: an error."""
        return self.module.randomisable_layers(model)

    def reinitialise(self, layer: Any, seed: int) -> None:
        """Re-initialise ``layer``'s weights, seeded with ``seed``."""
        self.module.reinitialise(layer, seed)


def _torch_module() -> ModuleType:
    from . import torch_backend

    return torch_backend


def _tf_module() -> ModuleType:
    from . import tf_backend

    return tf_backend


def _is_torch_module(module: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(module, torch.nn.Module)


def _is_keras_model(module: Any) -> bool:
    """Keras 3, tf_keras or a signature-wrapped SavedModel: decided by class module, importing nothing."""
    names = [cls.__module__ for cls in type(module).__mro__]
    return any(n.startswith(("keras", "tf_keras", "tensorflow", "slidegrad.backends.tf_backend")) for n in names)


def _holds_keras(path: Path) -> bool:
    """A Keras 3 ``.keras`` file, or a folder holding ``model.keras`` or a SavedModel (``saved_model.pb``)."""
    if path.suffix == ".keras":
        return True
    return path.is_dir() and ((path / SAVED_MODEL_FILE).exists() or (path / KERAS_FILE).exists())


FRAMEWORKS: dict[str, Framework] = {
    "torch": Framework(
        name="torch",
        title="PyTorch",
        aliases=("pytorch",),
        default_preprocessing="scale",
        stain_percentile="linear",
        builds_architectures=True,
        _holds=lambda path: not _holds_keras(path),  # any other file or folder: torch reads what it holds
        _owns=_is_torch_module,
        _import=_torch_module,
    ),
    "tensorflow": Framework(
        name="tensorflow",
        title="TensorFlow",
        aliases=("tf",),
        default_preprocessing="standardize",
        stain_percentile="nearest",
        builds_architectures=False,
        _holds=_holds_keras,
        _owns=_is_keras_model,
        _import=_tf_module,
    ),
}
"""Every framework slidegrad runs, by name (the order of error messages)."""

DEFAULT_FRAMEWORK = "torch"
"""The framework of a model that does not exist yet (the demo builds it)."""


def get_framework(name: str, where: str = "framework") -> Framework:
    """The framework called ``name`` (or one of its Slideflow aliases, e.g. ``pytorch``, ``tf``); else one
    InputError line starting with ``where``."""
    for framework in FRAMEWORKS.values():
        if name == framework.name or name in framework.aliases:
            return framework
    raise InputError(f"{where} {name!r} is not supported; expected one of {tuple(FRAMEWORKS)}")


def framework_at(path: str | Path) -> Framework:
    """The framework whose model ``path`` holds, by file layout alone (no import)."""
    return next(framework for framework in FRAMEWORKS.values() if framework.holds(path))


def framework_of(model: Any) -> Framework | None:
    """The framework of a model object (``None``: none slidegrad runs); imports nothing."""
    return next((framework for framework in FRAMEWORKS.values() if framework.owns(model)), None)
