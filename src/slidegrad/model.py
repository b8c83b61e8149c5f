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
  loads only with ``allow_code=True``: unpickling runs code from the file.
  ``params.json``'s ``"module:function"`` is code from the model folder: it too needs
  ``allow_code=True`` (refused before anything is imported); the ``architecture`` keyword
  is the caller's own code and always allowed.  Names may also come from installed
  packages' ``slidegrad.architectures`` entry points.
* Hugging Face ``transformers``: a ``save_pretrained`` folder (``config.json`` + ``*.safetensors``, no
  slidegrad model file), loaded as ``AutoModelForImageClassification`` with eager attention and
  never remote code; ``params.json`` is optional there: ``outcome_labels`` default to the config's
  ``id2label`` (by index), ``tile_px`` to its ``image_size``.  The module's ``logits`` are its output.
* TensorFlow / Keras: a Keras 3 ``.keras`` file (or a directory holding
  ``model.keras``); a legacy SavedModel directory (loaded with ``tf_keras`` so
  layers exist for Grad-CAM); a Slideflow TF model directory (SavedModel +
  ``params.json``).  Keras loads in safe mode: a ``Lambda`` layer (Python bytecode)
  needs ``allow_code=True``.

Models must give at least two outputs per image (one per class); a one-output model is
refused.  A model in training mode is put in eval mode (a warning says so); outputs that
look like probabilities (a softmax in the model) are explained as given, with a warning.

``params.json`` (in a model directory, or beside a model file) uses
Slideflow's keys (``tile_px``, ``tile_um``, ``outcome_labels``, ``backend``,
``hp.normalizer``) plus ``preprocessing`` (a name of :data:`PREPROCESSORS`, or
``{"mean": [r, g, b], "std": [r, g, b]}`` on the 0–1 scale), ``architecture`` and
``architecture_kwargs``; it is read once, into a :class:`ModelParams` (:func:`model_params`).
Loading code for each framework lives in its backend module, reached through its
:class:`~slidegrad.backends.Framework`; this module imports no framework.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import stain
from .backends import DEFAULT_FRAMEWORK, FRAMEWORKS, Framework, framework_at, get_framework  # noqa: F401 - API
from .errors import InputError, check, is_int
from .model_files import (  # noqa: F401 - re-exported: slidegrad.model.LoadedModel, .PARAMS_FILE, ...
    EXPORT_FILE,
    HF_CONFIG_FILE,
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

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
LOGGER = logging.getLogger("slidegrad")


def resolve_allow_code(allow_code: bool | None, allow_pickle: bool | None, where: str = "load_model") -> bool:
    """``allow_code`` with its old name ``allow_pickle`` (deprecated: ``allow_pickle=True`` logs one warning
    line; ``False`` asks for nothing and passes silently); the two given with different values is an error."""
    for name, value in (("allow_code", allow_code), ("allow_pickle", allow_pickle)):
        check(value is None or isinstance(value, bool), f"{where}: {name} must be True or False, got {value!r}")
    check(
        allow_code is None or allow_pickle is None or allow_code == allow_pickle,
        f"{where}: allow_code={allow_code} and allow_pickle={allow_pickle} (its old name) disagree; "
        "pass allow_code alone",
    )
    if allow_pickle and allow_code is None:
        LOGGER.warning(
            "%s: allow_pickle is deprecated; use allow_code=True (it also allows params.json's 'module:function' "
            "architectures and Keras Lambda layers)",
            where,
        )
    return bool(allow_code if allow_code is not None else allow_pickle)


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


@dataclass(frozen=True)
class ModelParams:
    """A model's ``params.json``, read and checked once (:func:`model_params`).

    ``values``: the file's JSON object as checked (``outcome_labels`` as a list; ``{}`` where there is
    no file).  ``defaults``: what a ``transformers`` folder's ``config.json`` gives (``outcome_labels``,
    ``tile_px``) where ``values`` has none; ``transformers_type``: that folder's ``model_type`` (else None).
    """

    model_path: Path
    file: Path
    values: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    transformers_type: str | None = None

    @property
    def found(self) -> bool:
        """Whether the model has a ``params.json``."""
        return self.file.exists()

    def get(self, key: str) -> Any:
        """``params.json``'s ``key``, else the ``config.json`` default, else None."""
        value = self.values.get(key)
        return self.defaults.get(key) if value is None else value

    @property
    def tile_px(self) -> int | None:
        return self.get("tile_px")

    @property
    def tile_um(self) -> float | str | None:
        return self.get("tile_um")

    @property
    def outcome_labels(self) -> list[Any] | None:
        return self.get("outcome_labels")

    @property
    def preprocessing(self) -> str | dict[str, Any] | None:
        return self.get("preprocessing")

    @property
    def framework(self) -> str | None:
        """Slideflow's ``backend`` field as a framework name (``pytorch`` → ``torch``, ``tf`` → ``tensorflow``);
        None where it is not given; an unknown one is an InputError line."""
        name = self.values.get("backend")
        return None if name is None else get_framework(name, f"model '{self.model_path}': backend").name

    def as_dict(self) -> dict[str, Any]:
        """``values`` with ``defaults`` filled in, as a new dict."""
        return {**self.values, **{k: v for k, v in self.defaults.items() if self.values.get(k) is None}}

    def require(self, key: str, hint: str = "") -> Any:
        """``key``'s value, or one InputError line saying it is missing (``hint``: how else to give it)."""
        if self.get(key) is not None:
            return self.get(key)
        where = f"{PARAMS_FILE} has no {key!r}" if self.found else f"no {PARAMS_FILE} to read {key!r} from"
        raise InputError(f"model '{self.model_path}': {where}; add it{' ' + hint if hint else ''}")


def model_params(path: str | Path) -> ModelParams:
    """The :class:`ModelParams` of the model at ``path``: its ``params.json`` (in a model directory, or
    beside a model file) and a ``transformers`` folder's ``config.json``; each bad field is one InputError
    line naming the file and the field.  A torch model directory must have a ``params.json``."""
    path = Path(path)
    params_file = params_path(path)
    values = _read_params_file(params_file) if params_file.exists() else {}
    if not params_file.exists():
        check(
            not path.is_dir() or FRAMEWORKS["tensorflow"].holds(path) or is_transformers_folder(path),
            f"model '{path}': no {PARAMS_FILE} in the model directory",
        )
    defaults, transformers_type = transformers_config(path, values)
    return ModelParams(path, params_file, values, defaults, transformers_type)


def _read_params_file(params_file: Path) -> dict[str, Any]:
    """A ``params.json`` file's JSON object, checked field by field (one InputError line naming the file)."""
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
    if params.get("preprocessing") is not None:
        where = f"'{params_file}': field 'preprocessing'"
        params["preprocessing"] = check_preprocessing(params["preprocessing"], where)
    stain.from_params(params, str(params_file))  # hp.normalizer, hp.normalizer_source, norm_fit: one-line errors
    return params


def read_params(path: str | Path, transformers: bool = True) -> dict[str, Any]:
    """``params.json`` of a model directory (or beside a model file) as a dict; ``{}`` where there is none.

    A ``transformers`` folder's ``config.json`` fills in what ``params.json`` leaves out
    (:func:`transformers_defaults`), unless ``transformers=False``.  :func:`model_params` gives the same
    as a :class:`ModelParams`.
    """
    params = model_params(path)
    return params.as_dict() if transformers else dict(params.values)


def is_transformers_folder(path: str | Path) -> bool:
    """A Hugging Face ``transformers`` ``save_pretrained`` folder: ``config.json`` and no slidegrad
    model file (``model.pt2``, ``weights.pt``, ``model.pt``, ``*.pt2``/``*.pth``/``*.pt``/``*.zip``,
    ``model.keras``, ``saved_model.pb``) beside it."""
    path = Path(path)
    if not path.is_dir() or not (path / HF_CONFIG_FILE).is_file() or FRAMEWORKS["tensorflow"].holds(path):
        return False
    return not any(p.is_file() and (p.name in TORCH_FILES or p.suffix in TORCH_SUFFIXES) for p in path.iterdir())


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a ``transformers`` folder: a JSON object with a ``model_type`` and no
    ``auto_map`` (remote code, which slidegrad never runs); else one InputError line naming the file."""
    file = Path(path) / HF_CONFIG_FILE
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"'{file}': not valid JSON ({getattr(err, 'msg', err)})") from None
    check(isinstance(config, dict), f"'{file}': expected a JSON object (a transformers model config)")
    check(
        "auto_map" not in config,
        f"'{file}': its auto_map asks for the model's own code (remote code), which slidegrad never runs "
        "(trust_remote_code=False); expected a model type built into transformers",
    )
    model_type = config.get("model_type")
    check(
        isinstance(model_type, str) and bool(model_type),
        f"'{file}': field 'model_type' must name a transformers model type (e.g. 'vit', 'dinov2'), got {model_type!r}",
    )
    return config


def transformers_config(path: Path, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """What a ``transformers`` folder's ``config.json`` gives where ``params`` has none — ``outcome_labels``
    from ``id2label`` (by index), ``tile_px`` from ``image_size`` — and its ``model_type``; other paths:
    ``({}, None)``."""
    if not is_transformers_folder(path):
        return {}, None
    file = path / HF_CONFIG_FILE
    config = read_hf_config(path)
    defaults: dict[str, Any] = {}
    id2label = config.get("id2label")
    if params.get("outcome_labels") is None and id2label is not None:
        check(
            isinstance(id2label, dict) and bool(id2label) and all(str(k).isdigit() for k in id2label),
            f"'{file}': field 'id2label' must map class indices to labels, got {id2label!r}",
        )
        defaults["outcome_labels"] = [str(id2label[k]) for k in sorted(id2label, key=int)]
    size = config.get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if params.get("tile_px") is None and is_int(size) and size > 0:
        defaults["tile_px"] = size
    return defaults, config["model_type"]


def transformers_defaults(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with what a ``transformers`` folder's ``config.json`` gives where they have none
    (:func:`transformers_config`).  Other paths: unchanged."""
    params.update(transformers_config(Path(path), params)[0])
    return params


def detect_framework(params: ModelParams) -> Framework:
    """A model's framework: ``params.json``'s ``backend`` (Slideflow: ``tensorflow`` / ``torch``), else the
    one whose files the model path holds (:func:`slidegrad.backends.framework_at`)."""
    name = params.framework
    return get_framework(name) if name is not None else framework_at(params.model_path)


def require_param(path: str | Path, key: str, params: ModelParams | None = None, hint: str = "") -> Any:
    """``params.json``'s ``key`` for the model at ``path``, or one InputError line saying it is missing.

    ``params``: already read (``model_params(path)``); ``hint``: how else to give the value,
    e.g. ``"or set tile_px in the config"``.
    """
    return (model_params(path) if params is None else params).require(key, hint)


def load_model(
    path: str | Path | ModelParams,
    preprocessing: str | dict[str, Any] | None = None,
    *,
    architecture: str | None = None,
    architecture_kwargs: dict[str, Any] | None = None,
    allow_code: bool | None = None,
    allow_pickle: bool | None = None,
    tile_px: int | None = None,
    normalizer: str | None = None,
    normalizer_fit: str | dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a model file or directory (see the module docstring) with its labels and tile geometry.

    ``path``: the model, or its :class:`ModelParams` already read (:func:`model_params`).
    ``architecture`` / ``architecture_kwargs`` rebuild a PyTorch state dict and override
    ``params.json``'s fields of those names (each on its own); a ``"module:function"`` given here
    is your own code and is imported and called.
    ``allow_code`` (default False) lets a model run code of its own when loaded: a whole pickled
    module (``torch.save(model)``: unpickling runs code from the file), ``params.json``'s
    ``"module:function"`` architecture, a Keras ``Lambda`` layer (``safe_mode=False``).  Only for
    models you trust.  ``allow_pickle``: its old name (deprecated; a warning line).
    ``tile_px``: the tiles' size where ``params.json`` gives none (the class count is probed
    on one such tile); it must agree with ``params.json``'s where both are given.
    ``normalizer`` / ``normalizer_fit``: the stain normaliser (a Slideflow name, or ``"none"``) and its
    fit (a preset ``v1``/``v2``/``v3`` or the values), overriding ``params.json``'s ``hp.normalizer``
    and ``norm_fit`` (see :mod:`slidegrad.stain`).
    ``preprocessing``: a name of :data:`PREPROCESSORS`, or ``{"mean": [r, g, b], "std": [r, g, b]}`` on
    the 0–1 scale (``(img / 255 − mean) / std``); overrides ``params.json``'s.
    """
    read = path if isinstance(path, ModelParams) else None
    path = read.model_path if read is not None else Path(path)
    allow_code = resolve_allow_code(allow_code, allow_pickle)
    check(path.exists(), f"model '{path}': file not found")
    params = read or model_params(path)
    tile_px = _tile_px(params, tile_px)
    values = _with_architecture(params.as_dict(), architecture, architecture_kwargs)
    framework = detect_framework(params)
    check(
        framework.builds_architectures or (architecture is None and architecture_kwargs is None),
        f"model '{path}': architecture= rebuilds PyTorch state dicts; this is a {framework.title} model",
    )
    architecture_from = params.file if architecture is None else None  # None: the caller's own
    module, files = framework.load(path, values, allow_code, architecture_from, params.transformers_type)
    n_outputs = check_outputs(framework.probe_outputs(module, tile_px, str(path)), str(path))
    labels = [str(label) for label in values.get("outcome_labels") or []] or [str(i) for i in range(n_outputs)]
    check(
        len(labels) == n_outputs,
        f"model '{path}': {n_outputs} outputs but {len(labels)} outcome_labels in {PARAMS_FILE}",
    )
    normalizer_fn = stain.from_params(values, str(params.file), normalizer, normalizer_fit, framework.name)
    if preprocessing is not None:
        prep = check_preprocessing(preprocessing, f"model '{path}': preprocessing")
    else:
        prep = params.preprocessing or framework.default_preprocessing
    return LoadedModel(
        module=module,
        framework=framework.name,
        outcome_labels=labels,
        tile_px=tile_px,
        tile_um=params.tile_um,
        preprocessing=prep,
        path=path,
        sha256=file_sha256(files + ([params.file] if params.found else [])),
        params=values,
        normalizer=normalizer_fn,
    )


def _tile_px(params: ModelParams, tile_px: int | None) -> int | None:
    """The tiles' size: ``params.json``'s, else ``load_model(tile_px=)``, else a ``transformers`` config's;
    the keyword must be a positive integer that agrees with ``params.json``'s."""
    check(
        tile_px is None or (is_int(tile_px) and tile_px > 0),
        f"load_model: tile_px must be a positive integer, got {tile_px!r}",
    )
    given = params.values.get("tile_px")
    check(
        tile_px is None or given in (None, tile_px),
        f"model '{params.model_path}': {PARAMS_FILE} has tile_px {given} but tile_px={tile_px} was given",
    )
    return given or tile_px or params.defaults.get("tile_px")


def _with_architecture(
    values: dict[str, Any], architecture: str | None, architecture_kwargs: dict[str, Any] | None
) -> dict[str, Any]:
    """``values`` with ``load_model``'s ``architecture`` / ``architecture_kwargs`` (checked) overriding."""
    check(
        architecture is None or (isinstance(architecture, str) and bool(architecture)),
        f"load_model: architecture must be a name or 'module:function', got {architecture!r}",
    )
    check(
        architecture_kwargs is None or isinstance(architecture_kwargs, dict),
        f"load_model: architecture_kwargs must be a dict, got {type(architecture_kwargs).__name__}",
    )
    if architecture is not None:
        values["architecture"] = architecture
    if architecture_kwargs is not None:
        values["architecture_kwargs"] = dict(architecture_kwargs)
    return values


def check_outputs(outputs: np.ndarray, where: str) -> int:
    """The class count of a model's ``(N, K)`` probe outputs.  One output per image is refused (one line);
    outputs in [0, 1] summing to 1 (a softmax in the model) log one warning line."""
    n_outputs = int(outputs.shape[1])
    check(
        n_outputs >= 2,
        f"model '{where}': gives 1 output per image; slidegrad explains one class among 2 or more, one output "
        "each: for a one-logit (sigmoid) model z, output [0, z] instead (its softmax is [1 - sigmoid(z), sigmoid(z)])",
    )
    finite = np.isfinite(outputs).all()
    if finite and outputs.min() >= 0 and outputs.max() <= 1 and np.allclose(outputs.sum(axis=1), 1, atol=1e-4):
        LOGGER.warning(
            "model '%s': its outputs look like probabilities (in [0, 1], summing to 1 on a probe tile), i.e. a "
            "softmax in the model; maps explain the class probability as given (its gradients), not a logit",
            where,
        )
    return n_outputs


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
    """ImageNet normalization: ``(img / 255 − mean) / std`` per channel, float32 (:func:`mean_std`)."""
    return mean_std(IMAGENET_MEAN, IMAGENET_STD)(img)


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    check(img.ndim in (3, 4) and img.shape[-1] == 3, f"image: expected (H, W, 3) or (N, H, W, 3), got {img.shape}")
    return img


PREPROCESSORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "scale": scale,
    "standardize": standardize,
    "imagenet": imagenet,
}


MEAN_STD_KEYS = ("mean", "std")


def check_preprocessing(value: Any, where: str) -> str | dict[str, list[float]]:
    """A preprocessing: a name of :data:`PREPROCESSORS`, or ``{"mean": [r, g, b], "std": [r, g, b]}``
    (numbers on the 0–1 scale, as foundation models publish them; std > 0), returned with plain float
    lists; else one InputError line starting with ``where``."""
    supported = f"supported: {', '.join(PREPROCESSORS)}, or {{mean: [r, g, b], std: [r, g, b]}} on the 0-1 scale"
    if not isinstance(value, dict):
        check(isinstance(value, str) and value in PREPROCESSORS, f"{where} is {value!r}; {supported}")
        return value
    unknown = [str(k) for k in value if k not in MEAN_STD_KEYS]
    check(not unknown, f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; expected exactly 'mean' and 'std'")
    missing = [k for k in MEAN_STD_KEYS if k not in value]
    if missing:
        raise InputError(f"{where} has no {missing[0]!r}; expected exactly 'mean' and 'std'")
    out = {}
    for key in MEAN_STD_KEYS:
        numbers = value[key]
        ok = (
            isinstance(numbers, (list, tuple))
            and len(numbers) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers)
        )
        bound = " > 0" if key == "std" else ""
        check(
            ok and (key == "mean" or all(v > 0 for v in numbers)),
            f"{where}: {key!r} must be 3 numbers{bound} (r, g, b on the 0-1 scale), got {numbers!r}",
        )
        out[key] = [float(v) for v in numbers]
    return out


def describe_preprocessing(value: str | dict[str, Any]) -> str:
    """A preprocessing for logs and reprs: its name, or ``mean [r, g, b] std [r, g, b]``."""
    if isinstance(value, dict):
        return " ".join(f"{key} [{', '.join(f'{v:g}' for v in value[key])}]" for key in MEAN_STD_KEYS)
    return str(value)


def mean_std(mean: Any, std: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``(img / 255 − mean) / std`` per channel, float32 (mean, std: 3 numbers on the 0–1 scale)."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def prep(img: np.ndarray) -> np.ndarray:
        img = _check_image(img)
        return ((img.astype(np.float32) / np.float32(255.0)) - mean) / std

    return prep


class Preprocess:
    """A model's input pipeline as Slideflow feeds it: the stain normaliser (if any), then the
    preprocessing.  ``preprocess(tiles)``: uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` → float32, same shape.

    ``preprocessing``: a name of :data:`PREPROCESSORS`, or ``{"mean": [r, g, b], "std": [r, g, b]}``."""

    def __init__(self, preprocessing: str | dict[str, Any], normalizer: stain.StainNormalizer | None = None) -> None:
        self.preprocessing = check_preprocessing(preprocessing, "Preprocess: preprocessing")
        self.normalizer = normalizer
        prep = self.preprocessing
        self._prep = mean_std(prep["mean"], prep["std"]) if isinstance(prep, dict) else PREPROCESSORS[prep]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return self._prep(self.normalize(img))

    def normalize(self, img: np.ndarray) -> np.ndarray:
        """The stain normaliser alone (uint8 → uint8; the identity without one)."""
        return img if self.normalizer is None else self.normalizer(_check_image(img))

    def __repr__(self) -> str:
        norm = f"{self.normalizer.describe()} → " if self.normalizer else ""
        return f"Preprocess({norm}{describe_preprocessing(self.preprocessing)})"


def get_preprocess_fn(model: str | Path | LoadedModel, stain_normalize: bool = True) -> Preprocess:
    """The input pipeline of a model (or model path): uint8 images → float32 channels-last.

    It includes the model's stain normaliser (``params.json``'s ``hp.normalizer``, or
    ``load_model(normalizer=...)``) unless ``stain_normalize=False``; ``.normalize`` applies that alone.
    """
    if isinstance(model, LoadedModel):
        return Preprocess(model.preprocessing, model.normalizer if stain_normalize else None)
    params = model_params(model)
    framework = detect_framework(params)
    prep = params.preprocessing or framework.default_preprocessing
    if not stain_normalize:
        return Preprocess(prep)
    return Preprocess(prep, stain.from_params(params.values, str(params.file), framework=framework.name))
