"""pytorch-grad-cam (``grad-cam==1.5.7``, jacobgil/pytorch-grad-cam), loaded for parity tests.

It is installed without its dependencies (``requirements-reference.txt``): its ``__init__`` imports every
CAM, and two of its modules import torchvision at the top (``utils.image``: ``Compose``, ``Normalize``,
``ToTensor`` for its preprocessing helpers; ``utils.model_targets``: ``torchvision.ops.box_iou`` for the
Faster R-CNN target), which is not installed here.  Grad-CAM uses none of them, so :func:`pytorch_grad_cam`
puts empty stand-ins for those torchvision modules in ``sys.modules`` while importing, and restores
``sys.modules`` afterwards.  ``ttach`` (imported by ``base_cam``), ``tqdm``, OpenCV (its resize),
scikit-learn, SciPy and matplotlib (imported by other CAMs) are real packages.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import types
from typing import Any, Callable

import pytest
import torch

VERSION = "1.5.7"
_STUBS = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops")


def pytorch_grad_cam() -> types.SimpleNamespace:
    """``GradCAM``, ``GradCAMPlusPlus``, ``HiResCAM``, ``LayerCAM``, ``ScoreCAM``, ``ClassifierOutputTarget``,
    ``ClassifierOutputSoftmaxTarget`` and the ``road`` module (``metrics.road``) of pytorch-grad-cam 1.5.7 (fails
    the test where it is missing)."""
    try:
        version = importlib.metadata.version("grad-cam")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"grad-cam=={VERSION} is not installed (make install installs requirements-reference.txt)")
    assert version == VERSION, f"expected grad-cam {VERSION}, found {version}"
    before = set(sys.modules)
    stubbed = [name for name in _STUBS if name not in sys.modules]
    try:
        for name in stubbed:
            sys.modules[name] = _StandIn(name)
        for parent, child in (("torchvision", "transforms"), ("torchvision", "ops"), ("torchvision.transforms", "functional")):
            if isinstance(sys.modules[parent], _StandIn):
                setattr(sys.modules[parent], child, sys.modules[f"{parent}.{child}"])
        transforms = sys.modules["torchvision.transforms"]
        if isinstance(transforms, _StandIn):
            for attribute in ("Compose", "Normalize", "ToTensor"):  # used by preprocess_image only
                setattr(transforms, attribute, _unavailable(f"torchvision.transforms.{attribute}"))
            transforms.functional.resize = _unavailable("torchvision.transforms.functional.resize")  # SESS only
        grad_cam = importlib.import_module("pytorch_grad_cam")
        targets = importlib.import_module("pytorch_grad_cam.utils.model_targets")
        road = importlib.import_module("pytorch_grad_cam.metrics.road")  # ROAD: NoisyLinearImputer, ROADCombined, ...
        return types.SimpleNamespace(
            GradCAM=grad_cam.GradCAM, GradCAMPlusPlus=grad_cam.GradCAMPlusPlus, HiResCAM=grad_cam.HiResCAM,
            LayerCAM=grad_cam.LayerCAM, ScoreCAM=grad_cam.ScoreCAM,
            ClassifierOutputTarget=targets.ClassifierOutputTarget,
            ClassifierOutputSoftmaxTarget=targets.ClassifierOutputSoftmaxTarget, road=road,
        )  # fmt: skip
    finally:
        # the stand-ins and pytorch_grad_cam itself leave sys.modules as found; real packages it imported
        # (OpenCV, scikit-learn, ...) stay: a C extension must not be imported twice
        for name in set(sys.modules) - before:
            if name in stubbed or name == "pytorch_grad_cam" or name.startswith("pytorch_grad_cam."):
                del sys.modules[name]


class _StandIn(types.ModuleType):
    pass


def _unavailable(name: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} is a stand-in here (torchvision is not installed)")

    return fail


def vit_reshape_transform(prefix: int, grid: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's ViT ``reshape_transform`` (its tutorial's, with ``prefix`` tokens instead of 1):
    ``(N, T, C)`` → the patch tokens on the ``(h, w)`` grid, ``(N, C, h, w)``."""

    def reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
        result = tensor[:, prefix:, :].reshape(tensor.size(0), grid[0], grid[1], tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


class Logits(torch.nn.Module):
    """A ``transformers`` classifier as pytorch-grad-cam wants it: ``forward`` returns the ``.logits`` tensor."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out.logits if hasattr(out, "logits") else out
