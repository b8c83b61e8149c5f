"""``SaliencyMap``: Slideflow's ``slideflow.grad`` API, tested and batched over tiles."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .backends import Backend, get_backend
from .engines import Engine, make_engine
from .errors import InputError, check, is_int, listed
from .methods import METHODS, Method, get_method, normalize, resolve_params
from .model import LoadedModel


class SaliencyMap:
    """Attribution maps for one model.

    ``model`` is a :class:`~slidegrad.model.LoadedModel` or a bare
    ``torch.nn.Module``.  Images are *preprocessed*, channels-last float32:
    one ``(H, W, 3)`` image gives an ``(H, W)`` mask, a ``(N, H, W, 3)`` batch
    gives ``(N, H, W)``; masks are float32 in [0, 1].

    ``class_idx`` is the class explained: set per object here, or per call
    (``class_idx=`` on every method, an int or one per image); ``None`` means
    each image's predicted class.  A :class:`~slidegrad.model.LoadedModel`'s
    classes may also be named by their ``outcome_labels``.

    A model whose outputs or attributions are NaN or inf is an error
    (:class:`NonFiniteError`, naming the images), never a NaN mask.

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
        self.engine = _Guarded(make_engine(engine, self.backend, memory_budget), self.backend, engine == "pair")
        # range-checked now if the class count is known or a probe at the model's tile size (else 64) works;
        # else (a fixed input size) once the first batch gives it
        if class_idx is not None:
            self._check_class(self._class_indices(class_idx), self.backend.class_count())

    # -- class handling ------------------------------------------------------------
    def _class_indices(self, chosen: Any) -> np.ndarray:
        """``class_idx`` (one value or ``(N,)``) as int64 indices: ints, or a LoadedModel's outcome labels."""
        values = np.asarray(chosen, dtype=object)
        check(values.ndim <= 1, f"class_idx: expected an int or one per image, got shape {values.shape}")
        return np.array([self._class_index(v) for v in values.ravel()], np.int64).reshape(values.shape)

    def _class_index(self, value: Any) -> int:
        labels = self.model.outcome_labels if isinstance(self.model, LoadedModel) else None
        if isinstance(value, str):
            check(
                bool(labels),
                f"class_idx: {value!r} is a class name; names need a LoadedModel with outcome_labels "
                "(sg.load_model); pass the class index instead",
            )
            check(value in labels, f"class_idx: {value!r} is not a class of the model; its outcome_labels are {labels}")
            return labels.index(value)
        check(
            is_int(value),
            f"class_idx: {value} ({type(value).__name__}) is not a class index; expected an int"
            + (" or one of the outcome_labels" if labels else ""),
        )
        return int(value)

    def _check_class(self, classes: np.ndarray, n: int | None) -> None:
        """Every index in ``classes`` is one of the model's ``n`` classes (unchecked while ``n`` is unknown)."""
        for c in np.unique(classes) if n is not None else ():
            check(0 <= c < n, f"class_idx: {int(c)} is out of range; the model has {n} classes (0..{n - 1})")

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, K)`` class probabilities of a preprocessed batch (batched as the engine batches).

        NaN or inf outputs raise :class:`NonFiniteError` naming the images.
        """
        return self.engine.probabilities(_as_batch(batch))

    def resolve_classes(
        self, batch: np.ndarray, class_idx: Any = None, probabilities: np.ndarray | None = None
    ) -> np.ndarray:
        """``(N,)`` class indices: the call's, else the object's, else each image's argmax.

        ``class_idx``: an int, an outcome label (LoadedModel), or one of those per image.
        """
        batch = _as_batch(batch)
        chosen = self.class_idx if class_idx is None else class_idx
        if chosen is None:
            probabilities = self.probabilities(batch) if probabilities is None else probabilities
            return probabilities.argmax(axis=1)
        classes = self._class_indices(chosen)
        check(
            classes.ndim == 0 or len(classes) == len(batch),
            f"class_idx: {classes.size} values for {len(batch)} images; give one, or one per image",
        )
        self._check_class(classes, self.backend.class_count(batch))
        return np.broadcast_to(classes, (len(batch),)).astype(np.int64)

    # -- core ----------------------------------------------------------------------
    def attributions(
        self,
        img: np.ndarray,
        method: str,
        class_idx: Any = None,
        smooth: bool = False,
        **params: Any,
    ) -> tuple[np.ndarray, Any]:
        """Masks in [0, 1] and the raw attributions, shaped like the input.

        One ``(H, W, 3)`` image gives an ``(H, W)`` mask and one raw array; an
        ``(N, H, W, 3)`` batch gives ``(N, H, W)`` masks and a list of N raw arrays.
        Raw arrays are PAIR's: ``(H, W, 3)`` for gradient methods, ``(H, W)`` for
        XRAI and Grad-CAM.
        """
        spec = get_method(method)
        resolved = resolve_params(spec, params, smooth)
        batch = _as_batch(img)
        classes = self.resolve_classes(batch, class_idx)
        raws = self.engine.attribute(batch.astype(np.float32, copy=False), classes, spec, resolved, smooth)
        masks = np.stack([normalize(spec, raw) for raw in raws]).astype(np.float32)
        if np.ndim(img) == 3:
            return masks[0], raws[0]
        return masks, raws

    def get(self, img: np.ndarray, method: str, **kwargs: Any) -> np.ndarray:
        """Mask(s) of ``method`` for ``img``: ``(H, W)`` or ``(N, H, W)`` float32 in [0, 1]."""
        return self.attributions(img, method, **kwargs)[0]

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


class NonFiniteError(InputError):
    """The model gave NaN or inf for some images: ``what`` (its outputs, or a method's attributions) at ``indices``."""

    def __init__(self, model: str, what: str, indices: Sequence[int]) -> None:
        self.model, self.what, self.indices = model, what, list(indices)
        super().__init__(f"model '{model}': {what} NaN or inf for image(s) {listed(self.indices)} of the batch")


def refuse_nonfinite(arrays: Sequence[np.ndarray], model: str, what: str) -> Sequence[np.ndarray]:
    """``arrays`` (one per image), unless some hold NaN or inf: then :class:`NonFiniteError` naming them."""
    bad = [i for i, a in enumerate(arrays) if not np.isfinite(a).all()]
    if bad:
        raise NonFiniteError(model, what, bad)
    return arrays


class _Guarded:
    """An engine run with gradients on (whatever the caller's torch mode) whose NaN / inf results are errors.

    ``precheck``: check the model's outputs before attributing (PAIR's Guided IG never ends on NaN gradients).
    """

    def __init__(self, engine: Engine, backend: Backend, precheck: bool = False) -> None:
        self.engine, self.backend, self.precheck = engine, backend, precheck

    def __getattr__(self, name: str) -> Any:  # the engine's own attributes (max_batch_seen, tile_group, ...)
        return getattr(self.engine, name)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, K)``, checked finite."""
        return refuse_nonfinite(self.engine.probabilities(batch), self.backend.name, "outputs are")

    def attribute(
        self, batch: np.ndarray, classes: np.ndarray, method: Method, params: dict[str, Any], smooth: bool
    ) -> list[np.ndarray]:
        """The engine's raw attributions (one array per image), checked finite."""
        if self.precheck:
            self.probabilities(batch)
        with self.backend.gradients():
            raws = self.engine.attribute(batch, classes, method, params, smooth)
        return list(refuse_nonfinite(raws, self.backend.name, f"{method.name} attributions are"))


def _as_batch(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (3, 4) or img.shape[-1] not in (1, 3):
        raise InputError(f"image: expected (H, W, 3) or (N, H, W, 3) channels-last, got shape {img.shape}")
    check(
        np.issubdtype(img.dtype, np.floating),
        f"image: expected a preprocessed float image, got {img.dtype}; call preprocess(img) first",
    )
    return img[None] if img.ndim == 3 else img
