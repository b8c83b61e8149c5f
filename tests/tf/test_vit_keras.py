"""Keras vision transformers: no silent patch-embedding Grad-CAM, and attention methods refused in one line.

slidegrad reads token grids and attention of PyTorch ViTs only (README: "Vision transformers: maps").
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

import slidegrad as sg  # noqa: E402
from slidegrad.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def keras_vit():
    """Patch embedding (a conv whose kernel is its stride), then (N, T, C) tokens, a norm and a head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 16, strides=16, name="patch_embed")(inputs)
    x = keras.layers.Reshape((16, 8), name="tokens")(x)
    x = keras.layers.MultiHeadAttention(2, 4, name="attn")(x, x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


@pytest.fixture(scope="module")
def batch():
    return np.random.RandomState(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)


def test_gradcam_has_no_default_layer_on_a_keras_transformer(keras_vit, batch):
    sal = sg.SaliencyMap(keras_vit, class_idx=1)
    with pytest.raises(InputError) as err:
        sal.gradcam(batch)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("gradcam: the last 4-D layer 'patch_embed' is followed by token layers")
    assert "pass layer=" in message


def test_gradcam_on_a_named_4d_layer_still_runs(keras_vit, batch):
    masks = sg.SaliencyMap(keras_vit, class_idx=1).gradcam(batch, layer="patch_embed")
    assert masks.shape == (2, 64, 64) and np.isfinite(masks).all()


@pytest.mark.parametrize("method", ["attention_rollout", "transformer_attribution"])
def test_attention_methods_are_refused_on_keras(keras_vit, batch, method):
    with pytest.raises(InputError) as err:
        sg.SaliencyMap(keras_vit, class_idx=1).get(batch, method)
    assert "\n" not in str(err.value)
    assert "PyTorch models only" in str(err.value)
