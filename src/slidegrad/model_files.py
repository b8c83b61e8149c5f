"""What :mod:`slidegrad.model` and the framework backends share: model file names and :class:`LoadedModel`.

A leaf module (it imports no other slidegrad module and no framework), so the
backends can use it without importing :mod:`slidegrad.model`, which imports them.
"""

from __future__ import annotations

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


def params_path(model_path: str | Path) -> Path:
    """The ``params.json`` of a model: inside a model directory, or beside a model file."""
    path = Path(model_path)
    return path / PARAMS_FILE if path.is_dir() else path.parent / PARAMS_FILE


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
    normalizer: Any = None  # slidegrad.stain.StainNormalizer applied before preprocessing, or None

    @property
    def n_classes(self) -> int:
        return len(self.outcome_labels)
