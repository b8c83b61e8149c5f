"""Engines turn tiles, classes and a :class:`~slidegrad.engines.base.Request` (method, parameters,
SmoothGrad or not) into raw attributions.

* ``native`` (default): our implementation, batched across tiles × steps ×
  noise samples on the model's device, packed by a memory budget.
* ``pair``: PAIR's reference ``saliency.core``, one tile at a time in numpy.

Both take a ``(N, H, W, C)`` float32 batch and return an
:class:`~slidegrad.engines.base.EngineResult`: one raw array per tile (``(H, W, C)`` for gradient
methods, occlusion, input × gradient and GradientSHAP, ``(H, W)`` for XRAI, the CAMs, RISE and the attention
maps), with the steps, batch
sizes, layer and class scores of the call.  Which function computes a method is part of its
declaration (:class:`~slidegrad.methods.Method`: ``native``, ``pair``); each native method is a
module of :mod:`slidegrad.engines.native`.
"""

from __future__ import annotations

from typing import Any

from ..errors import check
from ..methods import ENGINES
from .base import ClassScores, Engine, EngineResult, ProgressCallback, Request

__all__ = ["ENGINES", "ClassScores", "Engine", "EngineResult", "ProgressCallback", "Request", "make_engine"]


def make_engine(name: str, backend: Any, memory_budget: int | None = None) -> Engine:
    """The engine ``name`` bound to ``backend`` (``memory_budget`` in bytes; native only, None = auto)."""
    check(name in ENGINES, f"engine: unknown engine {name!r}; expected one of {', '.join(ENGINES)}")
    if name == "pair":
        from .pair import PairEngine

        return PairEngine(backend)
    from .native import NativeEngine

    return NativeEngine(backend, memory_budget)
