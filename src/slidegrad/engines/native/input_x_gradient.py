"""Input × gradient (Shrikumar et al. 2016/2017), as Captum's ``InputXGradient``: the class logit's gradient at
the tile, multiplied by the tile (in the model's preprocessed space)."""

from __future__ import annotations

from typing import Any

from ...methods import Method
from .gradients import vanilla


def input_x_gradient(engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None) -> Any:
    """``(N, H, W, C)`` ``x ⊙ ∇f(x)``, ``f`` the class logit, of ``x`` (``(N, H, W, C)``), batched by the budget."""
    return vanilla(engine, x, classes, params, method) * x
