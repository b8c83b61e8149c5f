"""Loading tile classifiers and their preprocessing.

``load_model(path)`` recognises

* PyTorch: a directory with ``params.json`` and ``weights.pt`` (a state dict,
  rebuilt with ``architecture`` — a name from :data:`slidegrad.torch_nets.ARCHITECTURES`
  or ``"module:function"`` — and ``architecture_kwargs``), or ``model.pt``
  (TorchScript); a TorchScript file.
* TensorFlow / Keras: a Keras 3 ``.keras`` file (or a directory holding
  ``model.keras``); a legacy SavedModel directory (loaded with ``tf_keras`` so
  layers exist for Grad-CAM); a Slideflow TF model directory (SavedModel +
  ``params.json``).

``params.json`` uses Slideflow's keys (``tile_px``, ``tile_um``,
``outcome_labels``, ``backend``, ``hp.normalizer``) plus ``preprocessing``.
Loading code for each framework lives in its backend module; this module
imports no framework.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError, check

PARAMS_FILE = "params.json"
WEIGHTS_FILE = "weights.pt"
TORCHSCRIPT_FILE = "model.pt"
KERAS_FILE = "model.keras"
SAVED_MODEL_FILE = "saved_model.pb"
BACKENDS = ("torch", "tensorflow")
DEFAULT_PREPROCESSING = {"torch": "scale", "tensorflow": "standardize"}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass
class LoadedModel:
    """A model plus what slidegrad needs to know about it.

    ``module`` maps a preprocessed batch to ``(N, K)`` class scores (torch:
    ``(N, 3, H, W)``; Keras: ``(N, H, W, 3)``); ``outcome_labels`` has K names.
    """

    module: Any
    backend: str
    outcome_labels: list[str]
    tile_px: int | None = None
    tile_um: float | str | None = None
    preprocessing: str = "scale"
    path: Path | None = None
    sha256: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.outcome_labels)


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
    params_path = path / PARAMS_FILE if path.is_dir() else path.parent / PARAMS_FILE
    if not params_path.exists():
        check(
            not path.is_dir() or _is_tensorflow_path(path),
            f"model '{path}': no {PARAMS_FILE} in the model directory",
        )
        return {}
    try:
        params = json.loads(params_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"'{params_path}': not valid JSON ({getattr(err, 'msg', err)})") from None
    check(isinstance(params, dict), f"'{params_path}': expected a JSON object")
    if "tile_px" in params:
        check(
            isinstance(params["tile_px"], int) and params["tile_px"] > 0,
            f"'{params_path}': field 'tile_px' must be a positive integer, got {params['tile_px']!r}",
        )
    labels = params.get("outcome_labels")
    if isinstance(labels, dict):  # Slideflow writes {"0": "label", ...}
        params["outcome_labels"] = [labels[k] for k in sorted(labels, key=int)]
    if "preprocessing" in params:
        check_preprocessing(params["preprocessing"], f"'{params_path}': field 'preprocessing'")
    normalizer = (params.get("hp") or {}).get("normalizer")
    check(
        normalizer in (None, "", "none", "None"),
        f"'{params_path}': stain normalizer {normalizer!r} (hp.normalizer) is not supported yet; "
        "normalize tiles before training or use a model without one",
    )
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


def load_model(path: str | Path, preprocessing: str | None = None) -> LoadedModel:
    """Load a model file or directory (see the module docstring) with its labels and tile geometry."""
    path = Path(path)
    check(path.exists(), f"model '{path}': file not found")
    params = read_params(path)
    backend = detect_backend(path, params)
    if backend == "torch":
        from .backends.torch_backend import load_module, output_count
    else:
        from .backends.tf_backend import load_module, output_count
    module, files = load_module(path, params)
    tile_px = params.get("tile_px")
    n_outputs = output_count(module, tile_px, str(path))
    labels = [str(label) for label in params.get("outcome_labels", [])] or [str(i) for i in range(n_outputs)]
    check(
        len(labels) == n_outputs,
        f"model '{path}': {n_outputs} outputs but {len(labels)} outcome_labels in {PARAMS_FILE}",
    )
    params_file = path / PARAMS_FILE if path.is_dir() else path.parent / PARAMS_FILE
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


def get_preprocess_fn(model: str | Path | LoadedModel) -> Callable[[np.ndarray], np.ndarray]:
    """The preprocessing function for a model (or model path): uint8 images → float32 channels-last."""
    if isinstance(model, LoadedModel):
        return PREPROCESSORS[model.preprocessing]
    path = Path(model)
    params = read_params(path)
    return PREPROCESSORS[params.get("preprocessing") or DEFAULT_PREPROCESSING[detect_backend(path, params)]]
