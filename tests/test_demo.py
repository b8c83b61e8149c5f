"""The embedded demo: slides, labels, tile table and a model whose saliency lands on DAB."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import slidegrad as sg
from slidegrad import demo

from .conftest import REPO


@pytest.fixture(scope="module")
def demo_slides(demo_assets):
    return demo_assets["slides"]


def test_demo_slides_are_pyramidal_with_mpp(demo_slides):
    with sg.WSI(demo_slides["a"], 128, 128) as wsi:
        assert wsi.dimensions == (4096, 4096)
        assert wsi.mpp == pytest.approx(demo.DEMO_MPP)
        assert wsi.extract_px == 256 and wsi.level == 1
    assert not np.array_equal(demo.demo_image("a"), demo.demo_image("b"))


def test_committed_tile_table_matches_the_selection(demo_slides):
    with open(REPO / "config/demo/tiles.csv") as handle:
        committed = [(r["slide"], int(r["x"]), int(r["y"]), int(r["dab_label"])) for r in csv.DictReader(handle)]
    expected = [(f"demo_{v}", *pick) for v in demo.VARIANTS for pick in demo.select_demo_tiles(demo_slides[v])]
    assert committed == expected
    for slide, x, y, label in committed:
        with sg.WSI(demo_slides[slide[-1]], 128, 128) as wsi:
            assert demo.dab_labels(wsi.read(x, y)[None])[0] == label


def test_quickly_trained_model_looks_at_brown_pixels(demo_assets, demo_slides):
    assert demo_assets["params"]["train_accuracy"] >= 0.9
    model = sg.load_model(demo_assets["model"])
    assert model.outcome_labels == demo.OUTCOME_LABELS
    positives = []
    with sg.WSI(demo_slides["a"], 128, 128) as wsi:
        positives = np.stack([wsi.read(256, 256), wsi.read(512, 512)])
    from skimage.color import rgb2hed

    dab = rgb2hed(positives.reshape(-1, 128, 3))[..., 2].reshape(positives.shape[:3]) > demo.DAB_THRESHOLD
    masks = sg.SaliencyMap(model, class_idx=1).integrated_gradients(sg.get_preprocess_fn(model)(positives))
    for mask, brown in zip(masks, dab):
        assert mask[brown].mean() > 1.2 * mask[~brown].mean()
