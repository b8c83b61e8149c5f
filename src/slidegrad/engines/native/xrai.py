"""XRAI (Kapishnikov et al. 2019): integrated gradients from a black and a white baseline, summed over
Felzenszwalb regions (:mod:`slidegrad.engines.xrai_regions`) and ranked, fully or fast."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...methods import Method
from .. import xrai_regions
from .engine import host_pool
from .integrated import integrated_gradients


def xrai(engine: Any, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None) -> list[np.ndarray]:
    """XRAI region maps ``(H, W)`` float per tile: IG from two baselines (image min and max) batched with
    every tile, then regions.  ``method.algorithm`` picks the region selection: ``"fast"`` or ``"full"``
    (the default)."""
    ops = engine.ops
    batch = ops.numpy(x)
    # segmentation (host) runs on worker threads while the IG passes run on the model's device
    segmentation = [host_pool().submit(xrai_regions.segments, image) for image in batch]
    n = len(batch)
    lows = batch.min(axis=(1, 2, 3)).reshape(-1, 1, 1, 1)
    highs = batch.max(axis=(1, 2, 3)).reshape(-1, 1, 1, 1)
    baselines = np.concatenate([np.ones_like(batch) * lows, np.ones_like(batch) * highs]).astype(np.float32)
    doubled = ops.concat([x, x])
    both = ops.concat([classes, classes])
    ig_params = {"x_steps": params["steps"], "integration": params.get("integration", "riemann_mean")}
    ig = ops.numpy(integrated_gradients(engine, doubled, both, ig_params, baseline=ops.tensor(baselines)).raw)
    attrs = ((ig[:n] + ig[n:]) / 2).max(axis=-1)
    fast = method is not None and method.algorithm == "fast"
    select = xrai_regions.xrai_fast if fast else xrai_regions.xrai_full
    return [select(attr, segs.result()) for attr, segs in zip(attrs, segmentation)]
