"""Deletion / insertion curves and the pointing ratio (slidegrad.evaluate.perturbation)."""

from __future__ import annotations

import numpy as np
import pytest

from slidegrad.errors import InputError
from slidegrad.evaluate import dab_truth, deletion_insertion, pointing_ratio, random_order_deletion_insertion
from slidegrad.evaluate.perturbation import baseline_tiles, pixel_order, step_counts

torch = pytest.importorskip("torch")

PX = 64
REGION = 16


class RegionNet(torch.nn.Module):
    """Looks only at the top-left 16×16 block of the red channel: a dark block is class 1, a bright one class 0."""

    def forward(self, x):  # (N, 3, H, W), preprocessed to [-1, 1]
        logit = -3.0 * x[:, 0, :REGION, :REGION].mean(dim=(1, 2))
        return torch.stack([-logit, logit], dim=1)


def region_model():
    from slidegrad.model import LoadedModel

    return LoadedModel(module=RegionNet().eval(), backend="torch", outcome_labels=["0", "1"], tile_px=PX)


def region_tiles(n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Grey tiles, black in the model's block; masks 1 on the block, 0 elsewhere."""
    tiles = np.full((n, PX, PX, 3), 128, np.uint8)
    tiles[:, :REGION, :REGION] = 0
    masks = np.zeros((n, PX, PX), np.float32)
    masks[:, :REGION, :REGION] = 1.0
    return tiles, masks


@pytest.fixture(scope="module")
def cnn(model_dir):
    import slidegrad as sg

    return sg.load_model(model_dir)


@pytest.fixture(scope="module")
def tie_masks():
    """Masks rounded to one decimal: many ties."""
    return np.round(np.random.default_rng(1).random((4, PX, PX)), 1).astype(np.float32)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + np.exp(-z))


def counting(sal):
    """Record every batch the backend scores (its preprocessed inputs), calling through."""
    seen = []
    original = sal.backend.probabilities

    def probabilities(x):
        seen.append(np.array(x))
        return original(x)

    sal.backend.probabilities = probabilities
    return seen


# -- known answer ------------------------------------------------------------------------------
def test_region_model_deletion_drops_at_once_and_beats_random():
    tiles, masks = region_tiles()
    model = region_model()
    got = deletion_insertion(model, tiles, masks, steps=20)
    chance = random_order_deletion_insertion(model, tiles, steps=20, seed=0)
    high, white = sigmoid(6.0), sigmoid(-6.0)  # the black block; the block deleted to white (255 → +1)
    assert (got["class_idx"] == 1).all() and (chance["class_idx"] == 1).all()
    # step 1 deletes 205 of the block's 256 pixels (row-major among the ties), step 2 all of it
    np.testing.assert_allclose(got["deletion_curve"][:, 0], high, rtol=1e-5)
    np.testing.assert_allclose(got["deletion_curve"][:, 2:], white, rtol=1e-4)
    np.testing.assert_allclose(got["deletion_curve"][:, 1], sigmoid(6.0 - 12.0 * 205 / 256), rtol=1e-4)
    np.testing.assert_allclose(got["insertion_curve"][:, 0], white, rtol=1e-4)
    np.testing.assert_allclose(got["insertion_curve"][:, 2:], high, rtol=1e-5)
    assert (got["deletion_auc"] < 0.1).all() and (got["deletion_auc"] < chance["deletion_auc"] - 0.3).all()
    assert (got["insertion_auc"] > 0.9).all() and (got["insertion_auc"] > chance["insertion_auc"] + 0.3).all()
    # AUC: trapezoid over x = k / steps
    curve = got["deletion_curve"][0]
    assert got["deletion_auc"][0] == pytest.approx(np.sum((curve[1:] + curve[:-1]) / 2) / 20)
    assert got["deletion_curve"].shape == got["insertion_curve"].shape == (2, 21)
    assert got["deletion_auc"].shape == got["insertion_auc"].shape == got["class_idx"].shape == (2,)


def test_explained_class_can_be_given():
    tiles, masks = region_tiles()
    got = deletion_insertion(region_model(), tiles, masks, class_idx=[0, 1], steps=4)
    assert got["class_idx"].tolist() == [0, 1]
    np.testing.assert_allclose(got["deletion_curve"][0] + got["deletion_curve"][1], 1.0, rtol=1e-5)


# -- exact values against a naive loop -------------------------------------------------------------
def naive_curves(module, tiles, masks, base, steps, classes=None):
    """One forward pass per perturbed image, straight from the spec."""
    from slidegrad.model import scale

    n, h, w, _ = tiles.shape
    out = {"deletion": np.zeros((n, steps + 1)), "insertion": np.zeros((n, steps + 1))}
    chosen = []
    for i in range(n):
        order = np.argsort(-masks[i].ravel(), kind="stable")
        tile, b = tiles[i].reshape(-1, 3), base[i].reshape(-1, 3)

        def prob(img):
            x = torch.from_numpy(scale(img.reshape(1, h, w, 3))).permute(0, 3, 1, 2).contiguous()
            with torch.no_grad():
                return torch.softmax(module(x), dim=1)[0].numpy()

        c = int(prob(tile).argmax()) if classes is None else classes[i]
        chosen.append(c)
        for k in range(steps + 1):
            first = order[: round(k * h * w / steps)]
            deleted, inserted = tile.copy(), b.copy()
            deleted[first] = b[first]
            inserted[first] = tile[first]
            out["deletion"][i, k] = prob(deleted)[c]
            out["insertion"][i, k] = prob(inserted)[c]
    return out, np.array(chosen)


@pytest.mark.parametrize("baseline", ["white", "blur"])
def test_matches_naive_loop_on_ihc_tiles(cnn, ihc_tiles, tie_masks, baseline):
    got = deletion_insertion(cnn, ihc_tiles, tie_masks, steps=7, baseline=baseline, sigma=3.0)
    base = baseline_tiles(ihc_tiles, baseline, 3.0)
    want, classes = naive_curves(cnn.module, ihc_tiles, tie_masks, base, 7)
    np.testing.assert_array_equal(got["class_idx"], classes)
    np.testing.assert_allclose(got["deletion_curve"], want["deletion"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["insertion_curve"], want["insertion"], rtol=1e-5, atol=1e-7)


def test_saliency_map_is_reused_and_batched(cnn, ihc_tiles, tie_masks):
    import slidegrad as sg

    sal = sg.SaliencyMap(cnn, device="cpu")
    seen = counting(sal)
    got = deletion_insertion(sal, ihc_tiles, tie_masks, steps=20)
    items = len(ihc_tiles) * 2 * 21
    assert sum(len(x) for x in seen) == items  # every perturbed tile scored once, no extra pass
    assert len(seen) <= -(-items // 32) + 1 < items / 10  # CPU batches of up to 32 items
    ref = deletion_insertion(cnn, ihc_tiles, tie_masks, steps=20, device="cpu")
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-7)


def test_memory_budget_caps_model_batches(cnn, ihc_tiles, tie_masks):
    import slidegrad as sg

    sal = sg.SaliencyMap(cnn, device="cpu")
    seen = counting(sal)
    small = deletion_insertion(sal, ihc_tiles, tie_masks, steps=3, memory_budget=1)
    assert {len(x) for x in seen} == {1} and len(seen) == 4 * 2 * 4
    big = deletion_insertion(cnn, ihc_tiles, tie_masks, steps=3, device="cpu")
    np.testing.assert_allclose(small["deletion_curve"], big["deletion_curve"], rtol=1e-5, atol=1e-7)


# -- ordering, step counts, baselines ------------------------------------------------------------
def test_ties_are_row_major_and_steps_round():
    assert pixel_order(np.zeros((3, 4))).tolist() == list(range(12))
    assert pixel_order(np.array([[0.5, 1.0], [0.5, 1.0]])).tolist() == [1, 3, 0, 2]
    assert step_counts(4096, 20).tolist() == [round(k * 4096 / 20) for k in range(21)]
    assert step_counts(10, 4).tolist() == [0, 2, 5, 8, 10]  # round(2.5) = 2, round(7.5) = 8 (Python's round)
    assert step_counts(5, 1).tolist() == [0, 5]


def test_perturbed_tiles_follow_the_order(ihc_tiles):
    """With a constant mask, step k deletes exactly the first round(k·H·W/steps) pixels in row-major order."""
    import slidegrad as sg

    tiles = np.minimum(ihc_tiles[:1], 254)  # no pixel equals the white baseline
    sal = sg.SaliencyMap(region_model(), device="cpu")
    seen = counting(sal)
    steps = 6
    deletion_insertion(sal, tiles, np.zeros((1, PX, PX)), steps=steps)
    batch = np.rint((np.concatenate(seen) + 1.0) * 127.5).astype(np.uint8)  # undo "scale"
    assert len(batch) == 2 * (steps + 1)
    for k, count in enumerate(step_counts(PX * PX, steps)):
        deleted, inserted = batch[k].reshape(-1, 3), batch[steps + 1 + k].reshape(-1, 3)
        np.testing.assert_array_equal(deleted[:count], 255)
        np.testing.assert_array_equal(deleted[count:], tiles[0].reshape(-1, 3)[count:])
        np.testing.assert_array_equal(inserted[:count], tiles[0].reshape(-1, 3)[:count])
        np.testing.assert_array_equal(inserted[count:], 255)


def test_baselines(ihc_tiles):
    from scipy.ndimage import gaussian_filter

    tiles = ihc_tiles[:2]
    assert (baseline_tiles(tiles, "white") == 255).all()
    assert (baseline_tiles(tiles, "black") == 0).all()
    mean = baseline_tiles(tiles, "mean")
    assert mean.dtype == np.uint8 and mean.shape == tiles.shape
    np.testing.assert_array_equal(mean[:, 0, 0], np.rint(tiles.reshape(2, -1, 3).mean(axis=1)))
    assert (mean == mean[:, :1, :1]).all()
    blur = baseline_tiles(tiles, "blur", sigma=2.0)
    want = np.rint(gaussian_filter(tiles[1].astype(np.float64), sigma=(2.0, 2.0, 0.0)))
    assert blur.dtype == np.uint8
    np.testing.assert_array_equal(blur[1], want)
    flat = np.full((1, 8, 8, 3), 77, np.uint8)
    assert (baseline_tiles(flat, "blur", 5.0) == 77).all()


@pytest.mark.parametrize("baseline", ["white", "black", "blur", "mean"])
def test_curves_end_at_the_baseline(cnn, ihc_tiles, tie_masks, baseline):
    """Deletion's last step and insertion's first are the baseline itself; the other ends, the tile."""
    import slidegrad as sg
    from slidegrad.model import get_preprocess_fn

    got = deletion_insertion(cnn, ihc_tiles, tie_masks, steps=2, baseline=baseline, sigma=4.0, device="cpu")
    sal = sg.SaliencyMap(cnn, device="cpu")
    pre = get_preprocess_fn(cnn)
    rows = np.arange(len(ihc_tiles))
    base = sal.probabilities(pre(baseline_tiles(ihc_tiles, baseline, 4.0)))[rows, got["class_idx"]]
    tile = sal.probabilities(pre(ihc_tiles))[rows, got["class_idx"]]
    np.testing.assert_allclose(got["deletion_curve"][:, -1], base, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["insertion_curve"][:, 0], base, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["deletion_curve"][:, 0], tile, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["insertion_curve"][:, -1], tile, rtol=1e-5, atol=1e-7)


def test_random_order_is_seeded():
    tiles, masks = region_tiles(3)
    model = region_model()
    a = random_order_deletion_insertion(model, tiles, steps=10, seed=3)
    b = deletion_insertion(model, tiles, None, steps=10, seed=3, order="random")
    c = random_order_deletion_insertion(model, tiles, steps=10, seed=4)
    np.testing.assert_array_equal(a["deletion_curve"], b["deletion_curve"])
    assert not np.array_equal(a["deletion_curve"], c["deletion_curve"])
    assert not np.array_equal(a["deletion_curve"][0], a["deletion_curve"][1])  # one order per tile


# -- argument errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        ({"tiles": np.zeros((2, PX, PX), np.uint8)}, r"^tiles: expected \(N, H, W, 3\)"),
        ({"tiles": np.zeros((2, PX, PX, 3), np.float32)}, r"^tiles: expected dtype uint8"),
        ({"masks": np.zeros((2, PX, PX - 1))}, r"^masks: expected shape \(2, 64, 64\)"),
        ({"masks": None}, r"^masks: expected \(N, H, W\) masks"),
        ({"masks": np.full((2, PX, PX), np.nan)}, r"^masks: NaN in the mask\(s\) of tile\(s\) 0, 1"),
        ({"masks": np.zeros((2, PX, PX), complex)}, r"^masks: expected real numbers"),
        ({"steps": 0}, r"^steps: expected an int >= 1, got 0"),
        ({"steps": 2.5}, r"^steps: expected an int >= 1"),
        ({"steps": True}, r"^steps: expected an int >= 1"),
        ({"baseline": "grey"}, r"^baseline: unknown baseline 'grey'; expected one of white, black, blur, mean"),
        ({"sigma": 0}, r"^sigma: expected a number > 0"),
        ({"sigma": float("nan")}, r"^sigma: expected a number > 0"),
        ({"order": "saliency"}, r"^order: unknown order 'saliency'; expected one of mask, random"),
        ({"seed": 1.5}, r"^seed: expected an int or None"),
        ({"class_idx": [0, 1, 1]}, r"^class_idx: 3 values for 2 tiles"),
        ({"class_idx": 2}, r"^class_idx: 2 is out of range; the model has 2 classes"),
        ({"class_idx": "1"}, r"^class_idx: expected an int or one int per tile"),
        ({"memory_budget": 0}, r"^memory_budget: expected bytes > 0"),
        ({"model": object()}, r"^model: expected a LoadedModel \(sg.load_model\) or a SaliencyMap, got object"),
    ],
)
def test_argument_errors(change, match):
    tiles, masks = region_tiles()
    args = {"model": region_model(), "tiles": tiles, "masks": masks, **change}
    with pytest.raises(InputError, match=match) as err:
        deletion_insertion(**args)
    assert "\n" not in str(err.value)


def test_saliency_map_of_a_bare_module_is_refused():
    import slidegrad as sg

    tiles, masks = region_tiles()
    with pytest.raises(InputError, match=r"^model: the SaliencyMap wraps a bare module") as err:
        deletion_insertion(sg.SaliencyMap(RegionNet(), device="cpu"), tiles, masks)
    assert "\n" not in str(err.value)


# -- pointing ratio and DAB truth ------------------------------------------------------------------
def test_pointing_ratio_known_answers():
    truth = np.zeros((4, 10, 10), bool)
    truth[:, :, :5] = True  # left half: share 0.5
    truth[3] = False
    masks = np.zeros((4, 10, 10))
    masks[0, :2, :5] = 1.0  # top 10 pixels all in the truth: 1.0 / 0.5
    masks[1, 9, :3] = 2.0  # 3 in the truth, then 2 out, then 5 ties in row-major order:
    masks[1, 8, 7:9] = 1.0  # row 0, columns 0-4, in: 8 of 10 inside the truth (ratio 1.6)
    # masks[2]: constant, the top 10 are row 0: 5 in, 5 out (ratio 1)
    ratio = pointing_ratio(masks, truth, top=0.1)
    assert ratio[:3] == pytest.approx([2.0, 1.6, 1.0])
    assert np.isnan(ratio[3])
    assert pointing_ratio(masks[:1], truth[:1], top=1.0) == pytest.approx([1.0])  # everything: chance
    assert pointing_ratio(masks[:1], truth[:1], top=0.001) == pytest.approx([2.0])  # at least one pixel


@pytest.mark.parametrize(
    "change, match",
    [
        ({"truth": np.zeros((2, 10, 10))}, r"^truth: expected dtype bool"),
        ({"truth": np.zeros((10, 10), bool)}, r"^truth: expected boolean \(N, H, W\)"),
        ({"masks": np.zeros((2, 10, 9))}, r"^masks: expected shape \(2, 10, 10\)"),
        ({"top": 0.0}, r"^top: expected a number in \(0.0, 1.0\]"),
        ({"top": 1.5}, r"^top: expected a number in \(0.0, 1.0\]"),
    ],
)
def test_pointing_ratio_errors(change, match):
    args = {"masks": np.zeros((2, 10, 10)), "truth": np.ones((2, 10, 10), bool), **change}
    with pytest.raises(InputError, match=match) as err:
        pointing_ratio(**args)
    assert "\n" not in str(err.value)


def test_dab_truth(ihc_tiles):
    from skimage.color import rgb2hed

    truth = dab_truth(ihc_tiles)
    assert truth.shape == ihc_tiles.shape[:3] and truth.dtype == bool
    np.testing.assert_array_equal(truth[1], rgb2hed(ihc_tiles[1])[..., 2] > 0.05)
    assert 0 < truth.mean() < 1
    assert (dab_truth(ihc_tiles, threshold=1e9) == 0).all()
    with pytest.raises(InputError, match=r"^tiles: expected dtype uint8"):
        dab_truth(ihc_tiles.astype(np.float32))
