"""Model-randomisation sanity check (Adebayo et al. 2018): known answers, the user's model untouched, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import slidegrad as sg
from slidegrad.evaluate.sanity import SANITY_THRESHOLD, map_similarity, model_randomisation, randomisable_layers
from slidegrad.model import scale

from .conftest import make_tiny_cnn, write_model_dir


@pytest.fixture()
def batch(ihc_tiles):
    return scale(ihc_tiles)


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


class WeightFreeGradient(nn.Module):
    """Logits ``(s, -s) + head(1)`` with ``s = sum(x²)``: the input gradient (``±2x``) ignores every weight."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x**2).sum(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1) + self.head(torch.ones(len(x), 1))


class NoReset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None] * self.scale


def test_tiny_cnn_vanilla_passes_the_randomisation_check(batch):
    model = make_tiny_cnn()
    before, rng = state(model), torch.get_rng_state()
    result = model_randomisation(model, batch, "vanilla", seed=0)
    assert result["layers"] == ["head", "features.3", "features.0"]
    assert result["spearman"].shape == result["ssim"].shape == (4, 3)
    np.testing.assert_array_equal(result["spearman_full"], result["spearman"][:, -1])
    np.testing.assert_array_equal(result["ssim_full"], result["ssim"][:, -1])
    # measured: |rho| <= 0.23 and SSIM <= 0.01 once every layer is randomised (about 0.8 before the first conv)
    assert np.all(np.abs(result["spearman_full"]) < 0.4), result["spearman_full"]
    assert np.all(result["ssim_full"] < 0.3), result["ssim_full"]
    assert result["passes"].dtype == bool and result["passes"].all()
    assert result["threshold"] == SANITY_THRESHOLD
    np.testing.assert_array_equal(result["classes"], sg.SaliencyMap(model).probabilities(batch).argmax(axis=1))
    np.testing.assert_array_equal(result["masks"], sg.SaliencyMap(model).get(batch, "vanilla"))
    assert_same_state(model, before)
    assert torch.equal(torch.get_rng_state(), rng), "the global torch RNG must be left as it was"
    again = model_randomisation(model, batch, "vanilla", seed=0)
    np.testing.assert_array_equal(again["spearman"], result["spearman"])
    other = model_randomisation(model, batch, "vanilla", seed=1)
    assert not np.array_equal(other["spearman"], result["spearman"])


def test_unrandomised_copy_has_similarity_one(batch):
    model = make_tiny_cnn()
    masks, raws = sg.SaliencyMap(model).attributions(batch, "vanilla")
    masks_c, raws_c = sg.SaliencyMap(copy.deepcopy(model)).attributions(batch, "vanilla")
    spearman, ssim = map_similarity(raws, masks, raws_c, masks_c)
    np.testing.assert_allclose(spearman, 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ssim, 1.0, rtol=0, atol=1e-12)


def test_weight_free_map_survives_randomisation(batch):
    result = model_randomisation(WeightFreeGradient(), batch, "vanilla", class_idx=0)
    assert result["layers"] == ["head"]
    np.testing.assert_allclose(result["spearman"], 1.0, atol=1e-12)
    np.testing.assert_allclose(result["ssim"], 1.0, atol=1e-12)
    assert not result["passes"].any()


def test_randomised_models_explain_the_trained_class(batch, monkeypatch):
    model = make_tiny_cnn()
    trained = sg.SaliencyMap(model).probabilities(batch).argmax(axis=1)
    seen = []
    original = sg.SaliencyMap.attributions

    def spy(self, img, method, class_idx=None, **kwargs):
        seen.append(np.asarray(class_idx).copy())
        return original(self, img, method, class_idx=class_idx, **kwargs)

    monkeypatch.setattr(sg.SaliencyMap, "attributions", spy)
    model_randomisation(model, batch, "integrated_gradients", x_steps=5)
    assert len(seen) == 4  # the trained model, then one per randomised layer
    for classes in seen:
        np.testing.assert_array_equal(classes, trained)


def test_loaded_model_is_left_untouched(tmp_path, batch):
    loaded = sg.load_model(write_model_dir(tmp_path / "model"))
    before = state(loaded.module)
    result = model_randomisation(loaded, batch[:2], "gradcam", class_idx="positive")
    assert result["spearman"].shape == (2, 3)
    np.testing.assert_array_equal(result["classes"], [1, 1])
    assert_same_state(loaded.module, before)


def test_randomisable_layers_order():
    names = [name for name, _ in randomisable_layers(make_tiny_cnn())]
    assert names == ["head", "features.3", "features.0"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "nope"}, "^method: unknown method"),
        ({"seed": 1.5}, "^seed: expected an int"),
        ({"batch": np.zeros((2, 64, 64), np.float32)}, r"^batch: expected preprocessed tiles \(N, H, W, 3\)"),
        ({"batch": np.zeros((2, 64, 64, 3), np.uint8)}, "^batch: expected preprocessed float tiles"),
        ({"batch": np.zeros((2, 5, 5, 3), np.float32)}, "^batch: tiles of 5×5 px are too small for SSIM"),
        ({"batch": np.full((1, 64, 64, 3), np.inf, np.float32)}, "^batch: holds NaN or inf"),
        ({"model": object()}, "^model: model_randomisation needs a PyTorch or Keras model"),
        ({"model": NoReset()}, "^model: the top-level module \\(NoReset\\) has parameters but no reset_parameters"),
        ({"model": nn.Sequential(nn.Flatten(), nn.ReLU())}, "^model: it has no layers with parameters"),
        ({"class_idx": 7}, "^class_idx: 7 is out of range"),
    ],
)
def test_argument_errors_are_one_line(batch, kwargs, message):
    args = {"model": make_tiny_cnn(), "batch": batch[:1], "method": "vanilla", **kwargs}
    with pytest.raises(sg.InputError, match=message) as err:
        model_randomisation(**args)
    assert "\n" not in str(err.value)
