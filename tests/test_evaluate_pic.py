"""PIC (SIC / AIC): slidegrad's batched ``pic_metric`` against PAIR's ``compute_pic_metric`` per tile."""

from __future__ import annotations

import re

import numpy as np
import pytest
from saliency.metrics import pic as pair_pic

import slidegrad as sg
from slidegrad.batching import CPU_MAX_BATCH
from slidegrad.errors import InputError
from slidegrad.evaluate.pic import DEFAULT_THRESHOLDS, blurred_image, pic_metric, random_masks

from .conftest import write_model_dir

# seed 9: the tiny CNN's top class changes on blurring for some tiles only, so AIC has
# tiles with a curve and tiles PAIR skips
MODEL_SEED = 9
CORNERS = [(0, 448), (128, 384), (256, 192), (192, 320), (448, 64), (0, 0)]
# PAIR scores one image per forward, slidegrad up to 32 (CPU): float32 sums in another order, so a
# probability may move by ~1e-7.  A curve point is (pred - blurred) / (original - blurred), which
# divides that by the tile's score gap (here ~1e-3 for an untrained CNN): the curve tolerance is
# derived per tile from the measured prediction differences.  With PAIR fed slidegrad's own
# predictions (replay), the curves and AUCs are equal to the bit.
PRED_ATOL = 1e-6


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ihc):
    model = sg.load_model(write_model_dir(tmp_path_factory.mktemp("pic") / "model", seed=MODEL_SEED))
    tiles = np.stack([ihc[y : y + 64, x : x + 64] for x, y in CORNERS])
    preprocess = sg.get_preprocess_fn(model)
    saliency = sg.SaliencyMap(model).get(preprocess(tiles), "vanilla")
    masks = random_masks(len(tiles), 64, 64, seed=3)
    return model, tiles, saliency, masks


def count_forwards(model):
    calls = []
    handle = model.module.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    return calls, handle


def pair_reference(model, tiles, saliency, masks, metric, replay=None, **kwargs):
    """PAIR's compute_pic_metric per tile; a pred_func wraps the same model, one forward per call.

    ``replay``: slidegrad's ``(N, T + 2)`` predictions, returned in PAIR's call order
    (original, fully blurred, each threshold) instead of running the model.
    """
    preprocess, sal = sg.get_preprocess_fn(model), sg.SaliencyMap(model)
    out = []
    for i, (tile, smap, mask) in enumerate(zip(tiles, saliency, masks)):
        cls = int(sal.probabilities(preprocess(tile[None])).argmax())
        order = iter([-1, *range(len(DEFAULT_THRESHOLDS) + 1)])

        def pred_func(x, cls=cls, i=i, order=order):
            if replay is not None:
                return replay[i, [next(order)]]
            p = sal.probabilities(preprocess(x))
            return p[:, cls] if metric == "sic" else (p.argmax(axis=1) == cls).astype(p.dtype)

        try:
            out.append(pair_pic.compute_pic_metric(tile, smap, mask, pred_func, list(DEFAULT_THRESHOLDS), **kwargs))
        except pair_pic.ComputePicMetricError as err:
            out.append(str(err))
    return out


def numbers_out(message):
    return re.sub(r"\d[\d.e+-]*", "#", message)


def assert_matches_pair(ours, reference, exact=False):
    """Tile by tile; returns the largest curve tolerance used."""
    assert len(reference) == len(ours.auc)
    atol = 0.0
    for i, ref in enumerate(reference):
        if isinstance(ref, str):  # PAIR skips the tile
            assert np.isnan(ours.auc[i]) and np.isnan(ours.curve_y[i]).all()
            # PAIR's message; its scores may differ in the last float digits (batched forward)
            assert numbers_out(ours.errors[i]) == numbers_out(ref)
            continue
        assert ours.errors[i] is None
        np.testing.assert_array_equal(ours.curve_x, ref.curve_x)
        ref_preds = np.asarray(ref.predictions, np.float64)
        np.testing.assert_allclose(ours.predictions[i], ref_preds, rtol=0, atol=0 if exact else PRED_ATOL)
        gap = ref_preds[-1] - ref_preds[0]  # original - fully blurred
        delta = np.abs(ours.predictions[i] - ref_preds).max()
        curve_atol = 0.0 if exact else 4 * delta / gap * (1 + 1e-6) + 1e-12  # |d(p-b)/(o-b)| <= 4δ/gap
        atol = max(atol, curve_atol)
        np.testing.assert_allclose(ours.curve_y[i], ref.curve_y, rtol=0, atol=curve_atol)
        np.testing.assert_allclose(ours.auc[i], ref.auc, rtol=0, atol=curve_atol)
        np.testing.assert_array_equal(ours.thresholds, ref.thresholds)
        entropies = [pair_pic.estimate_image_entropy(im) for im in ref.blurred_images]
        np.testing.assert_array_equal(ours.entropies[i], entropies)  # same blurred images, same sizes
    return atol


@pytest.mark.parametrize("metric", ["sic", "aic"])
def test_matches_pair_per_tile_and_batches(setup, metric):
    model, tiles, saliency, masks = setup
    kwargs = {"min_pred_value": 0.0}
    calls, handle = count_forwards(model)
    try:
        ours = pic_metric(model, tiles, saliency, random_mask=masks, metric=metric, **kwargs)
        ours_calls = len(calls)
        reference = pair_reference(model, tiles, saliency, masks, metric, **kwargs)
        pair_calls = len(calls) - ours_calls - len(tiles)  # less the reference's class lookups
    finally:
        handle.remove()
    atol = assert_matches_pair(ours, reference)
    valid = [not isinstance(r, str) for r in reference]
    assert any(valid) and not all(valid) if metric == "aic" else any(valid)
    # two SaliencyMap.probabilities calls (the ends of every tile, then the threshold images of
    # the tiles with a curve), each in budget-sized forwards (on a CPU at most
    # batching.CPU_MAX_BATCH images); PAIR: one forward per image
    n_thresholds, n_valid = len(DEFAULT_THRESHOLDS), sum(valid)
    assert ours.probability_calls == 2
    assert sum(calls[:ours_calls]) == 2 * len(tiles) + n_valid * n_thresholds
    assert ours_calls == -(-2 * len(tiles) // CPU_MAX_BATCH) + -(-n_valid * n_thresholds // CPU_MAX_BATCH)
    print(f"{metric}: slidegrad {ours_calls} forwards {calls[:ours_calls]}, PAIR {pair_calls}; valid {valid}")
    # PAIR: one forward per image, 2 + T for a tile with a curve, 2 for a skipped one
    assert pair_calls == sum(len(DEFAULT_THRESHOLDS) + 2 if v else 2 for v in valid)
    assert ours_calls * 5 < pair_calls
    assert np.isnan(ours.predictions[~ours.valid, 1:-1]).all()
    if metric == "aic":
        assert set(np.unique(ours.predictions[~np.isnan(ours.predictions)])) <= {0.0, 1.0}
    agg = ours.aggregate("median")
    ref_agg = pair_pic.aggregate_individual_pic_results([r for r in reference if not isinstance(r, str)], "median")
    np.testing.assert_allclose(agg.curve_y, ref_agg.curve_y, rtol=0, atol=atol)
    np.testing.assert_allclose(agg.auc, ref_agg.auc, rtol=0, atol=atol)
    print(f"{metric}: AUC {np.round(ours.auc, 4)}, curve tolerance {atol:.2g}")


@pytest.mark.parametrize("metric", ["sic", "aic"])
def test_equals_pair_exactly_on_the_same_predictions(setup, metric):
    model, tiles, saliency, masks = setup
    ours = pic_metric(model, tiles, saliency, random_mask=masks, metric=metric, min_pred_value=0.0)
    reference = pair_reference(model, tiles, saliency, masks, metric, replay=ours.predictions, min_pred_value=0.0)
    assert_matches_pair(ours, reference, exact=True)
    for i, ref in enumerate(reference):
        if isinstance(ref, str):
            assert ours.errors[i] == ref  # PAIR's message, word for word
        else:
            assert ours.auc[i] == ref.auc and np.array_equal(ours.curve_y[i], ref.curve_y)


def test_not_monotonous_and_min_pred_value(setup):
    model, tiles, saliency, masks = setup
    kwargs = {"min_pred_value": 0.55, "keep_monotonous": False, "num_data_points": 200}
    ours = pic_metric(model, tiles[:4], saliency[:4], random_mask=masks[:4], **kwargs)
    reference = pair_reference(model, tiles[:4], saliency[:4], masks[:4], "sic", **kwargs)
    assert_matches_pair(ours, reference)
    assert ours.curve_y.shape == (4, 201)


def test_blurred_images_are_pairs(ihc):
    rng = np.random.default_rng(0)
    img = ihc[100:148, 200:248]
    for fraction in (0.0, 0.01, 0.3, 0.9, 1.0):
        mask = rng.random(img.shape[:2]) < fraction
        np.testing.assert_array_equal(blurred_image(img, mask), pair_pic.create_blurred_image(img, mask))


def test_class_idx_and_seeded_masks(setup):
    model, tiles, saliency, _ = setup
    a = pic_metric(model, tiles[:2], saliency[:2], class_idx=[1, 0], min_pred_value=0.0, num_data_points=10)
    b = pic_metric(model, tiles[:2], saliency[:2], class_idx=[1, 0], min_pred_value=0.0, num_data_points=10)
    np.testing.assert_array_equal(a.class_idx, [1, 0])
    np.testing.assert_array_equal(a.random_mask, b.random_mask)
    assert a.random_mask.sum(axis=(1, 2)).tolist() == [int(64 * 64 * 0.01)] * 2
    np.testing.assert_array_equal(a.predictions, b.predictions)


def bad_calls(tiles, saliency):
    return {
        "tiles": [dict(tiles=tiles.astype(np.float32)), dict(tiles=tiles[0]), dict(tiles=tiles[..., :1])],
        "saliency": [dict(saliency=saliency[:1]), dict(saliency=np.full_like(saliency, np.nan))],
        "random_mask": [dict(random_mask=np.zeros((3, 3), bool)), dict(random_mask=np.zeros((64, 64)))],
        "saliency_thresholds": [
            dict(saliency_thresholds=[0.5, 0.1]), dict(saliency_thresholds=[]),
            dict(saliency_thresholds=[1.5]), dict(saliency_thresholds="abc"),
        ],
        "min_pred_value": [dict(min_pred_value="high")],
        "keep_monotonous": [dict(keep_monotonous="yes")],
        "num_data_points": [dict(num_data_points=0), dict(num_data_points=2.5)],
        "metric": [dict(metric="auc")],
        "class_idx": [dict(class_idx=5), dict(class_idx=[0, 1, 0])],
        "random_mask_fraction": [dict(random_mask_fraction=2.0)],
    }  # fmt: skip


def test_argument_errors_are_one_line(setup):
    model, tiles, saliency, _ = setup
    tiles, saliency = tiles[:2], saliency[:2]
    for name, calls in bad_calls(tiles, saliency).items():
        for bad in calls:
            args = {"tiles": tiles, "saliency": saliency, **bad}
            with pytest.raises(InputError) as err:
                pic_metric(model, **args)
            message = str(err.value)
            assert "\n" not in message and message.startswith(name + ":"), (name, message)


def test_aggregate_needs_a_curve(setup):
    model, tiles, saliency, _ = setup
    result = pic_metric(model, tiles[:1], saliency[:1], min_pred_value=1.0, num_data_points=10)
    assert result.errors[0].startswith("The model prediction score on the original image is lower")
    with pytest.raises(InputError, match=r"^aggregate: no tile"):
        result.aggregate()
    with pytest.raises(InputError, match=r"^method:"):
        result.aggregate("max")


def test_host_budget_splits_calls_same_results(setup, monkeypatch):
    from slidegrad.evaluate import pic as pic_module

    model, tiles, saliency, masks = setup
    kwargs = {"random_mask": masks[:4], "min_pred_value": 0.0, "num_data_points": 50}
    whole = pic_metric(model, tiles[:4], saliency[:4], **kwargs)
    monkeypatch.setattr(pic_module, "_HOST_BYTES", 2 * 64 * 64 * 3 * 4 * len(DEFAULT_THRESHOLDS))  # 2 tiles a call
    split = pic_metric(model, tiles[:4], saliency[:4], **kwargs)
    assert whole.probability_calls == 2 and split.probability_calls == 1 + -(-int(split.valid.sum()) // 2)
    np.testing.assert_array_equal(whole.class_idx, split.class_idx)
    np.testing.assert_allclose(whole.predictions, split.predictions, rtol=0, atol=PRED_ATOL)
    np.testing.assert_array_equal(whole.entropies, split.entropies)
    assert whole.errors == split.errors


def test_model_path_and_bare_module(setup):
    model, tiles, saliency, masks = setup
    kwargs = {"random_mask": masks[:2], "min_pred_value": 0.0, "num_data_points": 20}
    loaded = pic_metric(model, tiles[:2], saliency[:2], **kwargs)
    by_path = pic_metric(str(model.path), tiles[:2], saliency[:2], **kwargs)
    bare = pic_metric(model.module, tiles[:2], saliency[:2], preprocess=sg.get_preprocess_fn(model), **kwargs)
    for other in (by_path, bare):
        np.testing.assert_array_equal(other.predictions, loaded.predictions)
        np.testing.assert_array_equal(other.auc, loaded.auc)
    with pytest.raises(InputError, match=r"^preprocess: a bare model needs preprocess="):
        pic_metric(model.module, tiles[:2], saliency[:2], **kwargs)
