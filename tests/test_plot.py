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
    out = plot.overlay(image, mask, cmap="Oranges", alpha=0.6)  # Slideflow's colours
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


def test_overlay_opacity_scales_with_the_mask(ihc_tiles):
    """mask 0: the tile unchanged; mask 1: the blend at alpha; between: opacity alpha·mask."""
    image = ihc_tiles[1]
    mask = np.zeros(image.shape[:2], np.float32)
    mask[:, 20:40] = 0.5
    mask[:, 40:] = 1.0
    for cmap, alpha in (("viridis", 0.8), ("magma", 0.35), ("Oranges", 1.0)):
        out = plot.overlay(image, mask, cmap=cmap, alpha=alpha)
        np.testing.assert_array_equal(out[:, :20], image[:, :20])
        for m, col in ((0.5, 30), (1.0, 50)):
            colour = np.array(colormaps[cmap](m)[:3]) * 255
            expected = (1 - alpha * m) * image[:, col].astype(float) + alpha * m * colour
            np.testing.assert_allclose(out[:, col], expected, atol=0.51 + 1.0)  # colour rounded to uint8 first
    np.testing.assert_array_equal(plot.overlay(image, mask, alpha=0.0), image)
    assert (plot.OVERLAY_CMAP, plot.OVERLAY_ALPHA) == ("viridis", 0.8)
    np.testing.assert_array_equal(plot.overlay(image, mask), plot.overlay(image, mask, "viridis", 0.8))


def test_bad_colour_map_or_alpha_is_one_line(ihc_tiles):
    mask = np.zeros((64, 64), np.float32)
    for call in (
        lambda: plot.overlay(ihc_tiles[0], mask, cmap="no_such_map"),
        lambda: plot.colormap(mask, "no_such_map"),
        lambda: plot.comparison_figure(ihc_tiles[:1], {"m": mask[None]}, ["a"], cmap="no_such_map"),
    ):
        with pytest.raises(sg.InputError, match="colour map 'no_such_map' is not a matplotlib colour map") as err:
            call()
        assert "\n" not in str(err.value)
    for alpha in (1.5, -0.1, "0.5", True):
        with pytest.raises(sg.InputError, match=r"alpha: expected a number in \[0, 1\]") as err:
            plot.overlay(ihc_tiles[0], mask, alpha=alpha)
        assert "\n" not in str(err.value)


def test_comparison_figure_overlay_cells_and_scale_bar(ihc_tiles):
    masks = {"vanilla": np.random.default_rng(1).random((2, 64, 64)).astype(np.float32)}
    fig = plot.comparison_figure(
        ihc_tiles[:2], masks, ["a", "b"], cmap="magma", overlay=True, alpha=0.5, um_per_px=0.5
    )
    shown = fig.axes[1].get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), plot.overlay(ihc_tiles[0], masks["vanilla"][0], "magma", 0.5))
    assert fig.axes[-1].get_ylabel() == "attribution (normalized)"  # the colour bar explains the colours
    assert fig.axes[-1]._colorbar.cmap.name == "magma"
    # 64 px at 0.5 µm/px = 32 µm: a 5 µm bar, in the first row's tile panel only (the rows share a scale)
    assert [t.get_text() for t in fig.axes[0].texts] == ["5 µm"] and len(fig.axes[0].lines) == 1
    assert not fig.axes[2].texts and not fig.axes[2].lines
    # rows at other scales get their own bar; no scale, no bar
    fig = plot.comparison_figure(ihc_tiles[:3], {"m": masks["vanilla"][[0, 1, 0]]}, ["a", "b", "c"], um_per_px=[0.5, 2.0, None])
    assert [[t.get_text() for t in fig.axes[2 * r].texts] for r in range(3)] == [["5 µm"], ["20 µm"], []]
    bare = plot.comparison_figure(ihc_tiles[:2], masks, ["a", "b"])
    assert not bare.axes[0].texts and bare.axes[1].get_images()[0].get_cmap().name == plot.OVERLAY_CMAP
