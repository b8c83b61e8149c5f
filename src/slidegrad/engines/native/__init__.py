"""The native engine and its methods, one module each (:mod:`.protocol` gives their one signature).

* :mod:`.engine` — :class:`NativeEngine`: batching by a memory budget, gradients and forward-only class
  scores on the model's device, SmoothGrad around any method; :func:`method_function` finds a method's
  function from its declaration (:attr:`~slidegrad.methods.Method.native`).
* :mod:`.gradients` (vanilla), :mod:`.input_x_gradient`, :mod:`.integrated` (IG and its quadrature rules),
  :mod:`.guided` (Guided IG), :mod:`.blur` (Blur IG), :mod:`.gradient_shap` (GradientSHAP), :mod:`.xrai` (XRAI),
  :mod:`.cam` (the CAM family: Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM, Score-CAM), and the gradient-free
  :mod:`.occlusion` and :mod:`.rise`;
  the vision-transformer methods are in :mod:`slidegrad.engines.attention`.

The names other modules use are re-exported here.
"""

from __future__ import annotations

from .blur import BLUR_OPERATOR_DTYPE, blur_matrices, cached_blur_matrices
from .cam import gradcam_resize, upsampling_mode
from .engine import HOST_THREADS, NativeEngine, host_pool, method_function, noisy_samples
from .guided import GUIDED_IG_EPSILON, MAX_GUIDED_IG_INNER
from .integrated import quadrature
from .protocol import MethodOutput, NativeMethod

__all__ = [
    "BLUR_OPERATOR_DTYPE", "GUIDED_IG_EPSILON", "HOST_THREADS", "MAX_GUIDED_IG_INNER", "MethodOutput", "NativeEngine",
    "NativeMethod", "blur_matrices", "cached_blur_matrices", "gradcam_resize", "host_pool", "method_function",
    "noisy_samples", "quadrature", "upsampling_mode",
]  # fmt: skip
