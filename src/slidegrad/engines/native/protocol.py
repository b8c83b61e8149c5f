"""The one signature every native method keeps (a leaf of :mod:`slidegrad.engines.native`).

A native method is a function (or a callable object, like the CAM family's) in its own module,
named by its declaration (:attr:`~slidegrad.methods.Method.native`, ``"module:function"`` under
:mod:`slidegrad.engines`)::

    method(engine, x, classes, params, method) -> raw | MethodOutput

``x``: ``(N, H, W, C)`` preprocessed tiles and ``classes``: ``(N,)`` int64 class indices, both device
tensors of ``engine.ops``; ``params``: the method's parameters as
:func:`~slidegrad.methods.resolve_params` gives them.  ``raw``: an ``(N, ...)`` device tensor or a list of N
host arrays (PAIR's shapes).  The engine (:class:`~slidegrad.engines.native.NativeEngine`) gives batching by
its memory budget (:meth:`~slidegrad.engines.native.NativeEngine.item_batch`, ``path_sum``), gradients
(``grad``), forward-only class scores (``class_scores``) and SmoothGrad around every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ...methods import Method
from ..base import ClassScores


@dataclass(frozen=True)
class MethodOutput:
    """A native method's result with more than the maps: ``raw`` as above, ``steps`` ``(N,)`` the steps each
    tile took (adaptive IG), ``scores`` the class scores it computed (completeness inputs)."""

    raw: Any
    steps: np.ndarray | None = None
    scores: ClassScores | None = None


class NativeMethod(Protocol):
    def __call__(self, engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method) -> Any: ...
