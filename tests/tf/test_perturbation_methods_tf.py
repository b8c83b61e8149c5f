"""RISE, input × gradient and GradientSHAP on Keras models: they follow from the Ops interface (the backend's
forward-only class probabilities and its gradients).  Each against a reference written here in TensorFlow and
numpy from the method's definition, on the same masks or draws; RISE's known answer on a Keras model that reads
one quadrant only, with logits and with a softmax last layer.  (Torch against Keras on one ported CNN:
``tests/parity_maps.py``.)"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import slidegrad as sg  # noqa: E402
from slidegrad.engines.native import gradient_shap as shap_module  # noqa: E402
from slidegrad.engines.native.rise import rise_masks  # noqa: E402
from slidegrad.keras_nets import small_cnn  # noqa: E402

from ..metrics import corr, rel_l2  # noqa: E402


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return small_cnn(2, (4, 8), 64)


def softmax_probability(model, images: np.ndarray, class_idx: int) -> np.ndarray:
    out = model(tf.constant(images, tf.float32), training=False).numpy().astype(np.float64)
    out = np.exp(out - out.max(axis=1, keepdims=True))
    return out[:, class_idx] / out.sum(axis=1)


def test_rise_on_keras_equals_the_papers_loop(model, ihc_tiles):
    batch = sg.model.scale(ihc_tiles[:2])
    ours = sg.SaliencyMap(model, class_idx=1).explain(batch, "rise", n_masks=48, grid=5, p=0.4, seed=2)
    masks = rise_masks(48, 5, 0.4, 2, (64, 64)).masks(np.arange(48))
    for raw, image in zip(ours.raws, batch):
        probabilities = softmax_probability(model, image[None] * masks[..., None], 1)
        expected = np.einsum("i,ihw->hw", probabilities, masks) / (48 * 0.4)
        assert raw.shape == (64, 64) and np.ptp(expected) > 0
        assert rel_l2(raw, expected) <= 1e-5  # measured ≤ 7.9e-8


def top_left_model(softmax: bool):
    """Logits 0 and 40 × (mean of the top-left 32 × 32 quadrant − 0.5), or their softmax."""
    inputs = keras.Input((64, 64, 3))
    quadrant = keras.layers.GlobalAveragePooling2D()(keras.layers.Cropping2D(((0, 32), (0, 32)))(inputs))
    head = keras.layers.Dense(2, activation="softmax" if softmax else None)
    out = head(quadrant)
    head.set_weights([np.array([[0, 40 / 3]] * 3, np.float32), np.array([0, -20], np.float32)])
    return keras.Model(inputs, out)


def test_rise_on_keras_finds_the_only_region_the_model_reads():
    tiles = np.ones((2, 64, 64, 3), np.float32)
    tiles[1] *= 0.8
    logits = sg.SaliencyMap(top_left_model(False), class_idx=1).explain(tiles, "rise", n_masks=300)
    probabilities = sg.SaliencyMap(top_left_model(True), class_idx=1).explain(tiles, "rise", n_masks=300)
    for raw, other in zip(logits.raws, probabilities.raws):
        above = np.maximum(raw - np.median(raw), 0)
        assert above[:32, :32].sum() / above.sum() > 0.7  # measured 0.83 and 0.85, as the torch test
        # a softmax last layer is read as probabilities, not softmaxed again
        assert rel_l2(other, raw) <= 1e-5  # measured 0.0


def test_input_x_gradient_on_keras_is_input_times_the_tapes_gradient(model, ihc_tiles):
    batch = sg.model.scale(ihc_tiles)
    ours = sg.SaliencyMap(model, class_idx=1).explain(batch, "input_x_gradient")
    inputs = tf.constant(batch)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        score = tf.reduce_sum(model(inputs, training=False)[:, 1])
    expected = (tape.gradient(score, inputs) * inputs).numpy()
    for a, b in zip(ours.raws, expected):
        assert np.ptp(b) > 0 and rel_l2(a, b) <= 1e-5 and corr(a, b) >= 0.99999  # measured 0.0 (the same ops)


def test_gradient_shap_on_keras_equals_captums_formula(model, ihc_tiles):
    """Captum's GradientShap from its code, per sample: ∇f(α x̃ + (1 − α) b) ⊙ (x̃ − b), x̃ = x + noise,
    averaged; the draws are slidegrad's own (:func:`shap_draws`), the baselines rebuilt here (zeros, the max, scipy's blur)."""
    from scipy.ndimage import gaussian_filter

    batch = sg.model.scale(ihc_tiles[:2])
    samples, stdevs = 6, 0.1
    ours = sg.SaliencyMap(model, class_idx=1).explain(batch, "gradient_shap", n_samples=samples, stdevs=stdevs, seed=9)
    draws = shap_module.shap_draws(samples, stdevs, 9)
    noise = draws.noise(np.arange(samples), (64, 64, 3))
    for raw, image in zip(ours.raws, batch):
        blurred = np.stack([gaussian_filter(image[..., c], 8.0) for c in range(3)], axis=-1)
        starts = np.stack([np.zeros_like(image), np.full_like(image, image.max()), blurred])[draws.baseline]
        noisy = image[None] + noise
        alpha = draws.alpha.astype(np.float32).reshape(-1, 1, 1, 1)
        points = tf.constant(alpha * noisy + (1 - alpha) * starts)
        with tf.GradientTape() as tape:
            tape.watch(points)
            score = tf.reduce_sum(model(points, training=False)[:, 1])
        expected = (tape.gradient(score, points).numpy() * (noisy - starts)).mean(axis=0)
        assert np.ptp(expected) > 0 and rel_l2(raw, expected) <= 1e-5  # measured 0.0 (the same ops, batched alike)
