"""``SaliencyMap``: Slideflow's ``slideflow.grad`` API, tested and batched over tiles."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends import Backend, get_backend
from .engines import make_engine
from .errors import InputError, check
from .methods import METHODS, get_method, normalize, resolve_params


class SaliencyMap:
    """Attribution maps for one model.

    ``model`` is a :class:`~slidegrad.model.LoadedModel` or a bare
    ``torch.nn.Module``.  Images are *preprocessed*, channels-last float32:
    one ``(H, W, 3)`` image gives an ``(H, W)`` mask, a ``(N, H, W, 3)`` batch
    gives ``(N, H, W)``; masks are float32 in [0, 1].

    ``class_idx`` is the class explained: set per object here, or per call
    (``class_idx=`` on every method, an int or one per image); ``None`` means
    each image's predicted class.

    ``engine``: ``native`` (batched on the model's device; default) or ``pair``
    (PAIR's reference, one tile at a time).  ``memory_budget`` (bytes) caps the
    native engine's model batches; ``None`` takes half the free device memory.
    """

    def __init__(
        self,
        model: Any,
        class_idx: int | None = None,
        device: str = "auto",
        engine: str = "native",
        memory_budget: int | None = None,
    ) -> None:
        self.model = model
        self.backend: Backend = get_backend(model, device=device)
        self.class_idx = class_idx
        self.engine_name = engine
        self.engine = make_engine(engine, self.backend, memory_budget)
        if class_idx is not None:
            self._check_class(class_idx)

    # -- class handling ------------------------------------------------------------
    def _check_class(self, class_idx: int) -> None:
        n = self.backend.n_classes
        check(
            isinstance(class_idx, (int, np.integer)) and 0 <= int(class_idx) < n,
            f"class_idx: {class_idx!r} is out of range; the model has {n} classes (0..{n - 1})",
        )

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, K)`` class probabilities of a preprocessed batch (batched as the engine batches)."""
        return self.engine.probabilities(_as_batch(batch))

    def resolve_classes(
        self, batch: np.ndarray, class_idx: Any = None, probabilities: np.ndarray | None = None
    ) -> np.ndarray:
        """``(N,)`` class indices: the call's, else the object's, else each image's argmax."""
        chosen = self.class_idx if class_idx is None else class_idx
        if chosen is None:
            probabilities = self.probabilities(batch) if probabilities is None else probabilities
            return probabilities.argmax(axis=1)
        classes = np.broadcast_to(np.asarray(chosen), (len(batch),))
        for value in np.unique(classes):
            self._check_class(int(value))
        return classes.astype(np.int64)

    # -- core ----------------------------------------------------------------------
    def attributions(
        self,
        img: np.ndarray,
        method: str,
        class_idx: Any = None,
        smooth: bool = False,
        **params: Any,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Masks ``(N, H, W)`` in [0, 1] and the raw attributions (one array per image)."""
        spec = get_method(method)
        resolved = resolve_params(spec, params, smooth)
        batch = _as_batch(img)
        classes = self.resolve_classes(batch, class_idx)
        raws = self.engine.attribute(batch.astype(np.float32, copy=False), classes, spec, resolved, smooth)
        masks = np.stack([normalize(spec, raw) for raw in raws]).astype(np.float32)
        return masks, raws

    def get(self, img: np.ndarray, method: str, **kwargs: Any) -> np.ndarray:
        """Mask(s) of ``method`` for ``img``: ``(H, W)`` or ``(N, H, W)`` float32 in [0, 1]."""
        masks, _ = self.attributions(img, method, **kwargs)
        return masks[0] if np.asarray(img).ndim == 3 else masks

    def all(self, img: np.ndarray, **kwargs: Any) -> dict[str, np.ndarray]:
        """Every method's mask for ``img``."""
        return {name: self.get(img, name, **kwargs) for name in METHODS}

    # -- Slideflow-named methods ---------------------------------------------------
    def vanilla(self, img: np.ndarray, smooth: bool = False, **kwargs: Any) -> np.ndarray:
        """Gradient of the class logit w.r.t. the input (SmoothGrad with ``smooth``)."""
        return self.get(img, "vanilla", smooth=smooth, **kwargs)

    def integrated_gradients(
        self, img: np.ndarray, x_steps: int = 25, batch_size: int = 20, smooth: bool = False, **kwargs: Any
    ) -> np.ndarray:
        """Integrated gradients from a black (zero) baseline."""
        return self.get(img, "integrated_gradients", x_steps=x_steps, batch_size=batch_size, smooth=smooth, **kwargs)

    def guided_integrated_gradients(
        self,
        img: np.ndarray,
        x_steps: int = 25,
        max_dist: float = 1.0,
        fraction: float = 0.5,
        smooth: bool = False,
        **kwargs: Any,
    ) -> np.ndarray:
        """Guided IG (Kapishnikov et al. 2021)."""
        return self.get(
            img,
            "guided_integrated_gradients",
            x_steps=x_steps,
            max_dist=max_dist,
            fraction=fraction,
            smooth=smooth,
            **kwargs,
        )

    def blur_integrated_gradients(
        self, img: np.ndarray, batch_size: int = 20, smooth: bool = False, **kwargs: Any
    ) -> np.ndarray:
        """Blur IG (Xu et al. 2020): integrate along a Gaussian-blur path."""
        return self.get(img, "blur_integrated_gradients", batch_size=batch_size, smooth=smooth, **kwargs)

    def xrai(self, img: np.ndarray, batch_size: int = 20, **kwargs: Any) -> np.ndarray:
        """XRAI (full algorithm): IG aggregated over Felzenszwalb regions."""
        return self.get(img, "xrai", batch_size=batch_size, **kwargs)

    def xrai_fast(self, img: np.ndarray, batch_size: int = 20, **kwargs: Any) -> np.ndarray:
        """XRAI, fast algorithm."""
        return self.get(img, "xrai_fast", batch_size=batch_size, **kwargs)

    def gradcam(self, img: np.ndarray, layer: str | None = None, smooth: bool = False, **kwargs: Any) -> np.ndarray:
        """Grad-CAM on ``layer`` (default: the last convolutional layer)."""
        return self.get(img, "gradcam", layer=layer, smooth=smooth, **kwargs)


def _as_batch(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (3, 4) or img.shape[-1] not in (1, 3):
        raise InputError(f"image: expected (H, W, 3) or (N, H, W, 3) channels-last, got shape {img.shape}")
    check(
        np.issubdtype(img.dtype, np.floating),
        f"image: expected a preprocessed float image, got {img.dtype}; call preprocess(img) first",
    )
    return img[None] if img.ndim == 3 else img
