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


class Engine(Protocol):
    def probabilities(self, batch: np.ndarray) -> np.ndarray: ...

    def attribute(
        self, batch: np.ndarray, classes: np.ndarray, request: Request, progress: ProgressCallback | None = None
    ) -> list[np.ndarray]: ...
