"""PyTorch implementation of the :class:`~slidegrad.backends.Backend` contract."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import InputError, check


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    check(
        device.type != "cuda" or torch.cuda.is_available(),
        f"device: '{device}' was asked for but torch sees no CUDA device",
    )
    return device


class TorchBackend:
    """Wraps an ``nn.Module`` (NCHW logits) behind the channels-last numpy contract."""

    framework = "torch"

    def __init__(
        self,
        module: nn.Module,
        device: str | torch.device | None = "auto",
        n_classes: int | None = None,
        tile_px: int | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self.dtype = torch.float32
        self._n_classes = n_classes
        self._tile_px = tile_px or 64

    # -- helpers ---------------------------------------------------------------
    def _to_tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2).to(self.device)

    @staticmethod
    def _to_numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().permute(0, 2, 3, 1).cpu().numpy().astype(np.float32, copy=False)

    def _class_index(self, class_idx: np.ndarray, n: int) -> torch.Tensor:
        idx = torch.as_tensor(np.broadcast_to(np.asarray(class_idx, dtype=np.int64), (n,)).copy())
        return idx.to(self.device)

    @property
    def n_classes(self) -> int:
        if self._n_classes is None:
            with torch.no_grad():
                dummy = torch.zeros(1, 3, self._tile_px, self._tile_px, device=self.device)
                self._n_classes = int(self.module(dummy).shape[-1])
        return self._n_classes

    # -- contract --------------------------------------------------------------
    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(N, H, W, C)`` → ``(N, K)`` raw model outputs."""
        with torch.no_grad():
            return self.module(self._to_tensor(x)).float().cpu().numpy()

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``(N, H, W, C)`` → ``(N, K)`` softmax probabilities in [0, 1]."""
        with torch.no_grad():
            return torch.softmax(self.module(self._to_tensor(x)).float(), dim=-1).cpu().numpy()

    def input_gradients(self, x: np.ndarray, class_idx: np.ndarray) -> np.ndarray:
        """Gradient of each image's class logit w.r.t. the image, ``(N, H, W, C)`` float32."""
        inputs = self._to_tensor(x).requires_grad_(True)
        out = self.module(inputs)
        idx = self._class_index(class_idx, out.shape[0])
        score = out.gather(1, idx[:, None]).sum()
        (grads,) = torch.autograd.grad(score, inputs)
        return self._to_numpy(grads)

    def conv_layer_names(self) -> list[str]:
        """Names (``named_modules``) of the model's ``nn.Conv2d`` layers, in order."""
        return [name for name, mod in self.module.named_modules() if isinstance(mod, nn.Conv2d)]

    def _layer(self, layer: str | None) -> nn.Module:
        if isinstance(self.module, torch.jit.ScriptModule):
            raise InputError(
                "gradcam: a TorchScript model has no forward hooks; save a state dict with its "
                "'architecture' in params.json to use Grad-CAM"
            )
        names = self.conv_layer_names()
        if layer is None:
            check(bool(names), "gradcam: the model has no nn.Conv2d layer; pass layer= explicitly")
            layer = names[-1]
        modules = dict(self.module.named_modules())
        check(layer in modules, f"gradcam: layer {layer!r} not found; conv layers: {', '.join(names)}")
        return modules[layer]

    def conv_gradients(
        self, x: np.ndarray, class_idx: np.ndarray, layer: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Activations of ``layer`` (default: last conv) and the class logit's gradients, ``(N, h, w, c)``."""
        target = self._layer(layer)
        captured: list[torch.Tensor] = []
        handle = target.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            out = self.module(self._to_tensor(x))
        finally:
            handle.remove()
        acts = captured[-1]
        idx = self._class_index(class_idx, out.shape[0])
        (grads,) = torch.autograd.grad(out.gather(1, idx[:, None]).sum(), acts)
        return self._to_numpy(acts), self._to_numpy(grads)
