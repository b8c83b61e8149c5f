"""The reference engine: PAIR's ``saliency.core`` over a slidegrad backend.

PAIR's GuidedIG calls ``np.quantile(..., interpolation='lower')``; numpy 2.4
removed that keyword.  We adapt rather than pin numpy: PAIR's ``guided_ig``
module sees a numpy proxy whose ``quantile`` maps ``interpolation=`` to
``method=`` (same result), and nothing else in the process is touched.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Callable, Iterator

import numpy as np
import saliency.core as pair
from saliency.core import guided_ig as _pair_guided_ig

from ..backends import Backend
from ..errors import check
from ..methods import Method
from .base import EngineResult, ProgressCallback, Request


def _quantile(a: Any, q: Any, *args: Any, interpolation: str | None = None, **kwargs: Any) -> Any:
    if interpolation is not None:
        kwargs["method"] = interpolation
    return np.quantile(a, q, *args, **kwargs)


class _NumpyWithQuantileCompat(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


_compat_np = _NumpyWithQuantileCompat("numpy_quantile_compat")
_compat_np.quantile = _quantile  # type: ignore[attr-defined]
_pair_guided_ig.np = _compat_np


@contextlib.contextmanager
def seeded_global_numpy(seed: int) -> Iterator[None]:
    """PAIR draws SmoothGrad noise from ``np.random``; seed it for one call and restore."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def call_model_function(backend: Backend, layer: str | None = None):
    """Adapt a backend to PAIR's ``call_model_function(x, args, expected_keys)`` contract: input gradients,
    the class logit of each image (``OUTPUT_LAYER_VALUES``, ``(N,)``: forward only, for Occlusion), or a
    layer's activations and gradients."""

    def call(x_batch: np.ndarray, call_model_args: dict[str, Any], expected_keys: list[str]) -> dict:
        x_batch = np.asarray(x_batch, dtype=np.float32)
        class_idx = np.full(len(x_batch), call_model_args["class_idx"], dtype=np.int64)
        if pair.INPUT_OUTPUT_GRADIENTS in expected_keys:
            return {pair.INPUT_OUTPUT_GRADIENTS: backend.input_gradients(x_batch, class_idx)}
        if pair.OUTPUT_LAYER_VALUES in expected_keys:
            return {pair.OUTPUT_LAYER_VALUES: backend.logits(x_batch)[np.arange(len(x_batch)), class_idx]}
        acts, grads = backend.conv_gradients(x_batch, class_idx, layer)
        return {pair.CONVOLUTION_LAYER_VALUES: acts, pair.CONVOLUTION_OUTPUT_GRADIENTS: grads}

    return call


# keywords a declaration (PairCall.hook) cannot spell as constants: (image, method, params) → GetMask keywords
HOOKS: dict[str, Callable[[np.ndarray, Method, dict[str, Any]], dict[str, Any]]] = {
    "black_baseline": lambda image, method, params: {"x_baseline": np.zeros_like(image)},
    "xrai_parameters": lambda image, method, params: {
        "extra_parameters": pair.XRAIParameters(steps=params["steps"], algorithm=method.algorithm)
    },
}


def _mask_call(method: Method, params: dict[str, Any], image: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """PAIR object and keyword arguments for ``GetMask`` of ``method``, from its declaration (``method.pair``)."""
    spec = method.pair
    check(spec is not None, f"method {method.name}: PAIR's saliency.core has no such method; use engine: native")
    kwargs = {**spec.extra, **{key: params[key] for key in spec.params}}
    if spec.hook is not None:
        kwargs.update(HOOKS[spec.hook](image, method, params))
    return getattr(pair, spec.cls)(), kwargs


def attribute(backend: Backend, image: np.ndarray, class_idx: int, request: Request) -> np.ndarray:
    """Raw attribution of one ``(H, W, C)`` image: ``(H, W, C)`` for gradient methods, ``(H, W)`` otherwise."""
    method, params = request.method, request.params
    rule = params.get("integration", "riemann_mean")
    check(
        rule == "riemann_mean",
        f"method {method.name}: parameter 'integration' must be riemann_mean with the pair engine, got {rule!r}",
    )
    check(
        not params.get("tolerance"),
        f"method {method.name}: parameter 'tolerance' (adaptive steps) must be 0 with the pair engine, "
        f"got {params.get('tolerance')}",
    )
    check(
        params.get("stride", 1) == 1,
        f"method {method.name}: parameter 'stride' must be 1 with the pair engine (PAIR slides by 1 px), "
        f"got {params.get('stride')}",
    )
    image = np.asarray(image, dtype=np.float32)
    saliency_obj, kwargs = _mask_call(method, params, image)
    call = call_model_function(backend, params.get("layer"))
    args = {"class_idx": int(class_idx)}
    if not request.smooth:
        raw = saliency_obj.GetMask(image, call, args, **kwargs)
    else:
        with seeded_global_numpy(int(params["seed"])):
            raw = saliency_obj.GetSmoothedMask(
                image,
                call,
                args,
                stdev_spread=params["stdev_spread"],
                nsamples=params["nsamples"],
                magnitude=params["magnitude"],
                **kwargs,
            )
    raw = np.asarray(raw, dtype=np.float32)
    if method.pair.first_channel:  # PAIR's 3-D Grad-CAM repeats one map over channels
        raw = raw[..., 0]
    return raw


class PairEngine:
    """The reference: PAIR's ``GetMask`` / ``GetSmoothedMask`` called once per tile, as Slideflow does."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, K)`` class probabilities, one tile at a time (as PAIR-based tools run)."""
        return np.concatenate([self.backend.probabilities(image[None]) for image in batch])

    def attribute(
        self, batch: np.ndarray, classes: np.ndarray, request: Request, progress: ProgressCallback | None = None
    ) -> EngineResult:
        """Raw attributions of a ``(N, H, W, C)`` batch for ``(N,)`` classes, one tile after another;
        ``progress(done, N)`` after each tile.  Model calls take one tile (``item_batch`` 1)."""
        out = []
        for image, k in zip(batch, classes):
            out.append(attribute(self.backend, image, int(k), request))
            if progress is not None:
                progress(len(out), len(batch))
        layer = self.backend.gradcam_layer(request.params.get("layer")) if request.method.layer else None
        return EngineResult(raws=out, layer=layer)
