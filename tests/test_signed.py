"""Signed maps (``signed=True``): positive and negative evidence kept apart, in [−1, 1].

The normalization against PAIR's ``VisualizeImageDiverging``; the option in the API and the config
(refused on methods whose maps have no sign); the mask job's record and statistics; the figures,
overlays and slide maps in a diverging colour map centred on 0; the evaluation's order."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import slidegrad as sg
from slidegrad import methods, plot
from slidegrad.config import MethodSpec, parse_methods, validate_config
from slidegrad.jobs.summary import mask_stats
from slidegrad.layout import Layout
from slidegrad.model import scale
from slidegrad.planning import build_plan

from .conftest import write_test_slide
from .test_workflow import _load_config, make_project

SIGNABLE = [m.name for m in methods.METHODS.values() if m.signable]
UNSIGNABLE = [m.name for m in methods.METHODS.values() if not m.signable]


def _attribution(seed: int = 0, shape: tuple[int, int] = (32, 40)) -> np.ndarray:
    """``(H, W, 3)`` float32 with both signs; its channel sum's negative part is smaller than its
    positive p99, so p99 of the signed sum and of its absolute value agree (PAIR's span and ours)."""
    rng = np.random.default_rng(seed)
    total = rng.gamma(2.0, 1.0, size=shape)
    total[rng.random(shape) < 0.4] *= -0.2  # 40 % negative, at most a fifth of the positives' size
    split = rng.dirichlet([1.0, 1.0, 1.0], size=shape)
    return (total[..., None] * split).astype(np.float32)


# -- normalization -------------------------------------------------------------------------------
def test_signed_normalization_is_pairs_diverging_map_centred_on_zero():
    from saliency.core.visualization import VisualizeImageDiverging

    for seed in range(3):
        attr = _attribution(seed)
        ours = methods.signed_p99(attr)
        pair = VisualizeImageDiverging(attr.astype(np.float64))
        assert ours.dtype == np.float32 and ours.min() >= -1 and ours.max() <= 1
        assert ours.min() < 0 < ours.max()
        assert pair.min() >= 0  # PAIR's is in [0, 1] here: 0 maps to 0.5
        error = np.abs(pair - (ours.astype(np.float64) + 1) / 2).max()
        assert error < 1e-6, error
        np.testing.assert_array_equal(np.sign(ours), np.sign(attr.sum(axis=-1)))  # 0 stays 0, signs kept


def test_signed_normalization_edge_cases():
    assert not methods.signed_p99(np.zeros((8, 8, 3), np.float32)).any()
    sparse = np.zeros((20, 20, 3), np.float32)  # p99 of |sum| is 0: scaled by the maximum instead
    sparse[3, 4, 0], sparse[5, 6, 1] = 2.0, -1.0
    out = methods.signed_p99(sparse)
    assert out[3, 4] == 1.0 and out[5, 6] == -0.5 and np.count_nonzero(out) == 2
    # symmetric in the sign: negating the attribution negates the mask
    attr = _attribution(4)
    np.testing.assert_array_equal(methods.signed_p99(-attr), -methods.signed_p99(attr))


@pytest.mark.parametrize("name", SIGNABLE)
def test_normalize_and_reduce_keep_the_sign_for_every_gradient_method(name):
    method, attr = methods.get_method(name), _attribution(1)
    np.testing.assert_array_equal(methods.normalize(method, attr, signed=True), methods.signed_p99(attr))
    reduced = methods.reduce(method, attr, signed=True)
    np.testing.assert_allclose(reduced, attr.sum(axis=-1), rtol=1e-6, atol=1e-6)
    assert reduced.dtype == np.float32 and reduced.min() < 0
    assert methods.normalize(method, attr).min() >= 0  # unsigned as before


@pytest.mark.parametrize("name", UNSIGNABLE)
def test_normalize_refuses_signed_on_maps_without_a_sign(name):
    with pytest.raises(sg.InputError, match=rf"^method {name}: field 'signed' is only for gradient methods \("):
        methods.normalize(methods.get_method(name), np.ones((8, 8), np.float32), signed=True)


# -- API -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vanilla", "integrated_gradients", "occlusion"])
def test_signed_masks_in_the_api_have_both_signs(tiny_cnn, ihc_tiles, name):
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
    batch = scale(ihc_tiles[:2])
    params = {"x_steps": 4} if name == "integrated_gradients" else {"size": 9} if name == "occlusion" else {}
    result = sal.explain(batch, name, signed=True, **params)
    assert result.signed and result.masks.dtype == np.float32 and result.masks.shape == (2, 64, 64)
    assert result.masks.min() >= -1 and result.masks.max() <= 1
    for mask, raw in zip(result.masks, result.raws):
        assert (mask < -1e-3).mean() > 0.01 and (mask > 1e-3).mean() > 0.01  # both signs, not rounding noise
        np.testing.assert_array_equal(mask, methods.signed_p99(raw))
    unsigned = sal.explain(batch, name, **params)
    np.testing.assert_array_equal(unsigned.masks, sal.get(batch, name, **params))
    assert unsigned.masks.min() >= 0 and not unsigned.signed
    # the generated wrapper takes it as a keyword, as smooth
    np.testing.assert_array_equal(getattr(sal, name)(batch, signed=True, **params), result.masks)


@pytest.mark.parametrize("name", ["gradcam", "xrai"])
def test_signed_on_a_method_without_a_sign_is_one_line_in_the_api(tiny_cnn, ihc_tiles, name):
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
    with pytest.raises(sg.InputError) as err:
        getattr(sal, name)(scale(ihc_tiles[0]), signed=True)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"method {name}: field 'signed' is only for gradient methods (vanilla, ")
    assert message.endswith(f"{name}'s maps (kind {methods.get_method(name).kind}) have no sign")
    assert "signed" not in __import__("inspect").signature(getattr(sal, name)).parameters


# -- config --------------------------------------------------------------------------------------
def test_config_entry_signed_gets_its_own_id_and_title():
    specs = parse_methods([
        "integrated_gradients", {"name": "integrated_gradients", "signed": True},
        {"name": "vanilla", "smooth": True, "signed": True}, {"name": "vanilla", "signed": True, "id": "grad_pm"},
    ])  # fmt: skip
    assert [s.id for s in specs] == ["integrated_gradients", "integrated_gradients_signed", "vanilla_smooth_signed", "grad_pm"]
    assert [s.signed for s in specs] == [False, True, True, True]
    assert [s.title for s in specs] == ["IG", "IG (signed)", "Gradient (smooth, signed)", "grad_pm"]
    assert MethodSpec.from_json(specs[1].to_json()) == specs[1]
    assert specs[1].for_engine("native").signed
    assert "signed" not in json.loads(specs[0].to_json())  # unsigned specs keep their old text (no reruns)
    assert not MethodSpec.from_json(specs[0].to_json()).signed


def test_config_signed_on_gradcam_is_one_line(tmp_path, slide_path, model_dir, monkeypatch):
    root = make_project(tmp_path, slide_path, model_dir, [{"slide": "s1", "x": 0, "y": 0}])
    monkeypatch.chdir(root)
    config = {**_load_config(root), "methods": ["vanilla", {"name": "integrated_gradients", "signed": True},
                                                {"name": "gradcam", "signed": True}]}  # fmt: skip
    with pytest.raises(sg.InputError) as err:
        build_plan(config)
    assert str(err.value) == (
        "config field 'methods[2]': method gradcam: field 'signed' is only for gradient methods ("
        + ", ".join(SIGNABLE) + "); gradcam's maps (kind gradcam) have no sign"
    )
    config["methods"] = ["vanilla", {"name": "vanilla", "signed": "yes"}]
    with pytest.raises(sg.InputError, match=r"^config field 'methods\[1\]\.signed': 'yes' is not of type 'boolean'$"):
        validate_config(config)
    config["methods"] = ["vanilla", {"name": "integrated_gradients", "signed": True, "x_steps": 4}]
    plan = build_plan(config)
    assert [(m.id, m.signed) for m in plan.methods] == [("vanilla", False), ("integrated_gradients_signed", True)]


# -- statistics ----------------------------------------------------------------------------------
def test_mask_stats_of_a_signed_mask_are_of_its_magnitude():
    mask = np.zeros((10, 10), np.float32)
    mask[0, :5] = 1.0  # 5 px at +1
    mask[1, :5] = -0.5  # 5 px at -0.5
    mask[2, :] = 0.1  # 10 px at +0.1
    stats = mask_stats(mask, signed=True)
    total = 5 * 1.0 + 5 * 0.5 + 10 * 0.1
    assert stats["mask_mean"] == pytest.approx(total / 100)
    assert stats["mask_max"] == pytest.approx(1.0)
    # the top 10 px by |mask|: 5 × 1.0 and 5 × 0.5
    assert stats["top10_mass"] == pytest.approx((5 * 1.0 + 5 * 0.5) / total)
    assert stats["positive_share"] == pytest.approx((5 * 1.0 + 10 * 0.1) / total)
    assert mask_stats(-mask, signed=True)["positive_share"] == pytest.approx(5 * 0.5 / total)
    assert mask_stats(np.zeros((4, 4)), signed=True)["positive_share"] == 0.0
    unsigned = mask_stats(np.abs(mask))
    assert "positive_share" not in unsigned
    assert {k: unsigned[k] for k in ("mask_mean", "top10_mass")} == pytest.approx(
        {k: stats[k] for k in ("mask_mean", "top10_mass")}
    )


# -- drawing -------------------------------------------------------------------------------------
def test_signed_colours_are_diverging_and_neutral_at_zero():
    mask = np.array([[-1.0, -0.5, 0.0, 0.5, 1.0]], np.float32)
    rgba = plot.colormap(mask)  # negative values: drawn as signed
    np.testing.assert_array_equal(rgba, plot.colormap(mask, "viridis", signed=True))
    r, g, b = (rgba[0, :, k].astype(int) for k in range(3))
    assert b[0] > r[0] + 60 and r[4] > b[4] + 60  # −1 blue, +1 red (RdBu_r)
    assert min(r[2], g[2], b[2]) > 230  # 0 white
    assert plot.signed_cmap("bwr") == "bwr" and plot.signed_cmap("inferno") == plot.DIVERGING_CMAP
    # an overlay leaves the tile as it is at 0, tints it blue at −1 and red at +1
    tile = np.full((1, 5, 3), 128, np.uint8)
    out = plot.overlay(tile, mask, alpha=0.8).astype(int)
    np.testing.assert_array_equal(out[0, 2], [128, 128, 128])
    assert out[0, 0, 2] > out[0, 0, 0] + 50 and out[0, 4, 0] > out[0, 4, 2] + 50
    # a signed mask with no negative value, said to be signed, is still drawn on [−1, 1]
    positive = np.array([[0.0, 1.0]], np.float32)
    assert plot.colormap(positive, signed=True)[0, 0, :3].min() > 230
    assert not np.array_equal(plot.colormap(positive, signed=True), plot.colormap(positive))


def _mask_job_run(tmp_path, model_dir, ihc, ihc_tiles, method: MethodSpec) -> tuple[str, str, str]:
    """One slide, one chunk of the four IHC tiles, ``method``'s mask job run: (slide path, table, outdir)."""
    from slidegrad import jobs, results
    from slidegrad.tables import Tile, write_tile_table

    slide_path = write_test_slide(tmp_path / "s1.tiff", ihc, mpp=0.5)
    outdir = str(tmp_path / "out")
    layout = Layout(outdir)
    tiles = [Tile("s1", 128 * i, 256) for i in range(len(ihc_tiles))]
    geometry = {"tile_px": 64, "tile_um": 64, "mpp": 0.5, "level": 0, "extract_px": 128}
    write_tile_table(layout.tile_table("s1"), tiles, 4, geometry)
    names = [t.name for t in tiles]
    results.write_tile_chunk(layout.tile_chunk("s1", "chunk0000"), names, [t.x for t in tiles], [t.y for t in tiles], ihc_tiles)
    jobs.run_mask_job(
        str(model_dir), layout.tile_table("s1"), "chunk0000", layout.tile_chunk("s1", "chunk0000"), method,
        layout.mask_file("s1", "chunk0000", method.id), device="cpu", threads=1, save_raw=True,
    )  # fmt: skip
    return str(slide_path), layout.tile_table("s1"), outdir


SIGNED_IG = MethodSpec("ig_signed", "integrated_gradients", False, {"x_steps": 4, "batch_size": 20}, True)


def test_a_signed_mask_job_and_its_pictures_summary_and_slide_map(tmp_path, model_dir, ihc, ihc_tiles):
    from slidegrad import jobs, results
    from slidegrad.jobs.slide_maps import write_slide_map
    from slidegrad.overview import write_overview
    from slidegrad.slide_map import read_map_npz, read_map_signed

    slide_path, table, outdir = _mask_job_run(tmp_path, model_dir, ihc, ihc_tiles, SIGNED_IG)
    layout = Layout(outdir)
    stored = results.read_mask_chunk(layout.mask_file("s1", "chunk0000", "ig_signed"), ("masks", "attributions", "raw"))
    spec = methods.get_method("integrated_gradients")
    assert stored.records[0]["signed"] is True and stored.masks.min() < 0 < stored.masks.max()
    for i, record in enumerate(stored.records):
        np.testing.assert_array_equal(stored.masks[i], methods.normalize(spec, stored.raw[i], signed=True))
        np.testing.assert_array_equal(stored.attributions[i], methods.reduce(spec, stored.raw[i], signed=True))
        assert record["mask_mean"] == pytest.approx(float(np.abs(stored.masks[i]).mean()), rel=1e-5)
        assert 0 < record["positive_share"] < 1
    loaded = results.load(outdir, "s1", "ig_signed")
    assert loaded.tiles["positive_share"].between(0, 1).all()

    # summary: positive_share filled for the signed method
    summary = tmp_path / "summary.csv"
    jobs.write_summary([table], outdir, ["ig_signed"], str(summary), str(tmp_path / "summary.parquet"))
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "summary.parquet")
    assert frame["positive_share"].between(0, 1).all() and frame["mask_mean"].between(0, 1).all()
    from slidegrad.methods_text import methods_paragraphs

    paragraph = methods_paragraphs(str(summary))[0][0]
    assert "Methods: signed integrated gradients (" in paragraph and "clipped to [−1, 1]" in paragraph

    # pictures: the heatmap is the diverging colour of the mask
    jobs.write_pictures(table, "chunk0000", outdir, ["ig_signed"], str(tmp_path / "ov"), str(tmp_path / "hm"))
    heat = np.asarray(Image.open(tmp_path / "hm" / "ig_signed" / f"{stored.names[0]}.png"))
    np.testing.assert_array_equal(heat, plot.colormap(stored.masks[0], plot.OVERLAY_CMAP, signed=True))
    assert (tmp_path / "ov" / "ig_signed" / f"{stored.names[0]}.png").is_file()
    fig = jobs.write_figure("s1", table, outdir, ["ig_signed"], ["IG (signed)"], 4, [str(tmp_path / "fig.png")])
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylim() == pytest.approx((-1.0, 1.0))

    # slide map: signed, scaled by the percentile of |values|, coloured diverging
    out = {ext: layout.slide_map("s1", "ig_signed", ext) for ext in ("tiff", "png", "npz")}
    for path in out.values():
        __import__("pathlib").Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_slide_map("s1", slide_path, None, table, outdir, "ig_signed", out["tiff"], out["png"], out["npz"],
                    16.0, 99.0, "inferno", 0.6)  # fmt: skip
    values, map_scale, geometry = read_map_npz(out["npz"])
    assert read_map_signed(out["npz"]) and np.nanmin(values) < 0 < np.nanmax(values)
    assert map_scale == pytest.approx(np.nanpercentile(np.abs(values), 99), rel=1e-6)
    import tifffile

    with tifffile.TiffFile(out["tiff"]) as tif:
        rgba = tif.pages[0].asarray()
        assert json.loads(tif.pages[0].description)["signed"] is True
    covered = rgba[..., 3] > 0
    assert (rgba[covered][:, 2] > rgba[covered][:, 0] + 60).any() and (rgba[covered][:, 0] > rgba[covered][:, 2] + 60).any()
    Image.open(out["png"]).load()
    ov = [str(tmp_path / "overview.png")]
    write_overview("s1", slide_path, None, table, outdir, ["ig_signed"], ["IG (signed)"], True, ov, slide_maps=[out["npz"]])
    write_overview("s1", slide_path, None, table, outdir, ["ig_signed"], ["IG (signed)"], True, ov)  # from the masks
    assert Image.open(ov[0]).size[0] > 0

    # the viewer's layer: signed, in the diverging colour map, both colours present
    from slidegrad.viewer.run import Run

    (tmp_path / "samples.csv").write_text(f"slide,path\ns1,{slide_path}\n")
    run = Run(outdir, samples=str(tmp_path / "samples.csv"))
    layer = run.describe()["slides"][0]["layers"][0]
    assert layer["key"] == "ig_signed" and layer["cmap"] == plot.DIVERGING_CMAP
    dz = run.layer_deepzoom(run.slides["s1"], "saliency", "ig_signed", layer["cmap"])
    tile = np.asarray(dz.get_tile(dz.level_count - 1, (0, 0)).convert("RGBA")).reshape(-1, 4).astype(int)
    shown = tile[tile[:, 3] > 0]
    assert (shown[:, 2] > shown[:, 0] + 60).any() and (shown[:, 0] > shown[:, 2] + 60).any()


def test_unsigned_slide_maps_read_as_unsigned(tmp_path):
    from slidegrad.slide_map import MapGeometry, normalise, read_map_signed, write_map_npz

    geometry = MapGeometry(64, 64, 1.0, 8.0)
    values = np.linspace(-2, 2, 64, dtype=np.float32).reshape(8, 8)
    write_map_npz(tmp_path / "m.npz", values, 2.0, 99.0, geometry)
    assert not read_map_signed(tmp_path / "m.npz")
    np.savez(tmp_path / "old.npz", values=values)  # written before the field existed
    assert not read_map_signed(tmp_path / "old.npz")
    assert normalise(values, 2.0).min() >= 0
    np.testing.assert_allclose(normalise(values, 2.0, signed=True), values / 2.0, rtol=1e-6)


# -- evaluation ----------------------------------------------------------------------------------
def test_deletion_and_pointing_order_a_signed_mask_most_positive_first():
    from slidegrad.evaluate.perturbation import pixel_order, pointing_ratio

    mask = np.array([[-1.0, 0.2], [0.9, 0.0]], np.float32)
    assert pixel_order(mask).tolist() == [2, 1, 3, 0]  # +0.9, +0.2, 0, −1: the strongest negative last
    truth = np.array([[[True, False], [False, False]]])  # only the most negative pixel is "inside"
    assert pointing_ratio(mask[None], truth, top=0.25)[0] == 0.0
    assert pointing_ratio(-mask[None], truth, top=0.25)[0] == pytest.approx(4.0)


def test_sanity_ssim_of_signed_masks_uses_their_span():
    from slidegrad.evaluate.sanity import map_similarity

    rng = np.random.default_rng(0)
    a = np.clip(rng.normal(0, 0.5, (1, 16, 16)), -1, 1)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1)
    raws = [np.ones((16, 16))]
    _, narrow = map_similarity(raws, a, raws, b)
    _, wide = map_similarity(raws, a, raws, b, data_range=2.0)
    assert wide[0] != pytest.approx(narrow[0])  # the span changes SSIM's constants
    _, same = map_similarity(raws, a, raws, a, data_range=2.0)
    assert same[0] == pytest.approx(1.0)


@pytest.mark.workflow
def test_a_signed_entry_plans_its_own_jobs_in_a_dry_run(tmp_path, slide_path, model_dir):
    from .conftest import run_snakemake

    methods_list = ["vanilla", {"name": "vanilla", "signed": True}]
    root = make_project(tmp_path, slide_path, model_dir, [{"slide": "s1", "x": 0, "y": 0}], methods=methods_list)
    result = run_snakemake(root, "-n")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "masks/s1/vanilla_signed/chunk0000.npz" in result.stdout
