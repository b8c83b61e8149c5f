"""Grad-CAM on vision transformers (issue 23) against pytorch-grad-cam 1.5.7 (tests/gradcam_reference.py).

slidegrad's default layer on a ViT is the last block's first norm (the tokens its attention reads); its
``(N, T, C)`` output loses the prefix tokens (CLS, registers) and lies on the patch grid.  pytorch-grad-cam
does the same with its documented ``reshape_transform`` on ``target_layers=[<that norm>]``.  The two finish
differently (slidegrad: divide by the max, skimage bilinear resize with the edge patches repeated;
pytorch-grad-cam: min-max scale, OpenCV bilinear resize, which repeats the edge too), an affine change, so
maps are compared by correlation (:data:`MIN_CORR`): on the patch grid, and the final ``(H, W)`` maps.

The default layer must not be the patch embedding (a first-layer map): the tests assert the layer's name,
that its map differs from the patch embedding's, and that asking for the patch embedding logs a warning.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import slidegrad as sg

from .gradcam_reference import Logits, pytorch_grad_cam, vit_reshape_transform
from .metrics import corr, rel_l2
from .test_vit import MODELS, PATCH, grid_of, tiles

MIN_CORR = 0.999  # measured: 1 − correlation ≤ 5e-12; a wrong layer, class or token order falls far below


@pytest.fixture(scope="module")
def gradcam_lib():
    return pytorch_grad_cam()


def last_norm(name: str, model: torch.nn.Module) -> torch.nn.Module:
    """The last block's first norm, spelt out per layout (not found by slidegrad's search)."""
    if name.startswith("timm"):
        return model.blocks[-1].norm1
    if name == "hf_vit":
        vit = model.vit
        layers = vit.layers if hasattr(vit, "layers") else vit.encoder.layer  # transformers 5 / 4
        return layers[-1].layernorm_before
    return model.dinov2_with_registers.encoder.layer[-1].norm1


def patch_embedding(name: str, model: torch.nn.Module) -> torch.nn.Module:
    if name.startswith("timm"):
        return model.patch_embed.proj
    base = model.vit if name == "hf_vit" else model.dinov2_with_registers
    return base.embeddings.patch_embeddings.projection


def module_name(model: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


def is_hf(name: str) -> bool:
    return name.startswith("hf")


def pytorch_grad_cam_maps(gradcam_lib, name, model, batch, class_idx, on_grid=False) -> np.ndarray:
    """pytorch-grad-cam's ``GradCAM`` of ``class_idx`` on the last block's first norm, with its ViT
    ``reshape_transform``: ``(N, H, W)`` (its OpenCV resize), or with ``on_grid`` its map before the resize
    ``(N, h, w)`` (its target size set to the patch grid: OpenCV's same-size resize is a copy)."""
    _, size, prefix, _, _ = MODELS[name]
    grid = grid_of(size)

    class OnGrid(gradcam_lib.GradCAM):
        def get_target_width_height(self, input_tensor):
            return grid[1], grid[0]

    kind = OnGrid if on_grid else gradcam_lib.GradCAM
    target = Logits(model) if is_hf(name) else model  # pytorch-grad-cam wants a logits tensor
    x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
    with kind(model=target, target_layers=[last_norm(name, model)], reshape_transform=vit_reshape_transform(prefix, grid)) as cam:
        return cam(input_tensor=x, targets=[gradcam_lib.ClassifierOutputTarget(class_idx)] * len(batch))


def slidegrad_and_reference(ihc, gradcam_lib, name, class_idx, on_grid):
    build, size, *_ = MODELS[name]
    model = build()
    batch = tiles(ihc, size, 4)
    ours = sg.SaliencyMap(model, device="cpu").get(batch, "gradcam", class_idx=class_idx)  # no layer: the default
    theirs = pytorch_grad_cam_maps(gradcam_lib, name, model, batch, class_idx, on_grid)
    # a ReLU'd cam may be 0 everywhere on a random model (both then give 0: metrics.corr counts that as 1)
    assert sum(np.ptp(t) > 0 for t in theirs) >= 3, "flat reference maps test nothing"
    return ours, theirs


@pytest.mark.parametrize("class_idx", [0, 1])
@pytest.mark.parametrize("name", list(MODELS))
def test_gradcam_equals_pytorch_grad_cam_on_the_patch_grid(ihc, gradcam_lib, name, class_idx):
    """pytorch-grad-cam's map on the patch grid, upsampled as slidegrad documents (skimage bilinear), is
    slidegrad's final map (its min-max scaling vs slidegrad's max scaling: an affine change)."""
    from skimage.transform import resize

    ours, theirs = slidegrad_and_reference(ihc, gradcam_lib, name, class_idx, on_grid=True)
    size = ours.shape[-1]
    assert theirs.shape == (4, *grid_of(size))
    worst = min(corr(a, resize(b, (size, size), order=1, mode="edge")) for a, b in zip(ours, theirs))
    print(f"gradcam {name} class {class_idx}: 1 − correlation with pytorch-grad-cam on the grid {1 - worst:.3g}")
    assert worst >= MIN_CORR, worst


@pytest.mark.parametrize("class_idx", [0, 1])
@pytest.mark.parametrize("name", list(MODELS))
def test_gradcam_final_maps_equal_pytorch_grad_cams(ihc, gradcam_lib, name, class_idx):
    """The final ``(H, W)`` maps as each library returns them: a ViT's patch-grid cam is upsampled with its
    edge patches repeated (``mode='edge'``), as OpenCV's resize in pytorch-grad-cam does, so the whole maps agree."""
    ours, theirs = slidegrad_and_reference(ihc, gradcam_lib, name, class_idx, on_grid=False)
    assert ours.shape == theirs.shape
    whole = min(corr(a, b) for a, b in zip(ours, theirs))
    print(f"gradcam {name} class {class_idx}: 1 − correlation with pytorch-grad-cam, whole map {1 - whole:.3g}")
    assert whole >= MIN_CORR, whole


@pytest.mark.parametrize("name", list(MODELS))
def test_the_default_gradcam_layer_is_the_last_norm_not_the_patch_embedding(ihc, name, caplog):
    build, size, *_ = MODELS[name]
    model = build()
    expected = module_name(model, last_norm(name, model))
    embedding = module_name(model, patch_embedding(name, model))
    sal = sg.SaliencyMap(model, device="cpu")
    batch = tiles(ihc, size)
    with caplog.at_level(logging.WARNING, logger="slidegrad"):
        assert sal.backend.gradcam_layer() == expected
        default = sal.get(batch, "gradcam", class_idx=1)
    assert "patch embedding" not in caplog.text
    np.testing.assert_array_equal(default, sal.get(batch, "gradcam", class_idx=1, layer=expected))  # same computation
    first_layer = sg.SaliencyMap(model, device="cpu").get(batch, "gradcam", class_idx=1, layer=embedding)
    differences = [rel_l2(a, b) for a, b in zip(default, first_layer)]
    print(f"{name}: default {expected!r}; relative L2 to the patch embedding's map {min(differences):.3g}")
    assert min(differences) > 0.05, differences


@pytest.mark.parametrize("name", list(MODELS))
def test_the_patch_embedding_layer_logs_a_warning(ihc, name, caplog):
    build, size, *_ = MODELS[name]
    model = build()
    embedding = module_name(model, patch_embedding(name, model))
    sal = sg.SaliencyMap(model, device="cpu")
    with caplog.at_level(logging.WARNING, logger="slidegrad"):
        masks = sal.get(tiles(ihc, size), "gradcam", class_idx=1, layer=embedding)
    assert masks.shape == (2, size, size) and np.isfinite(masks).all()
    warnings = [r for r in caplog.records if r.name == "slidegrad" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "patch embedding" in warnings[0].getMessage(), caplog.text
    assert embedding in warnings[0].getMessage()
    print(warnings[0].getMessage())
