"""The per-slide overview figure: tile boxes, saliency mosaic, scale bar, class colours, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from slidegrad import overview  # noqa: E402
from slidegrad.errors import InputError  # noqa: E402
from slidegrad.layout import Layout  # noqa: E402
from slidegrad.results import write_mask_chunk  # noqa: E402
from slidegrad.overview import (  # noqa: E402
    FILL_ALPHA,
    box_fill,
    class_colours,
    overview_figure,
    resize_mask,
    saliency_mosaic,
    tile_boxes,
    write_overview,
)
from slidegrad.tables import Tile, read_tile_table, write_tile_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LABELS = ["negative", "positive", "other"]
# level-0 (x, y); extract_px 128 (64 µm at 0.5 µm/px); the last two overlap the first (stride_div 2)
COORDS = [(0, 0), (512, 256), (896, 896), (64, 0), (64, 64)]
CLASSES = ["negative", "positive", "other", "positive", "negative"]
PROBS = [0.9, 0.55, 0.4, 1.0, 0.7]
METHODS = ["vanilla", "gradcam"]


def _row(x, y, extract_px=128):
    return {"slide": "s1", "tile": f"x{x}_y{y}", "x": str(x), "y": str(y), "chunk": "chunk0000",
            "tile_px": "64", "tile_um": "64", "mpp": "0.5", "level": "1", "extract_px": str(extract_px)}  # fmt: skip


@pytest.fixture()
def project(tmp_path, slide_path):
    """A results folder with a grid-like tile table of the 1024×1024 test slide (2 chunks of 3 and 2 tiles)
    and every method's mask files, as the workflow lays them out."""
    outdir = tmp_path / "results"
    geometry = {"tile_px": 64, "tile_um": 64, "mpp": 0.5, "level": 1, "extract_px": 128}
    table = outdir / "tiles" / "s1.csv"
    table.parent.mkdir(parents=True)
    write_tile_table(table, [Tile("s1", x, y) for x, y in COORDS], 3, geometry)
    rng = np.random.default_rng(0)
    masks = {}
    rows = read_tile_table(table)
    for method in METHODS:
        for row in rows:
            masks[method, row["tile"]] = rng.random((64, 64)).astype(np.float32)
        for chunk in ("chunk0000", "chunk0001"):
            these = [(row, label, p) for row, label, p in zip(rows, CLASSES, PROBS) if row["chunk"] == chunk]
            stack = np.stack([masks[method, row["tile"]] for row, _, _ in these])
            records = [{"class_label": label, "probability": p, "probabilities": [p, 1 - p, 0.0]} for _, label, p in these]
            write_mask_chunk(
                Layout(str(outdir)).mask_file("s1", chunk, method), [row["tile"] for row, _, _ in these],
                [int(row["x"]) for row, _, _ in these], [int(row["y"]) for row, _, _ in these], stack, stack,
                records, {"method": method, "outcome_labels": LABELS},
            )  # fmt: skip
    return {"outdir": outdir, "table": table, "slide": slide_path, "masks": masks}


def _write(project, tmp_path, **kwargs):
    args = dict(
        slide="s1", slide_path=str(project["slide"]), mpp=None, table_path=str(project["table"]),
        outdir=str(project["outdir"]), method_ids=METHODS, method_titles=["Vanilla", "Grad-CAM"], mosaic=True,
        out_paths=[str(tmp_path / "fig" / "s1.pdf"), str(tmp_path / "fig" / "s1.png")], dpi=50, thumbnail_px=256,
    )  # fmt: skip
    args.update(kwargs)
    write_overview(**args)
    return args


# -- pure functions ----------------------------------------------------------------------
def test_tile_boxes_are_the_tiles_level0_squares_scaled():
    rows = [_row(0, 0), _row(512, 256), _row(100, 40, extract_px=200)]
    assert tile_boxes(rows, 0.25) == [(0, 0, 32, 32), (128, 64, 160, 96), (25, 10, 75, 60)]
    assert tile_boxes(rows[:1], (0.5, 0.25)) == [(0, 0, 64, 32)]
    no_size = [{**_row(8, 8), "extract_px": ""}]
    assert tile_boxes(no_size, 0.5, extract_px=16) == [(4, 4, 12, 12)]
    with pytest.raises(InputError, match="extract_px"):
        tile_boxes(no_size, 0.5)


def test_saliency_mosaic_is_each_mask_resized_at_its_box_nan_elsewhere_mean_where_overlapping():
    rng = np.random.default_rng(1)
    masks = [rng.random((16, 16)).astype(np.float32) for _ in range(4)]
    boxes = [(2, 3, 10, 11), (20, 4, 28.4, 12), (30, 20, 46, 36), (6, 7, 14, 15)]  # 3rd crosses the border
    mosaic = saliency_mosaic((30, 40), boxes, iter(masks))
    assert mosaic.shape == (30, 40) and mosaic.dtype == np.float32
    np.testing.assert_allclose(mosaic[4:12, 20:28], resize_mask(masks[1], (8, 8)), rtol=1e-6)
    np.testing.assert_allclose(mosaic[20:30, 30:40], resize_mask(masks[2], (16, 16))[:10, :10], rtol=1e-6)
    first, last = resize_mask(masks[0], (8, 8)), resize_mask(masks[3], (8, 8))
    np.testing.assert_allclose(mosaic[3:7, 2:6], first[:4, :4], rtol=1e-6)  # first box alone
    np.testing.assert_allclose(mosaic[7:11, 6:10], (first[4:, 4:] + last[:4, :4]) / 2, rtol=1e-6)  # overlap: mean
    covered = np.zeros((30, 40), bool)
    for r0, r1, c0, c1 in [(3, 11, 2, 10), (4, 12, 20, 28), (20, 30, 30, 40), (7, 15, 6, 14)]:
        covered[r0:r1, c0:c1] = True
    assert np.isnan(mosaic[~covered]).all() and np.isfinite(mosaic[covered]).all()
    # a constant mask stays constant however it is resized
    assert np.allclose(saliency_mosaic((8, 8), [(0, 0, 3, 3)], [np.full((64, 64), 0.25)])[:3, :3], 0.25)
    with pytest.raises(InputError, match="2 boxes but 1 masks"):
        saliency_mosaic((8, 8), boxes[:2], masks[:1])


def test_box_fill_colours_boxes_by_class_with_probability_alpha_later_box_wins():
    colours = class_colours(LABELS)
    assert colours["negative"] != colours["positive"] != colours["other"]
    fill = box_fill((20, 20), [(0, 0, 10, 10), (5, 5, 15, 15)], [colours["negative"], colours["positive"]], [0.1, 0.5])
    np.testing.assert_allclose(fill[2, 2], [*colours["negative"], 0.1])
    np.testing.assert_allclose(fill[7, 7], [*colours["positive"], 0.5])  # overlap: the later box
    assert (fill[16:, :, 3] == 0).all() and (fill[:, 16:, 3] == 0).all()


# -- the figure --------------------------------------------------------------------------
def test_overview_figure_draws_boxes_scale_bar_and_class_colours():
    thumb = np.full((100, 150, 3), 230, np.uint8)
    tissue = np.zeros((50, 75), bool)
    tissue[10:40, 10:60] = True
    boxes = [(10.0, 20.0, 30.0, 40.0), (50.0, 20.0, 70.0, 40.0), (60.0, 30.0, 80.0, 50.0)]
    classes, probs = ["positive", "negative", "positive"], [0.8, 0.6, 1.0]
    mosaic = saliency_mosaic((100, 150), boxes, [np.ones((8, 8))] * 3)
    fig = overview_figure(thumb, tissue, boxes, classes, probs, LABELS, um_per_px=8.0, title="slide s1",
                          mosaics={"Vanilla": mosaic})  # fmt: skip
    try:
        ax, mosaic_ax = fig.axes[0], fig.axes[1]
        drawn = [p for p in ax.patches if p.get_gid() == "tile-box"]
        assert [(p.get_x(), p.get_y(), p.get_x() + p.get_width(), p.get_y() + p.get_height()) for p in drawn] == boxes
        colours = class_colours(LABELS)
        for patch, label in zip(drawn, classes):
            np.testing.assert_allclose(patch.get_edgecolor(), [*colours[label], 1.0])
        fill = ax.images[1].get_array()  # the boxes' fill over the thumbnail: class colour, FILL_ALPHA × p
        np.testing.assert_allclose(fill[25, 15], [*colours["positive"], FILL_ALPHA * 0.8], rtol=1e-6)
        np.testing.assert_allclose(fill[25, 55], [*colours["negative"], FILL_ALPHA * 0.6], rtol=1e-6)
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == ["negative", "positive", "tissue"]  # classes shown, in the model's order
        assert ax.get_xlim() == (0, 150) and ax.get_ylim() == (100, 0)
        for axes in (ax, mosaic_ax):  # 150 px × 8 µm = 1200 µm → a 200 µm bar of 25 px
            bars = [
                line for line in axes.lines if len(line.get_xdata()) == 2 and line.get_ydata()[0] == line.get_ydata()[1]
            ]
            assert len(bars) == 1 and np.diff(bars[0].get_xdata())[0] == pytest.approx(25)
            assert "200 µm" in [t.get_text() for t in axes.texts]
        tissue_lines = [line for line in ax.lines if len(line.get_xdata()) > 2]
        assert len(tissue_lines) == 1  # the tissue outline: a rectangle 20..120 × 20..80 thumbnail px
        xs, ys = tissue_lines[0].get_xdata(), tissue_lines[0].get_ydata()
        assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((20, 120, 20, 80), abs=1.01)
        np.testing.assert_array_equal(np.ma.filled(mosaic_ax.images[1].get_array(), np.nan), mosaic)
        assert mosaic_ax.get_title() == "Vanilla" and fig._suptitle.get_text() == "slide s1"
    finally:
        plt.close(fig)


# -- the job -----------------------------------------------------------------------------
def test_write_overview_draws_the_table_tiles_record_classes_and_mosaics(project, tmp_path, monkeypatch):
    seen = {}

    def spy(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        seen["fig"] = fig = real(*args, **kwargs)
        return fig

    real = overview.overview_figure
    monkeypatch.setattr(overview, "overview_figure", spy)
    args = _write(project, tmp_path)
    thumb, tissue, boxes, classes, probs, labels, um_per_px = seen["args"]
    assert thumb.shape == (256, 256, 3) and tissue.shape == (256, 256)
    assert boxes == [(x / 4, y / 4, (x + 128) / 4, (y + 128) / 4) for x, y in COORDS]
    assert classes == CLASSES and probs == PROBS and labels == LABELS
    assert um_per_px == pytest.approx(0.5 * 1024 / 256)
    mosaics = seen["kwargs"]["mosaics"]
    assert list(mosaics) == ["Vanilla", "Grad-CAM"]
    rows = read_tile_table(project["table"])
    expected = saliency_mosaic((256, 256), boxes, [project["masks"]["gradcam", r["tile"]] for r in rows])
    np.testing.assert_array_equal(mosaics["Grad-CAM"], expected)
    np.testing.assert_allclose(
        mosaics["Grad-CAM"][224:256, 224:256], resize_mask(project["masks"]["gradcam", "x896_y896"], (32, 32))
    )
    assert "s1" in seen["kwargs"]["title"] and "5 tiles" in seen["kwargs"]["title"]
    assert "64 px / 64 µm" in seen["kwargs"]["title"] and "0.5 µm/px" in seen["kwargs"]["title"]
    edges = [p.get_edgecolor()[:3] for p in seen["fig"].axes[0].patches if p.get_gid() == "tile-box"]
    assert edges == [class_colours(LABELS)[c] for c in CLASSES]
    pdf, png = (Path(p) for p in args["out_paths"])
    assert pdf.read_bytes()[:5] == b"%PDF-" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    width, height = Image.open(png).size
    assert width > height > 100  # three panels side by side
    first = png.read_bytes()
    _write(project, tmp_path, mosaic=False)  # no mosaic: one panel
    assert Image.open(png).size[0] < width
    _write(project, tmp_path)
    assert png.read_bytes() == first  # reruns are byte-identical


@pytest.mark.parametrize(
    "broken, expected",
    [
        ("mask", "mask file '{path}': file not found"),  # another method's: checked before the slide is read
        ("records", "mask file '{path}': file not found"),  # the first method's: its records give the classes
        ("bad_records", "mask file '{path}' is truncated or corrupt ("),
        ("corrupt_mask", "mask file '{path}' is truncated or corrupt ("),
        ("other_tiles", "mask file '{path}': no tile(s) ['x896_y896'] of slide s1's tile table"),
        ("slide", "slide '{path}': file not found"),
        ("table", "tile table '{path}': file not found"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(project, tmp_path, broken, expected):
    layout = Layout(str(project["outdir"]))
    kwargs = {}
    if broken == "mask":
        path = Path(layout.mask_file("s1", "chunk0000", "gradcam"))
        path.unlink()
    elif broken == "records":
        path = Path(layout.mask_file("s1", "chunk0000", "vanilla"))
        path.unlink()
    elif broken == "bad_records":
        path = Path(layout.mask_file("s1", "chunk0000", "vanilla"))
        with np.load(path) as npz:
            arrays = dict(npz)
        np.savez(path, **{**arrays, "records": np.array("{not json\n{}\n{}")})
    elif broken == "corrupt_mask":
        path = Path(layout.mask_file("s1", "chunk0001", "gradcam"))
        path.write_bytes(path.read_bytes()[:200])
    elif broken == "other_tiles":  # a mask file of other tiles than the table's (a stale one)
        path = Path(layout.mask_file("s1", "chunk0000", "vanilla"))
        zeros = np.zeros((2, 64, 64), np.float32)
        records = [{"class_label": "negative", "probability": 0.5, "probabilities": [0.5, 0.5, 0.0]}] * 2
        write_mask_chunk(path, ["x0_y0", "x512_y256"], [0, 512], [0, 256], zeros, zeros, records,
                         {"method": "vanilla", "outcome_labels": LABELS})  # fmt: skip
    elif broken == "slide":
        path = tmp_path / "missing.tiff"
        kwargs["slide_path"] = str(path)
    else:
        path = tmp_path / "missing.csv"
        kwargs["table_path"] = str(path)
    with pytest.raises(InputError) as err:
        _write(project, tmp_path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and message.startswith(expected.format(path=path)), message
    assert not (tmp_path / "fig").exists()


def test_script_runs_the_job_with_the_rule_params(project, tmp_path):
    log, out = tmp_path / "overview.log", tmp_path / "fig" / "s1.png"
    fake = f"""
import runpy, types
class Out(list):
    pass
class Input(types.SimpleNamespace):  # Snakemake's named input: attributes and .get (no slide maps here)
    def get(self, name, default=None):
        return getattr(self, name, default)
snakemake = types.SimpleNamespace(
    log=[{str(log)!r}], scriptdir={str(REPO / "scripts")!r}, wildcards=types.SimpleNamespace(slide="s1"),
    input=Input(table={str(project["table"])!r}), output=Out([{str(out)!r}]),
    config={{"outdir": {str(project["outdir"])!r}}},
    params=types.SimpleNamespace(slide_path={str(project["slide"])!r}, mpp=0.5, method_ids={METHODS!r},
                                 method_titles=["Vanilla", "Grad-CAM"], mosaic=False, cmap="viridis", dpi=40),
)
runpy.run_path({str(REPO / "scripts" / "overview.py")!r}, init_globals={{"snakemake": snakemake}}, run_name="__main__")
"""
    done = subprocess.run([sys.executable, "-c", fake], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + log.read_text()
    assert out.read_bytes()[:4] == b"\x89PNG" and "overview of slide s1: 5 tiles" in log.read_text()
    Path(Layout(str(project["outdir"])).mask_file("s1", "chunk0000", "vanilla")).unlink()
    done = subprocess.run([sys.executable, "-c", fake], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    errors = [line for line in log.read_text().splitlines() if line.startswith("slidegrad: error:")]
    assert len(errors) == 1 and "masks/s1/vanilla/chunk0000.npz': file not found" in errors[0]
