"""``SaliencyMap``: Slideflow's ``slideflow.grad`` API, tested and batched over tiles."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .backends import Backend, get_backend
from .engines import Engine, ProgressCallback, Request, make_engine
from .engines.base import EngineResult
from .errors import InputError, check, is_int, listed
from .methods import METHODS, PARAMS, SMOOTH_DEFAULTS, Method, get_method, normalize, resolve_params
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

    Every method of :data:`~slidegrad.methods.METHODS` is also a method here, named
    as in Slideflow (``sal.integrated_gradients(img, x_steps=25)``), generated from its
    declaration: the registry's defaults are its keyword defaults (:func:`method_wrapper`).
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
    def explain(
        self,
        img: np.ndarray,
        method: str,
        class_idx: Any = None,
        smooth: bool = False,
        progress: ProgressCallback | None = None,
        signed: bool = False,
        **params: Any,
    ) -> SaliencyResult:
        """Everything one call computes for a batch (or one image, as a batch of one): :class:`SaliencyResult`.

        ``(N, H, W)`` masks in [0, 1] (with ``signed``: in [−1, 1], the sign kept; gradient methods only,
        :func:`~slidegrad.methods.signed_p99`), the raw attributions, the classes explained and what the
        engine reports of the call (steps, batch sizes, layer, completeness inputs).
        """
        spec = get_method(method)
        request = Request(spec, resolve_params(spec, params, smooth, signed), smooth)
        batch = _as_batch(img)
        classes = self.resolve_classes(batch, class_idx)
        result = self.engine.attribute(batch.astype(np.float32, copy=False), classes, request, progress=progress)
        masks = np.stack([normalize(spec, raw, signed) for raw in result.raws]).astype(np.float32)
        return SaliencyResult(masks, result.raws, classes, request.params, result, bool(signed))

    def attributions(
        self,
        img: np.ndarray,
        method: str,
        class_idx: Any = None,
        smooth: bool = False,
        progress: ProgressCallback | None = None,
        signed: bool = False,
        **params: Any,
    ) -> tuple[np.ndarray, Any]:
        """Masks in [0, 1] (``signed``: in [−1, 1]) and the raw attributions, shaped like the input.

        One ``(H, W, 3)`` image gives an ``(H, W)`` mask and one raw array; an
        ``(N, H, W, 3)`` batch gives ``(N, H, W)`` masks and a list of N raw arrays.
        Raw arrays are PAIR's: ``(H, W, 3)`` for gradient methods, ``(H, W)`` for
        XRAI and the CAMs.

        ``progress(tiles_done, tiles_total)`` is called as groups of tiles finish
        (never decreasing; the last call is ``(N, N)``).
        """
        result = self.explain(img, method, class_idx, smooth, progress, signed, **params)
        if np.ndim(img) == 3:
            return result.masks[0], result.raws[0]
        return result.masks, result.raws

    def get(self, img: np.ndarray, method: str, **kwargs: Any) -> np.ndarray:
        """Mask(s) of ``method`` for ``img``: ``(H, W)`` or ``(N, H, W)`` float32 in [0, 1] (``signed=True``:
        in [−1, 1])."""
        return self.attributions(img, method, **kwargs)[0]

    def all(self, img: np.ndarray, **kwargs: Any) -> dict[str, np.ndarray]:
        """Every method's mask for ``img``: those of :data:`~slidegrad.methods.METHODS` that apply to the
        model (methods for vision transformers only on one)."""
        vit = self.backend.token_prefix() is not None
        return {name: self.get(img, name, **kwargs) for name, m in METHODS.items() if vit or not m.transformer}

    # -- Slideflow-named methods: one per METHODS entry, generated below (method_wrapper) --
    def __getattr__(self, name: str) -> Any:
        """``sal.<name>`` of a method registered after import (:func:`~slidegrad.methods.register`)."""
        if name in METHODS:
            return method_wrapper(METHODS[name]).__get__(self, type(self))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(METHODS))


@dataclass(frozen=True)
class SaliencyResult:
    """One :meth:`SaliencyMap.explain` call: ``masks`` ``(N, H, W)`` float32 in [0, 1] (``signed``: in [−1, 1]),
    ``raws`` (N raw arrays, PAIR's shapes), ``classes`` ``(N,)`` int64 explained, ``params`` as resolved
    (defaults filled in), ``engine``: what the engine reported (:class:`~slidegrad.engines.base.EngineResult`:
    IG steps per tile, model batch sizes, the layer read, the class scores of the tiles and their path
    starts), and whether the masks are ``signed``."""

    masks: np.ndarray
    raws: list[np.ndarray]
    classes: np.ndarray
    params: dict[str, Any]
    engine: EngineResult
    signed: bool = False


_ANNOTATIONS = {"int": int, "float": float, "bool": bool, "layer": str | None, "choice": str}


def method_wrapper(method: Method) -> Callable[..., np.ndarray]:
    """``SaliencyMap.<name>`` for ``method``: :meth:`SaliencyMap.get` with the registry's defaults as keywords.

    Signature ``(self, img, <param>=<default>, ..., [smooth=False,] [signed=False,] **kwargs)``: ``smooth``
    only for smoothable methods, ``signed`` only for gradient methods
    (:attr:`~slidegrad.methods.Method.signable`), ``**kwargs`` for ``class_idx``, ``progress`` and SmoothGrad's
    parameters.  Docstring: the method's description, its parameters and defaults.
    """
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter("self", kind), inspect.Parameter("img", kind, annotation=np.ndarray)]
    for key, default in method.defaults.items():
        parameters.append(inspect.Parameter(key, kind, default=default, annotation=_ANNOTATIONS[PARAMS[key].kind]))
    if method.smoothable:
        parameters.append(inspect.Parameter("smooth", kind, default=False, annotation=bool))
    if method.signable:
        parameters.append(inspect.Parameter("signed", kind, default=False, annotation=bool))
    parameters.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD, annotation=Any))
    signature = inspect.Signature(parameters, return_annotation=np.ndarray)

    def wrapper(*args: Any, **kwargs: Any) -> np.ndarray:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        self, img, extra = values.pop("self"), values.pop("img"), values.pop("kwargs")
        return self.get(img, method.name, **values, **extra)

    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    wrapper.__name__ = method.name
    wrapper.__qualname__ = f"SaliencyMap.{method.name}"
    wrapper.__module__ = __name__
    wrapper.__doc__ = _wrapper_doc(method)
    return wrapper


def _wrapper_doc(method: Method) -> str:
    """The method's description, then each parameter's range and default."""
    lines = [method.description, ""]
    for key, default in method.defaults.items():
        spec = PARAMS[key]
        only = f"; {spec.engine} engine only" if spec.engine else ""
        lines.append(f"``{key}``: {spec.describe()} (default {default!r}{only}).")
    if method.smoothable:
        smoothing = ", ".join(f"``{k}={v!r}``" for k, v in SMOOTH_DEFAULTS.items())
        lines.append(f"``smooth=True``: SmoothGrad, tuned by {smoothing} in ``**kwargs``.")
    else:
        lines.append("No SmoothGrad (``smooth=True`` is an error).")
    if method.signable:
        lines.append("``signed=True``: keep the sign, masks in [−1, 1] (0 stays 0; positive evidence > 0).")
    lines += [
        "``**kwargs``: also ``class_idx`` and ``progress`` (see :meth:`SaliencyMap.attributions`).",
        "",
        "Returns ``(H, W)`` for one ``(H, W, 3)`` image, ``(N, H, W)`` for a batch: float32 in [0, 1].",
    ]
    return "\n".join(lines)


for _method in METHODS.values():
    check(not hasattr(SaliencyMap, _method.name), f"method {_method.name}: clashes with SaliencyMap.{_method.name}")
    setattr(SaliencyMap, _method.name, method_wrapper(_method))
del _method


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
        self.last: EngineResult | None = None  # the last attribute() call's result (interactive use)

    def __getattr__(self, name: str) -> Any:  # the engine's own attributes (max_batch_seen, tile_group, ...)
        return getattr(self.engine, name)

    @property
    def tile_steps(self) -> list[int]:
        """IG steps per tile (with SmoothGrad: per tile × sample) of the last call; ``[]`` where none.
        A convenience for interactive use: :meth:`SaliencyMap.explain` returns them with the maps."""
        return list(self.last.tile_steps or []) if self.last is not None else []

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, K)``, checked finite."""
        return refuse_nonfinite(self.engine.probabilities(batch), self.backend.name, "outputs are")

    def attribute(
        self, batch: np.ndarray, classes: np.ndarray, request: Request, progress: ProgressCallback | None = None
    ) -> EngineResult:
        """The engine's result, its raw attributions (one array per image) checked finite."""
        if self.precheck:
            self.probabilities(batch)
        with self.backend.gradients():
            result = self.engine.attribute(batch, classes, request, progress=progress)
        refuse_nonfinite(result.raws, self.backend.name, f"{request.method.name} attributions are")
        self.last = result
        return result


def _as_batch(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (3, 4) or img.shape[-1] not in (1, 3):
        raise InputError(f"image: expected (H, W, 3) or (N, H, W, 3) channels-last, got shape {img.shape}")
    check(
        np.issubdtype(img.dtype, np.floating),
        f"image: expected a preprocessed float image, got {img.dtype}; call preprocess(img) first",
    )
    return img[None] if img.ndim == 3 else img
