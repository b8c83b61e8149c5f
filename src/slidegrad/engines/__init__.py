"""Engines compute raw attributions for a method over a backend.

``pair`` runs PAIR's reference ``saliency.core`` one image at a time.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import check

Engine = Callable[..., np.ndarray]
ENGINES = ("pair",)


def get_engine(name: str) -> Engine:
    """Return ``attribute(backend, image, class_idx, method, params, smooth) -> raw``."""
    check(name in ENGINES, f"engine: unknown engine {name!r}; expected one of {', '.join(ENGINES)}")
    from .pair import attribute

    return attribute
