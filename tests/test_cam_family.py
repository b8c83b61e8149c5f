"""HiResCAM, LayerCAM and Score-CAM against pytorch-grad-cam 1.5.7 (tests/gradcam_reference.py, a torchvision
stand-in), on a small CNN and on the demo ViT's patch tokens (as tests/test_vit_parity.py), plus a known answer.

slidegrad's CAMs are one base (``engines/native/cam.py``): HiResCAM and LayerCAM give element-wise terms,
Score-CAM its softmax channel weights from masked forward passes.  pytorch-grad-cam finishes with a min-max
scale ``(cam − min) / (max + 1e-7)`` and an OpenCV resize, slidegrad with ``cam / max`` and skimage's resize:
an affine change, so maps on the layer's grid are compared by correlation (its target size set to the grid,
where OpenCV's same-size resize is a copy), and the final maps after each library's documented upsampling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slidegrad as sg
from slidegrad.engines.native import cam as cam_module

from .conftest import make_tiny_cnn
from .gradcam_reference import pytorch_grad_cam, vit_reshape_transform
from .metrics import corr, rel_l2
from .test_vit import grid_of, timm_vit, tiles

# measured (this CPU): 1 − correlation on the grid ≤ 1e-14 (HiResCAM, LayerCAM), ≤ 1.3e-12 (Score-CAM) on the CNN,
# ≤ 1.5e-13 / 1.8e-12 on the ViT; final maps ≤ 2.6e-14 / 1.6e-12.  Wrong weightings fall far below: Score-CAM with
# uniform weights correlates ≤ 0.1 on the sharpened CNN, Grad-CAM's map with Score-CAM's reference ≤ −0.6
MIN_CORR = 0.9999
REFERENCE = {"hirescam": "HiResCAM", "layercam": "LayerCAM", "scorecam": "ScoreCAM"}
METHODS = list(REFERENCE)


@pytest.fixture(scope="module")
def gradcam_lib():
    return pytorch_grad_cam()


def reference_on_grid(gradcam_lib, name, model, module, batch, class_idx, grid, reshape=None) -> np.ndarray:
    """pytorch-grad-cam's ``name`` maps ``(N, h, w)`` on the layer's grid (its target size set to the grid)."""

    class OnGrid(getattr(gradcam_lib, REFERENCE[name])):
        def get_target_width_height(self, input_tensor):
            return grid[1], grid[0]

    x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
    with OnGrid(model=model, target_layers=[module], reshape_transform=reshape) as cam:
        cam.batch_size = 64  # Score-CAM's masked inputs per model call (its default 16): the same numbers, faster
        return cam(input_tensor=x, targets=[gradcam_lib.ClassifierOutputTarget(class_idx)] * len(batch))


def sharpened(model: torch.nn.Module, factor: float = 30.0) -> torch.nn.Module:
    """``model`` with its linear head scaled by ``factor``: a random model's class logits then differ enough
    between Score-CAM's masked inputs that its softmax weights are far from uniform (unscaled, the tiny CNN's
    spread by < 0.04 and uniform weights correlated 0.9995 with the reference; scaled, ≤ 0.1)."""
    with torch.no_grad():
        model.head.weight.mul_(factor)
        model.head.bias.mul_(factor)
    return model


def ours_on_grid(sal: sg.SaliencyMap, name: str, batch: np.ndarray, class_idx: int) -> np.ndarray:
    """slidegrad's maps at the layer's resolution (ReLU'd, before the finish)."""
    engine, ops = sal.engine.engine, sal.backend.ops
    classes = ops.tensor(np.full(len(batch), class_idx), "int64")
    with sal.backend.gradients():
        return ops.numpy(getattr(cam_module, name).cams(engine, ops.tensor(batch), classes, {"layer": None}))


@pytest.mark.parametrize("class_idx", [0, 1])
@pytest.mark.parametrize("name", METHODS)
def test_cam_equals_pytorch_grad_cam_on_a_cnn(gradcam_lib, ihc_tiles, name, class_idx):
    from skimage.transform import resize

    model = sharpened(make_tiny_cnn(seed=3))
    batch = sg.model.scale(ihc_tiles)
    sal = sg.SaliencyMap(model, device="cpu")
    ours = ours_on_grid(sal, name, batch, class_idx)
    theirs = reference_on_grid(gradcam_lib, name, model, model.features[3], batch, class_idx, ours.shape[1:])
    assert sum(np.ptp(t) > 0 for t in theirs) >= 3, "flat reference maps test nothing"
    worst = min(corr(a, b) for a, b in zip(ours, theirs))
    print(f"{name} cnn class {class_idx}: 1 − correlation on the grid {1 - worst:.3g}")
    assert worst >= MIN_CORR, worst
    final = sal.get(batch, name, class_idx=class_idx)  # the finish: / max, skimage bilinear (reflect)
    assert final.shape == (4, 64, 64) and final.dtype == np.float32 and 0 <= final.min() and final.max() <= 1
    finished = [resize(t, (64, 64), mode="reflect") for t in theirs]
    whole = min(corr(a, b) for a, b in zip(final, finished))
    print(f"{name} cnn class {class_idx}: 1 − correlation of the final maps {1 - whole:.3g}")
    assert whole >= MIN_CORR, whole
    gradcam = sal.gradcam(batch, class_idx=class_idx)
    assert max(rel_l2(a, b) for a, b in zip(final, gradcam)) > 0.01, f"{name} must not be Grad-CAM"


@pytest.mark.parametrize("name", METHODS)
def test_cam_equals_pytorch_grad_cam_on_vit_patch_tokens(gradcam_lib, ihc, name):
    model = sharpened(timm_vit())
    batch = tiles(ihc, 128, 2)
    sal = sg.SaliencyMap(model, device="cpu")
    ours = ours_on_grid(sal, name, batch, 1)
    grid = grid_of(128)
    reshape = vit_reshape_transform(1, grid)
    theirs = reference_on_grid(gradcam_lib, name, model, model.blocks[-1].norm1, batch, 1, grid, reshape)
    assert ours.shape == theirs.shape == (2, *grid)
    assert all(np.ptp(t) > 0 for t in theirs), "flat reference maps test nothing"
    worst = min(corr(a, b) for a, b in zip(ours, theirs))
    print(f"{name} vit: 1 − correlation on the grid {1 - worst:.3g}")
    assert worst >= MIN_CORR, worst
    final = sal.get(batch, name, class_idx=1)
    assert final.shape == (2, 128, 128) and np.isfinite(final).all()


@pytest.mark.parametrize("class_idx", [0, 1])
def test_scorecam_channel_scores_are_pytorch_grad_cams(gradcam_lib, ihc_tiles, class_idx):
    """Score-CAM's weights from the same activations: pytorch-grad-cam's ``get_cam_weights`` (a softmax) against
    slidegrad's masked-input logits, centred (``log softmax`` = score − a per-tile constant)."""
    model = make_tiny_cnn(seed=3)  # unscaled: the scores differ by < 0.04, so this compares them to float rounding
    batch = sg.model.scale(ihc_tiles)
    sal = sg.SaliencyMap(model, device="cpu")
    acts, _ = sal.backend.conv_gradients(batch, np.full(len(batch), class_idx), None)
    ops = sal.backend.ops
    x, classes = ops.tensor(batch), ops.tensor(np.full(len(batch), class_idx), "int64")
    ours = cam_module.channel_scores(sal.engine.engine, x, classes, ops.tensor(acts))
    with gradcam_lib.ScoreCAM(model=model, target_layers=[model.features[3]]) as reference:
        weights = reference.get_cam_weights(
            torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))), model.features[3],
            [gradcam_lib.ClassifierOutputTarget(class_idx)] * len(batch), acts.transpose(0, 3, 1, 2), None,
        )  # fmt: skip
    theirs = np.log(weights.astype(np.float64))
    centred = [v - v.mean(axis=1, keepdims=True) for v in (ours, theirs)]
    error = np.abs(centred[0] - centred[1]).max() / np.ptp(centred[1], axis=1).min()
    print(f"scorecam class {class_idx}: max |score difference| / score spread {error:.3g}")
    assert np.ptp(centred[1], axis=1).min() > 1e-3 and error <= 1e-3, error


class RegionModel(torch.nn.Module):
    """Looks only at ``region`` (a bool ``(H, W)`` mask): class 1's logit is ``scale · Σ_region conv(x)``, class 0
    its negative; the conv (``features.0``) copies the input's channels (1×1, identity)."""

    def __init__(self, region: np.ndarray, scale: float = 0.1) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1))
        with torch.no_grad():
            self.features[0].weight.copy_(torch.eye(3)[:, :, None, None])
            self.features[0].bias.zero_()
        self.register_buffer("region", torch.from_numpy(region.astype(np.float32)))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.scale * (self.features(x) * self.region).sum((1, 2, 3))
        return torch.stack([-score, score], 1)


def region_case() -> tuple[np.ndarray, np.ndarray]:
    """A 32 px tile whose channel 0 lights the top-left 12 × 12 region, channel 1 the rest, channel 2 noise;
    and the region."""
    region = np.zeros((32, 32), bool)
    region[2:14, 2:14] = True
    rng = np.random.default_rng(0)
    tile = np.stack([region, ~region, rng.uniform(0, 0.2, (32, 32))], -1).astype(np.float32)
    return tile[None], region


@pytest.mark.parametrize("name", METHODS)
def test_a_model_looking_at_one_region_gets_the_maps_mass_there(name):
    tile, region = region_case()
    sal = sg.SaliencyMap(RegionModel(region), class_idx=1, device="cpu")
    result = sal.explain(tile, name)
    assert result.engine.layer == "features.0"
    mass = result.masks[0]
    inside = mass[region].sum() / mass.sum()
    print(f"{name}: fraction of the map inside the region {inside:.4f}")
    assert inside >= 0.99, inside
    gradcam = sal.gradcam(tile)[0]  # Grad-CAM's per-channel mean gradient lights channel 1 outside too
    assert gradcam[region].sum() / gradcam.sum() < 0.9


@pytest.mark.parametrize("name", METHODS)
def test_unknown_layer_is_one_line(tiny_cnn, name):
    x = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(sg.InputError, match=r"layer 'nope' not found; conv layers: features.0, features.3$"):
        sg.SaliencyMap(tiny_cnn, class_idx=0).get(x, name, layer="nope")
    with pytest.raises(sg.InputError, match="PAIR's saliency.core has no such method; use engine: native"):
        sg.SaliencyMap(tiny_cnn, class_idx=0, engine="pair").get(x, name)


def test_scorecam_is_batched_across_tiles_and_channels_by_the_budget(ihc_tiles):
    from slidegrad import batching

    sal = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1, memory_budget=8 << 20)
    batch = sg.model.scale(ihc_tiles)
    result = sal.explain(batch, "scorecam")
    per_item = batching.item_bytes(sal.backend.activation_bytes((64, 64, 3)), 64 * 64 * 3)
    assert len(batch) < result.engine.max_batch <= 4 * 8  # more than the tiles: (tile, channel) items
    assert result.engine.max_batch * per_item <= 8 << 20
    alone = [sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1).scorecam(tile[None])[0] for tile in batch]
    assert max(rel_l2(a, b) for a, b in zip(result.masks, alone)) <= 1e-5  # no tile reads another's channels


@pytest.mark.parametrize("name", METHODS)
def test_cams_take_smoothgrad_and_a_chosen_layer(tiny_cnn, ihc_tiles, name):
    batch = sg.model.scale(ihc_tiles[:2])
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
    smooth = sal.get(batch, name, smooth=True, nsamples=2)
    assert smooth.shape == (2, 64, 64) and np.isfinite(smooth).all() and smooth.max() <= 1
    first = sal.explain(batch, name, layer="features.0")
    assert first.engine.layer == "features.0" and rel_l2(first.masks, sal.get(batch, name)) > 0.05


def test_bilinear_matrix_is_align_corners_upsampling():
    up = cam_module.bilinear_matrix(3, 5)
    np.testing.assert_allclose(up @ np.array([0.0, 2.0, 4.0]), [0, 1, 2, 3, 4], atol=1e-6)
    grid = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4)
    torch_up = torch.nn.UpsamplingBilinear2d(size=(7, 9))(grid)[0, 0].numpy()
    ours = cam_module.bilinear_matrix(3, 7) @ grid[0, 0].numpy() @ cam_module.bilinear_matrix(4, 9).T
    np.testing.assert_allclose(ours, torch_up, atol=1e-5)


def test_the_cams_in_registry_and_methods_text():
    from slidegrad.methods_text import REFERENCES, method_phrase

    for name, citation, word in (
        ("hirescam", "Draelos & Carin 2020", "HiResCAM"),
        ("layercam", "Jiang et al. 2021", "LayerCAM"),
        ("scorecam", "Wang et al. 2020", "Score-CAM"),
    ):
        method = sg.methods.get_method(name)
        assert method.kind == "gradcam" and method.layer and method.pair is None and method.citation == citation
        assert word in REFERENCES[citation]
        meta = {"method_name": name, "smooth": False, "params": {"layer": None}, "gradcam_layer": "features.3"}
        assert method_phrase(meta)[0] == f"{method.phrase} ({citation}; layer features.3)"
