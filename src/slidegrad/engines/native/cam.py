"""The CAM family: a layer's activations weighted per channel, summed over channels, ReLU'd, divided by the
max and resized to the tile (PAIR's Grad-CAM finish).

One base, :class:`ClassActivationMap`, does the batching, the weighted sum and the finish; a variant
gives only its channel weights (:meth:`ClassActivationMap.channel_weights`, as pytorch-grad-cam's
``get_cam_weights``):

* :data:`gradcam` — Grad-CAM (Selvaraju et al. 2017): the mean gradient over the layer's positions;
* :data:`gradcam_plusplus` — Grad-CAM++ (Chattopadhay et al. 2018): positive gradients weighted by the
  closed-form α of the paper's eq. 19.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import batching
from ...methods import Method

GRADCAM_PLUSPLUS_EPSILON = 1e-6  # added to α's denominator, as pytorch-grad-cam does (its parity test holds to it)


class ClassActivationMap:
    """A CAM method: ``(engine, x, classes, params, method)`` → one ``(H, W)`` float32 map in [0, 1] per tile."""

    def channel_weights(self, ops: Any, acts: Any, grads: Any) -> Any:
        """``(n, c)`` channel weights from the layer's activations and the class logit's gradients, both
        ``(n, h, w, c)`` device tensors."""
        raise NotImplementedError

    def __call__(
        self, engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None
    ) -> list[np.ndarray]:
        size = (int(x.shape[1]), int(x.shape[2]))
        mode = upsampling_mode(engine.backend)
        return [gradcam_resize(cam, size, mode) for cam in engine.ops.numpy(self.cams(engine, x, classes, params))]

    def cams(self, engine: Any, x: Any, classes: Any, params: dict[str, Any]) -> Any:
        """Maps at the layer's resolution ``(N, h, w)`` (ReLU'd, not yet resized), batched by the budget."""
        ops = engine.ops
        n, *shape = x.shape
        cams = []
        for items in batching.chunks(n, engine.item_batch(tuple(shape), n)):
            index = ops.tensor(np.arange(items.start, items.stop), "int64")
            engine.seen(len(items))
            acts, grads = ops.conv(ops.gather(x, index), ops.gather(classes, index), params.get("layer"))
            cam = ops.einsum("nhwc,nc->nhw", acts, self.channel_weights(ops, acts, grads))
            cams.append(ops.where(cam < 0, 0.0, cam))  # ReLU that keeps NaN (refused as non-finite)
        return ops.concat(cams)


class GradCAM(ClassActivationMap):
    """Grad-CAM: each channel weighted by its gradient's mean over the layer's positions."""

    def channel_weights(self, ops: Any, acts: Any, grads: Any) -> Any:
        return ops.sum(grads, (1, 2)) / float(grads.shape[1] * grads.shape[2])


class GradCAMPlusPlus(ClassActivationMap):
    """Grad-CAM++: ``w_c = Σ_ij α_ij relu(g_ij)``, ``α = g² / (2 g² + Σ_ij A · g³)`` (0 where ``g`` is 0)."""

    def channel_weights(self, ops: Any, acts: Any, grads: Any) -> Any:
        squared = grads * grads
        total = ops.sum(acts, (1, 2))[:, None, None, :]  # Σ_ij A per channel
        alpha = squared / (2.0 * squared + total * (squared * grads) + GRADCAM_PLUSPLUS_EPSILON)
        alpha = ops.where(grads != 0, alpha, 0.0)
        return ops.sum(ops.maximum(grads, 0.0) * alpha, (1, 2))


gradcam = GradCAM()
gradcam_plusplus = GradCAMPlusPlus()


def upsampling_mode(backend: Any) -> str:
    """How a coarse map's edges are upsampled: ``reflect`` (skimage's default, PAIR's Grad-CAM) for CNNs;
    ``edge`` for a vision transformer's patch-grid maps, the edge patch repeated as pytorch-grad-cam's OpenCV
    resize and Chefer et al.'s ``F.interpolate(mode='bilinear')`` do (the same values to float rounding)."""
    return "edge" if backend.token_prefix() is not None else "reflect"


def gradcam_resize(cam: np.ndarray, size: tuple[int, int], mode: str = "reflect") -> np.ndarray:
    """PAIR's Grad-CAM finish: divide by the max (if positive) and resize to the input with skimage
    (bilinear; ``mode``: how edges are extended, see :func:`upsampling_mode`); ``(H, W)`` float32 in [0, 1]."""
    from skimage.transform import resize

    cam = np.asarray(cam, np.float32)
    if not np.isfinite(cam).all():  # NaN gradients: a NaN map, refused by SaliencyMap
        return np.full(size, np.nan, np.float32)
    if cam.max() > 0:
        cam = cam / cam.max()
    return resize(cam, size, mode=mode).astype(np.float32)
