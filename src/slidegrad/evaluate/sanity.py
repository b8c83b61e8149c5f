"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps"; MPRT).

A saliency method that explains the *model* must give different maps once the
model's weights are destroyed.  :func:`model_randomisation` re-initialises a deep
copy of the model cascading from the last layer down (the modules holding
parameters, in reverse registration order, each with its ``reset_parameters()``
right after ``torch.manual_seed(seed + step)``; the global torch RNG is restored
afterwards) and, after each step, compares the method's map of the same tiles
with the trained model's map:

- ``spearman``: Spearman rank correlation (``scipy.stats.spearmanr``) of the
  absolute raw attribution, per pixel (gradient methods: ``|a|`` summed over
  channels, the mask before its p99 clipping; XRAI and Grad-CAM: ``|a|``);
- ``ssim``: SSIM (``skimage.metrics.structural_similarity``, ``data_range=1``)
  of the [0, 1] masks.

The class explained by every randomised model is the trained model's class
for that tile (the call's ``class_idx``, else the trained model's argmax),
never the randomised model's argmax.  The user's model is never modified (the
copy holds a second set of weights; L layers cost L + 1 attribution passes).

PyTorch models only: Keras models are refused (one-line :class:`InputError`).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np

from ..errors import InputError, check, is_int
from ..methods import get_method
from ..model_files import LoadedModel
from .inputs import preprocessed_batch

SANITY_THRESHOLD = 0.5
"""A tile passes when ``|spearman_full| < SANITY_THRESHOLD``: the map of the fully
randomised model keeps less than this rank correlation with the trained model's map.
Adebayo et al. report rank correlations near 0 for methods that pass (e.g. gradients)
and above 0.5 for those that fail (e.g. Guided Backprop); 0.5 separates the two."""

MIN_SSIM_SIDE = 7
"""SSIM's default 7×7 window needs tiles at least this wide and tall."""


def map_similarity(raws_a: Any, masks_a: np.ndarray, raws_b: Any, masks_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile ``(spearman, ssim)``, each ``(N,)`` float64, of two sets of maps of the same tiles.

    ``raws_*``: N raw attributions (:meth:`SaliencyMap.attributions`'s second result);
    ``masks_*``: ``(N, H, W)`` masks in [0, 1].  Spearman is on ``|raw|`` per pixel (see the
    module docstring); where a map is constant it has no ranks: 1 if both maps are equal, else 0.
    """
    from skimage.metrics import structural_similarity

    masks_a, masks_b = np.asarray(masks_a, np.float64), np.asarray(masks_b, np.float64)
    n = len(masks_a)
    spearman, ssim = np.zeros(n), np.zeros(n)
    for i in range(n):
        spearman[i] = _spearman(_magnitude(raws_a[i]), _magnitude(raws_b[i]))
        ssim[i] = structural_similarity(masks_a[i], masks_b[i], data_range=1.0)
    return spearman, ssim


def _magnitude(raw: np.ndarray) -> np.ndarray:
    """``|raw|`` per pixel: summed over channels for ``(H, W, C)`` gradient maps."""
    raw = np.abs(np.asarray(raw, np.float64))
    return raw.sum(axis=-1) if raw.ndim == 3 else raw


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    a, b = a.ravel(), b.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(spearmanr(a, b).statistic)


def randomisable_layers(module: Any) -> list[tuple[str, Any]]:
    """``(name, module)`` of the modules holding parameters, last registered first (the randomisation order).

    Every such module must have ``reset_parameters()``; one without is an :class:`InputError`.
    """
    layers = [(name, m) for name, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))]
    for name, m in layers:
        check(
            callable(getattr(m, "reset_parameters", None)),
            f"model: {f'layer {name!r}' if name else 'the top-level module'} ({type(m).__name__}) has parameters "
            "but no reset_parameters(); model_randomisation cannot re-initialise it",
        )
    check(bool(layers), "model: it has no layers with parameters to randomise")
    return layers[::-1]


def model_randomisation(
    model: Any,
    batch: np.ndarray,
    method: str,
    class_idx: Any = None,
    seed: int = 0,
    *,
    device: str = "auto",
    memory_budget: int | None = None,
    **method_params: Any,
) -> dict[str, Any]:
    """Cascading model-randomisation test of ``method`` on preprocessed tiles.

    ``model``: a :class:`~slidegrad.model.LoadedModel` or a ``torch.nn.Module`` (never modified).
    ``batch``: preprocessed channels-last float tiles, ``(N, H, W, 3)`` (or one ``(H, W, 3)``).
    ``class_idx``: the class explained, as in :meth:`SaliencyMap.get` (``None``: each tile's
    predicted class under the trained model).  ``seed``: layer ``step`` (0 = the last layer)
    is re-initialised right after ``torch.manual_seed(seed + step)``.  ``device`` /
    ``memory_budget``: as for :class:`~slidegrad.saliency.SaliencyMap`.  ``method_params``:
    the method's parameters (and ``smooth=``), as for :meth:`SaliencyMap.get`.

    Returns a dict:

    - ``layers``: the L layer names, in randomisation order (last layer first);
    - ``spearman``, ``ssim``: ``(N, L)`` float64; column ``j``: the model with layers
      ``0..j`` randomised versus the trained model;
    - ``spearman_full``, ``ssim_full``: ``(N,)``, the last column (every layer randomised);
    - ``passes``: ``(N,)`` bool, ``|spearman_full| < threshold``;
    - ``threshold``: :data:`SANITY_THRESHOLD`; ``classes``: ``(N,)`` the classes explained;
    - ``masks``: ``(N, H, W)`` the trained model's masks.
    """
    from ..saliency import SaliencyMap

    spec = get_method(method)
    check(is_int(seed), f"seed: expected an int, got {seed!r}")
    batch = _check_batch(batch)
    module = model.module if isinstance(model, LoadedModel) else model
    _check_torch(module)
    import torch

    randomised_module = copy.deepcopy(module)  # before any backend touches the user's model
    layers = randomisable_layers(randomised_module)
    if isinstance(model, LoadedModel):
        randomised: Any = dataclasses.replace(model, module=randomised_module)
    else:
        randomised = randomised_module

    trained = SaliencyMap(model, device=device, memory_budget=memory_budget)
    classes = trained.resolve_classes(batch, class_idx)
    masks, raws = trained.attributions(batch, spec.name, class_idx=classes, **method_params)

    spearman = np.zeros((len(batch), len(layers)))
    ssim = np.zeros((len(batch), len(layers)))
    for step, (_name, layer) in enumerate(layers):
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed + step)
            layer.reset_parameters()
        sal = SaliencyMap(randomised, device=device, memory_budget=memory_budget)
        masks_r, raws_r = sal.attributions(batch, spec.name, class_idx=classes, **method_params)
        spearman[:, step], ssim[:, step] = map_similarity(raws, masks, raws_r, masks_r)
    return {
        "layers": [name for name, _ in layers],
        "spearman": spearman,
        "ssim": ssim,
        "spearman_full": spearman[:, -1].copy(),
        "ssim_full": ssim[:, -1].copy(),
        "passes": np.abs(spearman[:, -1]) < SANITY_THRESHOLD,
        "threshold": SANITY_THRESHOLD,
        "classes": np.asarray(classes),
        "masks": masks,
    }


def _check_torch(module: Any) -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(module, torch.nn.Module):
        return
    raise InputError(
        f"model: model_randomisation needs a PyTorch model (torch.nn.Module or a LoadedModel of one), "
        f"got {type(module).__name__}"
    )


def _check_batch(batch: Any) -> np.ndarray:
    return preprocessed_batch(batch, MIN_SSIM_SIDE, " for SSIM")
