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
    from slidegrad.engines.native.occlusion import _coverage, _spread, window_starts

    drops = np.arange(12, dtype=np.float64).reshape(3, 4)
    coverage = _coverage(window_starts(5, 3, 1), 3, 5), _coverage(window_starts(6, 3, 1), 3, 6)
    out = _spread(drops, coverage, 3, 1)[..., 0]
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


# -- stride ---------------------------------------------------------------------------------------------------
def test_window_starts_step_by_stride_and_end_at_the_last_position():
    from slidegrad.engines.native.occlusion import window_starts

    assert window_starts(64, 15, 1).tolist() == list(range(50))
    assert window_starts(64, 15, 4).tolist() == [*range(0, 49, 4), 49]  # 48 + the last, so pixel 63 is covered
    assert window_starts(64, 16, 8).tolist() == list(range(0, 49, 8))  # 48 is already the last
    assert window_starts(15, 15, 4).tolist() == [0]


def test_occlusion_stride_equals_captums_where_the_positions_coincide(ihc_tiles):
    """Captum 0.9's ``Occlusion`` averages each pixel's windows; ours is that mean times the pixel's count of
    stride-1 windows.  Its positions are ours where ``stride`` divides ``H − size`` (else its last window sticks
    out past the edge, cropped, where ours starts at ``H − size``)."""
    import torch
    from captum.attr import Occlusion

    from slidegrad.engines.native.occlusion import _coverage, window_starts

    model = make_tiny_cnn(seed=3)
    batch = sg.model.scale(ihc_tiles[:2])
    ours = sg.SaliencyMap(model, class_idx=1).explain(batch, "occlusion", size=16, stride=8, value=0.25).raws
    x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
    theirs = Occlusion(model).attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=0.25, target=1)
    count = _coverage(window_starts(64, 16, 1), 16, 64).sum(1)
    theirs = theirs.detach().numpy().transpose(0, 2, 3, 1) * np.outer(count, count)[:, :, None]
    assert np.ptp(theirs) > 0
    worst = max(rel_l2(a, b) for a, b in zip(ours, theirs))
    print(f"occlusion stride 8 vs Captum: relative L2 {worst:.3g}")
    assert worst <= REL_L2 and min(corr(a, b) for a, b in zip(ours, theirs)) >= 0.99999


def test_a_stride_estimates_pairs_map(ihc_tiles):
    """Stride 2's masks against stride 1's (PAIR's): measured correlation 0.986 on these tiles (Captum's plain
    mean, with value 0.25: 0.24–0.59, its edges lack the sum's fall-off)."""
    sal = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1)
    batch = sg.model.scale(ihc_tiles[:2])
    strided = sal.occlusion(batch, size=16, stride=2)
    every = sal.occlusion(batch, size=16)
    worst = min(corr(a, b) for a, b in zip(strided, every))
    print(f"occlusion stride 2 vs 1: mask correlation {worst:.4f}")
    assert worst >= 0.98, worst


def test_a_uniform_drop_gives_pairs_map_at_any_stride():
    """A model whose logit sums the pixels drops by the same amount for every window: the strided estimate is
    PAIR's sum exactly, with no grid (a plain sum over a stride-4 grid of 15 px windows would count 9 … 16 per pixel)."""
    import torch

    class PixelSum(torch.nn.Module):
        def forward(self, x):
            total = x.sum((1, 2, 3))
            return torch.stack([-total, total], 1)

    x = np.ones((1, 64, 64, 3), np.float32)
    summed = sg.SaliencyMap(PixelSum(), class_idx=1).explain(x, "occlusion", size=15).raws[0]
    assert summed[32, 32, 0] == pytest.approx(15**4 * 3) and summed[0, 0, 0] == pytest.approx(15**2 * 3)
    for stride in (4, 15):
        strided = sg.SaliencyMap(PixelSum(), class_idx=1).explain(x, "occlusion", size=15, stride=stride).raws[0]
        np.testing.assert_allclose(strided, summed, rtol=1e-6)


def test_occlusion_stride_refusals_are_one_line(tiny_cnn):
    x = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(sg.InputError, match=r"^method occlusion: parameter 'stride' must be at most 'size' \(15, .*got 16$"):
        sg.SaliencyMap(tiny_cnn, class_idx=0).occlusion(x, stride=16)
    with pytest.raises(sg.InputError, match=r"parameter 'stride' must be an integer ≥ 1, got 0"):
        sg.SaliencyMap(tiny_cnn, class_idx=0).occlusion(x, stride=0)
    with pytest.raises(sg.InputError, match=r"parameter 'stride' must be 1 with the pair engine \(PAIR slides by 1 px\), got 4"):
        sg.SaliencyMap(tiny_cnn, class_idx=0, engine="pair").occlusion(x, stride=4)
    pair = sg.SaliencyMap(tiny_cnn, class_idx=0, engine="pair").occlusion(x, size=40, stride=1)
    assert pair.shape == (1, 64, 64)


def test_occlusion_stride_in_config_and_methods_text():
    from slidegrad.methods import output_params
    from slidegrad.methods_text import method_phrase

    method = sg.methods.get_method("occlusion")
    assert method.defaults == {"size": 15, "value": 0.0, "stride": 1}
    assert output_params(method, {"size": 15, "value": 0.0, "stride": 4}, "pair")["stride"] == 4  # refused there
    meta = {"method_name": "occlusion", "smooth": False, "params": {"size": 15, "value": 0.0, "stride": 4}}
    assert method_phrase(meta)[0] == (
        "occlusion (Zeiler & Fergus 2014; a 15 px window, moved by 4 px (the sum over every position estimated), "
        "filled with 0.0)"
    )
    meta["params"]["stride"] = 1
    assert method_phrase(meta)[0] == "occlusion (Zeiler & Fergus 2014; a 15 px window, moved by 1 px, filled with 0.0)"
