"""RISE, input × gradient and GradientSHAP (PyTorch): against independent references, seeded, budget-free.

* ``rise``: Captum has no RISE, so :func:`rise_reference` is the paper's algorithm written here from its
  description, one image and one mask at a time, given numpy masks; the native engine (batched over
  (mask, tile) items, probabilities on the device) must equal it on the same masks.  The masks themselves are
  checked against the reference code's ``skimage.transform.resize`` upsampling and crop.
* ``input_x_gradient``: against Captum 0.9's ``InputXGradient`` on the same module (NCHW there).
* ``gradient_shap``: against Captum 0.9's ``GradientShap`` with the same random draws given to both
  (see :func:`test_gradient_shap_equals_captums_with_the_same_draws`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slidegrad as sg
from slidegrad.engines import native as native_engine
from slidegrad.engines.native import gradient_shap as shap_module
from slidegrad.engines.native.rise import interpolation_matrix, rise_masks

from .conftest import make_tiny_cnn
from .metrics import corr, rel_l2

REL_L2 = 1e-4  # float32 sums in another order / another conv memory layout; measured values in each test


# -- RISE ----------------------------------------------------------------------------------------------------
def rise_reference(model: torch.nn.Module, image: np.ndarray, class_idx: int, masks: np.ndarray, p: float):
    """RISE of one ``(H, W, C)`` image from its paper: ``Σ_i P(c | I ⊙ M_i) M_i / (N · p)``, mask by mask, in
    float64."""
    total = np.zeros(masks.shape[1:], np.float64)
    with torch.no_grad():
        for mask in masks:
            masked = torch.as_tensor((image * mask[..., None]).transpose(2, 0, 1)[None].copy())
            probability = torch.softmax(model(masked).double(), dim=1)[0, class_idx].item()
            total += probability * mask
    return total / (len(masks) * p)


def test_rise_equals_the_papers_loop_on_the_same_masks(ihc_tiles):
    model = make_tiny_cnn(seed=3)
    batch = sg.model.scale(ihc_tiles[:2])
    params = {"n_masks": 64, "grid": 5, "p": 0.3, "seed": 7}
    ours = sg.SaliencyMap(model, class_idx=1).explain(batch, "rise", **params)
    masks = rise_masks(64, 5, 0.3, 7, (64, 64)).masks(np.arange(64))
    for raw, image in zip(ours.raws, batch):
        expected = rise_reference(model, image, 1, masks, 0.3)
        assert raw.shape == (64, 64) and raw.dtype == np.float32 and np.ptp(expected) > 0
        assert rel_l2(raw, expected) <= 1e-5  # measured ≤ 7.4e-8
    assert ours.masks.shape == (2, 64, 64) and ours.masks.min() == 0 and ours.masks.max() == 1


@pytest.mark.parametrize(("grid", "side"), [(7, 64), (5, 37), (3, 20)])
def test_rise_masks_are_the_reference_codes_upsampled_shifted_grids(grid, side):
    """The reference code: ``resize(grid, (s + 1) · cell, order=1, mode='reflect', anti_aliasing=False)`` then
    the crop ``[x : x + H, y : y + W]`` with ``x, y`` in ``[0, cell)``."""
    from skimage.transform import resize

    drawn = rise_masks(20, grid, 0.5, 3, (side, side + 1))
    masks = drawn.masks(np.arange(20))
    cells = [int(np.ceil(side / grid)), int(np.ceil((side + 1) / grid))]
    up = [(grid + 1) * c for c in cells]
    assert drawn.shifts.min() >= 0 and (drawn.shifts < cells).all() and len(np.unique(drawn.shifts[:, 0])) > 1
    for mask, coarse, (top, left) in zip(masks, drawn.grids, drawn.shifts):
        upsampled = resize(coarse, up, order=1, mode="reflect", anti_aliasing=False)
        expected = upsampled[top : top + side, left : left + side + 1]
        np.testing.assert_allclose(mask, expected, atol=1e-6)
    assert set(np.unique(drawn.grids)) == {0.0, 1.0}
    np.testing.assert_allclose(interpolation_matrix(grid, up[0]).sum(axis=1), 1)


def test_rise_is_seeded_and_the_same_under_any_budget(ihc_tiles):
    batch = sg.model.scale(ihc_tiles[:3])
    params = {"n_masks": 50, "grid": 4, "seed": 11}
    small = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1, memory_budget=2 << 20).explain(batch, "rise", **params)
    large = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1, memory_budget=64 << 20).explain(batch, "rise", **params)
    again = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1, memory_budget=2 << 20).explain(batch, "rise", **params)
    other = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1, memory_budget=2 << 20).explain(
        batch, "rise", **{**params, "seed": 12}
    )
    assert small.engine.max_batch < large.engine.max_batch  # the budgets split the items differently
    for a, b, c, d in zip(small.raws, large.raws, again.raws, other.raws):
        assert np.array_equal(a, c)  # same seed, same batches: the same map
        assert rel_l2(a, b) <= 1e-6  # measured ≤ 1.0e-7: float32 sums in another order
        assert rel_l2(a, d) > 1e-3  # another seed, other masks


class TopLeftQuadrant(torch.nn.Module):
    """Two logits: 0, and 40 × (the mean of the top-left quadrant of the input − 0.5); nothing else matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2] // 2, x.shape[3] // 2
        score = 40 * (x[:, :, :h, :w].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def quadrant_share(raw: np.ndarray) -> float:
    """The share of ``raw``'s mass above its median (the expected probability of a pixel the model ignores) that
    lies in the top-left quadrant; a quarter for a map without a preference."""
    h, w = raw.shape[0] // 2, raw.shape[1] // 2
    above = np.maximum(raw - np.median(raw), 0)
    return float(above[:h, :w].sum() / above.sum())


def test_rise_finds_the_only_region_the_model_reads():
    tiles = np.ones((2, 64, 64, 3), np.float32)
    tiles[1] *= 0.8
    result = sg.SaliencyMap(TopLeftQuadrant().eval(), class_idx=1).explain(tiles, "rise", n_masks=300)
    for raw, mask in zip(result.raws, result.masks):
        assert quadrant_share(raw) > 0.7  # measured 0.83 and 0.85 (0.87 with 1000 masks)
        top = mask >= np.quantile(mask, 0.9)
        assert top[:32, :32].sum() == top.sum()  # the top tenth of the map: all in the quadrant (measured)


def test_rise_takes_no_gradient(ihc_tiles, monkeypatch):
    def no_gradients(*args, **kwargs):
        raise AssertionError("RISE asked for a gradient")

    monkeypatch.setattr(native_engine.NativeEngine, "_grad", no_gradients)
    masks = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=0).rise(sg.model.scale(ihc_tiles[:1]), n_masks=8)
    assert masks.shape == (1, 64, 64)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_masks": 0}, "method rise: parameter 'n_masks' must be an integer ≥ 1, got 0"),
        ({"grid": 2.5}, "method rise: parameter 'grid' must be an integer ≥ 1, got 2.5"),
        ({"p": 0}, "method rise: parameter 'p' must be a number > 0 and ≤ 1, got 0"),
        ({"p": 1.5}, "method rise: parameter 'p' must be a number > 0 and ≤ 1, got 1.5"),
        ({"seed": -1}, "method rise: parameter 'seed' must be an integer ≥ 0 and ≤ 4294967295, got -1"),
        ({"smooth": True}, "method rise: does not support smooth=True"),
    ],
)
def test_rise_bad_parameters_are_one_line(tiny_cnn, params, message):
    with pytest.raises(sg.InputError) as info:
        sg.SaliencyMap(tiny_cnn, class_idx=0).rise(np.zeros((1, 64, 64, 3), np.float32), **params)
    assert str(info.value) == message and "\n" not in str(info.value)


# -- input × gradient ----------------------------------------------------------------------------------------
def test_input_x_gradient_equals_captums(ihc_tiles):
    from captum.attr import InputXGradient

    model = make_tiny_cnn(seed=3)
    batch = sg.model.scale(ihc_tiles)
    ours = sg.SaliencyMap(model, class_idx=1).explain(batch, "input_x_gradient")
    inputs = torch.as_tensor(batch).permute(0, 3, 1, 2).contiguous()
    theirs = InputXGradient(model).attribute(inputs, target=1).detach().permute(0, 2, 3, 1).numpy()
    for a, b in zip(ours.raws, theirs):
        assert a.shape == (64, 64, 3) and np.ptp(b) > 0
        assert rel_l2(a, b) <= REL_L2 and corr(a, b) >= 0.99999  # measured rel L2 ≤ 2.2e-7
    vanilla = sg.SaliencyMap(model, class_idx=1).explain(batch, "vanilla")
    assert min(rel_l2(a, b) for a, b in zip(ours.raws, vanilla.raws)) > 0.1


# -- GradientSHAP ------------------------------------------------------------------------------------------
class Replayed(shap_module.ShapDraws):
    """Draws with given noise ``(S, H, W, C)`` instead of the seeded noise."""

    def __init__(self, baseline: np.ndarray, alpha: np.ndarray, noise: np.ndarray) -> None:
        super().__init__(np.asarray(baseline), np.asarray(alpha), 1.0, 0)
        object.__setattr__(self, "given", noise)

    def noise(self, samples: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return self.given[samples]


def captum_baselines(image: np.ndarray) -> np.ndarray:
    """``(3, C, H, W)``: black (zeros), white (the image's max) and blurred (σ = 8 px, scipy's default edges)."""
    from scipy.ndimage import gaussian_filter

    blurred = np.stack([gaussian_filter(image[..., c], 8.0) for c in range(image.shape[-1])], axis=-1)
    stack = np.stack([np.zeros_like(image), np.full_like(image, image.max()), blurred])
    return stack.transpose(0, 3, 1, 2).copy()


def test_gradient_shap_equals_captums_with_the_same_draws(ihc_tiles, monkeypatch):
    """Captum draws the baseline indices with ``np.random.choice``, the noise with ``torch.normal`` and α with
    ``np.random.uniform``; slidegrad draws them with its own Generator.  Both get the same fixed draws here
    (Captum's three draw functions replaced by replays, slidegrad's :func:`shap_draws` by :class:`Replayed`),
    so the comparison is of the algorithm alone: the baseline distribution, the path point, the noisy
    difference multiplied and the mean.  Each tile runs in Captum on its own, with the same draws."""
    from captum.attr import GradientShap

    model = make_tiny_cnn(seed=3)
    batch = sg.model.scale(ihc_tiles[:3])
    rng = np.random.default_rng(5)
    samples, stdevs = 6, 0.1
    choice, alpha = np.array([0, 1, 2, 2, 1, 0]), rng.uniform(0, 1, samples)
    noise = (stdevs * rng.standard_normal((samples, 64, 64, 3))).astype(np.float32)
    monkeypatch.setattr(shap_module, "shap_draws", lambda n, s, seed: Replayed(choice, alpha, noise))
    ours = sg.SaliencyMap(model, class_idx=1).explain(batch, "gradient_shap", n_samples=samples, stdevs=stdevs)
    calls = []
    with monkeypatch.context() as patch:
        patch.setattr(np.random, "choice", lambda n, size: calls.append("choice") or choice[:size].copy())
        patch.setattr(np.random, "uniform", lambda low, high, size: calls.append("uniform") or alpha[:size].copy())
        given_noise = torch.as_tensor(noise).permute(0, 3, 1, 2)  # NCHW, as Captum draws it
        patch.setattr(torch, "normal", lambda mean, std: calls.append("normal") or given_noise)
        theirs = [
            GradientShap(model).attribute(
                torch.as_tensor(image.transpose(2, 0, 1)[None].copy()), torch.as_tensor(captum_baselines(image)),
                n_samples=samples, stdevs=stdevs, target=1,
            ).detach()[0].permute(1, 2, 0).numpy()
            for image in batch
        ]  # fmt: skip
    assert sorted(set(calls)) == ["choice", "normal", "uniform"] and len(calls) == 9  # each draw replayed
    for a, b in zip(ours.raws, theirs):
        assert a.shape == (64, 64, 3) and np.ptp(b) > 0
        assert rel_l2(a, b) <= REL_L2 and corr(a, b) >= 0.99999  # measured rel L2 ≤ 2e-7


def test_gradient_shap_is_seeded_and_the_same_under_any_budget(ihc_tiles):
    batch = sg.model.scale(ihc_tiles)
    params = {"n_samples": 12, "stdevs": 0.05, "seed": 3}
    small = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1, memory_budget=2 << 20)
    large = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1, memory_budget=64 << 20)
    a, b = small.explain(batch, "gradient_shap", **params), large.explain(batch, "gradient_shap", **params)
    again = small.explain(batch, "gradient_shap", **params)
    other = small.explain(batch, "gradient_shap", **{**params, "seed": 4})
    assert a.engine.max_batch < b.engine.max_batch
    for x, y, z, w in zip(a.raws, b.raws, again.raws, other.raws):
        assert np.array_equal(x, z)
        assert rel_l2(x, y) <= 1e-5  # measured ≤ 1e-7
        assert rel_l2(x, w) > 1e-2
    draws = shap_module.shap_draws(200, 0.0, 0)
    assert set(draws.baseline.tolist()) == {0, 1, 2} and 0 <= draws.alpha.min() and draws.alpha.max() < 1
    assert draws.noise(np.arange(3), (4, 4, 3)) is None


def test_gradient_shap_bad_parameters_are_one_line(tiny_cnn):
    x = np.zeros((1, 64, 64, 3), np.float32)
    sal = sg.SaliencyMap(tiny_cnn, class_idx=0)
    for params, message in [
        ({"n_samples": 0}, "method gradient_shap: parameter 'n_samples' must be an integer ≥ 1, got 0"),
        ({"stdevs": -0.1}, "method gradient_shap: parameter 'stdevs' must be a number ≥ 0, got -0.1"),
        ({"stdevs": float("nan")}, "method gradient_shap: parameter 'stdevs' must be a number ≥ 0, got nan"),
        ({"smooth": True}, "method gradient_shap: does not support smooth=True"),
        ({"n_masks": 3}, "method gradient_shap: unknown parameter(s) n_masks; expected any of n_samples, seed, stdevs"),
    ]:
        with pytest.raises(sg.InputError) as info:
            sal.gradient_shap(x, **params)
        assert str(info.value) == message


# -- declarations: config schema, methods text, wrappers -------------------------------------------------------
def test_new_methods_in_config_schema_and_methods_text():
    from slidegrad.methods_text import REFERENCES, method_phrase

    schema = sg.methods.method_schema()
    assert {"rise", "input_x_gradient", "gradient_shap"} <= set(schema["oneOf"][0]["enum"])
    properties = schema["oneOf"][1]["properties"]
    assert properties["n_masks"]["default"] == 4000 and properties["p"]["exclusiveMinimum"] == 0
    meta = {"method_name": "rise", "smooth": False, "params": {"n_masks": 4000, "grid": 7, "p": 0.5, "seed": 0}}
    phrase, cites = method_phrase(meta)
    assert phrase == "RISE (Petsiuk et al. 2018; a 7 × 7 grid, 4000 random masks, cells kept with p = 0.5, seed 0)"
    assert cites == ["Petsiuk et al. 2018"] and "BMVC 2018" in REFERENCES["Petsiuk et al. 2018"]
    meta = {"method_name": "input_x_gradient", "smooth": False, "params": {}}
    assert method_phrase(meta) == ("input × gradient (Shrikumar et al. 2017)", ["Shrikumar et al. 2017"])
    meta = {"method_name": "gradient_shap", "smooth": False, "params": {"n_samples": 5, "stdevs": 0.0, "seed": 0}}
    assert method_phrase(meta)[0] == (
        "GradientSHAP (Lundberg & Lee 2017; baselines black, white and the tile blurred (σ = 8 px), 5 samples, "
        "seed 0, input noise σ = 0.0)"
    )
    assert "NeurIPS 2017" in REFERENCES["Lundberg & Lee 2017"]
    assert [sg.methods.title(m) for m in ("rise", "input_x_gradient", "gradient_shap")] == [
        "RISE", "Input × Gradient", "GradientSHAP",
    ]  # fmt: skip


def test_wrappers_run_every_new_method(tiny_cnn, ihc_tiles):
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
    x = sg.model.scale(ihc_tiles[:2])
    for masks in (sal.rise(x, n_masks=16), sal.input_x_gradient(x), sal.gradient_shap(x, n_samples=3)):
        assert masks.shape == (2, 64, 64) and masks.dtype == np.float32 and 0 <= masks.min() and masks.max() <= 1
    assert sg.methods.get_method("rise").kind == "probability" and sg.methods.reduce(
        sg.methods.get_method("rise"), np.full((4, 4), 0.5)
    ).shape == (4, 4)


def test_methods_paragraph_says_how_rise_maps_are_scaled(monkeypatch):
    from slidegrad import methods_text

    row = {"slide": "s1", "tile": "t0", "method": "rise", "mask": "m.h5", "tile_px": "64", "tile_um": "32",
           "mpp": "", "level": "0", "engine": "native", "device": "cpu"}  # fmt: skip
    meta = {
        "method_name": "rise", "smooth": False, "params": {"n_masks": 10, "grid": 7, "p": 0.5, "seed": 0},
        "framework": "torch", "slidegrad_version": "0", "pair_version": "0.2.1", "framework_version": "2",
        "model_sha256": "ab", "outcome_labels": ["a", "b"],
    }  # fmt: skip
    monkeypatch.setattr(methods_text, "_rows", lambda path: [row])
    monkeypatch.setattr(methods_text, "_method_records", lambda rows: {"rise": meta})
    (paragraph,), references = methods_text.methods_paragraphs("summary.csv")
    assert "maps of expected class probability are scaled to [minimum, maximum]" in paragraph
    assert "RISE (Petsiuk et al. 2018; a 7 × 7 grid, 10 random masks" in paragraph
    assert "attention maps" not in paragraph and references == [methods_text.REFERENCES["Petsiuk et al. 2018"]]
