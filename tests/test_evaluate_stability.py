"""Max-sensitivity (Yeh et al. 2019): known answers, batching, the class held fixed, argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import slidegrad as sg
from slidegrad.evaluate.stability import default_radius, max_sensitivity, perturbations
from slidegrad.model import scale


class Linear(nn.Module):
    """Logits linear in the input: the vanilla gradient is a weight row, whatever the input."""

    def __init__(self, px: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * px * px, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


class Quadratic(nn.Module):
    """Logits ``(s, -s)`` with ``s = sum(x²)``: the class-0 gradient is ``2x``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x**2).sum(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


@pytest.fixture()
def batch(ihc_tiles):
    return scale(ihc_tiles)


def test_linear_model_vanilla_is_perfectly_stable(batch):
    scores = max_sensitivity(sg.SaliencyMap(Linear()), batch, "vanilla", n=5)
    assert scores.shape == (4,)
    np.testing.assert_array_equal(scores, 0.0)


def test_quadratic_model_known_answer(batch):
    radius = 0.05
    scores = max_sensitivity(sg.SaliencyMap(Quadratic()), batch, "vanilla", n=4, radius=radius, seed=3, class_idx=0)
    # m(x) = 2x: max_i ||2 δ_i|| / ||2 x||
    noise = perturbations(batch.shape, 4, radius, seed=3).reshape(4, 4, -1).astype(np.float64)
    expected = np.linalg.norm(noise, axis=-1).max(axis=1) / np.linalg.norm(batch.reshape(4, -1), axis=-1)
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


def test_defaults_radius_and_determinism(tiny_cnn, batch):
    assert default_radius(batch) == pytest.approx(0.02 * float(batch.max() - batch.min()))
    sal = sg.SaliencyMap(tiny_cnn)
    scores = max_sensitivity(sal, batch, "vanilla")
    assert scores.shape == (4,) and np.all(np.isfinite(scores)) and np.all(scores > 0)
    np.testing.assert_array_equal(scores, max_sensitivity(sal, batch, "vanilla"))
    assert not np.array_equal(scores, max_sensitivity(sal, batch, "vanilla", seed=1))
    np.testing.assert_array_equal(max_sensitivity(sal, batch, "vanilla", radius=0.0), 0.0)
    masks = max_sensitivity(sal, batch, "vanilla", on="mask")
    assert masks.shape == (4,) and np.all(np.isfinite(masks))
    single = max_sensitivity(sal, batch[1], "vanilla")
    assert isinstance(single, float) and np.isfinite(single)


def test_one_call_with_the_unperturbed_class(tiny_cnn, batch, monkeypatch):
    sal = sg.SaliencyMap(tiny_cnn)
    expected_classes = sal.probabilities(batch).argmax(axis=1)
    calls = []
    original = sal.attributions

    def spy(images, method, class_idx=None, **kwargs):
        calls.append((images.shape, np.asarray(class_idx)))
        return original(images, method, class_idx=class_idx, **kwargs)

    monkeypatch.setattr(sal, "attributions", spy)
    max_sensitivity(sal, batch, "integrated_gradients", n=3, x_steps=5)
    assert len(calls) == 1
    shape, classes = calls[0]
    assert shape == (4 * 4, 64, 64, 3)
    np.testing.assert_array_equal(classes, np.concatenate([expected_classes, np.repeat(expected_classes, 3)]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "nope"}, "^method: unknown method"),
        ({"n": 0}, "^n: expected a positive int"),
        ({"n": 2.5}, "^n: expected a positive int"),
        ({"radius": -0.1}, "^radius: expected a finite number"),
        ({"radius": float("nan")}, "^radius: expected a finite number"),
        ({"seed": "x"}, "^seed: expected an int"),
        ({"on": "pixels"}, "^on: expected 'raw' or 'mask'"),
        ({"batch": np.zeros((2, 64, 64), np.float32)}, r"^batch: expected preprocessed tiles \(N, H, W, 3\)"),
        ({"batch": np.zeros((2, 64, 64, 3), np.uint8)}, "^batch: expected preprocessed float tiles"),
        ({"batch": np.full((1, 64, 64, 3), np.nan, np.float32)}, "^batch: holds NaN"),
        ({"batch": [[0.0]]}, "^batch: expected a numpy array"),
        ({"saliency_map": object()}, "^saliency_map: expected a slidegrad SaliencyMap"),
        ({"class_idx": 5}, "^class_idx: 5 is out of range"),
    ],
)
def test_argument_errors_are_one_line(tiny_cnn, batch, kwargs, message):
    args = {"saliency_map": sg.SaliencyMap(tiny_cnn), "batch": batch[:1], "method": "vanilla", **kwargs}
    with pytest.raises(sg.InputError, match=message) as err:
        max_sensitivity(**args)
    assert "\n" not in str(err.value)
