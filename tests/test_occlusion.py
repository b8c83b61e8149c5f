"""Occlusion (issue 25) against PAIR's ``saliency.core.Occlusion`` (the pair engine), forward passes only.

The native engine batches every (tile, window position) item through the backend's forward-only op and sums
each window's score drop over the pixels it covers in float64; PAIR adds them one window at a time in
float32, so raw maps agree to float rounding (relative L2, :data:`REL_L2`).
"""

from __future__ import annotations

import numpy as np
import pytest

import slidegrad as sg
from slidegrad import batching
from slidegrad.engines import native as native_engine

from .conftest import make_tiny_cnn
from .metrics import corr, rel_l2

REL_L2 = 1e-4  # measured ≤ 3e-6 (float32 window-by-window sums against float64 box sums)


@pytest.mark.parametrize(("params", "tiles"), [({}, 1), ({"size": 32, "value": 0.5}, 2)])
def test_occlusion_equals_pairs(ihc_tiles, params, tiles):
    model = make_tiny_cnn(seed=3)
    batch = sg.model.scale(ihc_tiles[:tiles])
    native = sg.SaliencyMap(model, class_idx=1).explain(batch, "occlusion", **params)
    _, pair_raws = sg.SaliencyMap(model, class_idx=1, engine="pair").attributions(batch, "occlusion", **params)
    for ours, theirs in zip(native.raws, pair_raws):
        assert ours.shape == theirs.shape == (64, 64, 3) and ours.dtype == np.float32
        assert np.ptp(theirs) > 0, "a flat reference tests nothing"
        assert rel_l2(ours, theirs) <= REL_L2 and corr(ours, theirs) >= 0.99999
    assert native.masks.shape == (tiles, 64, 64) and 0 <= native.masks.min() and native.masks.max() <= 1


def test_occlusion_takes_no_gradient_and_stays_in_the_budget(ihc_tiles, monkeypatch):
    def no_gradients(*args, **kwargs):
        raise AssertionError("occlusion asked for a gradient")

    monkeypatch.setattr(native_engine.NativeEngine, "_grad", no_gradients)
    sal = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1, memory_budget=8 << 20)
    result = sal.explain(sg.model.scale(ihc_tiles[:2]), "occlusion", size=40)
    per_item = batching.item_bytes(sal.backend.activation_bytes((64, 64, 3)), 64 * 64 * 3)
    assert 2 < result.engine.max_batch < 2 * 25 * 25  # batched across tiles and windows, split by the budget
    assert result.engine.max_batch * per_item <= 8 << 20
    assert all(np.array_equal(raw[..., 0], raw[..., 2]) for raw in result.raws)  # one map, every channel


def test_window_sums_cover_each_pixel_once_per_window():
    from slidegrad.engines.native.occlusion import _spread

    drops = np.arange(12, dtype=np.float64).reshape(3, 4)
    out = _spread(drops, 3, 1)[..., 0]
    expected = np.zeros((5, 6))
    for r in range(3):
        for c in range(4):
            expected[r : r + 3, c : c + 3] += drops[r, c]
    np.testing.assert_allclose(out, expected)


def test_occlusion_bad_size_is_one_line_naming_the_field(tiny_cnn):
    x = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(sg.InputError, match=r"parameter 'size' must be at most the tile's side \(64 px\), got 65"):
        sg.SaliencyMap(tiny_cnn, class_idx=0).occlusion(x, size=65)
    with pytest.raises(sg.InputError, match=r"parameter 'size' must be an integer ≥ 1, got 0"):
        sg.SaliencyMap(tiny_cnn, class_idx=0).occlusion(x, size=0)


def test_occlusion_and_gradcam_plusplus_in_config_and_methods_text():
    from slidegrad.methods_text import REFERENCES, method_phrase

    schema = sg.methods.method_schema()
    assert {"occlusion", "gradcam_plusplus"} <= set(schema["oneOf"][0]["enum"])
    meta = {"method_name": "occlusion", "smooth": False, "params": {"size": 15, "value": 0.0}}
    phrase, cites = method_phrase(meta)
    assert phrase == "occlusion (Zeiler & Fergus 2014; a 15 px window, filled with 0.0)"
    assert cites == ["Zeiler & Fergus 2014"]
    assert "Grad-CAM++" in REFERENCES["Chattopadhay et al. 2018"]
    assert sg.methods.title("gradcam_plusplus") == "Grad-CAM++"
    meta = {"method_name": "gradcam_plusplus", "smooth": False, "params": {"layer": None}, "gradcam_layer": "features.3"}
    assert method_phrase(meta)[0] == "Grad-CAM++ (Chattopadhay et al. 2018; layer features.3)"
