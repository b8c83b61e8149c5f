"""Methods made for vision transformers, written over the backend's device ops (``ops.attention``).

Both read every block's attention probabilities ``A`` (``(N, heads, T, T)``; token 0 is CLS, the first
``prefix_tokens`` are CLS and any registers) and give, per tile, the CLS token's row over the patch
tokens on the patch grid, upsampled to the tile (bilinear, edge patches repeated, as Grad-CAM's maps
of a vision transformer are):

* :func:`attention_rollout` — Abnar & Zuidema 2020: per block, heads fused (``head_fusion``: mean, max
  or min), the ``discard_ratio`` share of the lowest fused weights set to 0 (never CLS→CLS), identity
  mixed in for the residual path and rows renormalised, ``Â = (A + I) / 2`` rows summing to 1; the
  rollout is the product ``Â_L ⋯ Â_1``.  It does not depend on the class.
* :func:`transformer_attribution` — Chefer, Gur & Wolf 2021 ("Generic attention-model
  explainability", ICCV): per block ``Ā = mean_heads(clamp(∇A ⊙ A, min=0))`` with ∇A the class
  logit's gradient, and ``R ← R + Ā · R`` from ``R = I``.

Tiles go to the model in batches sized by the engine's memory budget (its estimate counts the attention
maps of every block).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import batching


def attention_rollout(engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Any = None) -> list[np.ndarray]:
    """Attention rollout maps ``(H, W)`` float32 ≥ 0, one per tile of ``x`` (``(N, H, W, C)`` on the device)."""
    ops = engine.ops
    fusion, discard = str(params["head_fusion"]), float(params["discard_ratio"])

    def rollout(attention: Any) -> Any:
        result = None
        for a in attention.maps:
            fused = ops.reduce(a, fusion, 1)  # (n, T, T)
            if discard > 0:
                fused = _discard_lowest(ops, fused, discard)
            t = int(fused.shape[-1])
            mixed = (fused + ops.eye(t, ops.dtype(fused))) / 2.0
            mixed = mixed / ops.sum(mixed, -1)[..., None]
            result = mixed if result is None else ops.einsum("nij,njk->nik", mixed, result)
        return result

    return _cls_maps(engine, x, classes, rollout, with_grads=False)


def transformer_attribution(
    engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Any = None
) -> list[np.ndarray]:
    """Chefer et al.'s gradient-weighted attention relevance ``(H, W)`` float32 ≥ 0, one per tile."""
    ops = engine.ops

    def relevance(attention: Any) -> Any:
        result = None
        for a, g in zip(attention.maps, attention.grads):
            weighted = ops.reduce(ops.maximum(g * a, 0.0), "mean", 1)  # (n, T, T)
            if result is None:  # R = I: the first update is I + Ā
                result = ops.eye(int(a.shape[-1]), ops.dtype(a)) + weighted
            else:
                result = result + ops.einsum("nij,njk->nik", weighted, result)
        return result

    return _cls_maps(engine, x, classes, relevance, with_grads=True)


def _cls_maps(engine: Any, x: Any, classes: Any, combine: Any, with_grads: bool) -> list[np.ndarray]:
    """``combine(attention)`` → ``(n, T, T)`` per budgeted batch; each tile's CLS row over the patch tokens,
    on the patch grid, resized to the tile."""
    from .native.cam import gradcam_resize

    ops = engine.ops
    n, *shape = x.shape
    size = (int(shape[0]), int(shape[1]))
    out: list[np.ndarray] = []
    for items in batching.chunks(n, engine.item_batch(tuple(shape), n)):
        index = ops.tensor(np.arange(items.start, items.stop), "int64")
        engine.seen(len(items))
        attention = ops.attention(ops.gather(x, index), ops.gather(classes, index) if with_grads else None)
        cls_rows = ops.numpy(combine(attention)[:, 0, attention.prefix_tokens :])
        for row in cls_rows:
            out.append(_resize(row.reshape(attention.grid).astype(np.float32), size))
    return out


def _resize(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A patch-grid map bilinearly resized to the tile, edge patches repeated (Chefer et al.'s
    ``F.interpolate(mode='bilinear')``; :func:`~slidegrad.engines.native.cam.upsampling_mode`), kept unscaled."""
    from skimage.transform import resize

    if not np.isfinite(grid_map).all():
        return np.full(size, np.nan, np.float32)
    return resize(grid_map, size, order=1, mode="edge").astype(np.float32)


def _discard_lowest(ops: Any, fused: Any, ratio: float) -> Any:
    """``fused`` ``(n, T, T)`` with the lowest ``ratio`` share of each map's entries set to 0, except CLS→CLS
    (entries equal to the threshold go too)."""
    n, t = int(fused.shape[0]), int(fused.shape[-1])
    flat = ops.reshape(fused, (n, t * t))
    k = int(t * t * ratio)
    if k < 1:
        return fused
    threshold = ops.kth_smallest(flat, k - 1)
    keep_first = ops.tensor(np.arange(t * t) == 0, "bool")
    flat = ops.where((flat <= threshold[:, None]) & ~keep_first[None, :], 0.0, flat)
    return ops.reshape(flat, (n, t, t))
