"""ROAD (slidegrad.evaluate.road): noisy linear imputation, MoRF / LeRF, parity with pytorch-grad-cam 1.5.7."""

from __future__ import annotations

import numpy as np
import pytest

from slidegrad.errors import InputError
from slidegrad.evaluate.road import PERCENTILES, linear_imputation, removal_sets, removed_fractions, road

torch = pytest.importorskip("torch")

from .conftest import make_tiny_cnn  # noqa: E402
from .gradcam_reference import pytorch_grad_cam  # noqa: E402
from .test_evaluate_perturbation import REGION, region_model, region_tiles  # noqa: E402

PX = 32


def loaded(module, px: int = PX):
    from slidegrad.model import LoadedModel

    return LoadedModel(module=module, framework="torch", outcome_labels=["0", "1"], tile_px=px)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.fixture(scope="module")
def grad_cam():
    return pytorch_grad_cam()


@pytest.fixture(scope="module")
def inputs():
    """Preprocessed-like tiles (N, H, W, 3) in about [-1, 1] and masks with ties (rounded to 2 decimals)."""
    rng = np.random.default_rng(7)
    batch = rng.uniform(-1, 1, (3, PX, PX, 3)).astype(np.float32)
    masks = np.round(rng.random((3, PX, PX)), 2).astype(np.float32)
    return batch, masks


# -- imputation -----------------------------------------------------------------------------------
def test_linear_gradient_is_reproduced_exactly():
    rows, cols = np.mgrid[0:24, 0:24].astype(np.float64)
    image = np.stack([2 * rows + 3 * cols, rows - cols, np.full_like(rows, 5.0)], axis=-1)
    removed = np.zeros((24, 24), bool)
    removed[4:18, 3:21] = True  # a block, not touching the border: the 8-neighbour mean of a plane is its centre
    removed[20, 20] = True
    out = linear_imputation(image, removed, noise=0)
    np.testing.assert_allclose(out, image, atol=1e-9)
    assert not np.allclose(linear_imputation(image, removed, 0.01, np.random.default_rng(0)), image, atol=1e-4)


def test_nothing_removed_and_everything_removed():
    image = np.random.default_rng(0).random((8, 8, 3))
    np.testing.assert_array_equal(linear_imputation(image, np.zeros((8, 8), bool), 0), image)
    everything = linear_imputation(image, np.ones((8, 8), bool), 0)
    np.testing.assert_allclose(everything, np.broadcast_to(image.mean(axis=(0, 1)), image.shape))


def test_imputation_equals_pytorch_grad_cam_without_noise(grad_cam, inputs):
    batch, masks = inputs
    imputer = grad_cam.road.NoisyLinearImputer(noise=0.0)
    worst = 0.0
    for image, mask in zip(batch, masks):
        for removed in removal_sets(mask, PERCENTILES).reshape(-1, PX, PX):
            keep = torch.from_numpy((~removed).astype(np.float32))
            theirs = imputer(torch.from_numpy(image.transpose(2, 0, 1).copy()), keep).numpy().transpose(1, 2, 0)
            ours = linear_imputation(image, removed, noise=0)
            worst = max(worst, float(np.abs(ours - theirs).max()))
    assert worst < 1e-5, worst  # theirs returns float32


def test_imputation_noise_equals_pytorch_grad_cam_with_the_same_draws(grad_cam, inputs, monkeypatch):
    """Their noise is torch.randn_like((C, n_removed)); fed the same standard normals, the results agree."""
    batch, masks = inputs
    removed = removal_sets(masks[0], (30,))[0, 0]
    draws = np.random.default_rng(11)
    monkeypatch.setattr(
        torch, "randn_like", lambda t: torch.from_numpy(draws.standard_normal(tuple(t.shape))).to(t.dtype)
    )
    image = batch[0]
    keep = torch.from_numpy((~removed).astype(np.float32))
    theirs = grad_cam.road.NoisyLinearImputer(noise=0.01)(torch.from_numpy(image.transpose(2, 0, 1).copy()), keep)
    ours = linear_imputation(image, removed, noise=0.01, rng=np.random.default_rng(11))
    assert np.abs(ours - theirs.numpy().transpose(1, 2, 0)).max() < 1e-5
    assert np.abs(ours - linear_imputation(image, removed, noise=0)).max() > 1e-3  # the noise is there


def test_removal_sets_are_thresholds_with_ties_removed():
    mask = np.array([[0.0, 0.1, 0.1, 0.2], [0.3, 0.4, 0.5, 0.9]], np.float32)
    sets = removal_sets(mask, (50,))
    threshold = np.percentile(mask, 50)  # 0.25
    np.testing.assert_array_equal(sets[0, 0], mask >= threshold)
    np.testing.assert_array_equal(sets[1, 0], (1 - mask) >= np.percentile(1 - mask, 50))
    constant = removal_sets(np.zeros((4, 4), np.float32), (10, 90))
    assert constant.all()  # every pixel ties at the threshold
    np.testing.assert_allclose(removed_fractions((90, 10, 50)), [0.0, 0.1, 0.5, 0.9])


# -- the metric -----------------------------------------------------------------------------------
def test_road_equals_pytorch_grad_cam_road_combined(grad_cam, inputs):
    batch, masks = inputs
    module = make_tiny_cnn(seed=3)
    classes = [0, 1, 1]
    ours = road(loaded(module), batch, masks, class_idx=classes, noise=0.0)
    combined = grad_cam.road.ROADCombined(percentiles=list(PERCENTILES))
    for imputer in (combined.morf_averager, combined.lerf_averager):  # noise 0: the imputation is exact
        imputer.imputer = _without_noise(imputer.imputer, grad_cam)
    targets = [grad_cam.ClassifierOutputSoftmaxTarget(c) for c in classes]
    theirs = combined(torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()), masks, targets, module)
    assert np.abs(ours["road"] - theirs).max() < 1e-6, (ours["road"], theirs)  # measured 2.6e-10
    assert np.ptp(ours["road"]) > 1e-4  # tiles differ: the comparison can fail


def _without_noise(metric_class, grad_cam):
    """pytorch-grad-cam's ROAD(Most|Least)RelevantFirst with a noise-free NoisyLinearImputer."""
    def build(percentile):
        metric = metric_class(percentile)
        metric.perturbation.imputer = grad_cam.road.NoisyLinearImputer(noise=0.0)
        return metric

    return build


def test_a_good_map_beats_a_random_one():
    model = region_model()  # reads only the top-left 16×16 block: a dark block is class 1
    tiles, _ = region_tiles(2)
    from slidegrad.model import get_preprocess_fn

    batch = get_preprocess_fn(model)(tiles)
    good = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32) * 0.5
    good[:, :REGION, :REGION] += 0.5
    good_road = road(model, batch, good, seed=1)
    random_road = road(model, batch, None, order="random", seed=1)
    assert (good_road["class_idx"] == 1).all()
    assert (good_road["road"] > random_road["road"] + 0.1).all(), (good_road["road"], random_road["road"])
    assert (good_road["road_morf"] < good_road["road_lerf"]).all()
    curves = good_road["morf_curve"]
    assert curves.shape == (2, len(PERCENTILES) + 1)
    np.testing.assert_allclose(curves[:, 0], good_road["lerf_curve"][:, 0])  # both start at the unmodified tile
    np.testing.assert_allclose(good_road["road_morf"], curves[:, 1:].mean(axis=1))


def test_noise_is_seeded(inputs):
    batch, masks = inputs
    model = loaded(make_tiny_cnn(seed=3))
    a, b = road(model, batch, masks, noise=0.5, seed=4), road(model, batch, masks, noise=0.5, seed=4)
    c = road(model, batch, masks, noise=0.5, seed=5)
    np.testing.assert_array_equal(a["morf_curve"], b["morf_curve"])
    assert not np.array_equal(a["morf_curve"], c["morf_curve"])


@pytest.mark.parametrize(
    "change, match",
    [
        ({"percentiles": [0, 50]}, r"^percentiles: expected distinct numbers in \(0, 100\)"),
        ({"percentiles": [50, 50]}, r"^percentiles: expected distinct numbers"),
        ({"percentiles": "10"}, r"^percentiles: expected distinct numbers"),
        ({"noise": -0.1}, r"^noise: expected a number >= 0"),
        ({"seed": 0.5}, r"^seed: expected an int"),
        ({"order": "morf"}, r"^order: unknown order 'morf'"),
        ({"masks": None}, r"^masks: expected \(N, H, W\) masks"),
        ({"masks": np.zeros((3, PX, PX - 1))}, r"^masks: expected shape \(3, 32, 32\)"),
        ({"batch": np.zeros((3, PX, PX, 3), np.uint8)}, r"^batch: expected preprocessed float tiles"),
        ({"class_idx": 5}, r"^class_idx: 5 is out of range"),
    ],
)
def test_argument_errors(inputs, change, match):
    batch, masks = inputs
    args = {"model": loaded(make_tiny_cnn()), "batch": batch, "masks": masks, **change}
    with pytest.raises(InputError, match=match) as err:
        road(**args)
    assert "\n" not in str(err.value)
