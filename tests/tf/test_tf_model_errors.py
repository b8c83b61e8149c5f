"""Keras models that break assumptions: frozen layers, several outputs, NaN outputs, a fixed input size.

Runs in its own pytest process (TensorFlow never shares one with torch).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402
import tf_keras  # noqa: E402

import slidegrad as sg  # noqa: E402
from slidegrad.keras_nets import small_cnn  # noqa: E402

METHODS = {"vanilla": {}, "integrated_gradients": {"x_steps": 4}, "gradcam": {}}


@pytest.fixture(scope="module")
def batch(ihc_tiles):
    return sg.model.standardize(ihc_tiles[:2, :32, :32])


def one_line_error(message: str, call, *args, **kwargs) -> None:
    with pytest.raises(sg.InputError, match=message) as err:
        call(*args, **kwargs)
    assert "\n" not in str(err.value)


def legacy_cnn(size: int | None = None):
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((size, size, 3))
    x = tf_keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv0")(inputs)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="head")(x))


def keras3_cnn():
    keras.utils.set_random_seed(0)
    return small_cnn(2, (4, 8))


@pytest.mark.parametrize("make", [keras3_cnn, legacy_cnn], ids=["keras3", "tf_keras"])
@pytest.mark.parametrize("method", list(METHODS))
def test_frozen_layers_give_the_same_masks(batch, make, method):
    expected = sg.SaliencyMap(make(), class_idx=1).get(batch, method, **METHODS[method])
    frozen = make()
    for layer in frozen.layers:
        layer.trainable = False
    frozen.trainable = False
    assert not frozen.trainable_weights
    masks = sg.SaliencyMap(frozen, class_idx=1).get(batch, method, **METHODS[method])
    np.testing.assert_allclose(masks, expected, atol=1e-6)
    assert masks.max() > 0


def two_outputs():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs))
    return keras.Model(inputs, [keras.layers.Dense(2, name="a")(x), keras.layers.Dense(3, name="b")(x)])


def test_keras_model_with_two_outputs(tmp_path, batch):
    message = r"model '{}': returns 2 outputs \(a list\); expected one \(N, classes\) output"
    two_outputs().save(tmp_path / "two.keras")
    one_line_error(message.format(tmp_path / "two.keras"), sg.load_model, tmp_path / "two.keras")
    for call in ("vanilla", "gradcam"):
        one_line_error(message.format("Functional"), getattr(sg.SaliencyMap(two_outputs()), call), batch)
        one_line_error(message.format("Functional"), getattr(sg.SaliencyMap(two_outputs(), class_idx=0), call), batch)


def test_nan_outputs_are_an_error(tmp_path, batch):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Rescaling(float("nan"))(keras.layers.Dense(2)(x)))
    message = r"model 'Functional': outputs are NaN or inf for image\(s\) 0, 1"
    one_line_error(message, sg.SaliencyMap(model).vanilla, batch)
    for method in METHODS:
        one_line_error(
            rf"model 'Functional': {method} attributions are NaN or inf for image\(s\) 0, 1",
            sg.SaliencyMap(model, class_idx=1).get,
            batch,
            method,
            **METHODS[method],
        )
    model.save(tmp_path / "nan.keras")
    (tmp_path / "params.json").write_text(json.dumps({"tile_px": 32, "outcome_labels": ["a", "b"]}))
    loaded = sg.load_model(tmp_path / "nan.keras")
    one_line_error(rf"model '{tmp_path / 'nan.keras'}': outputs are NaN", sg.SaliencyMap(loaded).probabilities, batch)


def test_fixed_input_size_keras_model(batch):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    for class_idx in (None, 1):
        masks = sg.SaliencyMap(model, class_idx=class_idx).gradcam(batch)
        assert masks.shape == (2, 32, 32) and masks.max() > 0
    one_line_error(r"class_idx: 2 is out of range; the model has 2 classes", sg.SaliencyMap, model, class_idx=2)
