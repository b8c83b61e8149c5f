"""The native engine: every method batched across tiles × steps × noise samples on the model's device.

The engine gives what every method shares: model batches sized by a memory budget
(:mod:`slidegrad.batching`), gradients and forward-only class scores on the device, and SmoothGrad
around any method.  The methods themselves are one module each in this package (the one signature of
:mod:`.protocol`), found from their declaration (:attr:`~slidegrad.methods.Method.native`) by
:func:`method_function`.  Results are accumulated on the device, then copied to the host once, and
reproduce PAIR's ``saliency.core`` (the ``pair`` engine) — the parity tests hold them to it.
"""

from __future__ import annotations

import functools
import importlib
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from ... import batching
from ...methods import Method
from ..base import ClassScores, EngineResult, ProgressCallback, Request
from .protocol import MethodOutput

HOST_THREADS = min(8, os.cpu_count() or 1)  # worker threads for host work (see host_pool)
# model → {input shape → estimated bytes per item}: SaliencyMaps of one model share the probe
_ITEM_BYTES: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], int]] = weakref.WeakKeyDictionary()


class NativeEngine:
    """Computes raw attributions for a batch of preprocessed tiles on ``backend``'s device."""

    def __init__(self, backend: Any, memory_budget: int | None = None) -> None:
        self.backend = backend
        self.ops = backend.ops
        self.memory_budget = memory_budget
        self.max_batch_seen = 0  # largest model batch so far (for tests and the benchmark)
        self.device_cache: dict[str, Any] = {}  # per method module: device arrays kept between calls (Blur IG)
        self._item_bytes: dict[tuple[int, ...], int] = {}
        self._budget: int | None = None

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

    def seen(self, items: int) -> None:
        """Record a model call of ``items`` images (:attr:`max_batch_seen`)."""
        self.max_batch_seen = max(self.max_batch_seen, int(items))

    def _grad(self, points: Any, classes: Any) -> Any:
        self.seen(points.shape[0])
        return self.ops.grad(points, classes)

    def grad(self, points: Any, classes: Any) -> Any:
        """``(B, H, W, C)`` d(class logit)/d(input) of a device batch, recorded as one model call."""
        return self._grad(points, classes)

    def class_scores(self, points: Any, classes: Any) -> Any:
        """``(B,)`` class logits of a device batch, forward only (no gradient), recorded as one model call."""
        self.seen(points.shape[0])
        return self.ops.class_scores(points, classes)

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
    ) -> EngineResult:
        """Raw attributions of a ``(N, H, W, C)`` batch for ``(N,)`` classes (PAIR's shapes, one per tile),
        with the steps, batch sizes, layer and class scores of the call (:class:`EngineResult`).

        Tiles (with SmoothGrad: tile × noise-sample pairs) go to the device in
        groups sized by the budget; each group's results come back to the host once,
        then ``progress(tiles_done, N)`` is called.
        """
        batch = np.asarray(batch, np.float32)
        classes = np.asarray(classes)
        group = self.tile_group(batch.shape[1:])
        before, self.max_batch_seen = self.max_batch_seen, 0
        runs = self._smoothgrad if request.smooth else self._groups
        raws, outputs = runs(batch, classes, request, group, progress)
        result = EngineResult(
            raws=raws,
            tile_steps=_joined_steps(outputs),
            item_batch=self.item_batch(tuple(batch.shape[1:]), len(batch)),
            max_batch=self.max_batch_seen,
            layer=self.backend.gradcam_layer(request.params.get("layer")) if request.method.layer else None,
            scores=None if request.smooth else _joined_scores(outputs),
        )
        self.max_batch_seen = max(before, self.max_batch_seen)
        return result

    def _groups(
        self, batch: np.ndarray, classes: np.ndarray, request: Request, group: int, progress: ProgressCallback | None
    ) -> tuple[list[np.ndarray], list[MethodOutput]]:
        """The method on each group of tiles; ``progress`` after each group."""
        raws: list[np.ndarray] = []
        outputs: list[MethodOutput] = []
        for g in batching.chunks(len(batch), group):
            part, output = self._raw_group(batch[g.start : g.stop], classes[g.start : g.stop], request)
            raws += part
            outputs.append(output)
            if progress is not None:
                progress(len(raws), len(batch))
        return raws, outputs

    def _smoothgrad(
        self, batch: np.ndarray, classes: np.ndarray, request: Request, group: int, progress: ProgressCallback | None
    ) -> tuple[list[np.ndarray], list[MethodOutput]]:
        """SmoothGrad over (tile, sample) pairs with PAIR's noise: ``np.random.seed(seed)`` per tile,
        σ = ``stdev_spread × (max − min)``; mean of squared (``magnitude``) or plain raw maps.

        Each tile's noisy images are drawn on the host worker threads (:func:`noisy_samples`), a few tiles
        ahead of the model's passes: PAIR's sequence per tile, so the noise is the same, drawn in parallel,
        in the method's :attr:`~slidegrad.methods.Method.noise_dtype`.
        ``progress`` after each group of pairs: the tiles whose samples are all done."""
        method, params = request.method, request.params
        samples = int(params["nsamples"])
        precision = np.dtype(method.noise_dtype)
        pairs = [(i, j) for i in range(len(batch)) for j in range(samples)]
        ahead = max(HOST_THREADS, -(-group // samples) + 1)  # tiles drawn ahead of the passes
        drawn: dict[int, Any] = {}

        def noisy(i: int) -> np.ndarray:
            for k in range(i, min(i + ahead, len(batch))):
                if k not in drawn:
                    drawn[k] = host_pool().submit(noisy_samples, batch[k], params, samples, precision)
            return drawn[i].result()

        totals: dict[int, np.ndarray] = {}
        outputs: list[MethodOutput] = []
        for chunk in batching.chunks(len(pairs), group):
            owners = np.array([pairs[k][0] for k in chunk])
            noisy_images = np.stack([noisy(pairs[k][0])[pairs[k][1]] for k in chunk])
            raws, output = self._raw_group(noisy_images, classes[owners], request)
            outputs.append(output)
            for i, raw in zip(owners, raws):
                term = raw * raw if params["magnitude"] else raw
                totals[i] = totals[i] + term if i in totals else term
            for i in set(owners.tolist()) - {pairs[chunk.stop - 1][0]}:
                drawn.pop(i, None)  # done with: free its noisy images
            if progress is not None:
                progress(chunk.stop // samples, len(batch))  # pairs run tile by tile
        return [(totals[i] / samples).astype(np.float32) for i in range(len(batch))], outputs

    def tile_group(self, shape: tuple[int, ...]) -> int:
        """Tiles held on the device at once: their inputs and accumulators take at most a quarter of the budget.

        On a CPU at most :data:`~slidegrad.batching.CPU_MAX_BATCH` tiles, so progress is reported
        often (a group's model batches are capped there anyway).
        """
        per_tile = 6 * int(np.prod(shape)) * 8  # input, baseline, accumulators; float64 for Guided IG
        group = max(1, (self.budget() // 4) // per_tile)
        return group if self.backend.on_accelerator else min(group, batching.CPU_MAX_BATCH)

    def _raw_group(
        self, batch: np.ndarray, classes: np.ndarray, request: Request
    ) -> tuple[list[np.ndarray], MethodOutput]:
        """One raw attribution per tile of the group by the method's native function (no SmoothGrad), and
        what else the function reported (steps, class scores)."""
        ops = self.ops
        x = ops.tensor(batch, str(batch.dtype))
        output = method_function(request.method)(self, x, ops.tensor(classes, "int64"), request.params, request.method)
        if not isinstance(output, MethodOutput):
            output = MethodOutput(output)
        raw = output.raw
        if isinstance(raw, list):  # already per-tile host arrays (XRAI, the CAMs)
            return raw, output
        return list(ops.numpy(raw).astype(np.float32)), output


def _joined_steps(outputs: list[MethodOutput]) -> list[int] | None:
    """Steps per tile over the groups, or ``None`` where the method reported none."""
    if not outputs or any(o.steps is None for o in outputs):
        return None
    return [int(k) for o in outputs for k in o.steps]


def _joined_scores(outputs: list[MethodOutput]) -> ClassScores | None:
    """Class scores over the groups, or ``None`` where the method computed none."""
    if not outputs or any(o.scores is None for o in outputs):
        return None
    return ClassScores(
        np.concatenate([o.scores.at_input for o in outputs]), np.concatenate([o.scores.at_baseline for o in outputs])
    )


def method_function(method: Method) -> Callable[..., Any]:
    """The function computing ``method`` natively, ``(engine, x, classes, params, method)`` → raw maps (see
    :mod:`.protocol`): ``"module:function"`` of :attr:`Method.native`, the module under :mod:`slidegrad.engines`."""
    module, _, name = method.native.partition(":")
    return getattr(importlib.import_module(f"slidegrad.engines.{module}"), name)


@functools.lru_cache(maxsize=1)
def host_pool() -> ThreadPoolExecutor:
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
