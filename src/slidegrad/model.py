"""Loading tile classifiers and their preprocessing.

A *model directory* holds ``params.json`` (Slideflow's keys: ``tile_px``,
``tile_um``, ``outcome_labels``, ``backend``; plus ``preprocessing`` and, for a
state dict, ``architecture``) next to the weights:

* ``weights.pt`` — a PyTorch state dict, rebuilt with ``architecture`` (a name
  from :data:`slidegrad.torch_nets.ARCHITECTURES` or ``"module:function"``) and
  ``architecture_kwargs``; loaded with ``torch.load(weights_only=True)``.
* ``model.pt`` — TorchScript.

A single TorchScript file works too (with a ``params.json`` beside it, if any).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError, check

PREPROCESSING = ("scale",)
PARAMS_FILE = "params.json"
WEIGHTS_FILE = "weights.pt"
TORCHSCRIPT_FILE = "model.pt"


@dataclass
class LoadedModel:
    """A model plus what slidegrad needs to know about it.

    ``module`` maps a preprocessed ``(N, 3, H, W)`` batch (torch) to ``(N, K)``
    logits; ``outcome_labels`` has K names.
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
    """sha256 over the bytes of ``paths`` in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_params(path: str | Path) -> dict[str, Any]:
    """Read ``params.json`` from a model directory (or beside a model file); {} if absent."""
    path = Path(path)
    params_path = path / PARAMS_FILE if path.is_dir() else path.parent / PARAMS_FILE
    if not params_path.exists():
        if path.is_dir():
            raise InputError(f"model '{path}': no {PARAMS_FILE} in the model directory")
        return {}
    try:
        params = json.loads(params_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"'{params_path}': not valid JSON ({err.msg if hasattr(err, 'msg') else err})") from None
    check(isinstance(params, dict), f"'{params_path}': expected a JSON object")
    if "tile_px" in params:
        check(
            isinstance(params["tile_px"], int) and params["tile_px"] > 0,
            f"'{params_path}': field 'tile_px' must be a positive integer, got {params['tile_px']!r}",
        )
    labels = params.get("outcome_labels")
    if isinstance(labels, dict):  # Slideflow writes {"0": "label", ...}
        params["outcome_labels"] = [labels[k] for k in sorted(labels, key=int)]
    prep = params.get("preprocessing", "scale")
    check(
        prep in PREPROCESSING,
        f"'{params_path}': field 'preprocessing' is {prep!r}; supported: {', '.join(PREPROCESSING)}",
    )
    return params


def resolve_factory(name: str, where: str) -> Callable[..., Any]:
    """Return the architecture factory for a registered name or ``"module:function"``."""
    if ":" not in name:
        from .torch_nets import ARCHITECTURES

        check(
            name in ARCHITECTURES,
            f"{where}: unknown architecture {name!r}; use one of {sorted(ARCHITECTURES)} or 'module:function'",
        )
        return ARCHITECTURES[name]
    module_name, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise InputError(f"{where}: cannot import architecture {name!r} ({err})") from None


def _load_torch(path: Path, params: dict[str, Any]) -> tuple[Any, list[Path]]:
    import torch

    weights = path / WEIGHTS_FILE if path.is_dir() else None
    script = path / TORCHSCRIPT_FILE if path.is_dir() else path
    if weights is not None and weights.exists():
        check("architecture" in params, f"model '{path}': {WEIGHTS_FILE} needs 'architecture' in {PARAMS_FILE}")
        factory = resolve_factory(params["architecture"], f"model '{path}'")
        n_classes = len(params.get("outcome_labels", [])) or None
        kwargs = dict(params.get("architecture_kwargs", {}))
        if n_classes and "n_classes" not in kwargs:
            kwargs["n_classes"] = n_classes
        module = factory(**kwargs)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        except Exception as err:  # noqa: BLE001 - torch raises many types here
            raise InputError(f"model '{weights}': cannot load the state dict ({str(err).splitlines()[0]})") from None
        return module, [weights]
    check(script.exists(), f"model '{path}': expected {WEIGHTS_FILE} or {TORCHSCRIPT_FILE}")
    try:
        module = torch.jit.load(str(script), map_location="cpu")
    except Exception as err:  # noqa: BLE001
        raise InputError(f"model '{script}': not a TorchScript file ({str(err).splitlines()[0]})") from None
    return module, [script]


def load_model(path: str | Path) -> LoadedModel:
    """Load a model directory or TorchScript file; see the module docstring."""
    path = Path(path)
    check(path.exists(), f"model '{path}': file not found")
    params = read_params(path)
    backend = params.get("backend", "torch")
    check(backend == "torch", f"model '{path}': backend {backend!r} is not supported; expected 'torch'")
    module, files = _load_torch(path, params)
    module.eval()
    labels = [str(label) for label in params.get("outcome_labels", [])]
    if not labels:
        labels = [str(i) for i in range(_count_outputs(module, params.get("tile_px", 64)))]
    params_file = [path / PARAMS_FILE] if (path.is_dir() and (path / PARAMS_FILE).exists()) else []
    return LoadedModel(
        module=module,
        backend=backend,
        outcome_labels=labels,
        tile_px=params.get("tile_px"),
        tile_um=params.get("tile_um"),
        preprocessing=params.get("preprocessing", "scale"),
        path=path,
        sha256=file_sha256(files + params_file),
        params=params,
    )


def _count_outputs(module: Any, tile_px: int) -> int:
    import torch

    with torch.no_grad():
        return int(module(torch.zeros(1, 3, tile_px, tile_px)).shape[-1])


def scale(img: np.ndarray) -> np.ndarray:
    """Slideflow's PyTorch convention: uint8 ``(…, H, W, 3)`` → float32 ``img / 127.5 − 1`` in [−1, 1]."""
    img = np.asarray(img)
    check(img.ndim in (3, 4) and img.shape[-1] == 3, f"image: expected (H, W, 3) or (N, H, W, 3), got {img.shape}")
    return (img.astype(np.float32) / np.float32(127.5)) - np.float32(1.0)


_PREPROCESSORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"scale": scale}


def get_preprocess_fn(model: str | Path | LoadedModel) -> Callable[[np.ndarray], np.ndarray]:
    """The preprocessing function for a model (or model path): uint8 images → float32 channels-last."""
    if isinstance(model, LoadedModel):
        name = model.preprocessing
    else:
        name = read_params(model).get("preprocessing", "scale")
    return _PREPROCESSORS[name]
