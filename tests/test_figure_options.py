"""Figure options (overlay cells, colour map, opacity, dpi, svg, scale bar), overlay PNG options and the
summary's per-class probabilities and Parquet copy, on a results folder built here by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import slidegrad as sg
from slidegrad import jobs, plot
from slidegrad.layout import Layout
from slidegrad.tables import Tile, read_tile_table, write_tile_table

LABELS = ["negative", "positive"]
METHODS = ["vanilla", "gradcam", "occlusion"]


def fake_results(
    root: Path, ihc_tiles: np.ndarray, slide: str = "s1", geometry: dict | None = None, labels: list = LABELS
) -> str:
    """A slide's tile table, tile PNGs and per-method masks + sidecars, as the workflow lays them out."""
    layout = Layout(str(root))
    tiles = [Tile(slide, 64 * i, 0, i % 2, labels[i % 2], 0.9 - 0.1 * i) for i in range(3)]
    geometry = geometry or {"tile_px": 64, "tile_um": 32, "mpp": 0.25, "level": 0, "extract_px": 128}
    write_tile_table(layout.tile_table(slide), tiles, 2, geometry)
    Path(layout.tile_dir(slide)).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, row in enumerate(read_tile_table(layout.tile_table(slide))):
        jobs.write_png(Path(layout.tile_dir(slide)) / f"{row['tile']}.png", ihc_tiles[i])
        probabilities = [0.25 + 0.1 * i, 0.75 - 0.1 * i]
        for method in METHODS:
            folder = Path(layout.mask_dir(slide, row["chunk"], method))
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{row['tile']}.npy", rng.random((64, 64)).astype(np.float32))
            meta = {
                "method": method, "params": {"m": method}, "class_idx": 1, "class_label": labels[1],
                "probability": probabilities[1], "probabilities": probabilities, "outcome_labels": labels,
                "model_sha256": "ab" * 32, "tile_px": 64, "tile_um": 32, "mpp": 0.25, "level": 0, "extract_px": 128,
                "engine": "native", "device": "cpu", "gradcam_layer": None, "slidegrad_version": "0.1.0",
                "framework": "torch", "framework_version": "2", "pair_version": "0.2.1",
            }  # fmt: skip
            (folder / f"{row['tile']}.json").write_text(json.dumps(meta))
    return layout.tile_table(slide)


def figure(root: Path, table: str, paths: list[Path], **options):
    return jobs.write_figure(
        "s1", table, str(root), ["gradcam", "vanilla"], ["Grad-CAM", "Vanilla"], 2, [str(p) for p in paths], **options
    )


def test_write_figure_options_files_and_reruns(tmp_path, ihc_tiles):
    table = fake_results(tmp_path / "r", ihc_tiles)
    out = tmp_path / "fig"
    fig = figure(tmp_path / "r", table, [out / "a.pdf", out / "a.png", out / "a.svg"], overlay=True, cmap="magma", alpha=0.5, dpi=72)  # fmt: skip
    # columns: the tile, then the methods asked for, in that order; 2 rows; one colour bar
    assert [ax.get_title() for ax in fig.axes[:3]] == ["tile", "Grad-CAM", "Vanilla"] and len(fig.axes) == 7
    assert fig.axes[0].get_ylabel().splitlines() == ["x0_y0", "positive", "p = 0.750"]
    # overlay cells are plot.overlay of the tile and that method's mask
    mask = np.load(Path(Layout(str(tmp_path / "r")).mask_dir("s1", "chunk0000", "gradcam")) / "x0_y0.npy")
    np.testing.assert_array_equal(np.asarray(fig.axes[1].get_images()[0].get_array()), plot.overlay(ihc_tiles[0], mask, "magma", 0.5))  # fmt: skip
    # scale bar: tile_um 32 / tile_px 64 = 0.5 µm/px → 32 µm wide tiles, a 5 µm bar in the first tile panel
    assert [t.get_text() for t in fig.axes[0].texts] == ["5 µm"] and not fig.axes[3].texts
    # dpi: the png is 72 dpi
    with Image.open(out / "a.png") as png:
        assert round(png.info["dpi"][0]) == 72
        assert np.allclose(png.size, fig.get_size_inches() * 72, atol=1)
    svg = (out / "a.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and "<dc:date>" not in svg
    # a rerun writes the same bytes (svg ids and pdf/png metadata carry no date or random salt)
    figure(tmp_path / "r", table, [out / "b.pdf", out / "b.png", out / "b.svg"], overlay=True, cmap="magma", alpha=0.5, dpi=72)  # fmt: skip
    for ext in ("pdf", "png", "svg"):
        assert (out / f"a.{ext}").read_bytes() == (out / f"b.{ext}").read_bytes(), ext
    # defaults: heatmap cells in the library's colour map
    fig = figure(tmp_path / "r", table, [out / "c.png"])
    assert fig.axes[1].get_images()[0].get_cmap().name == plot.OVERLAY_CMAP
    with pytest.raises(sg.InputError, match="colour map 'nope'"):
        figure(tmp_path / "r", table, [out / "d.png"], cmap="nope")
    with pytest.raises(sg.InputError, match=r"expected a \.pdf, \.png or \.svg"):
        figure(tmp_path / "r", table, [out / "d.jpg"])


@pytest.mark.parametrize(
    ("geometry", "um_per_px"),
    [
        ({"tile_px": 64, "tile_um": 32, "mpp": 0.25, "level": 0, "extract_px": 128}, 0.5),
        ({"tile_px": 64, "tile_um": "20x", "mpp": 0.5, "level": 0, "extract_px": 256}, 2.0),  # magnification
        ({"tile_px": 64, "tile_um": "20x", "mpp": None, "level": None, "extract_px": None}, None),  # tfrecords
    ],
)
def test_tile_um_per_px_from_the_tile_table(tmp_path, ihc_tiles, geometry, um_per_px):
    table = fake_results(tmp_path, ihc_tiles, geometry=geometry)
    assert jobs.tile_um_per_px(read_tile_table(table)[0]) == um_per_px
    fig = figure(tmp_path, table, [])
    assert bool(fig.axes[0].texts) == (um_per_px is not None)


def test_write_overlays_cmap_and_alpha(tmp_path, ihc_tiles):
    root = tmp_path / "r"
    table = fake_results(root, ihc_tiles)
    layout = Layout(str(root))
    mask_dirs = {m: layout.mask_dir("s1", "chunk0000", m) for m in ("vanilla", "gradcam")}
    for name, options in (("default", {}), ("magma", {"cmap": "magma", "alpha": 0.3})):
        jobs.write_overlays(
            table, "chunk0000", layout.tile_dir("s1"), mask_dirs, str(tmp_path / name / "o"), str(tmp_path / name / "h"),
            **options,
        )  # fmt: skip
        for method, folder in mask_dirs.items():
            for i, tile in enumerate(("x0_y0", "x64_y0")):
                mask = np.load(Path(folder) / f"{tile}.npy")
                got = jobs.read_png(tmp_path / name / "o" / method / f"{tile}.png")
                np.testing.assert_array_equal(got, plot.overlay(ihc_tiles[i], mask, **options))
                heat = jobs.read_png(tmp_path / name / "h" / method / f"{tile}.png")
                np.testing.assert_array_equal(heat, plot.colormap(mask, options.get("cmap", plot.OVERLAY_CMAP))[..., :3])


def test_summary_class_probabilities_and_parquet(tmp_path, ihc_tiles):
    root = tmp_path / "r"
    tables = [fake_results(root, ihc_tiles, "s1"), fake_results(root, ihc_tiles, "s2")]
    out = tmp_path / "a"
    jobs.write_summary(tables, str(root), ["vanilla", "gradcam"], str(out / "summary.csv"), str(out / "summary.parquet"))
    with open(out / "summary.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows, columns = list(reader), reader.fieldnames
    at = columns.index("probability")
    assert columns[at + 1 : at + 3] == ["p_negative", "p_positive"]
    assert [c for c in columns if not c.startswith("p_")] == jobs.SUMMARY_COLUMNS
    assert len(rows) == 2 * 3 * 2
    assert [(r["p_negative"], r["p_positive"], r["probability"]) for r in rows[:3:2]] == [
        ("0.250000", "0.750000", "0.750000"), ("0.350000", "0.650000", "0.650000")
    ]  # fmt: skip
    # Parquet: the same table, numbers as numbers
    frame = pd.read_parquet(out / "summary.parquet")
    assert list(frame.columns) == columns and len(frame) == len(rows)
    assert frame["x"].dtype == "Int64" and frame["p_positive"].dtype == "float64" and frame["mpp"].dtype == "float64"
    assert frame["slide"].tolist() == [r["slide"] for r in rows]
    text = pd.read_csv(out / "summary.csv", keep_default_na=False, dtype=str)
    for column in columns:
        parsed = frame[column].map(lambda v: "" if pd.isna(v) else v)
        if column in jobs.SUMMARY_FLOATS or column.startswith("p_"):
            expected = text[column].map(lambda v: float(v) if v else "")
        elif column in jobs.SUMMARY_INTS:
            expected = text[column].map(lambda v: int(v) if v else "")
        else:
            expected = text[column]
        assert parsed.tolist() == expected.tolist(), column
    assert frame["selection_score"].isna().sum() == 0 and frame["level"].tolist() == [0] * len(rows)
    # a rerun: the same bytes, CSV and Parquet
    jobs.write_summary(tables, str(root), ["vanilla", "gradcam"], str(tmp_path / "b.csv"), str(tmp_path / "b.parquet"))
    assert (tmp_path / "b.csv").read_bytes() == (out / "summary.csv").read_bytes()
    assert (tmp_path / "b.parquet").read_bytes() == (out / "summary.parquet").read_bytes()
    # no parquet_path: CSV only
    jobs.write_summary(tables[:1], str(root), ["vanilla"], str(tmp_path / "c" / "summary.csv"))
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["summary.csv"]


def test_summary_labels_must_agree(tmp_path, ihc_tiles):
    root = tmp_path / "r"
    tables = [fake_results(root, ihc_tiles, "s1"), fake_results(root, ihc_tiles, "s2", labels=["benign", "tumour"])]
    with pytest.raises(sg.InputError, match="disagree on the class labels") as err:
        jobs.write_summary(tables, str(root), ["vanilla"], str(tmp_path / "summary.csv"), str(tmp_path / "s.parquet"))
    message = str(err.value)
    assert "\n" not in message and "masks/s1/chunk0000/vanilla/x0_y0.json" in message
    assert "masks/s2/chunk0000/vanilla/x0_y0.json" in message and "'tumour'" in message
    assert not (tmp_path / "summary.csv").exists() and not (tmp_path / "s.parquet").exists()
