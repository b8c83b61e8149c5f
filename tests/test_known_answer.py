"""Known answers for the gradient and perturbation methods (issue 28): a model that reads only one region of
the tile gets its map's mass there.

The CAMs have theirs in tests/test_cam_family.py and RISE in tests/test_perturbation_methods.py; here the
methods whose maps are per pixel: Input × Gradient, GradientSHAP, occlusion (and vanilla and IG beside them,
the same model), unsigned and signed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slidegrad as sg
from slidegrad.methods import METHODS

SIDE = 32


class ReadsOneRegion(torch.nn.Module):
    """Class 1's logit is ``Σ_region softplus(4 · x) − c`` over every channel (class 0: its negative); pixels
    outside ``region`` (bool ``(H, W)``) never reach the output."""

    def __init__(self, region: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("region", torch.from_numpy(region.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 0.05 * (torch.nn.functional.softplus(4 * x) * self.region).sum((1, 2, 3)) - 3.0
        return torch.stack([-score, score], 1)


def case() -> tuple[np.ndarray, np.ndarray]:
    """Two 32 px tiles of textured values in [0.1, 0.9] (not constant, so no baseline equals them) and the
    region the model reads: rows and columns 4–15."""
    region = np.zeros((SIDE, SIDE), bool)
    region[4:16, 4:16] = True
    rng = np.random.default_rng(0)
    return rng.uniform(0.1, 0.9, (2, SIDE, SIDE, 3)).astype(np.float32), region


# method → parameters: occlusion with a 3 px window, so a window touching the region is within 2 px of it
CASES = {
    "input_x_gradient": {},
    "gradient_shap": {"n_samples": 8},
    "occlusion": {"size": 3},
    "vanilla": {},
    "integrated_gradients": {"x_steps": 8},
}


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("name", CASES)
def test_a_model_reading_one_region_gets_the_maps_mass_there(name, signed):
    assert name in METHODS
    tiles, region = case()
    params = CASES[name]
    reach = params.get("size", 1) - 1  # occlusion: windows that touch the region start up to size − 1 px before it
    near = np.zeros_like(region)
    near[4 - reach : 16 + reach, 4 - reach : 16 + reach] = True
    masks = sg.SaliencyMap(ReadsOneRegion(region), class_idx=1, device="cpu").explain(
        tiles, name, signed=signed, **params
    ).masks
    for mask in masks:
        magnitude = np.abs(mask)
        inside = magnitude[near].sum() / magnitude.sum()
        print(f"{name} ({'signed' if signed else 'unsigned'}): share of |mask| within {reach} px of the region {inside:.4f}")
        assert inside >= 0.999, inside
        assert magnitude[region].mean() > 10 * magnitude[~near].mean()
        if signed and name != "gradient_shap":
            # more of x raises the class logit everywhere in the region, and these methods compare the tile
            # with zeros (occlusion's value 0, IG's black baseline): the evidence is positive.  GradientSHAP's
            # white baseline lies above the tile, so its evidence there is of both signs.
            assert mask[region].min() >= 0 and mask[region].max() > 0.5


def test_the_known_answer_fails_for_a_map_that_ignores_the_model():
    """The bar above is not met by a map of the tile itself (what a method that ignored the gradient would give)."""
    tiles, region = case()
    magnitude = tiles[0].sum(-1)
    assert magnitude[region].sum() / magnitude.sum() < 0.5
