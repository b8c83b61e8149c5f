"""Class probabilities of raw tiles for the evaluation metrics: the model's preprocessing, then the native
engine under a memory budget (shared by deletion / insertion, ROAD and the reference baseline's choice)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import InputError, check, is_int


class TileScorer:
    """Class probabilities of raw uint8 tiles: the model's preprocessing, then the native engine (budgeted)."""

    def __init__(self, model: Any, device: str, memory_budget: int | None) -> None:
        from ..engines.native import NativeEngine
        from ..model import get_preprocess_fn
        from ..model_files import LoadedModel
        from ..saliency import SaliencyMap

        if memory_budget is not None:
            ok = is_int(memory_budget) and memory_budget > 0
            check(ok, f"memory_budget: expected bytes > 0, got {memory_budget!r}")
        if isinstance(model, LoadedModel):
            sal = SaliencyMap(model, device=device, memory_budget=memory_budget)
        elif isinstance(model, SaliencyMap):
            sal = model
        else:
            raise InputError(
                f"model: expected a LoadedModel (sg.load_model) or a SaliencyMap, got {type(model).__name__}"
            )
        check(
            isinstance(sal.model, LoadedModel),
            "model: the SaliencyMap wraps a bare module, whose preprocessing is unknown; "
            "build it from a LoadedModel (sg.load_model)",
        )
        self.saliency = sal
        self.backend = sal.backend
        # Tiles are perturbed as the model sees them: stain-normalised once (``normalize``), then
        # each perturbed tile only preprocessed (normalising it again would refit to the perturbation).
        self.normalize: Callable[[np.ndarray], np.ndarray] = get_preprocess_fn(sal.model).normalize
        self.preprocess: Callable[[np.ndarray], np.ndarray] = get_preprocess_fn(sal.model, stain_normalize=False)
        reuse = sal.engine_name == "native" and (memory_budget is None or memory_budget == sal.engine.memory_budget)
        self.engine = sal.engine.engine if reuse else NativeEngine(sal.backend, memory_budget)

    def chunk(self, shape: tuple[int, int, int], total: int) -> int:
        """Perturbed tiles built at once: one model batch under the budget."""
        return self.engine.item_batch(shape, total)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        return self.probabilities(self.preprocess(tiles))

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, K)`` class probabilities of preprocessed float ``batch`` ``(N, H, W, 3)``."""
        from ..saliency import refuse_nonfinite

        probs = self.engine.probabilities(batch)
        refuse_nonfinite(probs, self.backend.name, "outputs are")
        return probs
