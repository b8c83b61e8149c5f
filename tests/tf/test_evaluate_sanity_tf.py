"""Model-randomisation sanity check on Keras models: layer order, determinism, known answers, errors.

Runs in its own pytest process (TensorFlow never shares one with torch).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

import slidegrad as sg  # noqa: E402
from slidegrad.evaluate.sanity import model_randomisation, randomisable_layers  # noqa: E402
from slidegrad.keras_nets import small_cnn  # noqa: E402
from slidegrad.model_files import LoadedModel  # noqa: E402


def test_no_torch_in_this_process():
    assert "torch" not in sys.modules


@keras.saving.register_keras_serializable("slidegrad_tests")
class WeightFreeHead(keras.layers.Layer):
    """Logits ``(s, -s) + bias`` with ``s = sum(x²)``: the input gradient (``±2x``) ignores the weight."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bias_initializer = keras.initializers.RandomNormal()

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(2,), initializer=self.bias_initializer)

    def call(self, x):
        s = keras.ops.sum(x**2, axis=(1, 2, 3))
        return keras.ops.stack([s, -s], axis=1) + self.bias


@keras.saving.register_keras_serializable("slidegrad_tests")
class Scale(keras.layers.Layer):
    """A weight with no ``scale_initializer``: model_randomisation cannot re-initialise it."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")

    def call(self, x):
        return x * self.scale


def cnn(extra=None):
    """A small channels-last CNN: conv0 → (extra) → pool → nested ``block`` (conv1, bn) → pool → head."""
    keras.utils.set_random_seed(0)
    block = keras.Sequential(
        [keras.Input((32, 32, 4)), keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
         keras.layers.BatchNormalization(name="bn")],
        name="block",
    )  # fmt: skip
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv0")(inputs)
    if extra is not None:
        x = extra(x)
    x = block(keras.layers.MaxPooling2D(2)(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x), name="cnn")


@pytest.fixture(scope="module")
def model():
    return cnn()


@pytest.fixture(scope="module")
def batch(ihc_tiles):
    return sg.model.scale(ihc_tiles)


def test_layers_are_listed_last_first_with_nested_models_flattened(model):
    assert [name for name, _ in randomisable_layers(model)] == ["head", "block/bn", "block/conv1", "conv0"]
    assert [name for name, _ in randomisable_layers(small_cnn(2, (4, 8), 64))] == ["head", "conv1", "conv0"]


def test_vanilla_passes_and_the_users_model_is_untouched(model, batch):
    before = [w.copy() for w in model.get_weights()]
    result = model_randomisation(model, batch, "vanilla", seed=0)
    assert result["layers"] == ["head", "block/bn", "block/conv1", "conv0"]
    assert result["spearman"].shape == result["ssim"].shape == (4, 4)
    np.testing.assert_array_equal(result["spearman_full"], result["spearman"][:, -1])
    # measured: |rho| <= 0.19 once every layer is randomised (0.87-0.95 after the head alone)
    assert np.all(np.abs(result["spearman_full"]) < 0.4), result["spearman_full"]
    assert result["passes"].dtype == bool and result["passes"].all()
    np.testing.assert_array_equal(result["classes"], sg.SaliencyMap(model).probabilities(batch).argmax(axis=1))
    np.testing.assert_array_equal(result["masks"], sg.SaliencyMap(model).get(batch, "vanilla"))
    after = model.get_weights()
    assert len(after) == len(before) and all(np.array_equal(a, b) for a, b in zip(after, before))
    again = model_randomisation(model, batch[:2], "vanilla", seed=0)
    np.testing.assert_array_equal(again["spearman"], result["spearman"][:2])  # same seed, same weights
    other = model_randomisation(model, batch[:2], "vanilla", seed=1)
    assert not np.array_equal(other["spearman"], again["spearman"])


def test_reinitialisation_is_seeded_and_uses_the_layers_initialisers(model):
    from slidegrad.backends.tf_backend import randomisation_copy, reinitialise

    copies = [randomisation_copy(model) for _ in range(3)]
    for copy, seed in zip(copies, (5, 5, 6)):
        reinitialise(copy.get_layer("conv0"), seed)
        reinitialise(copy.get_layer("block").get_layer("bn"), seed)
    kernels = [c.get_layer("conv0").get_weights()[0] for c in copies]
    np.testing.assert_array_equal(kernels[0], kernels[1])
    assert not np.array_equal(kernels[0], kernels[2])
    assert not np.array_equal(kernels[0], model.get_layer("conv0").get_weights()[0])
    np.testing.assert_array_equal(copies[0].get_layer("conv0").get_weights()[1], 0)  # zeros bias_initializer
    gamma, beta, mean, var = copies[0].get_layer("block").get_layer("bn").get_weights()
    assert (gamma == 1).all() and (beta == 0).all() and (mean == 0).all() and (var == 1).all()


def test_weight_free_map_survives_randomisation(batch):
    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, WeightFreeHead(name="weight_free")(inputs))
    loaded = LoadedModel(module=model, backend="tensorflow", outcome_labels=["a", "b"], tile_px=64)
    result = model_randomisation(loaded, batch[:2], "vanilla", class_idx="a")
    assert result["layers"] == ["weight_free"]
    np.testing.assert_allclose(result["spearman"], 1.0, atol=1e-12)
    np.testing.assert_allclose(result["ssim"], 1.0, atol=1e-12)
    assert not result["passes"].any()
    np.testing.assert_array_equal(result["classes"], [0, 0])


def test_a_layer_without_initialiser_is_one_line_naming_it(batch):
    model = cnn(extra=Scale(name="my_scale"))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(sg.InputError, match=r"^model: layer 'my_scale' \(Scale\) has weight 'scale' but no") as err:
        model_randomisation(model, batch[:1], "vanilla")
    assert "\n" not in str(err.value)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


def test_signature_only_savedmodel_is_refused(tmp_path, batch):
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.float32, name="image")])
    def serve(image):
        return {"logits": tf.stack([tf.reduce_sum(image, axis=(1, 2, 3))] * 2, axis=1)}

    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "sig"), signatures={"serving_default": serve})
    with pytest.raises(sg.InputError, match="^model: this SavedModel has no Keras layers") as err:
        model_randomisation(sg.load_model(tmp_path / "sig"), batch[:1], "vanilla")
    assert "\n" not in str(err.value)
