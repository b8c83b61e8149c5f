"""Colour maps, overlays and the comparison figure."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

import slidegrad as sg
from slidegrad import plot


def test_inferno_and_oranges_are_uint8_rgba_of_the_named_maps():
    mask = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    for fn, name in ((plot.inferno, "inferno"), (plot.oranges, "Oranges")):
        rgba = fn(mask)
        assert rgba.shape == (4, 5, 4) and rgba.dtype == np.uint8
        np.testing.assert_array_equal(rgba[-1, -1], (np.array(colormaps[name](1.0)) * 255).round())
        np.testing.assert_array_equal(rgba[0, 0], (np.array(colormaps[name](0.0)) * 255).round())


def test_overlay_blends_oranges_at_alpha_0_6(ihc_tiles):
    image = ihc_tiles[0]
    mask = np.zeros(image.shape[:2], np.float32)
    mask[:, 32:] = 1.0
    out = plot.overlay(image, mask)
    assert out.shape == image.shape and out.dtype == np.uint8
    expected = 0.4 * image[0, 40].astype(float) + 0.6 * plot.oranges(mask)[0, 40, :3]
    np.testing.assert_allclose(out[0, 40], expected, atol=0.51)
    with pytest.raises(sg.InputError, match="differ in size"):
        plot.overlay(image, mask[:10])
    with pytest.raises(sg.InputError, match="expected a 2-D"):
        plot.inferno(np.zeros((2, 2, 2)))


def test_comparison_figure_layout_and_deterministic_files(tmp_path, ihc_tiles):
    masks = {"vanilla": np.random.default_rng(0).random((2, 64, 64)), "gradcam": np.zeros((2, 64, 64))}
    fig = plot.comparison_figure(ihc_tiles[:2], masks, ["tile a", "tile b"], title="slide s")
    axes = fig.axes
    assert len(axes) == 2 * 3 + 1  # panels + one shared colour bar
    assert [axes[i].get_title() for i in range(3)] == ["tile", "vanilla", "gradcam"]
    assert axes[0].get_ylabel() == "tile a" and axes[3].get_ylabel() == "tile b"
    for ext in ("pdf", "png"):  # a rerun builds the figure afresh: same bytes
        for name in ("a", "b"):
            plot.save_figure(plot.comparison_figure(ihc_tiles[:2], masks, ["a", "b"]), tmp_path / f"{name}.{ext}")
        assert (tmp_path / f"a.{ext}").read_bytes() == (tmp_path / f"b.{ext}").read_bytes()
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    assert b"CreationDate" not in (tmp_path / "a.pdf").read_bytes()
