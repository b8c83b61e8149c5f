"""The native engine: every method batched across tiles × steps × noise samples on the model's device.

Each method is written once over the backend's device ops (``backend.ops``,
torch or TensorFlow tensors), as a method of :class:`NativeEngine` named by the
method's declaration (:attr:`~slidegrad.methods.Method.native`), with one
signature: ``(x, classes, params, method)`` → an ``(N, ...)`` device tensor or
N host arrays.  Work items are packed into model batches sized
by a memory budget (:mod:`slidegrad.batching`) and accumulated on the device,
then copied to the host once.  Results reproduce PAIR's ``saliency.core``
(the ``pair`` engine) — the parity tests hold them to it.
"""

from __future__ import annotations

import functools
import importlib
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from .. import batching
from ..errors import check
from ..methods import Method
from . import xrai_regions
from .base import ProgressCallback, Request

GUIDED_IG_EPSILON = 1e-9  # PAIR's EPSILON for math.isclose
MAX_GUIDED_IG_INNER = 100_000
# Blur IG operators' dtype for float32 inputs; float32 operators measured 1.5e-3 relative L2 to PAIR (bar 1e-3)
BLUR_OPERATOR_DTYPE = "float64"
HOST_THREADS = min(8, os.cpu_count() or 1)  # worker threads for host work (see _host_pool)
# model → {input shape → estimated bytes per item}: SaliencyMaps of one model share the probe
_ITEM_BYTES: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], int]] = weakref.WeakKeyDictionary()


class NativeEngine:
    """Computes raw attributions for a batch of preprocessed tiles on ``backend``'s device."""

    def __init__(self, backend: Any, memory_budget: int | None = None) -> None:
        self.backend = backend
        self.ops = backend.ops
        self.memory_budget = memory_budget
        self.max_batch_seen = 0  # largest model batch so far (for tests and the benchmark)
        self._item_bytes: dict[tuple[int, ...], int] = {}
        self._budget: int | None = None
        self._blur_ops: dict[tuple[Any, ...], Any] = {}  # the last Blur IG operators, on the device
        self.ig_steps = np.zeros(0, int)  # IG steps each tile of the last IG call took (adaptive: per tile)
        self.tile_steps: list[int] = []  # IG steps per tile (or tile × noise sample) of the last attribute()

    # -- batching ----------------------------------------------------------------------
    def budget(self) -> int:
        """Working-memory budget in bytes: the given one, else half the free device memory."""
        if self.memory_budget is not None:
            return int(self.memory_budget)
        if self._budget is None:  # measured once per engine
            self._budget = int(self.backend.free_memory() * batching.DEFAULT_BUDGET_FRACTION)
        return self._budget

    def item_batch(self, shape: tuple[int, int, int], limit: int) -> int:
        """Items (one forward + backward pass each) per model call under the budget.

        On a CPU the batch also stays under :data:`~slidegrad.batching.CPU_MAX_BATCH` items.
        """
        if not self.backend.on_accelerator:
            limit = min(limit, batching.CPU_MAX_BATCH)
        if limit <= 1:  # one item: nothing to size, so no probe pass
            return 1
        return batching.batch_size(self.budget(), self._per_item_bytes(shape), limit)

    def _per_item_bytes(self, shape: tuple[int, int, int]) -> int:
        """Estimated bytes of one item, probed once per (model, input shape) in this process."""
        model = getattr(self.backend, "module", None)
        model = getattr(self.backend, "model", None) if model is None else model
        try:
            known = _ITEM_BYTES.setdefault(model, {})
        except TypeError:  # a model that takes no weak reference: cache per engine
            known = self._item_bytes
        if shape not in known:
            known[shape] = batching.item_bytes(self.backend.activation_bytes(shape), int(np.prod(shape)))
        return known[shape]

    def _grad(self, points: Any, classes: Any) -> Any:
        self.max_batch_seen = max(self.max_batch_seen, int(points.shape[0]))
        return self.ops.grad(points, classes)

    def path_sum(
        self,
        n_tiles: int,
        n_steps: int,
        classes: Any,
        point: Callable[[np.ndarray, np.ndarray], Any],
        weight: Callable[[np.ndarray, np.ndarray, Any], Any] | None,
        shape: tuple[int, int, int],
        dtype: str = "float32",
    ) -> Any:
        """``Σ_s weight(n, s) · ∇f(point(n, s))`` for every tile ``n``, batched over (tile, step) items.

        Gradients are accumulated in ``dtype`` (the inputs' precision).
        """
        ops = self.ops
        total = None
        for items in batching.chunks(n_tiles * n_steps, self.item_batch(shape, n_tiles * n_steps)):
            k = np.arange(items.start, items.stop)
            tile, step = k // n_steps, k % n_steps
            tile_t = ops.tensor(tile, "int64")
            points = point(tile, step)
            grads = ops.cast(self._grad(points, ops.gather(classes, tile_t)), dtype)
            if weight is not None:
                grads = grads * weight(tile, step, points)
            part = ops.segment_sum(grads, tile_t, n_tiles)
            total = part if total is None else total + part
        return total

    # -- methods (raw attributions, device tensors) --------------------------------------
    def vanilla(self, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None) -> Any:
        """Gradient of the class score at the image itself."""
        n, *shape = x.shape

        def point(tile: np.ndarray, step: np.ndarray) -> Any:
            return self.ops.gather(x, self.ops.tensor(tile, "int64"))

        return self.path_sum(n, 1, classes, point, None, tuple(shape), self.ops.dtype(x))

    def integrated_gradients(
        self, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None, baseline: Any = None
    ) -> Any:
        """IG from ``baseline`` (zeros): ``(x − baseline) · Σ_k w_k ∇f(baseline + α_k (x − baseline))``.

        ``params["integration"]``: ``riemann_trapezoid`` (PAIR's: α = ``linspace(0, 1, x_steps)``,
        w = 1/x_steps) or ``gauss_legendre`` (``x_steps`` Gauss–Legendre nodes on [0, 1]).
        ``params["tolerance"]`` > 0: adaptive steps (:meth:`_refine_ig`).
        """
        baseline = self.ops.zeros_like(x) if baseline is None else baseline
        rule, steps = params.get("integration", "riemann_trapezoid"), int(params["x_steps"])
        raw = self._ig_path(x, classes, baseline, rule, steps)
        self.ig_steps = np.full(int(x.shape[0]), steps)
        tolerance = float(params.get("tolerance", 0.0))
        if tolerance <= 0:
            return raw
        return self._refine_ig(raw, x, classes, baseline, rule, steps, tolerance, int(params["max_steps"]))

    def _ig_path(self, x: Any, classes: Any, baseline: Any, rule: str, steps: int) -> Any:
        """IG with a fixed rule and step count, every tile batched over its (tile, step) items."""
        ops = self.ops
        nodes, weights = quadrature(rule, steps)
        alphas = ops.tensor(nodes.reshape(-1, 1, 1, 1), ops.dtype(x))
        diff = x - baseline

        def point(tile: np.ndarray, step: np.ndarray) -> Any:
            t = ops.tensor(tile, "int64")
            return ops.gather(baseline, t) + ops.gather(alphas, ops.tensor(step, "int64")) * ops.gather(diff, t)

        n, *shape = x.shape
        if rule == "riemann_trapezoid":  # equal weights: PAIR's arithmetic (sum, then / steps)
            return self.path_sum(n, steps, classes, point, None, tuple(shape), ops.dtype(x)) * diff / steps
        w = ops.tensor(weights.reshape(-1, 1, 1, 1), ops.dtype(x))

        def weight(tile: np.ndarray, step: np.ndarray, points: Any) -> Any:
            return ops.gather(w, ops.tensor(step, "int64"))

        return self.path_sum(n, steps, classes, point, weight, tuple(shape), ops.dtype(x)) * diff

    def _refine_ig(
        self, raw: Any, x: Any, classes: Any, baseline: Any, rule: str, steps: int, tolerance: float, max_steps: int
    ) -> Any:
        """Adaptive steps: tiles whose completeness error exceeds ``tolerance`` are recomputed with twice
        the steps (at most ``max_steps``) until they meet it; :attr:`ig_steps` holds each tile's final count.

        The class scores of ``x`` and ``baseline`` cost two forward passes per tile.
        """
        from ..completeness import completeness_error

        ops = self.ops
        host_classes = ops.numpy(classes)
        rows = np.arange(int(x.shape[0]))
        delta = (self.logits(ops.numpy(x))[rows, host_classes] - self.logits(ops.numpy(baseline))[rows, host_classes])
        out = ops.numpy(raw)

        def unmet(tiles: np.ndarray) -> np.ndarray:
            errors = [completeness_error(float(np.sum(out[t], dtype=np.float64)), float(delta[t]), 0.0) for t in tiles]
            return tiles[[e is not None and e > tolerance for e in errors]]

        pending = unmet(rows)
        while pending.size and steps < max_steps:
            steps = min(2 * steps, max_steps)
            index = ops.tensor(pending, "int64")
            part = self._ig_path(ops.gather(x, index), ops.gather(classes, index), ops.gather(baseline, index), rule, steps)
            out[pending] = ops.numpy(part)
            self.ig_steps[pending] = steps
            pending = unmet(pending)
        return ops.tensor(out, ops.dtype(x))

    def blur_integrated_gradients(
        self, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None
    ) -> Any:
        """Blur IG along Gaussian blurs σ = 0 … max_sigma (PAIR's defaults), blurs on the device.

        Each step ``i`` is weighted by its own ``σ_{i+1} − σ_i``.  PAIR's BlurIG
        weights every member of a batch with the batch's *last* step (wrong with
        ``sqrt=True`` and ``batch_size > 1``); this computes the integral as written.
        Blur operators are cached per (size, σ schedule, dtype), in :data:`BLUR_OPERATOR_DTYPE`
        for float32 inputs (float64: float32 operators missed the 1e-3 parity bar) and float64 otherwise.
        """
        ops = self.ops
        n, height, width, channels = x.shape
        steps, max_sigma, grad_step = int(params["steps"]), float(params["max_sigma"]), float(params["grad_step"])
        i = np.arange(steps + 1, dtype=np.float64)
        sigmas = np.sqrt(i * max_sigma / steps) if params["sqrt"] else i * max_sigma / steps
        step_weights = ops.tensor((sigmas[1:] - sigmas[:-1]).reshape(-1, 1, 1, 1), "float64")
        out_dtype = ops.dtype(x)
        work = BLUR_OPERATOR_DTYPE if out_dtype == "float32" else "float64"
        rows, cols = self._blur_operators(tuple(sigmas[:-1]), grad_step, (height, width), work)
        x_work = ops.cast(x, work)

        def blurred(which: int, tile: np.ndarray, step: np.ndarray) -> Any:
            """SciPy's order (axis 0, then 1), each pass stored in the image's dtype; in float64 SciPy's arithmetic."""
            s = ops.tensor(step, "int64")
            image = ops.gather(x_work, ops.tensor(tile, "int64"))
            first = ops.cast(ops.cast(ops.einsum("bhi,bijc->bhjc", ops.gather(rows[which], s), image), out_dtype), work)
            return ops.cast(ops.einsum("bhjc,bwj->bhwc", first, ops.gather(cols[which], s)), out_dtype)

        def weight(tile: np.ndarray, step: np.ndarray, points: Any) -> Any:
            direction = (blurred(1, tile, step) - points) / grad_step
            return ops.cast(ops.gather(step_weights, ops.tensor(step, "int64")), out_dtype) * direction

        total = self.path_sum(
            n, steps, classes, lambda t, s: blurred(0, t, s), weight, (height, width, channels), out_dtype
        )
        return total * -1.0

    def _blur_operators(
        self, sigmas: tuple[float, ...], grad_step: float, size: tuple[int, int], dtype: str
    ) -> tuple[list[Any], list[Any]]:
        """Row and column blur operators ``(S, size, size)`` at σ and σ + ``grad_step``, on the device.

        Host matrices come from :func:`cached_blur_matrices`; the engine keeps the last set on the device.
        """
        key = (sigmas, grad_step, size, dtype)
        if key not in self._blur_ops:
            ops = self.ops

            def operators(length: int) -> list[Any]:
                return [
                    ops.tensor(cached_blur_matrices(tuple(np.add(sigmas, d)), length, dtype), dtype)
                    for d in (0.0, grad_step)
                ]

            rows = operators(size[0])
            cols = rows if size[1] == size[0] else operators(size[1])
            self._blur_ops = {key: (rows, cols)}  # one set: they are large (S × size² each)
        return self._blur_ops[key]

    def guided_integrated_gradients(
        self, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None
    ) -> Any:
        """PAIR's Guided IG (float64 path), sequential over steps, vectorised over tiles."""
        ops = self.ops
        n = x.shape[0]
        shape = tuple(x.shape)
        x_in = ops.reshape(ops.cast(x, "float64"), (n, -1))
        base = ops.zeros_like(x_in)
        diff = x_in - base
        steps, fraction, max_dist = int(params["x_steps"]), float(params["fraction"]), float(params["max_dist"])
        kth = int(np.floor(fraction * (x_in.shape[1] - 1)))
        current = base + 0.0
        attr = ops.zeros_like(x_in)
        l1_total = ops.sum(ops.abs(x_in - base), 1)
        moving = l1_total > 0
        broken = moving & False  # rows whose gradients were NaN or inf: they stop, and end as inf
        nonzero = diff != 0
        for step in range(steps):
            self.max_batch_seen = max(self.max_batch_seen, n)
            grad_actual = ops.reshape(ops.cast(ops.grad(ops.reshape(ops.cast(current, "float32"), shape), classes), "float64"), (n, -1))
            grad = grad_actual
            alpha = (step + 1.0) / steps
            alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
            x_min, x_max = base + diff * alpha_min, base + diff * alpha_max
            l1_target = l1_total * (1 - (step + 1) / steps)
            broken = broken | (ops.sum(ops.where(ops.abs(grad_actual) < ops.inf, 0.0, 1.0), 1) > 0)
            active = moving & ~broken
            for _ in range(MAX_GUIDED_IG_INNER):
                if not ops.any(active):
                    break
                x_old = current
                x_alpha = ops.where(nonzero, (current - base) / ops.where(nonzero, diff, 1.0), alpha_max)
                current = ops.where(active[:, None] & (x_alpha < alpha_min), x_min, current)
                l1_current = ops.sum(ops.abs(current - x_in), 1)
                close = ops.abs(l1_target - l1_current) <= ops.maximum(
                    GUIDED_IG_EPSILON * _pairwise_max(ops, l1_target, l1_current), GUIDED_IG_EPSILON
                )
                still = active & ~close
                grad = ops.where(current == x_max, ops.inf, grad)
                magnitude = ops.abs(grad)
                # gradients are float32 values: rank them in float32 (exact, and faster)
                threshold = ops.cast(ops.kth_smallest(ops.cast(magnitude, "float32"), kth), "float64")
                selected = (magnitude <= threshold[:, None]) & (grad != ops.inf)
                l1_s = ops.sum(ops.where(selected, ops.abs(current - x_max), 0.0), 1)
                gamma = ops.where(l1_s > 0, (l1_current - l1_target) / ops.where(l1_s > 0, l1_s, 1.0), ops.inf)
                jump = ops.where(selected, x_max, current)
                partial = ops.where(selected, current + (x_max - current) * gamma[:, None], current)
                moved = ops.where((gamma > 1.0)[:, None], jump, partial)
                current = ops.where(still[:, None], moved, current)
                # rows that closed in this round moved only by the clamp; the rest by clamp + step
                attr = attr + ops.where(active[:, None], (current - x_old) * grad_actual, 0.0)
                active = still & (gamma > 1.0)
        return ops.reshape(ops.cast(ops.where(broken[:, None], ops.inf, attr), "float32"), shape)

    def gradcam(self, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None) -> list[np.ndarray]:
        """Grad-CAM maps ``(H, W)`` per tile: PAIR's finish (divided by the max, resized to the input)."""
        size = (int(x.shape[1]), int(x.shape[2]))
        mode = upsampling_mode(self.backend)
        return [gradcam_resize(cam, size, mode) for cam in self.ops.numpy(self.gradcam_cams(x, classes, params))]

    def gradcam_cams(self, x: Any, classes: Any, params: dict[str, Any]) -> Any:
        """Grad-CAM maps at the layer's resolution ``(N, h, w)`` (ReLU'd, not yet resized), batched by the budget."""
        ops = self.ops
        n, *shape = x.shape
        cams = []
        for items in batching.chunks(n, self.item_batch(tuple(shape), n)):
            index = ops.tensor(np.arange(items.start, items.stop), "int64")
            self.max_batch_seen = max(self.max_batch_seen, len(items))
            acts, grads = ops.conv(ops.gather(x, index), ops.gather(classes, index), params.get("layer"))
            weights = ops.sum(grads, (1, 2)) / float(grads.shape[1] * grads.shape[2])
            cam = ops.einsum("nhwc,nc->nhw", acts, weights)
            cams.append(ops.where(cam < 0, 0.0, cam))  # ReLU that keeps NaN (refused as non-finite)
        return ops.concat(cams)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, K)`` class probabilities, in forward batches that fit the budget."""
        return self._forward_batches(self.backend.probabilities, batch)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """``(N, K)`` class scores (the outputs the gradients are taken of), in forward batches that fit the budget."""
        return self._forward_batches(self.backend.logits, batch)

    def _forward_batches(self, forward: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
        size = self.item_batch(tuple(batch.shape[1:]), len(batch))
        return np.concatenate([forward(batch[c.start : c.stop]) for c in batching.chunks(len(batch), size)])

    # -- entry point ---------------------------------------------------------------------
    def attribute(
        self, batch: np.ndarray, classes: np.ndarray, request: Request, progress: ProgressCallback | None = None
    ) -> list[np.ndarray]:
        """Raw attributions of a ``(N, H, W, C)`` batch for ``(N,)`` classes, one array per tile (PAIR's shapes).

        Tiles (with SmoothGrad: tile × noise-sample pairs) go to the device in
        groups sized by the budget; each group's results come back to the host once,
        then ``progress(tiles_done, N)`` is called.
        """
        batch = np.asarray(batch, np.float32)
        classes = np.asarray(classes)
        group = self.tile_group(batch.shape[1:])
        self.tile_steps = []
        if request.smooth:
            return self._smoothgrad(batch, classes, request, group, progress)
        out: list[np.ndarray] = []
        for g in batching.chunks(len(batch), group):
            out += self._raw_group(batch[g.start : g.stop], classes[g.start : g.stop], request)
            if progress is not None:
                progress(len(out), len(batch))
        return out

    def _smoothgrad(
        self, batch: np.ndarray, classes: np.ndarray, request: Request, group: int, progress: ProgressCallback | None
    ) -> list[np.ndarray]:
        """SmoothGrad over (tile, sample) pairs with PAIR's noise: ``np.random.seed(seed)`` per tile,
        σ = ``stdev_spread × (max − min)``; mean of squared (``magnitude``) or plain raw maps.

        Each tile's noisy images are drawn on the host worker threads (:func:`noisy_samples`), a few tiles
        ahead of the model's passes: PAIR's sequence per tile, so the noise is the same, drawn in parallel.
        ``progress`` after each group of pairs: the tiles whose samples are all done."""
        method, params = request.method, request.params
        samples = int(params["nsamples"])
        # PAIR keeps noisy images in float64; only Blur IG's finite-difference blurs are
        # sensitive to that precision, so the other methods run on float32 (faster).
        precision = np.float64 if method.name == "blur_integrated_gradients" else np.float32
        pairs = [(i, j) for i in range(len(batch)) for j in range(samples)]
        ahead = max(HOST_THREADS, -(-group // samples) + 1)  # tiles drawn ahead of the passes
        drawn: dict[int, Any] = {}

        def noisy(i: int) -> np.ndarray:
            for k in range(i, min(i + ahead, len(batch))):
                if k not in drawn:
                    drawn[k] = _host_pool().submit(noisy_samples, batch[k], params, samples, precision)
            return drawn[i].result()

        totals: dict[int, np.ndarray] = {}
        for chunk in batching.chunks(len(pairs), group):
            owners = np.array([pairs[k][0] for k in chunk])
            raws = self._raw_group(np.stack([noisy(pairs[k][0])[pairs[k][1]] for k in chunk]), classes[owners], request)
            for i, raw in zip(owners, raws):
                term = raw * raw if params["magnitude"] else raw
                totals[i] = totals[i] + term if i in totals else term
            for i in set(owners.tolist()) - {pairs[chunk.stop - 1][0]}:
                drawn.pop(i, None)  # done with: free its noisy images
            if progress is not None:
                progress(chunk.stop // samples, len(batch))  # pairs run tile by tile
        return [(totals[i] / samples).astype(np.float32) for i in range(len(batch))]

    def tile_group(self, shape: tuple[int, ...]) -> int:
        """Tiles held on the device at once: their inputs and accumulators take at most a quarter of the budget.

        On a CPU at most :data:`~slidegrad.batching.CPU_MAX_BATCH` tiles, so progress is reported
        often (a group's model batches are capped there anyway).
        """
        per_tile = 6 * int(np.prod(shape)) * 8  # input, baseline, accumulators; float64 for Guided IG
        group = max(1, (self.budget() // 4) // per_tile)
        return group if self.backend.on_accelerator else min(group, batching.CPU_MAX_BATCH)

    def _raw_group(self, batch: np.ndarray, classes: np.ndarray, request: Request) -> list[np.ndarray]:
        """One raw attribution per tile of the group, by the engine method ``request.method.native`` (no SmoothGrad)."""
        ops = self.ops
        x = ops.tensor(batch, str(batch.dtype))
        raw = method_function(request.method)(self, x, ops.tensor(classes, "int64"), request.params, request.method)
        if request.method.native == "integrated_gradients":
            self.tile_steps += [int(k) for k in self.ig_steps]
        if isinstance(raw, list):  # already per-tile host arrays (XRAI, Grad-CAM)
            return raw
        return list(ops.numpy(raw).astype(np.float32))

    def xrai(self, x: Any, classes: Any, params: dict[str, Any], method: Method | None = None) -> list[np.ndarray]:
        """XRAI: IG from two baselines (image min and max) batched with every tile, then regions.

        ``method.algorithm`` picks the region selection: ``"fast"`` or ``"full"`` (the default).
        """
        ops = self.ops
        batch = ops.numpy(x)
        # segmentation (host) runs on worker threads while the IG passes run on the model's device
        segmentation = [_host_pool().submit(xrai_regions.segments, image) for image in batch]
        n = len(batch)
        lows = batch.min(axis=(1, 2, 3)).reshape(-1, 1, 1, 1)
        highs = batch.max(axis=(1, 2, 3)).reshape(-1, 1, 1, 1)
        baselines = np.concatenate([np.ones_like(batch) * lows, np.ones_like(batch) * highs]).astype(np.float32)
        doubled = ops.concat([x, x])
        both = ops.concat([classes, classes])
        ig_params = {"x_steps": params["steps"], "integration": params.get("integration", "riemann_trapezoid")}
        ig = ops.numpy(self.integrated_gradients(doubled, both, ig_params, baseline=ops.tensor(baselines)))
        attrs = ((ig[:n] + ig[n:]) / 2).max(axis=-1)
        fast = method is not None and method.algorithm == "fast"
        select = xrai_regions.xrai_fast if fast else xrai_regions.xrai_full
        return [select(attr, segs.result()) for attr, segs in zip(attrs, segmentation)]


def method_function(method: Method) -> Callable[..., Any]:
    """The function computing ``method`` natively, ``(engine, x, classes, params, method)`` → raw maps: a
    :class:`NativeEngine` method, or ``"module:function"`` of :attr:`Method.native` in :mod:`slidegrad.engines`."""
    if ":" not in method.native:
        return getattr(NativeEngine, method.native)
    module, _, name = method.native.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


@functools.lru_cache(maxsize=1)
def _host_pool() -> ThreadPoolExecutor:
    """Worker threads for host work beside the model's passes (XRAI's segmentation, SmoothGrad's noise),
    shared by engines: one per core, at most 8 (both release the GIL)."""
    return ThreadPoolExecutor(max_workers=HOST_THREADS, thread_name_prefix="slidegrad-host")


def noisy_samples(image: np.ndarray, params: dict[str, Any], samples: int, dtype: Any) -> np.ndarray:
    """``(samples, H, W, C)`` in ``dtype``: PAIR's SmoothGrad inputs for one ``(H, W, C)`` image.

    ``np.random.seed(params["seed"])``, then ``image + normal(0, σ)`` per sample with
    σ = ``stdev_spread × (max − min)``, summed in float64 as PAIR does.
    """
    rng = np.random.RandomState(int(params["seed"]))
    stdev = params["stdev_spread"] * (np.max(image) - np.min(image))
    out = np.empty((samples, *image.shape), dtype)
    for j in range(samples):
        out[j] = image + rng.normal(0, stdev, image.shape)
    return out


@functools.lru_cache(maxsize=16)
def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(nodes, weights)``, each ``(steps,)`` float64, of ``rule`` on [0, 1] (weights sum to 1).

    ``riemann_trapezoid``: PAIR's ``linspace(0, 1, steps)`` with weights ``1/steps``;
    ``gauss_legendre``: Gauss–Legendre, exact on polynomials of degree ≤ ``2·steps − 1``.
    """
    check(steps >= 1, f"integration: steps must be ≥ 1, got {steps}")
    if rule == "riemann_trapezoid":
        return np.linspace(0, 1, steps), np.full(steps, 1.0 / steps)
    check(rule == "gauss_legendre", f"integration: unknown rule {rule!r}; expected riemann_trapezoid or gauss_legendre")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


def _pairwise_max(ops: Any, a: Any, b: Any) -> Any:
    a, b = ops.abs(a), ops.abs(b)
    return ops.where(a > b, a, b)


def blur_matrices(sigmas: np.ndarray, size: int, truncate: float = 4.0) -> np.ndarray:
    """``(S, size, size)`` float64 matrices ``M`` with ``M @ v`` = ``scipy.ndimage.gaussian_filter1d(v, σ, mode='constant')``.

    Same kernel as SciPy (radius ``int(truncate·σ + 0.5)``, normalized); σ = 0 is the identity.
    """
    offsets = np.arange(size)[None, :] - np.arange(size)[:, None]
    out = np.zeros((len(sigmas), size, size), np.float64)
    for k, sigma in enumerate(sigmas):
        if sigma <= 1e-15:
            out[k] = np.eye(size)
            continue
        radius = int(truncate * float(sigma) + 0.5)
        taps = np.arange(-radius, radius + 1)
        phi = np.exp(-0.5 / (sigma * sigma) * taps**2)
        phi /= phi.sum()
        inside = np.abs(offsets) <= radius
        out[k][inside] = phi[offsets[inside] + radius]
    return out


@functools.lru_cache(maxsize=4)
def cached_blur_matrices(sigmas: tuple[float, ...], size: int, dtype: str = "float64") -> np.ndarray:
    """:func:`blur_matrices` in ``dtype``, cached per (σ schedule, size, dtype); the caller must not write to it.

    Bounded: at 512 px and 100 steps one entry is 100 MB (float32); a Blur IG call uses two (σ, σ + grad_step).
    """
    return blur_matrices(np.asarray(sigmas, np.float64), size).astype(dtype)


def upsampling_mode(backend: Any) -> str:
    """How a coarse map's edges are upsampled: ``reflect`` (skimage's default, PAIR's Grad-CAM) for CNNs;
    ``edge`` for a vision transformer's patch-grid maps, the edge patch repeated as pytorch-grad-cam's OpenCV
    resize and Chefer et al.'s ``F.interpolate(mode='bilinear')`` do (the same values to float rounding)."""
    return "edge" if backend.token_prefix() is not None else "reflect"


def gradcam_resize(cam: np.ndarray, size: tuple[int, int], mode: str = "reflect") -> np.ndarray:
    """PAIR's Grad-CAM finish: divide by the max (if positive) and resize to the input with skimage
    (bilinear; ``mode``: how edges are extended, see :func:`upsampling_mode`)."""
    from skimage.transform import resize

    cam = np.asarray(cam, np.float32)
    if not np.isfinite(cam).all():  # NaN gradients: a NaN map, refused by SaliencyMap
        return np.full(size, np.nan, np.float32)
    if cam.max() > 0:
        cam = cam / cam.max()
    return resize(cam, size, mode=mode).astype(np.float32)
