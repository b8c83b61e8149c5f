"""HiResCAM, LayerCAM and Score-CAM on a Keras model: they follow from the Ops interface (the backend's conv
activations and gradients, its forward-only class scores).  Each against a hand computation in numpy from the
backend's activations and gradients (Score-CAM's masks upsampled with ``np.interp``, corners aligned, and
scored by calling the Keras model on each masked tile)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import keras  # noqa: E402

import slidegrad as sg  # noqa: E402
from slidegrad.keras_nets import small_cnn  # noqa: E402

from ..metrics import corr, rel_l2  # noqa: E402

# measured: relative L2 ≤ 7.4e-8 (HiResCAM 5.3e-8, LayerCAM 7.4e-8, Score-CAM 6.0e-8: its float32 masks by a matrix
# product vs np.interp in float64 here); mixing up channels or tiles moves a map by O(0.1)
REL_L2 = 1e-4
LAYER = "conv1"  # the last conv before its ReLU (the default, relu1, is followed by global pooling: see below)


@pytest.fixture(scope="module")
def model():
    """The Keras SmallCNN, its head scaled ×30 so Score-CAM's softmax weights are far from uniform."""
    keras.utils.set_random_seed(3)
    model = small_cnn(2, (4, 8), 64)
    head = model.get_layer("head")
    head.set_weights([w * 30.0 for w in head.get_weights()])
    return model


def upsample(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` → ``(H, W)`` bilinear with the corners aligned (PyTorch's ``UpsamplingBilinear2d``)."""
    h, w = channel.shape
    rows = np.array([np.interp(np.linspace(0, w - 1, size[1]), np.arange(w), row) for row in channel])
    return np.array([np.interp(np.linspace(0, h - 1, size[0]), np.arange(h), col) for col in rows.T]).T


def scorecam_weights(model, tile: np.ndarray, acts: np.ndarray, class_idx: int) -> np.ndarray:
    """``(c,)`` softmax over channels of the class logit of ``tile`` masked by each min-max scaled channel."""
    masks = np.stack([upsample(acts[..., c], tile.shape[:2]) for c in range(acts.shape[-1])])
    low, high = masks.min(axis=(1, 2), keepdims=True), masks.max(axis=(1, 2), keepdims=True)
    masks = (masks - low) / (high - low + 1e-8)
    scores = np.asarray(model(tile[None] * masks[..., None].astype(np.float32), training=False))[:, class_idx]
    weights = np.exp(scores - scores.max())
    return weights / weights.sum()


def hand_cams(sal: sg.SaliencyMap, model, batch: np.ndarray, class_idx: int, layer: str) -> dict[str, np.ndarray]:
    acts, grads = sal.backend.conv_gradients(batch, np.full(len(batch), class_idx, np.int64), layer)
    acts, grads = acts.astype(np.float64), grads.astype(np.float64)
    scorecam = np.stack([scorecam_weights(model, t, a, class_idx) for t, a in zip(batch, acts)])
    return {
        "hirescam": (grads * acts).sum(-1),
        "layercam": (np.maximum(grads, 0) * acts).sum(-1),
        "scorecam": np.einsum("nhwc,nc->nhw", acts, scorecam),
    }


def test_cams_on_keras_are_the_hand_computation(model, ihc_tiles):
    from skimage.transform import resize

    batch = sg.model.scale(ihc_tiles)
    sal = sg.SaliencyMap(model, class_idx=1)
    expected = hand_cams(sal, model, batch, 1, LAYER)
    gradcam = sal.gradcam(batch, layer=LAYER)
    for name, cams in expected.items():
        masks, raws = sal.attributions(batch, name, layer=LAYER)
        assert masks.shape == (4, 64, 64) and 0 <= masks.min() and masks.max() <= 1
        worst = 0.0
        for raw, cam in zip(raws, np.maximum(cams, 0)):
            assert cam.max() > 0, "a zero map tests nothing"
            finished = resize(cam / cam.max(), (64, 64), mode="reflect")
            worst = max(worst, rel_l2(raw, finished))
            assert corr(raw, finished) >= 0.99999
        print(f"{name} keras: relative L2 to the hand computation {worst:.3g}")
        assert worst <= REL_L2, (name, worst)
        assert max(rel_l2(a, b) for a, b in zip(masks, gradcam)) > 0.01, f"{name} must not be Grad-CAM"


def test_hirescam_is_gradcam_where_a_global_average_pool_and_a_linear_head_follow(model, ihc_tiles):
    """Draelos & Carin's equivalence: the default layer (``relu1``) feeds the average pool and the dense head,
    so every position's gradient is the channel's mean gradient."""
    batch = sg.model.scale(ihc_tiles)
    sal = sg.SaliencyMap(model, class_idx=1)
    assert sal.backend.gradcam_layer() == "relu1"
    assert max(rel_l2(a, b) for a, b in zip(sal.hirescam(batch), sal.gradcam(batch))) <= 1e-5


def test_unknown_keras_layer_is_one_line(model):
    x = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(sg.InputError, match="layer 'nope'"):
        sg.SaliencyMap(model, class_idx=0).scorecam(x, layer="nope")
