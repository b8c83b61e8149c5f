"""Slideflow's own stain normalisers, loaded for parity tests without importing the ``slideflow`` package.

``slideflow==3.0.2`` is installed without its dependencies (``requirements-reference.txt``):
its ``__init__`` imports far more than slidegrad has (pyvips, shapely, an older protobuf...).
The normaliser modules themselves need only numpy and OpenCV (numpy implementations),
torch (PyTorch ones) or TensorFlow; :func:`slideflow_norm` puts empty stand-ins for the
packages above them in ``sys.modules`` and imports the real module files.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

# Stand-ins: (module name, attributes). Only what the normaliser files import from them.
_PACKAGES = ("slideflow", "slideflow.norm", "slideflow.norm.torch", "slideflow.norm.tensorflow", "slideflow.io")


def slideflow_root() -> Path:
    """The installed ``slideflow`` package folder, or skip when it is not installed."""
    try:
        dist = importlib.metadata.distribution("slideflow")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("slideflow==3.0.2 is not installed (make install installs requirements-reference.txt)")
    assert dist.version == "3.0.2", f"expected slideflow 3.0.2, found {dist.version}"
    return Path(dist.locate_file("slideflow"))


@contextmanager
def slideflow_norm() -> Iterator[types.SimpleNamespace]:
    """``numpy``: Slideflow's numpy normaliser classes by method name; ``torch_module`` (a callable
    importing ``slideflow.norm.torch.<name>``) and ``tensorflow_module`` likewise.  Restores
    ``sys.modules`` on exit."""
    root = slideflow_root()
    saved = {name: mod for name, mod in sys.modules.items() if name == "slideflow" or name.startswith("slideflow.")}
    saved_tv = sys.modules.get("torchvision")
    try:
        for name in _PACKAGES:
            module = types.ModuleType(name)
            module.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            sys.modules[name] = module
        sys.modules["slideflow"].log = logging.getLogger("slideflow")
        util = types.ModuleType("slideflow.util")
        util.log = logging.getLogger("slideflow")
        sys.modules["slideflow.util"] = util
        io_torch = types.ModuleType("slideflow.io.torch")
        io_torch.cwh_to_whc = lambda img: img.permute(1, 2, 0) if img.ndim == 3 else img.permute(0, 2, 3, 1)
        io_torch.whc_to_cwh = lambda img: img.permute(2, 0, 1) if img.ndim == 3 else img.permute(0, 3, 1, 2)
        sys.modules["slideflow.io.torch"] = io_torch
        if saved_tv is None:  # imported by slideflow.norm.torch.utils, used only for tiles over 2048 px
            sys.modules["torchvision"] = types.ModuleType("torchvision")
        if "tensorflow" in sys.modules and "tensorflow_probability" not in sys.modules:
            sys.modules["tensorflow_probability"] = _tfp_stand_in()
        reinhard = importlib.import_module("slideflow.norm.reinhard")
        macenko = importlib.import_module("slideflow.norm.macenko")
        numpy_classes = {
            "reinhard": reinhard.ReinhardNormalizer,
            "reinhard_fast": reinhard.ReinhardFastNormalizer,
            "reinhard_mask": reinhard.ReinhardMaskNormalizer,
            "reinhard_fast_mask": reinhard.ReinhardFastMaskNormalizer,
            "macenko": macenko.MacenkoNormalizer,
            "macenko_fast": macenko.MacenkoFastNormalizer,
        }
        yield types.SimpleNamespace(
            numpy=numpy_classes,
            utils=importlib.import_module("slideflow.norm.utils"),
            torch_module=lambda name: importlib.import_module(f"slideflow.norm.torch.{name}"),
            tensorflow_module=lambda name: importlib.import_module(f"slideflow.norm.tensorflow.{name}"),
        )
    finally:
        for name in [n for n in sys.modules if n == "slideflow" or n.startswith("slideflow.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        if saved_tv is None:
            sys.modules.pop("torchvision", None)
        if isinstance(sys.modules.get("tensorflow_probability"), _StandIn):
            del sys.modules["tensorflow_probability"]


class _StandIn(types.ModuleType):
    pass


def _tfp_stand_in() -> types.ModuleType:
    """``tensorflow_probability`` is not installed; Slideflow's TensorFlow normalisers use two of its
    functions, stood in for here as documented by tfp: ``tfp.stats.percentile(x, q)`` with its default
    interpolation, ``nearest`` (the value at rank ``q/100·(n−1)`` rounded half to even: numpy's
    ``method="nearest"``), and ``tfp.stats.covariance(x)`` (rows are samples, biased: divided by n)."""
    import numpy as np
    import tensorflow as tf

    def percentile(x, q):
        value = tf.numpy_function(lambda a: np.asarray(np.percentile(a, q, method="nearest"), a.dtype), [x], x.dtype)
        return tf.reshape(value, [])

    tfp = _StandIn("tensorflow_probability")
    def covariance(x):
        centred = x - tf.reduce_mean(x, axis=0, keepdims=True)
        return tf.matmul(centred, centred, transpose_a=True) / tf.cast(tf.shape(x)[0], x.dtype)

    tfp.stats = types.SimpleNamespace(percentile=percentile, covariance=covariance)
    return tfp
