"""Written-out references for the vision-transformer methods, independent of slidegrad.

Nothing here imports slidegrad.  Attention probabilities come from

* :func:`timm_forward`: a timm-layout ViT (:class:`slidegrad.torch_nets.VisionTransformer`'s module layout)
  run block by block with the module's own weights (patch conv, CLS / register tokens, position embeddings,
  ``qkv``, ``proj``, norms, MLP), the softmax written out, so no hook of slidegrad's reads them;
* :func:`hf_attentions`: a ``transformers`` model called with ``output_attentions=True`` (eager attention),
  the library's own way of returning them.

Then, per image (plain loops, the papers' formulas):

* :func:`rollout` — Abnar & Zuidema 2020 ("Quantifying attention flow in transformers"), with the head
  fusion and discard ratio of the common implementation (jacobgil/vit-explain): per block the heads fused
  (mean, max or min), the ``discard_ratio`` share of the lowest fused weights zeroed except CLS→CLS,
  ``Â = (A + I) / 2`` with rows renormalised, the rollout ``Â_L ⋯ Â_1``;
* :func:`chefer` — Chefer, Gur & Wolf 2021 ("Generic attention-model explainability for interpreting
  bi-modal and encoder-decoder transformers", ICCV; their ViT notebook): ``R = I``, per block
  ``Ā = E_h[(∇A ⊙ A)⁺]``, ``R ← R + Ā R``.

Both maps are the CLS row over the patch tokens (prefix tokens: CLS and registers dropped), ``(h, w)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


# -- attention probabilities ---------------------------------------------------------------
def timm_forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(logits (N, K), [A_l (N, heads, T, T)] per block)`` of a timm-layout ViT for ``(N, 3, H, W)`` ``x``,
    computed by hand from the model's parameters (tokens: CLS, registers, patches in row-major order)."""
    proj = model.patch_embed.proj
    patches = F.conv2d(x, proj.weight, proj.bias, stride=proj.stride)  # (N, C, h, w)
    n, c, h, w = patches.shape
    patches = patches.flatten(2).transpose(1, 2)  # (N, h·w, C)
    pos = model.pos_embed
    cls = model.cls_token.expand(n, -1, -1)
    registers = getattr(model, "reg_token", None)
    if registers is not None:  # DINOv2-with-registers style: position embeddings on the patches only
        assert pos.shape[1] == h * w, "the reference handles the model's own input size only"
        tokens = torch.cat([cls, registers.expand(n, -1, -1), patches + pos], dim=1)
    else:
        assert pos.shape[1] == h * w + 1, "the reference handles the model's own input size only"
        tokens = torch.cat([cls, patches], dim=1) + pos
    attentions = []
    for block in model.blocks:
        attn = block.attn
        heads = attn.num_heads
        t = tokens.shape[1]
        head_dim = c // heads
        y = F.layer_norm(tokens, (c,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
        qkv = F.linear(y, attn.qkv.weight, attn.qkv.bias).reshape(n, t, 3, heads, head_dim)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (N, heads, T, head_dim)
        scores = torch.einsum("nhid,nhjd->nhij", q, k) / np.sqrt(head_dim)
        a = torch.softmax(scores, dim=-1)
        attentions.append(a)
        mixed = torch.einsum("nhij,nhjd->nhid", a, v).transpose(1, 2).reshape(n, t, c)
        tokens = tokens + F.linear(mixed, attn.proj.weight, attn.proj.bias)
        y = F.layer_norm(tokens, (c,), block.norm2.weight, block.norm2.bias, block.norm2.eps)
        hidden = F.gelu(F.linear(y, block.mlp.fc1.weight, block.mlp.fc1.bias))
        tokens = tokens + F.linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias)
    final = F.layer_norm(tokens[:, 0], (c,), model.norm.weight, model.norm.bias, model.norm.eps)
    return F.linear(final, model.head.weight, model.head.bias), attentions


def hf_attentions(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(logits, [A_l])`` of a ``transformers`` image classifier (built with ``attn_implementation="eager"``)
    from its own ``output_attentions=True``; the attentions are in the graph (their gradients exist)."""
    out = model(pixel_values=x, output_attentions=True)
    assert out.attentions is not None and len(out.attentions) > 0, "load the model with attn_implementation='eager'"
    return out.logits, list(out.attentions)


def per_image(
    forward, model: torch.nn.Module, images: np.ndarray, class_idx: int | None
) -> list[tuple[list[np.ndarray], list[np.ndarray] | None]]:
    """For each channels-last image alone: its attention maps ``[(heads, T, T)]`` and, with ``class_idx``, the
    gradients of that class logit w.r.t. them (float64 numpy)."""
    out = []
    for image in images:
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None])).float()
        with torch.enable_grad():
            logits, attentions = forward(model, x)
            grads = None
            if class_idx is not None:
                grads = torch.autograd.grad(logits[0, class_idx], attentions)
        maps = [a[0].detach().double().numpy() for a in attentions]
        out.append((maps, None if grads is None else [g[0].double().numpy() for g in grads]))
    return out


# -- the methods, per image ----------------------------------------------------------------------
def rollout(maps: list[np.ndarray], prefix: int, head_fusion: str = "mean", discard_ratio: float = 0.0) -> np.ndarray:
    """Attention rollout of one image (``maps``: per block ``(heads, T, T)``): the CLS row over the patches."""
    t = maps[0].shape[-1]
    eye = np.eye(t)
    result = eye.copy()
    for a in maps:
        if head_fusion == "mean":
            fused = a.mean(axis=0)
        elif head_fusion == "max":
            fused = a.max(axis=0)
        elif head_fusion == "min":
            fused = a.min(axis=0)
        else:
            raise ValueError(head_fusion)
        fused = fused.copy()
        count = int(t * t * discard_ratio)
        if count > 0:  # vit-explain: the `count` lowest entries of the flattened map, CLS→CLS (index 0) kept
            flat = fused.reshape(-1)
            lowest = np.argsort(flat, kind="stable")[:count]
            flat[lowest[lowest != 0]] = 0.0
        mixed = (fused + eye) / 2.0
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        result = mixed @ result
    return result[0, prefix:]


def chefer(maps: list[np.ndarray], grads: list[np.ndarray], prefix: int) -> np.ndarray:
    """Chefer et al.'s relevance of one image: ``R ← R + E_h[(∇A ⊙ A)⁺] R`` from ``R = I``; CLS row over the patches."""
    t = maps[0].shape[-1]
    relevance = np.eye(t)
    for a, g in zip(maps, grads):
        weighted = np.clip(g * a, 0.0, None).mean(axis=0)
        relevance = relevance + weighted @ relevance
    return relevance[0, prefix:]


def on_grid(row: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A patch-token row on its ``(h, w)`` grid (tokens in row-major order)."""
    assert row.size == grid[0] * grid[1], (row.size, grid)
    return row.reshape(grid)


def resized(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A grid map upsampled to the tile as Chefer et al. do: bilinear, half-pixel centres, edges clamped
    (``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)``)."""
    import torch

    grid = torch.from_numpy(grid_map.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(grid, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
