"""Helpers both framework backends use (a leaf of :mod:`slidegrad.backends`: no framework, no backend)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, check

# model → its class count, learnt once per process (SaliencyMaps made per call skip the probe pass)
_CLASS_COUNTS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def cached_class_count(model: Any) -> int | None:
    """The class count already learnt for ``model`` in this process, else ``None``."""
    try:
        return _CLASS_COUNTS.get(model)
    except TypeError:  # no weak reference to it
        return None


def cache_class_count(model: Any, n_classes: int) -> int:
    """Remember ``model``'s class count; returns it."""
    try:
        _CLASS_COUNTS[model] = n_classes
    except TypeError:
        pass
    return n_classes


def checked_output(out: Any, where: str, n_classes: int | None = None) -> int:
    """The class count of a model output: one ``(N, classes)`` array (``n_classes`` wide, if known)."""
    if isinstance(out, (list, tuple, dict)):
        raise InputError(
            f"model '{where}': returns {len(out)} outputs (a {type(out).__name__}); expected one (N, classes) output"
        )
    shape = tuple(getattr(out, "shape", ()))
    check(len(shape) == 2, f"model '{where}': output shape {shape} is not (N, classes)")
    check(
        n_classes in (None, shape[1]),
        f"model '{where}': gives {shape[1]} outputs per image but has {n_classes} classes (outcome_labels)",
    )
    return int(shape[1])


def nan_where_nonfinite(probabilities: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """``(N, K)`` probabilities, NaN in the rows where the model's ``outputs`` hold NaN or inf (a softmax
    can turn an inf into a finite probability)."""
    probabilities[~np.isfinite(outputs).all(axis=1)] = np.nan
    return probabilities


@dataclass(frozen=True)
class AttentionMaps:
    """A vision transformer's attention for a batch, as ``Ops.attention`` gives it (device tensors).

    ``maps``: per block, the attention probabilities ``(N, heads, T, T)``; ``grads``: the class logit's
    gradients w.r.t. each (``None`` when not asked for); ``prefix_tokens``: CLS + register tokens, the first
    rows of ``T``; ``grid``: the ``(h, w)`` patch grid of the other ``T − prefix_tokens`` tokens.
    """

    maps: list[Any]
    grads: list[Any] | None
    prefix_tokens: int
    grid: tuple[int, int]
