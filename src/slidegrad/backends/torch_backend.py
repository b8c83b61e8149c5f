"""PyTorch implementation of the :class:`~slidegrad.backends.Backend` contract, and model loading."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import InputError, check
from ..model import TORCHSCRIPT_FILE, WEIGHTS_FILE


def resolve_factory(name: str, where: str) -> Callable[..., nn.Module]:
    """The architecture factory for a registered name or ``"module:function"``."""
    if ":" not in name:
        from ..torch_nets import ARCHITECTURES

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


def load_module(path: Path, params: dict[str, Any]) -> tuple[nn.Module, list[Path]]:
    """A state dict + architecture, or TorchScript; returns the module (eval mode) and its files."""
    weights = path / WEIGHTS_FILE if path.is_dir() else None
    script = path / TORCHSCRIPT_FILE if path.is_dir() else path
    if weights is not None and weights.exists():
        check("architecture" in params, f"model '{path}': {WEIGHTS_FILE} needs 'architecture' in params.json")
        factory = resolve_factory(params["architecture"], f"model '{path}'")
        kwargs = dict(params.get("architecture_kwargs", {}))
        if params.get("outcome_labels") and "n_classes" not in kwargs:
            kwargs["n_classes"] = len(params["outcome_labels"])
        module = factory(**kwargs)
        try:
            module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as err:  # noqa: BLE001 - torch raises many types here
            raise InputError(f"model '{weights}': cannot load the state dict ({str(err).splitlines()[0]})") from None
        return module.eval(), [weights]
    check(script.exists(), f"model '{path}': expected {WEIGHTS_FILE} or {TORCHSCRIPT_FILE}")
    try:
        module = torch.jit.load(str(script), map_location="cpu")
    except Exception as err:  # noqa: BLE001
        raise InputError(f"model '{script}': not a TorchScript file ({str(err).splitlines()[0]})") from None
    return module.eval(), [script]


def output_count(module: nn.Module, tile_px: int | None, where: str) -> int:
    """Number of classes, from one forward pass on a ``tile_px`` tile; the output must be ``(N, classes)``."""
    size = tile_px or 64
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 3, size, size))
    except Exception as err:  # noqa: BLE001
        raise InputError(f"model '{where}': fails on a {size}×{size} tile ({str(err).splitlines()[0]})") from None
    check(
        isinstance(out, torch.Tensor) and out.ndim == 2,
        f"model '{where}': output shape {tuple(getattr(out, 'shape', ()))} is not (N, classes)",
    )
    return int(out.shape[1])


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

    @property
    def on_accelerator(self) -> bool:
        return self.device.type != "cpu"

    @property
    def ops(self) -> TorchOps:
        return TorchOps(self)

    def activation_bytes(self, shape: tuple[int, int, int]) -> int:
        """Bytes of every module output for one ``(H, W, C)`` sample (float32): a per-sample memory estimate."""
        total = 0

        def count(_m: nn.Module, _i: Any, output: Any) -> None:
            nonlocal total
            if isinstance(output, torch.Tensor):
                total += output.numel() * output.element_size()

        leaves = [m for m in self.module.modules() if not list(m.children())]
        if isinstance(self.module, torch.jit.ScriptModule) or not leaves:
            return int(np.prod(shape)) * 4 * 64
        handles = [m.register_forward_hook(count) for m in leaves]
        try:
            with torch.no_grad():
                self.module(torch.zeros((1, shape[2], shape[0], shape[1]), device=self.device))
        finally:
            for handle in handles:
                handle.remove()
        return total

    def free_memory(self) -> int:
        """Free bytes on the device (CUDA: ``mem_get_info``; CPU: MemAvailable)."""
        if self.device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.device)[0])
        from ..batching import available_host_memory

        return available_host_memory()

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


class TorchOps:
    """Device-side array operations the native engine is written over (tensors stay on ``device``).

    Arrays are channels-last ``(N, H, W, C)``; see :class:`slidegrad.backends.Ops`.
    """

    inf = float("inf")

    def __init__(self, backend: TorchBackend) -> None:
        self.backend = backend
        self.device = backend.device

    def tensor(self, x: np.ndarray, dtype: str = "float32") -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=getattr(torch, dtype), device=self.device)

    def numpy(self, t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    def grad(self, x: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        """d(class logit)/d(input) for a channels-last float32 batch, on the device."""
        inputs = x.detach().to(torch.float32).permute(0, 3, 1, 2).requires_grad_(True)
        out = self.backend.module(inputs)
        (grads,) = torch.autograd.grad(out.gather(1, class_idx[:, None]).sum(), inputs)
        return grads.permute(0, 2, 3, 1)

    def conv(self, x: torch.Tensor, class_idx: torch.Tensor, layer: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        acts, grads = self.backend.conv_gradients(self.numpy(x), self.numpy(class_idx), layer)
        return self.tensor(acts), self.tensor(grads)

    @staticmethod
    def cast(t: torch.Tensor, dtype: str) -> torch.Tensor:
        return t.to(getattr(torch, dtype))

    @staticmethod
    def dtype(t: torch.Tensor) -> str:
        return str(t.dtype).removeprefix("torch.")

    @staticmethod
    def where(cond: torch.Tensor, a: Any, b: Any) -> torch.Tensor:
        return torch.where(cond, a, b)

    @staticmethod
    def abs(t: torch.Tensor) -> torch.Tensor:
        return t.abs()

    @staticmethod
    def sum(t: torch.Tensor, axis: Any) -> torch.Tensor:
        return t.sum(dim=axis)

    @staticmethod
    def maximum(t: torch.Tensor, value: float) -> torch.Tensor:
        return t.clamp_min(value)

    @staticmethod
    def any(t: torch.Tensor) -> bool:
        return bool(t.any())

    @staticmethod
    def kth_smallest(t: torch.Tensor, k: int) -> torch.Tensor:
        """Per row of ``(N, D)``: the element of 0-based rank ``k`` (numpy's ``quantile(method='lower')``)."""
        return torch.kthvalue(t, k + 1, dim=1).values

    @staticmethod
    def gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return t.index_select(0, index)

    @staticmethod
    def segment_sum(t: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
        out = torch.zeros((n, *t.shape[1:]), dtype=t.dtype, device=t.device)
        return out.index_add_(0, index, t)

    @staticmethod
    def reshape(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return t.reshape(shape)

    @staticmethod
    def concat(ts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(ts, dim=0)

    @staticmethod
    def zeros_like(t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    @staticmethod
    def einsum(spec: str, *ts: torch.Tensor) -> torch.Tensor:
        return torch.einsum(spec, *ts)
