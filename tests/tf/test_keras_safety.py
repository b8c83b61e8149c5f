"""A Keras model someone else sent you: safe mode on, a ``Lambda`` layer's code runs only with ``allow_code``.

Runs in its own pytest process (TensorFlow never shares one with torch).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402
import tf_keras  # noqa: E402

import slidegrad as sg  # noqa: E402


def one_line_error(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(sg.InputError, match=match) as err:
        call(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def lambda_model(n_outputs: int = 2, softmax: bool = False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv0")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax" if softmax else None)(x))


def plain_model(n_outputs: int = 2, softmax: bool = False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv0")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax" if softmax else None)(x))


def test_a_lambda_layer_is_refused_then_loads_with_allow_code(tmp_path):
    lambda_model().save(tmp_path / "lambda.keras")
    message = one_line_error("Lambda layer", sg.load_model, tmp_path / "lambda.keras")
    assert message == (
        f"model '{tmp_path / 'lambda.keras'}': a Keras Lambda layer holds Python code (bytecode in the file); loading "
        "it runs that code, so it needs allow_code=True (config: model.allow_code: true) — only for a model you trust; "
        "Keras loads with safe_mode=True otherwise"
    )
    model = sg.load_model(tmp_path / "lambda.keras", allow_code=True)
    assert model.n_classes == 2 and "double" in [layer.name for layer in model.module.layers]
    assert sg.load_model(tmp_path / "lambda.keras", allow_pickle=True).n_classes == 2  # the old name
    plain_model().save(tmp_path / "plain.keras")
    assert sg.load_model(tmp_path / "plain.keras").n_classes == 2  # no code: loads in safe mode


def test_a_legacy_savedmodel_lambda_runs_only_with_allow_code(tmp_path):
    marker = tmp_path / "ran"
    touch = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).touch(), t)[1]")  # constants in its code
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((32, 32, 3))
    x = tf_keras.layers.Lambda(touch, name="touch")(inputs)
    x = tf_keras.layers.Conv2D(4, 3, padding="same", name="conv0")(x)
    outputs = tf_keras.layers.Dense(2)(tf_keras.layers.GlobalAveragePooling2D()(x))
    tf_keras.Model(inputs, outputs).save(tmp_path / "saved", save_format="tf")
    marker.unlink()  # tracing at save time ran it
    # safe mode: the layer is revived from its traced graph (TensorFlow ops), its Python code never loaded
    model = sg.load_model(tmp_path / "saved")
    assert model.n_classes == 2 and not marker.exists()
    assert not isinstance(model.module.get_layer("touch"), tf_keras.layers.Lambda)
    model = sg.load_model(tmp_path / "saved", allow_code=True)
    assert model.n_classes == 2 and marker.exists()
    assert isinstance(model.module.get_layer("touch"), tf_keras.layers.Lambda)


def test_softmax_outputs_warn_and_one_output_is_refused(tmp_path, caplog):
    plain_model(softmax=True).save(tmp_path / "softmax.keras")
    with caplog.at_level(logging.WARNING, logger="slidegrad"):
        sg.load_model(tmp_path / "softmax.keras")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "its outputs look like probabilities" in lines[0], lines
    plain_model(n_outputs=1).save(tmp_path / "one.keras")
    one_line_error(r"gives 1 output per image; .* output \[0, z\] instead", sg.load_model, tmp_path / "one.keras")
    (tmp_path / "params.json").write_text(json.dumps({"outcome_labels": ["a", "b"]}))
    assert np.isfinite(sg.load_model(tmp_path / "softmax.keras").module(np.zeros((1, 32, 32, 3))).numpy()).all()
