"""Grad-CAM++ and occlusion (issue 25) on a Keras model: they follow from the Ops interface (the backend's
conv gradients and its forward-only class scores).  Occlusion against PAIR's on the same model; Grad-CAM++
against the paper's weights computed here in numpy from the backend's activations and gradients."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import keras  # noqa: E402

import slidegrad as sg  # noqa: E402
from slidegrad.keras_nets import small_cnn  # noqa: E402

from ..metrics import corr, rel_l2  # noqa: E402


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return small_cnn(2, (4, 8), 64)


def test_occlusion_on_keras_equals_pairs(model, ihc_tiles):
    batch = sg.model.scale(ihc_tiles[:2])
    _, ours = sg.SaliencyMap(model, class_idx=1).attributions(batch, "occlusion", size=24)
    _, theirs = sg.SaliencyMap(model, class_idx=1, engine="pair").attributions(batch, "occlusion", size=24)
    for a, b in zip(ours, theirs):
        assert a.shape == (64, 64, 3) and np.ptp(b) > 0
        assert rel_l2(a, b) <= 1e-4 and corr(a, b) >= 0.99999


def test_gradcam_plusplus_on_keras_is_the_papers_weighting(model, ihc_tiles):
    from skimage.transform import resize

    batch = sg.model.scale(ihc_tiles)
    sal = sg.SaliencyMap(model, class_idx=1)
    masks, ours = sal.attributions(batch, "gradcam_plusplus")  # raw maps: the layer's map / its max, resized
    acts, grads = sal.backend.conv_gradients(batch, np.ones(len(batch), np.int64), None)
    acts, grads = acts.astype(np.float64), grads.astype(np.float64)
    total = acts.sum(axis=(1, 2), keepdims=True)
    alpha = np.where(grads != 0, grads**2 / (2 * grads**2 + total * grads**3 + 1e-6), 0.0)
    weights = (np.maximum(grads, 0) * alpha).sum(axis=(1, 2))
    cams = np.maximum(np.einsum("nhwc,nc->nhw", acts, weights), 0)
    for a, cam in zip(ours, cams):
        expected = resize(cam / cam.max(), (64, 64), mode="reflect") if cam.max() > 0 else np.zeros((64, 64))
        assert rel_l2(a, expected) <= 1e-4
    assert min(rel_l2(a, b) for a, b in zip(masks, sal.gradcam(batch))) > 0.01
