"""Loading tile classifiers and their preprocessing.

``load_model(path)`` recognises

* PyTorch — a file, or a model directory holding ``params.json`` and, looked
  for in this order:

  - ``model.pt2``: a ``torch.export`` program (``torch.export.save``), loaded
    with ``torch.export.load(...).module()``; its convolutions are turned back
    into ``nn.Conv2d`` submodules under their original names, so Grad-CAM
    hooks them as on the eager model.  Export with a dynamic batch dimension;
  - ``weights.pt``: a state dict (``torch.save(model.state_dict())``);
  - ``model.pt``: TorchScript (``torch.jit.save``);
  - else the one ``*.pt2`` / ``*.pth`` / ``*.pt`` / ``*.zip`` file there; a
    Slideflow PyTorch model directory (``params.json`` + one state dict
    ``{name}_epoch{N}.zip`` per saved epoch) gives its highest epoch.

  A ``.pt2`` file is a ``torch.export`` program; what any other file holds
  (TorchScript, a state dict or a pickled module) is read from its contents,
  not its name.  A state dict is rebuilt with ``architecture`` — a name from
  :data:`slidegrad.torch_nets.ARCHITECTURES` or ``"module:function"`` — and
  ``architecture_kwargs`` (``n_classes`` is added when the factory takes it
  and ``outcome_labels`` gives it), from ``params.json`` or the
  ``load_model`` keywords, which override it.  Slideflow's state dicts (its
  ``ModelWrapper``: ``model.*`` plus an ``fc0`` head) load into a factory
  with torchvision's layout; ``hp.model`` is used when it names a slidegrad
  architecture (``resnet18``).  A whole pickled module (``torch.save(model)``)
  loads only with ``allow_pickle=True``: unpickling runs code from the file.
* TensorFlow / Keras: a Keras 3 ``.keras`` file (or a directory holding
  ``model.keras``); a legacy SavedModel directory (loaded with ``tf_keras`` so
  layers exist for Grad-CAM); a Slideflow TF model directory (SavedModel +
  ``params.json``).

``params.json`` (in a model directory, or beside a model file) uses
Slideflow's keys (``tile_px``, ``tile_um``, ``outcome_labels``, ``backend``,
``hp.normalizer``) plus ``preprocessing``, ``architecture`` and
``architecture_kwargs``.  Loading code for each framework lives in its backend
module; this module imports no framework.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import stain
from .errors import InputError, check, is_int
from .model_files import (  # noqa: F401 - re-exported: slidegrad.model.LoadedModel, .PARAMS_FILE, ...
    EXPORT_FILE,
    KERAS_FILE,
    PARAMS_FILE,
    SAVED_MODEL_FILE,
    TORCH_FILES,
    TORCH_SUFFIXES,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    params_path,
)

BACKENDS = ("torch", "tensorflow")
DEFAULT_PREPROCESSING = {"torch": "scale", "tensorflow": "standardize"}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def file_sha256(paths: list[Path]) -> str:
    """sha256 over the bytes of ``paths`` (files, or every file under a directory, sorted)."""
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
        for file in files:
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def read_params(path: str | Path) -> dict[str, Any]:
    """``params.json`` of a model directory (or beside a model file); ``{}`` where there is none."""
    path = Path(path)
    params_file = params_path(path)
    if not params_file.exists():
        check(
            not path.is_dir() or _is_tensorflow_path(path),
            f"model '{path}': no {PARAMS_FILE} in the model directory",
        )
        return {}
    try:
        params = json.loads(params_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"'{params_file}': not valid JSON ({getattr(err, 'msg', err)})") from None
    check(isinstance(params, dict), f"'{params_file}': expected a JSON object")
    if "tile_px" in params:
        tile_px = params["tile_px"]
        check(
            isinstance(tile_px, int) and not isinstance(tile_px, bool) and tile_px > 0,
            f"'{params_file}': field 'tile_px' must be a positive integer, got {tile_px!r}",
        )
    labels = params.get("outcome_labels")
    if isinstance(labels, dict):  # Slideflow writes {"0": "label", ...}
        check(
            all(str(k).isdigit() for k in labels),
            f"'{params_file}': field 'outcome_labels' has keys {sorted(map(str, labels))}; expected one outcome's "
            '{"0": label, "1": label, ...} (models with several outcomes are not supported)',
        )
        params["outcome_labels"] = [labels[k] for k in sorted(labels, key=int)]
    check(
        params.get("outcome_labels") is None or isinstance(params["outcome_labels"], list),
        f"'{params_file}': field 'outcome_labels' must be a list or a {{\"0\": label, ...}} object",
    )
    if params.get("architecture") is not None:
        check(
            isinstance(params["architecture"], str),
            f"'{params_file}': field 'architecture' must be a string, got {params['architecture']!r}",
        )
    check(
        params.get("architecture_kwargs") is None or isinstance(params["architecture_kwargs"], dict),
        f"'{params_file}': field 'architecture_kwargs' must be an object, got {params.get('architecture_kwargs')!r}",
    )
    if "preprocessing" in params:
        check_preprocessing(params["preprocessing"], f"'{params_file}': field 'preprocessing'")
    stain.from_params(params, str(params_file))  # hp.normalizer, hp.normalizer_source, norm_fit: one-line errors
    return params


def _is_tensorflow_path(path: Path) -> bool:
    if path.suffix == ".keras":
        return True
    return path.is_dir() and ((path / SAVED_MODEL_FILE).exists() or (path / KERAS_FILE).exists())


def detect_backend(path: Path, params: dict[str, Any]) -> str:
    """``params.json``'s ``backend`` (Slideflow: ``tensorflow`` / ``torch``), else by file layout."""
    backend = params.get("backend")
    if backend is not None:
        backend = {"tf": "tensorflow", "pytorch": "torch"}.get(backend, backend)
        check(backend in BACKENDS, f"model '{path}': backend {backend!r} is not supported; expected one of {BACKENDS}")
        return backend
    return "tensorflow" if _is_tensorflow_path(path) else "torch"


def require_param(path: str | Path, key: str, params: dict[str, Any] | None = None, hint: str = "") -> Any:
    """``params.json``'s ``key`` for the model at ``path``, or one InputError line saying it is missing.

    ``params``: already read (``read_params(path)``); ``hint``: how else to give the value,
    e.g. ``"or set tile_px in the config"``.
    """
    path = Path(path)
    params = read_params(path) if params is None else params
    if params.get(key) is not None:
        return params[key]
    params_file = params_path(path)
    where = f"{PARAMS_FILE} has no {key!r}" if params_file.exists() else f"no {PARAMS_FILE} to read {key!r} from"
    raise InputError(f"model '{path}': {where}; add it{' ' + hint if hint else ''}")


def load_model(
    path: str | Path,
    preprocessing: str | None = None,
    *,
    architecture: str | None = None,
    architecture_kwargs: dict[str, Any] | None = None,
    allow_pickle: bool = False,
    tile_px: int | None = None,
    normalizer: str | None = None,
    normalizer_fit: str | dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a model file or directory (see the module docstring) with its labels and tile geometry.

    ``architecture`` / ``architecture_kwargs`` rebuild a PyTorch state dict and override
    ``params.json``'s fields of those names (each on its own).  ``allow_pickle`` lets a
    whole pickled module (``torch.save(model)``) load; unpickling runs code from the file.
    ``tile_px``: the tiles' size where ``params.json`` gives none (the class count is probed
    on one such tile); it must agree with ``params.json``'s where both are given.
    ``normalizer`` / ``normalizer_fit``: the stain normaliser (a Slideflow name, or ``"none"``) and its
    fit (a preset ``v1``/``v2``/``v3`` or the values), overriding ``params.json``'s ``hp.normalizer``
    and ``norm_fit`` (see :mod:`slidegrad.stain`).
    """
    path = Path(path)
    check(path.exists(), f"model '{path}': file not found")
    params = read_params(path)
    check(
        tile_px is None or (is_int(tile_px) and tile_px > 0),
        f"load_model: tile_px must be a positive integer, got {tile_px!r}",
    )
    check(
        tile_px is None or params.get("tile_px") in (None, tile_px),
        f"model '{path}': {PARAMS_FILE} has tile_px {params.get('tile_px')} but tile_px={tile_px} was given",
    )
    tile_px = params.get("tile_px") or tile_px
    check(
        architecture is None or (isinstance(architecture, str) and bool(architecture)),
        f"load_model: architecture must be a name or 'module:function', got {architecture!r}",
    )
    check(
        architecture_kwargs is None or isinstance(architecture_kwargs, dict),
        f"load_model: architecture_kwargs must be a dict, got {type(architecture_kwargs).__name__}",
    )
    if architecture is not None:
        params["architecture"] = architecture
    if architecture_kwargs is not None:
        params["architecture_kwargs"] = dict(architecture_kwargs)
    backend = detect_backend(path, params)
    if backend == "torch":
        from .backends.torch_backend import load_module, output_count

        module, files = load_module(path, params, allow_pickle=allow_pickle)
    else:
        from .backends.tf_backend import load_module, output_count

        check(
            architecture is None and architecture_kwargs is None,
            f"model '{path}': architecture= rebuilds PyTorch state dicts; this is a TensorFlow model",
        )
        module, files = load_module(path, params)
    n_outputs = output_count(module, tile_px, str(path))
    labels = [str(label) for label in params.get("outcome_labels") or []] or [str(i) for i in range(n_outputs)]
    check(
        len(labels) == n_outputs,
        f"model '{path}': {n_outputs} outputs but {len(labels)} outcome_labels in {PARAMS_FILE}",
    )
    params_file = params_path(path)
    normalizer_fn = stain.from_params(params, str(params_file), normalizer, normalizer_fit, backend)
    prep = preprocessing or params.get("preprocessing") or DEFAULT_PREPROCESSING[backend]
    check_preprocessing(prep, f"model '{path}': preprocessing")
    return LoadedModel(
        module=module,
        backend=backend,
        outcome_labels=labels,
        tile_px=tile_px,
        tile_um=params.get("tile_um"),
        preprocessing=prep,
        path=path,
        sha256=file_sha256(files + ([params_file] if params_file.exists() else [])),
        params=params,
        normalizer=normalizer_fn,
    )


# -- preprocessing ------------------------------------------------------------------
def scale(img: np.ndarray) -> np.ndarray:
    """Slideflow's PyTorch convention: uint8 ``(…, H, W, 3)`` → float32 ``img / 127.5 − 1`` in [−1, 1]."""
    img = _check_image(img)
    return (img.astype(np.float32) / np.float32(127.5)) - np.float32(1.0)


def standardize(img: np.ndarray) -> np.ndarray:
    """Slideflow's TensorFlow convention, ``tf.image.per_image_standardization`` in numpy.

    Per image: ``(x − mean) / max(std, 1/sqrt(H·W·C))`` → float32, zero mean, unit variance.
    """
    img = _check_image(img).astype(np.float32)
    batch = img[None] if img.ndim == 3 else img
    axes = (1, 2, 3)
    mean = batch.mean(axis=axes, keepdims=True)
    std = batch.std(axis=axes, keepdims=True)
    floor = np.float32(1.0 / np.sqrt(np.prod(batch.shape[1:])))
    out = (batch - mean) / np.maximum(std, floor)
    return out[0] if img.ndim == 3 else out


def imagenet(img: np.ndarray) -> np.ndarray:
    """ImageNet normalization: ``(img / 255 − mean) / std`` per channel, float32."""
    img = _check_image(img)
    return ((img.astype(np.float32) / np.float32(255.0)) - IMAGENET_MEAN) / IMAGENET_STD


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    check(img.ndim in (3, 4) and img.shape[-1] == 3, f"image: expected (H, W, 3) or (N, H, W, 3), got {img.shape}")
    return img


PREPROCESSORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "scale": scale,
    "standardize": standardize,
    "imagenet": imagenet,
}


def check_preprocessing(name: Any, where: str) -> None:
    check(name in PREPROCESSORS, f"{where} is {name!r}; supported: {', '.join(PREPROCESSORS)}")


class Preprocess:
    """A model's input pipeline as Slideflow feeds it: the stain normaliser (if any), then the
    preprocessing.  ``preprocess(tiles)``: uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` → float32, same shape."""

    def __init__(self, preprocessing: str, normalizer: stain.StainNormalizer | None = None) -> None:
        self.preprocessing, self.normalizer = preprocessing, normalizer
        self._prep = PREPROCESSORS[preprocessing]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return self._prep(self.normalize(img))

    def normalize(self, img: np.ndarray) -> np.ndarray:
        """The stain normaliser alone (uint8 → uint8; the identity without one)."""
        return img if self.normalizer is None else self.normalizer(_check_image(img))

    def __repr__(self) -> str:
        norm = f"{self.normalizer.describe()} → " if self.normalizer else ""
        return f"Preprocess({norm}{self.preprocessing})"


def get_preprocess_fn(model: str | Path | LoadedModel, stain_normalize: bool = True) -> Preprocess:
    """The input pipeline of a model (or model path): uint8 images → float32 channels-last.

    It includes the model's stain normaliser (``params.json``'s ``hp.normalizer``, or
    ``load_model(normalizer=...)``) unless ``stain_normalize=False``; ``.normalize`` applies that alone.
    """
    if isinstance(model, LoadedModel):
        return Preprocess(model.preprocessing, model.normalizer if stain_normalize else None)
    path = Path(model)
    params = read_params(path)
    params_file = params_path(path)
    backend = detect_backend(path, params)
    prep = params.get("preprocessing") or DEFAULT_PREPROCESSING[backend]
    return Preprocess(prep, stain.from_params(params, str(params_file), backend=backend) if stain_normalize else None)
