"""Stain normalisation for TensorFlow models: parity with Slideflow's TensorFlow normalisers (which
Slideflow uses for a TensorFlow model) and a Keras Slideflow-format model whose input pipeline
includes its normaliser."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import slidegrad as sg  # noqa: E402
from slidegrad import stain  # noqa: E402

from ..stain_reference import slideflow_norm  # noqa: E402
from .test_tensorflow import PARAMS, legacy_cnn  # noqa: E402

CLASSES = {
    "reinhard": ("reinhard", "ReinhardNormalizer"),
    "reinhard_fast": ("reinhard", "ReinhardFastNormalizer"),
    "reinhard_mask": ("reinhard", "ReinhardMaskNormalizer"),
    "reinhard_fast_mask": ("reinhard", "ReinhardFastMaskNormalizer"),
    "macenko": ("macenko", "MacenkoNormalizer"),
    "macenko_fast": ("macenko", "MacenkoFastNormalizer"),
}


@pytest.fixture(scope="module")
def reference():
    with slideflow_norm() as sf:
        yield sf


@pytest.mark.parametrize("method", stain.METHODS)
def test_every_tile_within_one_level_of_slideflow_tensorflow(reference, ihc, method):
    module, name = CLASSES[method]
    ref = getattr(reference.tensorflow_module(module), name)()
    ours = stain.from_params({"hp": {"normalizer": method}}, "test", framework="tensorflow")
    assert ours.percentile == "nearest" and ours.source == "preset v3"
    tiles = [ihc[y : y + 128, x : x + 128] for y in range(0, 512, 128) for x in range(0, 512, 128)]
    for tile in tiles:
        expected = np.asarray(ref.transform(tf.constant(tile))).reshape(tile.shape)
        assert np.abs(expected.astype(np.int16) - ours(tile)).max() <= 1, method


def test_keras_slideflow_model_preprocess_includes_the_normaliser(tmp_path, ihc_tiles):
    legacy_cnn(softmax=True).save(tmp_path / "sf", save_format="tf")
    fit = {"target_means": [60.1, 21.5, -10.2], "target_stds": [13.9, 8.8, 6.4]}
    params = {**PARAMS, "backend": "tensorflow", "hp": {"normalizer": "reinhard_fast"}, "norm_fit": fit}
    (tmp_path / "sf" / "params.json").write_text(json.dumps(params))
    model = sg.load_model(tmp_path / "sf")
    assert model.normalizer.method == "reinhard_fast" and model.normalizer.percentile == "nearest"
    tiles = ihc_tiles[:2]
    normalised = model.normalizer(tiles)
    expected = sg.model.standardize(normalised)
    np.testing.assert_array_equal(sg.get_preprocess_fn(model)(tiles), expected)
    np.testing.assert_array_equal(sg.get_preprocess_fn(tmp_path / "sf")(tiles), expected)
    masks = sg.SaliencyMap(model, class_idx=1).vanilla(sg.get_preprocess_fn(model)(tiles))
    np.testing.assert_allclose(masks, sg.SaliencyMap(model, class_idx=1).vanilla(expected))
