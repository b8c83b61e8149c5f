"""TensorFlow / Keras backend: the three model formats, preprocessing, Grad-CAM and bad input.

Runs in its own pytest process (``make test`` calls it separately), so
TensorFlow never shares a process with torch.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402
import tf_keras  # noqa: E402

import slidegrad as sg  # noqa: E402
from slidegrad.keras_nets import small_cnn  # noqa: E402

PARAMS = {"tile_px": 64, "tile_um": 64, "outcome_labels": ["negative", "positive"]}


def test_no_torch_in_this_process():
    assert "torch" not in sys.modules


@pytest.fixture(scope="module")
def keras_model():
    keras.utils.set_random_seed(0)
    return small_cnn(2, (4, 8), 64)


@pytest.fixture(scope="module")
def batch(ihc_tiles):
    return sg.model.standardize(ihc_tiles[:2])


def legacy_cnn(softmax: bool = False):
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((64, 64, 3))
    x = tf_keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv0")(inputs)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf_keras.layers.Dense(2, activation="softmax" if softmax else None, name="head")(x)
    return tf_keras.Model(inputs, outputs)


def test_keras_file_round_trip(tmp_path, keras_model, batch):
    keras_model.save(tmp_path / "m.keras")
    (tmp_path / "params.json").write_text(json.dumps(PARAMS))
    model = sg.load_model(tmp_path / "m.keras")
    assert (model.backend, model.preprocessing, model.outcome_labels) == ("tensorflow", "standardize", PARAMS["outcome_labels"])
    np.testing.assert_allclose(model.module(batch).numpy(), keras_model(batch).numpy(), rtol=1e-6)
    masks = sg.SaliencyMap(model, class_idx=1).integrated_gradients(batch)
    assert masks.shape == (2, 64, 64) and 0 <= masks.min() and masks.max() == 1


def test_legacy_savedmodel_has_layers_for_gradcam(tmp_path, batch):
    legacy = legacy_cnn()
    legacy.save(tmp_path / "saved", save_format="tf")
    model = sg.load_model(tmp_path / "saved")
    assert model.backend == "tensorflow" and model.outcome_labels == ["0", "1"]
    sal = sg.SaliencyMap(model)
    assert sal.backend.conv_layer_names() == ["conv0"]
    cam = sal.gradcam(batch, class_idx=1)
    assert cam.shape == (2, 64, 64)
    np.testing.assert_allclose(model.module(batch).numpy(), legacy(batch).numpy(), rtol=1e-5)


def test_slideflow_model_directory(tmp_path, batch):
    legacy_cnn(softmax=True).save(tmp_path / "sf", save_format="tf")
    params = {**PARAMS, "outcome_labels": {"0": "normal", "1": "tumour"}, "backend": "tensorflow",
              "model_type": "categorical", "hp": {"normalizer": None}}  # fmt: skip
    (tmp_path / "sf" / "params.json").write_text(json.dumps(params))
    model = sg.load_model(tmp_path / "sf")
    assert model.outcome_labels == ["normal", "tumour"] and model.tile_px == 64
    preprocess = sg.get_preprocess_fn(tmp_path / "sf")
    assert preprocess.preprocessing == "standardize" and preprocess.normalizer is None
    sal = sg.SaliencyMap(model)
    assert sal.backend.outputs_probabilities  # softmax head: probabilities are the outputs
    np.testing.assert_allclose(sal.backend.probabilities(batch).sum(1), 1, rtol=1e-6)
    params["hp"]["normalizer"] = "vahadane"
    (tmp_path / "sf" / "params.json").write_text(json.dumps(params))
    with pytest.raises(sg.InputError, match="hp.normalizer: stain normalizer 'vahadane' is not supported \\(.*SPAMS"):
        sg.load_model(tmp_path / "sf")


def test_standardize_matches_tensorflow(ihc_tiles):
    expected = tf.map_fn(tf.image.per_image_standardization, tf.constant(ihc_tiles, tf.float32)).numpy()
    np.testing.assert_allclose(sg.model.standardize(ihc_tiles), expected, atol=1e-5)
    flat = np.full((8, 8, 3), 7, np.uint8)
    np.testing.assert_allclose(sg.model.standardize(flat), tf.image.per_image_standardization(flat).numpy())


def test_gradcam_honours_class_idx(keras_model, batch):
    sal = sg.SaliencyMap(keras_model)
    assert sal.backend.conv_layer_names()[-1] == "relu1"
    cam0, cam1 = sal.gradcam(batch, class_idx=0), sal.gradcam(batch, class_idx=1)
    assert np.abs(cam0 - cam1).max() > 0.1


def test_every_method_and_smooth_on_keras(keras_model, batch):
    sal = sg.SaliencyMap(keras_model, class_idx=1)
    fast = {"integrated_gradients": {"x_steps": 5}, "guided_integrated_gradients": {"x_steps": 5},
            "blur_integrated_gradients": {"steps": 5}, "xrai": {"steps": 3}, "xrai_fast": {"steps": 3}}  # fmt: skip
    for method in (name for name, spec in sg.METHODS.items() if not spec.transformer):  # ViT methods: torch only
        mask = sal.get(batch, method, **fast.get(method, {}))
        assert mask.shape == (2, 64, 64) and 0 <= mask.min() and mask.max() <= 1, method
    smooth = sal.vanilla(batch, smooth=True, nsamples=3)
    np.testing.assert_array_equal(smooth, sal.vanilla(batch, smooth=True, nsamples=3))


# -- bad input ----------------------------------------------------------------------------
def test_corrupt_keras_file(tmp_path):
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(sg.InputError, match="bad.keras': not a readable .keras file") as err:
        sg.load_model(tmp_path / "bad.keras")
    assert "\n" not in str(err.value)


def test_savedmodel_without_serving_signature(tmp_path):
    module = tf.Module()
    module.w = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "nosig"))
    with pytest.raises(sg.InputError, match="SavedModel has no serving signature"):
        sg.load_model(tmp_path / "nosig")


@pytest.fixture(scope="module")
def signature_only_savedmodel(tmp_path_factory):
    """``(path, legacy)``: a SavedModel of :func:`legacy_cnn` with a serving signature and no Keras layers."""
    legacy = legacy_cnn()
    module = tf.Module()
    module.model = legacy

    @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.float32, name="image")])
    def serve(image):
        return {"logits": legacy(image)}

    path = tmp_path_factory.mktemp("savedmodel") / "sig"
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path, legacy


def test_savedmodel_with_signature_only_works_without_gradcam(signature_only_savedmodel, batch):
    path, legacy = signature_only_savedmodel
    model = sg.load_model(path)
    sal = sg.SaliencyMap(model, class_idx=1)
    np.testing.assert_allclose(sal.backend.logits(batch), legacy(batch).numpy(), rtol=1e-5)
    assert sal.vanilla(batch).shape == (2, 64, 64)
    with pytest.raises(sg.InputError, match="no Keras layers"):
        sal.gradcam(batch)


def test_gradcam_unknown_layer_lists_candidates(keras_model, batch):
    with pytest.raises(sg.InputError, match="layer 'block5' not found; layers with 4-D outputs: conv0, relu0, pool0, conv1, relu1"):
        sg.SaliencyMap(keras_model).gradcam(batch, layer="block5")


def test_gradcam_layer_names_the_layer_gradcam_uses(keras_model, batch):
    from slidegrad.backends import get_backend

    backend = get_backend(keras_model, device="cpu")
    assert backend.gradcam_layer(None) == backend.gradcam_layer() == "relu1"  # the last layer with a 4-D output
    assert backend.gradcam_layer("conv0") == "conv0"
    acts, _ = backend.conv_gradients(batch, np.array([1, 1]))
    assert acts.shape == (2, 32, 32, 8)  # relu1's output
    unknown = "gradcam: layer 'block5' not found; layers with 4-D outputs: conv0, relu0, pool0, conv1, relu1"
    with pytest.raises(sg.InputError, match=unknown):
        backend.gradcam_layer("block5")
    inputs = keras.Input((8,))
    flat = get_backend(keras.Model(inputs, keras.layers.Dense(2)(inputs)), device="cpu")
    with pytest.raises(sg.InputError, match="gradcam: the model has no layer with a 4-D output; pass layer="):
        flat.gradcam_layer(None)


def test_gradcam_layer_of_a_signature_only_savedmodel(signature_only_savedmodel):
    path, _ = signature_only_savedmodel
    backend = sg.SaliencyMap(sg.load_model(path), class_idx=1).backend
    with pytest.raises(sg.InputError, match="gradcam: this SavedModel has no Keras layers"):
        backend.gradcam_layer(None)


def test_cuda_devices_map_to_tensorflow_gpus(monkeypatch):
    from slidegrad.backends import tf_backend

    class Device:
        def __init__(self, name):
            self.name = name

    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind: [])
    assert tf_backend.resolve_device("auto") == tf_backend.resolve_device("cpu") == "/CPU:0"
    for device in ("cuda", "cuda:1"):
        with pytest.raises(sg.InputError, match=f"device: '{device}' was asked for but TensorFlow sees no GPU"):
            tf_backend.resolve_device(device)
    gpus = [Device("/job:localhost/replica:0/task:0/device:GPU:0"), Device("/job:localhost/replica:0/task:0/device:GPU:1")]
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind: gpus if kind == "GPU" else [])
    assert tf_backend.resolve_device("auto") == tf_backend.resolve_device("cuda") == gpus[0].name
    assert tf_backend.resolve_device("cuda:0") == gpus[0].name
    assert tf_backend.resolve_device("cuda:1") == gpus[1].name  # /GPU:1
    with pytest.raises(sg.InputError, match="'cuda:2' was asked for but TensorFlow sees 2 GPU"):
        tf_backend.resolve_device("cuda:2")
    with pytest.raises(sg.InputError, match="'cuda:x' is not 'cuda' or 'cuda:N'"):
        tf_backend.resolve_device("cuda:x")


def test_wrong_input_size_for_tile_px(tmp_path, keras_model):
    keras_model.save(tmp_path / "m.keras")
    (tmp_path / "params.json").write_text(json.dumps({**PARAMS, "tile_px": 128}))
    with pytest.raises(sg.InputError, match="expects 64×64 inputs but tile_px is 128"):
        sg.load_model(tmp_path / "m.keras")


def test_output_not_n_by_classes(tmp_path):
    inputs = keras.Input((64, 64, 3))
    outputs = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "seg.keras")
    with pytest.raises(sg.InputError, match="output shape \\(1, 64, 64, 2\\) is not \\(N, classes\\)"):
        sg.load_model(tmp_path / "seg.keras")
