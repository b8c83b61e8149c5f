"""The contract every engine keeps (a leaf module: the engines import it, not the package)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from ..methods import Method

ProgressCallback = Callable[[int, int], None]
"""``progress(tiles_done, tiles_total)``: called as groups of tiles finish."""


@dataclass(frozen=True)
class Request:
    """One attribution asked of an engine: ``method``, its ``params`` as
    :func:`~slidegrad.methods.resolve_params` gives them (SmoothGrad's among them when
    ``smooth``), and whether to average the method over noisy copies (SmoothGrad)."""

    method: Method
    params: dict[str, Any]
    smooth: bool = False


@dataclass(frozen=True)
class ClassScores:
    """A path method's completeness inputs: the explained class's score (logit) of each image ``at_input``
    and of its path's start ``at_baseline``, both ``(N,)`` float32 (see :mod:`slidegrad.completeness`)."""

    at_input: np.ndarray
    at_baseline: np.ndarray


@dataclass(frozen=True)
class EngineResult:
    """What an engine call gives back.

    ``raws``: one raw attribution per tile (PAIR's shapes: ``(H, W, C)`` for gradient methods, ``(H, W)``
    otherwise), float32.  ``tile_steps``: IG steps each tile took, one per tile (with SmoothGrad: per tile ×
    noise sample), or ``None`` where the method has no steps to report.  ``item_batch``: items per model call
    the engine sized for this batch (also a safe forward batch); ``max_batch``: the largest model call made.
    ``layer``: the layer a layer method read (``None`` for others).  ``scores``: the class scores of the
    tiles and their path starts where the method computed them (adaptive IG), else ``None``.
    """

    raws: list[np.ndarray]
    tile_steps: list[int] | None = None
    item_batch: int = 1
    max_batch: int = 1
    layer: str | None = None
    scores: ClassScores | None = None


class Engine(Protocol):
    def probabilities(self, batch: np.ndarray) -> np.ndarray: ...

    def attribute(
        self, batch: np.ndarray, classes: np.ndarray, request: Request, progress: ProgressCallback | None = None
    ) -> EngineResult: ...
