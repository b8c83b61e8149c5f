"""On-demand maps: the tile under a click, explained by the registry method chosen, through the same
:class:`~slidegrad.saliency.SaliencyMap` and preprocessing as the mask jobs (so the mask equals what
the workflow would write for that tile with the method's defaults).

One worker thread computes (one map at a time, the model loaded once); the server awaits it with
``run_in_executor``, so Deep Zoom tiles keep being served while it runs.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import InputError, check
from .run import NotFound, Run, SlideInfo


class OnDemand:
    """Computes single-tile maps for a :class:`Run` (its model, device, engine, class choice)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slidegrad-ondemand")
        self._lock = threading.Lock()
        self._model: Any = None
        self._sal: Any = None
        self._wsi: dict[str, Any] = {}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for wsi in self._wsi.values():
            wsi.close()

    @staticmethod
    def methods() -> list[str]:
        from ..methods import METHODS

        return list(METHODS)

    def _saliency(self) -> Any:
        if self._sal is None:
            from ..devices import job_device
            from ..model import load_model
            from ..planning import model_options
            from ..saliency import SaliencyMap

            check(self.run.model_path is not None, "view: no model (give --model or the run's --config)")
            config = self.run.config
            options = model_options({"model": config.get("model") or {}, "tile_px": config.get("tile_px")})
            self._model = load_model(str(self.run.model_path), **options)
            device, _ = job_device(config.get("device", "auto") or "auto", self.run.layout.gpu_locks())
            class_idx = (config.get("model") or {}).get("class_idx")
            self._sal = SaliencyMap(self._model, class_idx=class_idx, device=device, engine=config.get("engine", "native"))
        return self._sal

    def _open(self, slide: SlideInfo) -> Any:
        if slide.name not in self._wsi:
            from ..slide import WSI

            g = slide.geometry
            self._wsi[slide.name] = WSI(slide.path, int(g["tile_px"]), g["tile_um"], mpp=slide.mpp)
        return self._wsi[slide.name]

    def tile_box(self, slide: SlideInfo, x: float, y: float) -> tuple[int, int, int]:
        """The run's grid tile (level-0 ``x0, y0, extract_px``) under level-0 ``(x, y)``."""
        e = int(round(float(slide.geometry.get("extract_px") or 0)))
        self.run.deepzoom(slide)
        check(e > 0, f"view: slide {slide.name!r} has no tile geometry")
        if not (0 <= x < slide.width and 0 <= y < slide.height) or math.isnan(x) or math.isnan(y):
            raise NotFound(f"point ({x}, {y}) outside slide {slide.name!r}")
        check(slide.width >= e and slide.height >= e, f"view: slide {slide.name!r} is smaller than a tile")
        x0 = min(int(x // e) * e, slide.width - e)
        y0 = min(int(y // e) * e, slide.height - e)
        return x0, y0, e

    def compute(self, slide: SlideInfo, x0: int, y0: int, method: str) -> dict[str, Any]:
        """Blocking: the map of the tile at level-0 ``(x0, y0)`` for ``method`` (run in :attr:`pool`)."""
        from ..jobs.masks import model_input
        from ..methods import get_method

        get_method(method)  # InputError for an unknown name (the server checks first)
        with self._lock:
            start = time.perf_counter()
            sal = self._saliency()
            image = self._open(slide).read(x0, y0)
            batch = model_input(self._model, str(self.run.model_path), image[None], slide.name, [f"x{x0}_y{y0}"])
            probabilities = sal.probabilities(batch)
            classes = sal.resolve_classes(batch, probabilities=probabilities)
            result = sal.explain(batch, method, class_idx=classes)
            seconds = time.perf_counter() - start
        k = int(classes[0])
        labels = list(getattr(self._model, "outcome_labels", None) or [])
        return {
            "image": image, "mask": result.masks[0], "seconds": seconds, "class_idx": k,
            "class_label": labels[k] if k < len(labels) else str(k),
            "probabilities": [float(p) for p in probabilities[0]], "labels": labels,
        }  # fmt: skip


__all__ = ["OnDemand", "InputError"]
