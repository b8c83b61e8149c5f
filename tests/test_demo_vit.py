"""The embedded demo's vision transformer: trained on the demo's tiles and DAB labels, its maps
land on brown pixels like the CNN's; config/demo-vit.yaml runs the workflow, attention methods included."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

import slidegrad as sg
from slidegrad import demo
from slidegrad.results import read_mask_chunk

from .conftest import REPO, run_snakemake, write_positive_demo_tiles


@pytest.fixture(scope="module")
def demo_vit(demo_assets, tmp_path_factory) -> dict:
    """The demo ViT trained for one epoch on the shared demo slides."""
    out = tmp_path_factory.mktemp("demo_vit") / "vit"
    params = demo.train_demo_vit(list(demo_assets["slides"].values()), out, epochs=1)
    return {"model": out, "params": params, "slides": demo_assets["slides"]}


def dab_positive_tiles(slide) -> tuple[np.ndarray, np.ndarray]:
    """Two DAB-rich tiles of demo slide a (the CNN test's) and their DAB pixels."""
    from skimage.color import rgb2hed

    with sg.WSI(slide, 128, 128) as wsi:
        tiles = np.stack([wsi.read(256, 256), wsi.read(512, 512)])
    dab = rgb2hed(tiles.reshape(-1, 128, 3))[..., 2].reshape(tiles.shape[:3]) > demo.DAB_THRESHOLD
    return tiles, dab


def test_demo_vit_params(demo_vit):
    params = demo_vit["params"]
    assert params["architecture"] == "vit_demo" and params["preprocessing"] == "scale"
    assert (params["tile_px"], params["tile_um"]) == (demo.DEMO_TILE_PX, demo.DEMO_TILE_UM)
    assert params["outcome_labels"] == demo.OUTCOME_LABELS and params["seed"] == 0
    assert params["train_accuracy"] >= 0.9
    assert json.loads((demo_vit["model"] / "params.json").read_text()) == params
    assert (demo_vit["model"] / "weights.pt").exists() and not (demo_vit["model"] / demo.NUMPY_WEIGHTS_FILE).exists()


# Only transformer_attribution holds here: on these tiles, after one epoch, the ViT's integrated
# gradients (brown/other 0.57) and attention rollout (0.23; class-agnostic) do not land on DAB.
@pytest.mark.parametrize("method", ["transformer_attribution"])
def test_demo_vit_looks_at_brown_pixels(demo_vit, method):
    model = sg.load_model(demo_vit["model"])
    assert model.outcome_labels == demo.OUTCOME_LABELS
    tiles, dab = dab_positive_tiles(demo_vit["slides"]["a"])
    masks = getattr(sg.SaliencyMap(model, class_idx=1), method)(sg.get_preprocess_fn(model)(tiles))
    for mask, brown in zip(masks, dab):
        assert mask[brown].mean() > 1.2 * mask[~brown].mean(), method


@pytest.mark.workflow
def test_demo_vit_config_runs_the_workflow(tmp_path):
    """config/demo-vit.yaml as given, overlaid with a cheaper run: one positive tile per slide,
    a few methods (the attention ones included), one training epoch."""
    picks = write_positive_demo_tiles(tmp_path / "tiles.csv")
    cheap = {
        "samples": str(REPO / "config/demo/samples.csv"),
        "tiles": "tiles.csv",
        "outdir": "out/vit",
        "methods": ["vanilla", "gradcam", "attention_rollout", "transformer_attribution"],
        "demo": {"epochs": 1, "seed": 0},
        "evaluate": {"metrics": ["deletion", "insertion", "sanity"], "steps": 5},
    }
    (tmp_path / "cheap.yaml").write_text(yaml.safe_dump(cheap))
    result = run_snakemake(tmp_path, "--configfile", str(REPO / "config/demo-vit.yaml"), "cheap.yaml", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    params = json.loads((tmp_path / "resources/demo/vit/params.json").read_text())
    assert params["architecture"] == "vit_demo"
    out = tmp_path / "out/vit"
    for slide in ("demo_a", "demo_b"):
        assert (out / f"figures/{slide}.pdf").exists() and (out / f"figures/evaluation/{slide}.png").exists()
    for pick in picks:
        tile = f"x{pick['x']}_y{pick['y']}"
        for method in cheap["methods"]:
            result = read_mask_chunk(out / f"masks/{pick['slide']}/{method}/chunk0000.npz")
            assert result.names == [tile], method
            assert result.masks.shape == (1, 128, 128) and np.isfinite(result.masks).all(), method
            record = result.records[0]
            assert record["backend"] == "torch" and record["method"] == method, record
            if method in ("attention_rollout", "transformer_attribution"):
                assert record["prefix_tokens"] == 1, record  # the CLS token, dropped from the patch-grid map
    with open(out / "evaluation.csv") as handle:
        evaluated = list(csv.DictReader(handle))
    assert {r["method"] for r in evaluated} == set(cheap["methods"]) and len(evaluated) == 2 * 4
    assert all(0 <= float(r["deletion_auc"]) <= 1 and r["sanity_passes"] in ("true", "false") for r in evaluated)
