"""The native engine on TensorFlow: PAIR's maps for a Keras model (same bars as for torch)."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")
import keras  # noqa: E402

import slidegrad as sg  # noqa: E402
from slidegrad.keras_nets import small_cnn  # noqa: E402

from ..metrics import assert_masks_close  # noqa: E402
from ..parity import CASES, check_parity  # noqa: E402


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return small_cnn(2, (4, 8), 64)


@pytest.mark.parametrize("key", list(CASES))
def test_parity_with_pair_on_keras(model, ihc_tiles, key):
    result = check_parity(model, sg.model.scale(ihc_tiles), key)
    print(f"keras {key}: {result}")


def test_budget_splits_batches_on_tensorflow(model, ihc_tiles):
    sal = sg.SaliencyMap(model, class_idx=1, memory_budget=4 << 20)
    masks = sal.integrated_gradients(sg.model.scale(ihc_tiles), x_steps=6)
    assert 1 <= sal.engine.max_batch_seen < 24
    roomy = sg.SaliencyMap(model, class_idx=1, memory_budget=1 << 30).integrated_gradients(
        sg.model.scale(ihc_tiles), x_steps=6
    )
    assert_masks_close(masks, roomy)  # other batch splits: conv kernels may differ


def test_gauss_legendre_ig_and_its_completeness_on_keras(model, ihc_tiles):
    import numpy as np

    from slidegrad.completeness import completeness_errors

    x = sg.model.scale(ihc_tiles[:2])
    sal = sg.SaliencyMap(model, class_idx=1)
    _, reference = sal.attributions(x, "integrated_gradients", x_steps=128)
    _, gauss = sal.attributions(x, "integrated_gradients", x_steps=16, integration="gauss_legendre")
    assert all(np.corrcoef(r.ravel(), g.ravel())[0, 1] > 0.99 for r, g in zip(reference, gauss))
    errors = completeness_errors(sal.backend, x, np.ones(2, int), gauss, "integrated_gradients", {})
    assert all(e is not None and e < 0.05 for e in errors), errors


def test_adaptive_ig_steps_on_keras(model, ihc_tiles):
    import numpy as np

    from slidegrad.completeness import completeness_errors

    x = sg.model.scale(ihc_tiles[:3])
    sal = sg.SaliencyMap(model, class_idx=1)
    _, fixed = sal.attributions(x, "integrated_gradients", x_steps=2, integration="gauss_legendre")
    _, refined = sal.attributions(
        x, "integrated_gradients", x_steps=2, integration="gauss_legendre", tolerance=1e-9, max_steps=8
    )
    assert sal.engine.tile_steps == [8, 8, 8]  # 2 → 4 → 8: capped
    before = completeness_errors(sal.backend, x, np.ones(3, int), fixed, "integrated_gradients", {})
    after = completeness_errors(sal.backend, x, np.ones(3, int), refined, "integrated_gradients", {})
    assert sum(after) < sum(before), (before, after)
