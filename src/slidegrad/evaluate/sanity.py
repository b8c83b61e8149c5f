"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps"; MPRT).

A saliency method that explains the *model* must give different maps once the
model's weights are destroyed.  :func:`model_randomisation` re-initialises a copy
of the model cascading from the last layer down and, after each step, compares
the method's map of the same tiles with the trained model's map.  The framework
part is the model's :class:`~slidegrad.backends.Framework` (``randomisation_copy``,
``randomisable_layers``, ``reinitialise``, implemented in
:mod:`slidegrad.backends.torch_backend` and :mod:`~slidegrad.backends.tf_backend`):

- PyTorch: a deep copy; the modules holding parameters, in reverse registration
  order, each with its ``reset_parameters()`` right after
  ``torch.manual_seed(seed + step)`` (the global torch RNG is restored afterwards);
- Keras (3, or tf_keras): ``clone_model`` + ``set_weights``; the layers holding
  weights (nested models flattened, ``outer/inner`` names), last first, each weight
  drawn from the layer's own initialiser (``kernel_initializer``, ...), seeded from
  ``seed + step`` (no global random state changes).  A SavedModel loaded by its
  serving signature has no layers and is refused.

The similarities:

- ``spearman``: Spearman rank correlation (``scipy.stats.spearmanr``) of the
  absolute raw attribution, per pixel (gradient methods: ``|a|`` summed over
  channels, the mask before its p99 clipping; XRAI and Grad-CAM: ``|a|``);
- ``ssim``: SSIM (``skimage.metrics.structural_similarity``, ``data_range=1``)
  of the [0, 1] masks (signed masks, ``signed=True``: ``data_range=2``, their span [−1, 1]).

The class explained by every randomised model is the trained model's class
for that tile (the call's ``class_idx``, else the trained model's argmax),
never the randomised model's argmax.  The user's model is never modified (the
copy holds a second set of weights; L layers cost L + 1 attribution passes).

The registry's ``sanity`` metric (:mod:`slidegrad.metrics`) computes through :func:`sanity_result`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import InputError, check, is_int
from ..methods import get_method
from ..metrics import MetricInputs, MetricResult
from ..model_files import LoadedModel
from .inputs import preprocessed_batch

SANITY_THRESHOLD = 0.5
"""A tile passes when ``|spearman_full| < SANITY_THRESHOLD``: the map of the fully
randomised model keeps less than this rank correlation with the trained model's map.
Adebayo et al. report rank correlations near 0 for methods that pass (e.g. gradients)
and above 0.5 for those that fail (e.g. Guided Backprop); 0.5 separates the two."""

MIN_SSIM_SIDE = 7
"""SSIM's default 7×7 window needs tiles at least this wide and tall."""


def map_similarity(
    raws_a: Any, masks_a: np.ndarray, raws_b: Any, masks_b: np.ndarray, data_range: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile ``(spearman, ssim)``, each ``(N,)`` float64, of two sets of maps of the same tiles.

    ``raws_*``: N raw attributions (:meth:`SaliencyMap.attributions`'s second result);
    ``masks_*``: ``(N, H, W)`` masks in [0, 1] (``data_range`` 1), or signed masks in [−1, 1]
    (``data_range`` 2: SSIM's constants scale with the span).  Spearman is on ``|raw|`` per pixel (see the
    module docstring); where a map is constant it has no ranks: 1 if both maps are equal, else 0.
    """
    from skimage.metrics import structural_similarity

    masks_a, masks_b = np.asarray(masks_a, np.float64), np.asarray(masks_b, np.float64)
    n = len(masks_a)
    spearman, ssim = np.zeros(n), np.zeros(n)
    for i in range(n):
        spearman[i] = _spearman(_magnitude(raws_a[i]), _magnitude(raws_b[i]))
        ssim[i] = structural_similarity(masks_a[i], masks_b[i], data_range=data_range)
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
    """``(name, layer)`` of a torch module's or Keras model's layers holding weights, last first (the
    randomisation order); a layer its backend cannot re-initialise is an :class:`InputError`."""
    return _framework(module).randomisable_layers(module)


def _framework(module: Any) -> Any:
    """The :class:`~slidegrad.backends.Framework` of a bare model (its re-initialisation), importing only it."""
    from ..backends import framework_of

    framework = framework_of(module)
    if framework is None:
        raise InputError(
            "model: model_randomisation needs a PyTorch or Keras model (torch.nn.Module, keras.Model or a "
            f"LoadedModel of one), got {type(module).__name__}"
        )
    return framework


def model_randomisation(
    model: Any,
    batch: np.ndarray,
    method: str,
    class_idx: Any = None,
    seed: int = 0,
    *,
    device: str = "auto",
    memory_budget: int | None = None,
    method_options: dict[str, Any] | None = None,
    **method_params: Any,
) -> dict[str, Any]:
    """Cascading model-randomisation test of ``method`` on preprocessed tiles.

    ``model``: a :class:`~slidegrad.model.LoadedModel`, a ``torch.nn.Module`` or a ``keras.Model``
    (never modified).
    ``batch``: preprocessed channels-last float tiles, ``(N, H, W, 3)`` (or one ``(H, W, 3)``).
    ``class_idx``: the class explained, as in :meth:`SaliencyMap.get` (``None``: each tile's
    predicted class under the trained model).  ``seed``: layer ``step`` (0 = the last layer)
    is re-initialised with seed ``seed + step`` (torch: right after ``torch.manual_seed(seed + step)``).
    ``device`` / ``memory_budget``: as for :class:`~slidegrad.saliency.SaliencyMap`.  ``method_params``:
    the method's parameters (and ``smooth=``), as for :meth:`SaliencyMap.get`; ``method_options``:
    more of them as a dict, e.g. a smooth method's own ``seed`` (which ``seed=`` here does not set).

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
    method_params = {**(method_options or {}), **method_params}
    batch = _check_batch(batch)
    module = model.module if isinstance(model, LoadedModel) else model
    framework = _framework(module)
    randomised_module = framework.randomisation_copy(module)  # before any backend touches the user's model
    layers = framework.randomisable_layers(randomised_module)
    if isinstance(model, LoadedModel):
        randomised: Any = dataclasses.replace(model, module=randomised_module)
    else:
        randomised = randomised_module

    trained = SaliencyMap(model, device=device, memory_budget=memory_budget)
    classes = trained.resolve_classes(batch, class_idx)
    masks, raws = trained.attributions(batch, spec.name, class_idx=classes, **method_params)
    data_range = 2.0 if method_params.get("signed") else 1.0  # signed masks span [-1, 1]

    spearman = np.zeros((len(batch), len(layers)))
    ssim = np.zeros((len(batch), len(layers)))
    for step, (_name, layer) in enumerate(layers):
        framework.reinitialise(layer, seed + step)
        sal = SaliencyMap(randomised, device=device, memory_budget=memory_budget)
        masks_r, raws_r = sal.attributions(batch, spec.name, class_idx=classes, **method_params)
        spearman[:, step], ssim[:, step] = map_similarity(raws, masks, raws_r, masks_r, data_range)
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


def _check_batch(batch: Any) -> np.ndarray:
    return preprocessed_batch(batch, MIN_SSIM_SIDE, " for SSIM")


# -- the metric's unit (slidegrad.metrics): sanity ----------------------------------------------------
def sanity_result(inputs: MetricInputs) -> MetricResult:
    """``sanity_spearman`` and ``sanity_ssim`` ``(N,)`` in [-1, 1] against the fully randomised model
    (re-initialised from ``evaluate.seed``), and ``sanity_passes`` ``(N,)`` bool."""
    result = model_randomisation(
        inputs.scorer.model, inputs.batch, inputs.method.name, inputs.classes, inputs.settings["seed"],
        device=inputs.device, memory_budget=inputs.memory_budget, method_options=inputs.method_options,
    )  # fmt: skip
    return MetricResult({
        "sanity_spearman": result["spearman_full"], "sanity_ssim": result["ssim_full"], "sanity_passes": result["passes"],
    })  # fmt: skip
