"""PyTorch architectures shipped with slidegrad (torchvision and timm do not import here).

Every factory takes ``n_classes`` and returns an ``nn.Module`` mapping
``(N, 3, H, W) float32`` to ``(N, n_classes)`` logits.  Models saved as a state
dict name their factory in ``params.json`` (``"architecture": "small_cnn"``).

:class:`VisionTransformer` has timm's module layout and state-dict keys (``patch_embed.proj``,
``cls_token``, ``reg_token``, ``pos_embed``, ``blocks.{i}.norm1`` / ``.attn.qkv`` / ``.attn.proj`` /
``.norm2`` / ``.mlp.fc1`` / ``.mlp.fc2``, ``norm``, ``head``), so a timm ViT's weights load into it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Three conv–ReLU–max-pool stages, global average pool, linear head."""

    def __init__(self, n_classes: int = 2, widths: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for width in widths:
            layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            in_ch = width
        # The last stage keeps full resolution for Grad-CAM (no pool after conv).
        layers[-1] = nn.Identity()
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_ch, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs with batch norm and a skip)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=False)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) with torchvision's layer layout."""

    def __init__(self, n_classes: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        in_ch = 64
        for i, out_ch in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch)))
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class PatchEmbed(nn.Module):
    """``(N, 3, H, W)`` → ``(N, H/p · W/p, dim)`` patch tokens (timm's ``PatchEmbed``)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm's multi-head self-attention: ``qkv``, ``attn_drop`` (its output: the attention
    probabilities, when ``fused_attn`` is off), ``proj``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused_attn:
            x = nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(n, t, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A ViT with timm's layout (see the module docstring): CLS token, optional register tokens
    (``reg_tokens``; DINOv2-with-registers style, position embeddings on the patches only), the
    CLS token's final norm into a linear head.

    ``num_prefix_tokens`` = 1 + ``reg_tokens`` (timm's attribute).  ``dynamic_img_size``: position
    embeddings are interpolated for inputs of another size (else the input must be ``img_size``).
    """

    def __init__(
        self,
        n_classes: int = 2,
        img_size: int = 224,
        patch_size: int = 16,
        dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        reg_tokens: int = 0,
        dynamic_img_size: bool = False,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.img_size = img_size
        self.dynamic_img_size = dynamic_img_size
        self.num_reg_tokens = reg_tokens
        self.num_prefix_tokens = 1 + reg_tokens
        self.no_embed_class = reg_tokens > 0
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, dim)) if reg_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + (0 if self.no_embed_class else 1), dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise this module's own tensors (tokens, position embeddings; timm's truncated normal,
        std 0.02); the submodules keep theirs (each has its own ``reset_parameters``)."""
        for tensor in (self.cls_token, self.reg_token, self.pos_embed):
            if tensor is not None:
                nn.init.trunc_normal_(tensor, std=0.02)

    def _pos_embed(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        pos = self.pos_embed
        prefix = 0 if self.no_embed_class else 1
        side = int(math.isqrt(pos.shape[1] - prefix))
        if grid != (side, side) and self.dynamic_img_size:
            patches = pos[:, prefix:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
            patches = nn.functional.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:, :prefix], patches.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)
        tokens = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.reg_token is not None:
            tokens.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.no_embed_class:
            return torch.cat([*tokens, x + pos], dim=1)
        return torch.cat([*tokens, x], dim=1) + pos

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` → ``(N, prefix + patches, dim)`` normed tokens."""
        grid = (x.shape[2] // self.patch_embed.patch_size[0], x.shape[3] // self.patch_embed.patch_size[1])
        return self.norm(self.blocks(self._pos_embed(self.patch_embed(x), grid)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])


def vit_small(n_classes: int = 2, **kwargs: object) -> VisionTransformer:
    """ViT-S/16 (timm's ``vit_small_patch16_224``: 12 blocks, 384 wide, 6 heads), 224 px."""
    return VisionTransformer(n_classes, **{"img_size": 224, "patch_size": 16, "dim": 384, "depth": 12, "num_heads": 6, **kwargs})  # type: ignore[arg-type]


def vit_demo(n_classes: int = 2, **kwargs: object) -> VisionTransformer:
    """The demo's small ViT: 128 px, patch 16 (an 8 × 8 grid), 4 blocks, 96 wide, 3 heads."""
    return VisionTransformer(n_classes, **{"img_size": 128, "patch_size": 16, "dim": 96, "depth": 4, "num_heads": 3, **kwargs})  # type: ignore[arg-type]


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet18": ResNet18,
    "vit": VisionTransformer,
    "vit_small": vit_small,
    "vit_demo": vit_demo,
}
