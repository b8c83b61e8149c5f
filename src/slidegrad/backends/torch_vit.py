"""Vision transformers in PyTorch: their token layout and their attention, for the torch backend.

A ViT's layers output tokens ``(N, T, C)``: ``prefix`` tokens (CLS, then any registers) and one
token per patch of an ``h × w`` grid.  :func:`token_model` reads that layout from the model itself:

* timm's layout (and :class:`slidegrad.torch_nets.VisionTransformer`): blocks with ``norm1`` and
  ``attn`` (``qkv``, ``attn_drop``, ``fused_attn``), ``num_prefix_tokens`` on the model, the patch
  size on ``patch_embed``;
* Hugging Face ``transformers`` (ViT, DeiT, DINOv2, DINOv2 with registers, …): blocks with
  ``layernorm_before`` or ``norm1`` and ``attention``, prefix tokens ``1 + config.num_register_tokens``,
  the patch size from ``config.patch_size``.

:func:`tokens_to_grid` turns a token layer's ``(N, T, C)`` into a channels-last ``(N, h, w, C)`` grid
(Grad-CAM's reshape), and :func:`capture_attention` reads every block's attention probabilities
``(N, heads, T, T)`` in the autograd graph (timm with ``fused_attn`` off, ``transformers`` with eager
attention), so their gradients can be taken.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import InputError, check

LOGGER = logging.getLogger("slidegrad")
NORM_NAMES = ("norm1", "layernorm_before")  # a block's first norm: the input of its attention
ATTENTION_NAMES = ("attn", "attention")
PATCH_EMBED_NAMES = ("patch_embed.proj", "patch_embeddings.projection")


@dataclass(frozen=True)
class TokenModel:
    """The token layout of a vision transformer (names as ``named_modules`` gives them).

    ``norms``: each block's first norm, in order (Grad-CAM's default layer is the last);
    ``attentions``: each block's attention module; ``prefix_tokens``: CLS + register tokens;
    ``patch_size``: ``(ph, pw)`` or ``None`` where the model does not say; ``interpolates``: the model
    takes inputs of any multiple of the patch size (position embeddings interpolated).
    """

    norms: tuple[str, ...]
    attentions: tuple[str, ...]
    prefix_tokens: int
    patch_size: tuple[int, int] | None
    interpolates: bool

    def grid(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """The ``(h, w)`` patch grid of an ``H × W`` input, ``None`` without a patch size."""
        if self.patch_size is None:
            return None
        return size[0] // self.patch_size[0], size[1] // self.patch_size[1]


def token_model(module: nn.Module) -> TokenModel | None:
    """The token layout of ``module``, or ``None`` for a model without transformer blocks (a CNN)."""
    norms, attentions = [], []
    for name, block in module.named_modules():
        children = dict(block.named_children())
        norm = next((n for n in NORM_NAMES if n in children), None)
        attn = next((n for n in ATTENTION_NAMES if n in children), None)
        if norm is not None and attn is not None:
            norms.append(f"{name}.{norm}" if name else norm)
            attentions.append(f"{name}.{attn}" if name else attn)
    if not norms:
        return None
    config = _hf_config(module)
    prefix = _timm_attribute(module, "num_prefix_tokens")
    if prefix is None and config is not None:
        prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
    patch = _patch_size(module, config)
    model_type = str(getattr(config, "model_type", "")) if config is not None else ""
    interpolates = bool(_timm_attribute(module, "dynamic_img_size")) or model_type.startswith("dinov2")
    return TokenModel(tuple(norms), tuple(attentions), int(prefix if prefix is not None else 1), patch, interpolates)


def _timm_attribute(module: nn.Module, name: str) -> Any:
    """``name`` of the first module (the model first) that has it as a plain attribute, else ``None``."""
    for m in module.modules():
        value = m.__dict__.get(name)
        if value is not None and not isinstance(value, (nn.Module, torch.Tensor)):
            return value
    return None


def _hf_config(module: nn.Module) -> Any:
    """A ``transformers`` config (``patch_size`` and ``model_type``) of the model or a submodule, else ``None``."""
    for m in module.modules():
        config = m.__dict__.get("config")
        if config is not None and hasattr(config, "patch_size") and hasattr(config, "model_type"):
            return config
    return None


def _patch_size(module: nn.Module, config: Any) -> tuple[int, int] | None:
    size = getattr(config, "patch_size", None) if config is not None else None
    if size is None:
        for m in module.modules():
            if "patch_size" in m.__dict__ and not isinstance(m, nn.Conv2d):
                size = m.__dict__["patch_size"]
                break
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    return (int(pair[0]), int(pair[1]))


def is_patch_embedding(name: str, layer: nn.Module, tokens: TokenModel | None) -> bool:
    """Whether ``layer`` is a ViT's patch projection (a conv whose kernel is its stride, in a token model)."""
    if name.endswith(PATCH_EMBED_NAMES):
        return True
    return tokens is not None and isinstance(layer, nn.Conv2d) and layer.kernel_size == layer.stride


def check_tile_size(tokens: TokenModel, tile_px: int, where: str) -> None:
    """A ``tile_px`` that is not a multiple of the model's patch size is one InputError line naming both,
    unless the model interpolates its position embeddings."""
    if tokens.patch_size is None or tokens.interpolates:
        return
    ph, pw = tokens.patch_size
    check(
        tile_px % ph == 0 and tile_px % pw == 0,
        f"model '{where}': tile_px {tile_px} is not a multiple of the vision transformer's patch size "
        f"{ph if ph == pw else f'{ph}×{pw}'}",
    )


def tokens_to_grid(tokens: torch.Tensor, prefix: int, grid: tuple[int, int] | None, layer: str) -> torch.Tensor:
    """``(N, T, C)`` tokens → ``(N, h, w, C)`` channels-last: the ``prefix`` tokens dropped, the rest on the
    patch grid (``grid``, else the square one).  A count that fits no grid is one InputError line."""
    n, t, c = tokens.shape
    patches = t - prefix
    if grid is None:
        side = math.isqrt(max(patches, 0))
        grid = (side, side)
    check(
        patches > 0 and grid[0] * grid[1] == patches,
        f"gradcam: layer {layer!r} gives {t} tokens of width {c}; after dropping {prefix} prefix token(s) "
        f"{patches} remain, which is not the {grid[0]}×{grid[1]} patch grid of the input; "
        "pass a layer with token or (N, C, h, w) output",
    )
    return tokens[:, prefix:].reshape(n, grid[0], grid[1], c)


@contextlib.contextmanager
def capture_attention(module: nn.Module, tokens: TokenModel, where: str) -> Iterator[list[torch.Tensor]]:
    """Within: every forward pass appends each block's attention probabilities ``(N, heads, T, T)`` (in the
    graph, so gradients reach them) to the yielded list, in block order.

    timm-layout attention runs unfused (``fused_attn`` off) and its ``attn_drop`` output is read;
    ``transformers`` attention is switched to eager (its weights are returned).  A model whose attention
    cannot be read is one InputError line saying why.
    """
    captured: list[torch.Tensor] = []
    handles, restore = [], []
    modules = dict(module.named_modules())

    def keep(_m: nn.Module, _i: Any, output: Any) -> None:
        captured.append(output)

    def keep_weights(_m: nn.Module, _i: Any, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        check(
            isinstance(weights, torch.Tensor) and weights.ndim == 4,
            f"model '{where}': attention module {type(_m).__name__} returns no attention weights; load the "
            "transformers model with attn_implementation='eager'",
        )
        captured.append(weights)

    try:
        for name in tokens.attentions:
            attn = modules[name]
            drop = getattr(attn, "attn_drop", None)
            if "fused_attn" in attn.__dict__ and isinstance(drop, nn.Module):
                restore.append((attn, "fused_attn", attn.fused_attn))
                attn.fused_attn = False
                handles.append(drop.register_forward_hook(keep))
            elif hasattr(attn, "config") and hasattr(attn.config, "_attn_implementation"):
                restore.append((attn.config, "_attn_implementation", attn.config._attn_implementation))
                attn.config._attn_implementation = "eager"
                handles.append(attn.register_forward_hook(keep_weights))
            else:
                raise InputError(
                    f"model '{where}': cannot read the attention of {name!r} ({type(attn).__name__}): expected "
                    "timm's Attention (qkv, attn_drop, fused_attn) or a transformers attention module"
                )
        yield captured
    finally:
        for handle in handles:
            handle.remove()
        for owner, attribute, value in reversed(restore):
            setattr(owner, attribute, value)


def attention_bytes(module: nn.Module, tokens: TokenModel, sample: torch.Tensor, where: str) -> int:
    """Bytes of the attention maps of one sample when they are read: per block, heads × T² float32 values,
    three times (scores, probabilities, their gradient)."""
    with capture_attention(module, tokens, where) as maps, torch.no_grad():
        module(sample)
    return sum(3 * m[:1].numel() * m.element_size() for m in maps)


def warn_patch_embedding(name: str) -> None:
    LOGGER.warning(
        "gradcam: layer %r is the vision transformer's patch embedding: its map explains first-layer "
        "gradients, not the features the head reads (the default is the last block's first norm)",
        name,
    )
