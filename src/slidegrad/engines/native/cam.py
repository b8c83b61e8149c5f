"""The CAM family: a layer's activations combined with a per-channel or per-position weight, summed over
channels, ReLU'd, divided by the max and resized to the tile (PAIR's Grad-CAM finish).

One base, :class:`ClassActivationMap`, does the batching, the sum over channels and the finish; a variant
gives only its terms (:meth:`ClassActivationMap.cam_terms`, ``(n, h, w, c)``) — as channel weights
(:meth:`ClassActivationMap.channel_weights`, pytorch-grad-cam's ``get_cam_weights``) or element-wise:

* :data:`gradcam` — Grad-CAM (Selvaraju et al. 2017): the mean gradient over the layer's positions;
* :data:`gradcam_plusplus` — Grad-CAM++ (Chattopadhay et al. 2018): positive gradients weighted by the
  closed-form α of the paper's eq. 19;
* :data:`hirescam` — HiResCAM (Draelos & Carin 2020): gradient ⊙ activation at every position;
* :data:`layercam` — LayerCAM (Jiang et al. 2021): relu(gradient) ⊙ activation at every position;
* :data:`scorecam` — Score-CAM (Wang et al. 2020), gradient-free: each channel, upsampled to the tile
  and min–max scaled, masks the input; the softmax over channels of the masked inputs' class logits
  weights the channels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import batching
from ...methods import Method

GRADCAM_PLUSPLUS_EPSILON = 1e-6  # added to α's denominator, as pytorch-grad-cam does (its parity test holds to it)
SCORECAM_EPSILON = 1e-8  # added to a channel mask's range (max − min), as pytorch-grad-cam's ScoreCAM does


class ClassActivationMap:
    """A CAM method: ``(engine, x, classes, params, method)`` → one ``(H, W)`` float32 map in [0, 1] per tile."""

    def channel_weights(self, ops: Any, acts: Any, grads: Any) -> Any:
        """``(n, c)`` channel weights from the layer's activations and the class logit's gradients, both
        ``(n, h, w, c)`` device tensors."""
        raise NotImplementedError

    def cam_terms(self, ops: Any, acts: Any, grads: Any) -> Any:
        """``(n, h, w, c)`` terms the map sums over channels; by default ``acts`` weighted per channel by
        :meth:`channel_weights` (the Grad-CAM special case)."""
        return acts * self.channel_weights(ops, acts, grads)[:, None, None, :]

    def layer_map(self, engine: Any, x: Any, classes: Any, acts: Any, grads: Any) -> Any:
        """``(n, h, w)`` map before the ReLU for a device batch ``x`` ``(n, H, W, C)``: the terms summed over
        channels (a variant needing model calls, Score-CAM, overrides this)."""
        return engine.ops.sum(self.cam_terms(engine.ops, acts, grads), 3)

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
            tiles, tile_classes = ops.gather(x, index), ops.gather(classes, index)
            acts, grads = ops.conv(tiles, tile_classes, params.get("layer"))
            cam = self.layer_map(engine, tiles, tile_classes, acts, grads)
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


class HiResCAM(ClassActivationMap):
    """HiResCAM: ``Σ_c g_ijc · A_ijc`` — each position's own gradient, not the channel's mean."""

    def cam_terms(self, ops: Any, acts: Any, grads: Any) -> Any:
        return grads * acts


class LayerCAM(ClassActivationMap):
    """LayerCAM: ``Σ_c relu(g_ijc) · A_ijc``."""

    def cam_terms(self, ops: Any, acts: Any, grads: Any) -> Any:
        return ops.maximum(grads, 0.0) * acts


class ScoreCAM(ClassActivationMap):
    """Score-CAM: channel ``c`` weighted by ``softmax_c(f(x ⊙ M_c))``, ``M_c`` the channel's activation upsampled
    to the tile (bilinear, corners aligned) and min–max scaled to [0, 1]; ``f`` the class logit.  One forward
    pass per (tile, channel), batched across both by the engine's budget; the gradients are not used."""

    def layer_map(self, engine: Any, x: Any, classes: Any, acts: Any, grads: Any) -> Any:
        scores = channel_scores(engine, x, classes, acts)
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        weights = shifted / shifted.sum(axis=1, keepdims=True)
        return engine.ops.einsum("nhwc,nc->nhw", acts, engine.ops.tensor(weights.astype(np.float32)))


def channel_scores(engine: Any, x: Any, classes: Any, acts: Any) -> np.ndarray:
    """``(n, c)`` float64 class logits of ``x`` ``(n, H, W, C)`` masked by each of the ``c`` channels of ``acts``
    ``(n, h, w, c)``, upsampled to ``(H, W)`` (:func:`bilinear_matrix`) and min–max scaled per channel."""
    ops = engine.ops
    n, height, width, depth = (int(d) for d in x.shape)
    _, rows, cols, channels = (int(d) for d in acts.shape)
    per_channel = ops.reshape(ops.einsum("nhwc->nchw", acts), (n * channels, rows, cols))
    up_rows, up_cols = (ops.tensor(bilinear_matrix(rows, height)), ops.tensor(bilinear_matrix(cols, width)))
    scores = np.empty(n * channels, np.float64)
    pairs = n * channels
    for items in batching.chunks(pairs, engine.item_batch((height, width, depth), pairs)):
        k = np.arange(items.start, items.stop)
        masks = ops.einsum("Hh,bhw,Ww->bHW", up_rows, ops.gather(per_channel, ops.tensor(k, "int64")), up_cols)
        flat = ops.reshape(masks, (len(k), height * width))
        low, high = ops.reduce(flat, "min", 1)[:, None, None], ops.reduce(flat, "max", 1)[:, None, None]
        masks = (masks - low) / (high - low + SCORECAM_EPSILON)
        tile = ops.tensor(k // channels, "int64")
        masked = ops.gather(x, tile) * masks[:, :, :, None]
        scores[k] = ops.numpy(engine.class_scores(masked, ops.gather(classes, tile)))
    return scores.reshape(n, channels)


def bilinear_matrix(size: int, target: int) -> np.ndarray:
    """``(target, size)`` float32 linear interpolation with the corners aligned (``align_corners=True``,
    PyTorch's ``UpsamplingBilinear2d`` along one axis): output ``i`` reads input ``i · (size − 1) / (target − 1)``."""
    position = np.arange(target) * ((size - 1) / (target - 1) if target > 1 else 0.0)
    low = np.minimum(np.floor(position).astype(int), size - 1)
    high = np.minimum(low + 1, size - 1)
    matrix = np.zeros((target, size))
    np.add.at(matrix, (np.arange(target), low), 1.0 - (position - low))
    np.add.at(matrix, (np.arange(target), high), position - low)
    return matrix.astype(np.float32)


gradcam = GradCAM()
gradcam_plusplus = GradCAMPlusPlus()
hirescam = HiResCAM()
layercam = LayerCAM()
scorecam = ScoreCAM()


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
