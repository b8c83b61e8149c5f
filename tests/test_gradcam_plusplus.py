"""Grad-CAM++ (issue 25) against pytorch-grad-cam 1.5.7's ``GradCAMPlusPlus`` (tests/gradcam_reference.py, a
torchvision stand-in), on a small CNN and on the demo ViT (its patch tokens, as tests/test_vit_parity.py).

slidegrad's CAMs are one base (``engines/native/cam.py``); Grad-CAM++ gives only its channel weights.  The
maps on the layer's grid are compared by correlation (pytorch-grad-cam min-max scales its maps, slidegrad
divides by the max: an affine change), then the final maps after each library's documented finish.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slidegrad as sg
from slidegrad.engines.native.cam import gradcam_plusplus

from .conftest import make_tiny_cnn
from .gradcam_reference import pytorch_grad_cam, vit_reshape_transform
from .metrics import corr, rel_l2
from .test_vit import grid_of, timm_vit, tiles

MIN_CORR = 0.9999  # measured: 1 − correlation ≤ 1e-9 on both models; Grad-CAM's weights give ≤ 0.99 on the CNN


@pytest.fixture(scope="module")
def gradcam_lib():
    return pytorch_grad_cam()


def reference_on_grid(gradcam_lib, model, module, batch, class_idx, grid, reshape=None) -> np.ndarray:
    """pytorch-grad-cam's ``GradCAMPlusPlus`` maps ``(N, h, w)`` on the layer's grid (its target size set to the
    grid: OpenCV's same-size resize is a copy)."""

    class OnGrid(gradcam_lib.GradCAMPlusPlus):
        def get_target_width_height(self, input_tensor):
            return grid[1], grid[0]

    x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
    with OnGrid(model=model, target_layers=[module], reshape_transform=reshape) as cam:
        return cam(input_tensor=x, targets=[gradcam_lib.ClassifierOutputTarget(class_idx)] * len(batch))


def ours_on_grid(sal: sg.SaliencyMap, batch: np.ndarray, class_idx: int) -> np.ndarray:
    """slidegrad's Grad-CAM++ maps at the layer's resolution (ReLU'd, before the resize)."""
    engine, ops = sal.engine.engine, sal.backend.ops
    classes = ops.tensor(np.full(len(batch), class_idx), "int64")
    with sal.backend.gradients():
        return ops.numpy(gradcam_plusplus.cams(engine, ops.tensor(batch), classes, {"layer": None}))


@pytest.mark.parametrize("class_idx", [0, 1])
def test_gradcam_plusplus_equals_pytorch_grad_cam_on_a_cnn(gradcam_lib, ihc_tiles, class_idx):
    from skimage.transform import resize

    model = make_tiny_cnn(seed=3)
    batch = sg.model.scale(ihc_tiles)
    sal = sg.SaliencyMap(model, device="cpu")
    assert sal.backend.gradcam_layer() == "features.3"
    ours = ours_on_grid(sal, batch, class_idx)
    theirs = reference_on_grid(gradcam_lib, model, model.features[3], batch, class_idx, ours.shape[1:])
    assert sum(np.ptp(t) > 0 for t in theirs) >= 3, "flat reference maps test nothing"
    worst = min(corr(a, b) for a, b in zip(ours, theirs))
    print(f"gradcam++ cnn class {class_idx}: 1 − correlation on the grid {1 - worst:.3g}")
    assert worst >= MIN_CORR, worst
    final = sal.gradcam_plusplus(batch, class_idx=class_idx)  # the finish: / max, skimage bilinear (reflect)
    assert final.shape == (4, 64, 64) and final.dtype == np.float32 and 0 <= final.min() and final.max() <= 1
    finished = [resize(t, (64, 64), mode="reflect") for t in theirs]
    assert min(corr(a, b) for a, b in zip(final, finished)) >= MIN_CORR
    gradcam = sal.gradcam(batch, class_idx=class_idx)
    assert min(rel_l2(a, b) for a, b in zip(final, gradcam)) > 0.01, "Grad-CAM++ must not be Grad-CAM"


def test_gradcam_plusplus_equals_pytorch_grad_cam_on_vit_patch_tokens(gradcam_lib, ihc):
    model = timm_vit()
    batch = tiles(ihc, 128, 3)
    sal = sg.SaliencyMap(model, device="cpu")
    ours = ours_on_grid(sal, batch, 1)
    grid = grid_of(128)
    theirs = reference_on_grid(
        gradcam_lib, model, model.blocks[-1].norm1, batch, 1, grid, vit_reshape_transform(1, grid)
    )
    assert ours.shape == theirs.shape == (3, *grid)
    worst = min(corr(a, b) for a, b in zip(ours, theirs))
    print(f"gradcam++ vit: 1 − correlation on the grid {1 - worst:.3g}")
    assert worst >= MIN_CORR, worst


def test_gradcam_plusplus_is_a_layer_method_without_pair(tiny_cnn, ihc_tiles):
    method = sg.methods.get_method("gradcam_plusplus")
    assert method.layer and method.pair is None and method.citation == "Chattopadhay et al. 2018"
    batch = sg.model.scale(ihc_tiles[:2])
    result = sg.SaliencyMap(tiny_cnn, class_idx=1).explain(batch, "gradcam_plusplus", layer="features.0")
    assert result.engine.layer == "features.0" and result.masks.shape == (2, 64, 64)
    with pytest.raises(sg.InputError, match="PAIR's saliency.core has no such method; use engine: native"):
        sg.SaliencyMap(tiny_cnn, class_idx=1, engine="pair").gradcam_plusplus(batch)
    smooth = sg.SaliencyMap(tiny_cnn, class_idx=1).gradcam_plusplus(batch, smooth=True, nsamples=2)
    assert smooth.shape == (2, 64, 64) and np.isfinite(smooth).all()
