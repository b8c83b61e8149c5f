"""What :mod:`slidegrad.model` and the framework backends share: model file names and :class:`LoadedModel`.

A leaf module (it imports no other slidegrad module and no framework), so the
backends can use it without importing :mod:`slidegrad.model`, which imports them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARAMS_FILE = "params.json"
WEIGHTS_FILE = "weights.pt"
TORCHSCRIPT_FILE = "model.pt"
EXPORT_FILE = "model.pt2"
TORCH_FILES = (EXPORT_FILE, WEIGHTS_FILE, TORCHSCRIPT_FILE)  # looked for in a directory, in this order
TORCH_SUFFIXES = (".pt2", ".pth", ".pt", ".zip")
KERAS_FILE = "model.keras"
SAVED_MODEL_FILE = "saved_model.pb"
HF_CONFIG_FILE = "config.json"  # a Hugging Face transformers save_pretrained folder's config


def params_path(model_path: str | Path) -> Path:
    """The ``params.json`` of a model: inside a model directory, or beside a model file."""
    path = Path(model_path)
    return path / PARAMS_FILE if path.is_dir() else path.parent / PARAMS_FILE


@dataclass(init=False)
class LoadedModel:
    """A model plus what slidegrad needs to know about it.

    ``module`` maps a preprocessed batch to ``(N, K)`` class scores (torch:
    ``(N, 3, H, W)``; Keras: ``(N, H, W, 3)``); ``outcome_labels`` has K names; ``framework``
    names its framework (``torch`` or ``tensorflow``; ``backend`` is its deprecated old name).
    """

    module: Any
    framework: str
    outcome_labels: list[str]
    tile_px: int | None = None
    tile_um: float | str | None = None
    preprocessing: str = "scale"
    path: Path | None = None
    sha256: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    normalizer: Any = None  # slidegrad.stain.StainNormalizer applied before preprocessing, or None

    def __init__(
        self,
        module: Any,
        framework: str | None = None,
        outcome_labels: list[str] | None = None,
        tile_px: int | None = None,
        tile_um: float | str | None = None,
        preprocessing: str = "scale",
        path: Path | None = None,
        sha256: str | None = None,
        params: dict[str, Any] | None = None,
        normalizer: Any = None,
        *,
        backend: str | None = None,
    ) -> None:
        if backend is not None:
            logging.getLogger("slidegrad").warning("LoadedModel: backend= is deprecated; use framework=")
            if framework not in (None, backend):
                raise TypeError(f"LoadedModel: framework={framework!r} and backend={backend!r} (its old name) disagree")
        if (framework or backend) is None or outcome_labels is None:
            raise TypeError("LoadedModel: framework and outcome_labels are required")
        self.module, self.framework, self.outcome_labels = module, framework or backend, outcome_labels
        self.tile_px, self.tile_um, self.preprocessing, self.path = tile_px, tile_um, preprocessing, path
        self.sha256, self.params, self.normalizer = sha256, {} if params is None else params, normalizer

    @property
    def backend(self) -> str:
        """The old name of :attr:`framework` (deprecated: a backend is the object wrapping the model)."""
        return self.framework

    @property
    def n_classes(self) -> int:
        return len(self.outcome_labels)
