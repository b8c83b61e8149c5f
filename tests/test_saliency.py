"""Every method on a tiny CNN: shape, range, determinism, class handling, hooks, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slidegrad as sg
from slidegrad.model import scale

from .metrics import assert_masks_close

FAST = {
    "vanilla": {},
    "integrated_gradients": {"x_steps": 10},
    "guided_integrated_gradients": {"x_steps": 10},
    "blur_integrated_gradients": {"steps": 10},
    "xrai": {"steps": 5},
    "xrai_fast": {"steps": 5},
    "gradcam": {},
}


@pytest.fixture()
def batch(ihc_tiles):
    return scale(ihc_tiles[:2])


@pytest.mark.parametrize("method", list(FAST))
def test_method_shape_range_determinism(tiny_cnn, batch, method):
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
    masks = sal.get(batch, method, **FAST[method])
    assert masks.shape == (2, 64, 64)
    assert masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert masks.max() > 0.0, "an all-zero map explains nothing"
    again = sg.SaliencyMap(tiny_cnn, class_idx=1).get(batch, method, **FAST[method])
    np.testing.assert_array_equal(masks, again)
    single = sal.get(batch[1], method, **FAST[method])
    assert single.shape == (64, 64)
    assert_masks_close(single, masks[1])  # batch of 1 vs 2: conv kernels may differ (a max-pool flip)


@pytest.mark.parametrize("method", ["vanilla", "integrated_gradients", "blur_integrated_gradients", "gradcam"])
def test_smooth_variants_are_seeded_and_differ(tiny_cnn, batch, method):
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
    params = {**FAST[method], "nsamples": 3}
    smooth = sal.get(batch, method, smooth=True, **params)
    np.testing.assert_array_equal(smooth, sal.get(batch, method, smooth=True, **params))
    other_seed = sal.get(batch, method, smooth=True, seed=1, **params)
    assert not np.array_equal(smooth, other_seed)
    plain = sal.get(batch, method, **FAST[method])
    assert np.abs(smooth - plain).max() > 1e-3, "smooth=True must actually smooth (Slideflow's Blur-IG bug)"


def test_gradcam_class0_differs_from_class1(tiny_cnn, batch):
    sal = sg.SaliencyMap(tiny_cnn)
    cam0 = sal.gradcam(batch, class_idx=0)
    cam1 = sal.gradcam(batch, class_idx=1)
    assert np.abs(cam0 - cam1).max() > 0.1


def test_class_idx_per_call_overrides_object_and_default_is_predicted(tiny_cnn, batch):
    sal = sg.SaliencyMap(tiny_cnn, class_idx=0)
    predicted = sal.backend.probabilities(batch).argmax(1)
    np.testing.assert_array_equal(sal.resolve_classes(batch), [0, 0])
    np.testing.assert_array_equal(sal.resolve_classes(batch, class_idx=1), [1, 1])
    np.testing.assert_array_equal(sg.SaliencyMap(tiny_cnn).resolve_classes(batch), predicted)
    per_image = sal.vanilla(batch, class_idx=[0, 1])  # batched: equal up to float rounding and max-pool flips
    assert_masks_close(per_image[1], sal.vanilla(batch[1], class_idx=1))
    assert_masks_close(per_image[0], sal.vanilla(batch[0], class_idx=0))


def test_vanilla_raw_is_the_class_logit_gradient(tiny_cnn, batch):
    _, raws = sg.SaliencyMap(tiny_cnn).attributions(batch[:1], "vanilla", class_idx=1)
    # on a CPU the backend hands the model a channels-last batch: the same computation, so the same bits
    x = torch.from_numpy(batch[:1]).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    tiny_cnn(x)[0, 1].backward()
    np.testing.assert_array_equal(raws[0], x.grad[0].permute(1, 2, 0).numpy())


def test_model_sees_channels_last_batches_on_a_cpu(tiny_cnn, batch):
    """Whatever strides the engine builds a batch with, the conv kernel choice must not depend on them:
    on a CPU every batch reaches the model channels-last (NHWC memory, oneDNN's faster kernels)."""
    seen = []
    layout = torch.channels_last
    hook = tiny_cnn.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous(memory_format=layout)))
    try:
        sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
        sal.backend.probabilities(batch[:, ::-1])  # a negatively strided view
        sal.blur_integrated_gradients(batch, steps=3)  # einsum-built, non-contiguous batches
        sal.vanilla(batch, smooth=True, nsamples=2)
    finally:
        hook.remove()
    assert seen and all(seen), seen


def test_integrated_gradients_completeness(tiny_cnn, batch):
    """Sum of IG attributions ≈ f(x) − f(0) with enough steps (Sundararajan et al.)."""
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
    _, raws = sal.attributions(batch[:1], "integrated_gradients", x_steps=300, batch_size=100)
    logits = sal.backend.logits(np.concatenate([batch[:1], np.zeros_like(batch[:1])]))
    assert raws[0].sum() == pytest.approx(logits[0, 1] - logits[1, 1], rel=0.02, abs=1e-3)


def test_guided_ig_runs_on_numpy_2_4_or_newer(tiny_cnn, batch):
    major, minor = (int(p) for p in np.__version__.split(".")[:2])
    assert (major, minor) >= (2, 4), "the pinned numpy should be one where PAIR's GuidedIG breaks unadapted"
    mask = sg.SaliencyMap(tiny_cnn, class_idx=0).guided_integrated_gradients(batch[0], x_steps=5)
    assert mask.shape == (64, 64)


def test_gradcam_hooks_are_released(tiny_cnn, batch):
    sal = sg.SaliencyMap(tiny_cnn, class_idx=0)
    for _ in range(3):
        sal.gradcam(batch)
    for module in tiny_cnn.modules():
        assert not module._forward_hooks and not module._backward_hooks


def test_gradcam_layer_choice_and_errors(tiny_cnn, batch):
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
    assert sal.backend.conv_layer_names() == ["features.0", "features.3"]
    np.testing.assert_array_equal(sal.gradcam(batch), sal.gradcam(batch, layer="features.3"))
    assert not np.array_equal(sal.gradcam(batch), sal.gradcam(batch, layer="features.0"))
    with pytest.raises(sg.InputError, match="layer 'nope' not found; conv layers: features.0, features.3"):
        sal.gradcam(batch, layer="nope")


def test_all_and_get_cover_every_method(tiny_cnn, batch):
    out = sg.SaliencyMap(tiny_cnn, class_idx=1).all(batch[0], **{})  # noqa: PIE804
    assert sorted(out) == sorted(name for name, method in sg.METHODS.items() if not method.transformer)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, b: s.get(b, "no_such_method"), "unknown method 'no_such_method'"),
        (lambda s, b: s.vanilla(b, class_idx=2), "class_idx: 2 is out of range; the model has 2 classes"),
        (lambda s, b: s.xrai(b, smooth=True), "xrai: does not support smooth=True"),
        (lambda s, b: s.get(b, "vanilla", x_steps=3), "unknown parameter\\(s\\) x_steps"),
        (lambda s, b: s.vanilla((b * 0).astype(np.uint8)), "call preprocess\\(img\\) first"),
        (lambda s, b: s.vanilla(b[..., 0]), "expected \\(H, W, 3\\)"),
    ],
)
def test_bad_input_is_one_clear_line(tiny_cnn, batch, call, message):
    with pytest.raises(sg.InputError, match=message) as err:
        call(sg.SaliencyMap(tiny_cnn), batch)
    assert "\n" not in str(err.value)


def test_class_idx_out_of_range_on_the_object(tiny_cnn):
    with pytest.raises(sg.InputError, match="class_idx: 5 is out of range"):
        sg.SaliencyMap(tiny_cnn, class_idx=5)


def test_cuda_device_without_gpu_is_a_clear_error(tiny_cnn):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(sg.InputError, match="device: 'cuda' was asked for but torch sees no CUDA device"):
        sg.SaliencyMap(tiny_cnn, device="cuda")
