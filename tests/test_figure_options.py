"""Figure options (overlay cells, colour map, opacity, dpi, svg, scale bar), picture (overlay and heatmap
PNG) options and the summary's per-class probabilities and Parquet copy, on a results folder built here by hand."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import slidegrad as sg
from slidegrad import jobs, plot
from slidegrad.layout import Layout
from slidegrad.results import read_mask_chunk, write_mask_chunk, write_tile_chunk
from slidegrad.tables import Tile, read_tile_table, write_tile_table

LABELS = ["negative", "positive"]
METHODS = ["vanilla", "gradcam", "occlusion"]
TILES = ["x0_y0", "x64_y0", "x128_y0"]  # fake_results' tiles, in table order


def fake_results(
    root: Path, ihc_tiles: np.ndarray, slide: str = "s1", geometry: dict | None = None, labels: list = LABELS
) -> str:
    """A slide's tile table, tile chunk files and per-method mask files (2 chunks: 2 tiles and 1), as the
    workflow lays them out."""
    layout = Layout(str(root))
    tiles = [Tile(slide, 64 * i, 0, i % 2, labels[i % 2], 0.9 - 0.1 * i) for i in range(3)]
    geometry = geometry or {"tile_px": 64, "tile_um": 32, "mpp": 0.25, "level": 0, "extract_px": 128}
    write_tile_table(layout.tile_table(slide), tiles, 2, geometry)
    rng = np.random.default_rng(0)
    rows = read_tile_table(layout.tile_table(slide))
    for chunk in ("chunk0000", "chunk0001"):
        at = [i for i, row in enumerate(rows) if row["chunk"] == chunk]
        names, xs, ys = [rows[i]["tile"] for i in at], [int(rows[i]["x"]) for i in at], [int(rows[i]["y"]) for i in at]
        write_tile_chunk(layout.tile_chunk(slide, chunk), names, xs, ys, ihc_tiles[at])
        for method in METHODS:
            records = []
            for i in at:
                probabilities = [0.25 + 0.1 * i, 0.75 - 0.1 * i]
                records.append({
                    "class_idx": 1, "class_label": labels[1], "probability": probabilities[1],
                    "probabilities": probabilities, "completeness_error": None, "mask_mean": 0.5, "mask_max": 1.0,
                    "top10_mass": 0.2, "tile_px": 64, "tile_um": 32, "mpp": 0.25, "level": 0, "extract_px": 128,
                })  # fmt: skip
            job = {
                "method": method, "params": {"m": method}, "outcome_labels": labels, "model_sha256": "ab" * 32,
                "engine": "native", "device": "cpu", "gradcam_layer": None, "slidegrad_version": "0.1.0",
                "framework": "torch", "framework_version": "2", "pair_version": "0.2.1",
            }  # fmt: skip
            masks = rng.random((len(at), 64, 64)).astype(np.float32)
            write_mask_chunk(layout.mask_file(slide, chunk, method), names, xs, ys, masks, masks, records, job)
    return layout.tile_table(slide)


def read_masks(root: Path, chunk: str, method: str, slide: str = "s1") -> dict[str, np.ndarray]:
    """A mask file's masks by tile name."""
    result = read_mask_chunk(Layout(str(root)).mask_file(slide, chunk, method))
    return dict(zip(result.names, result.masks))


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
    mask = read_masks(tmp_path / "r", "chunk0000", "gradcam")["x0_y0"]
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


def test_write_pictures_cmap_and_alpha(tmp_path, ihc_tiles):
    root = tmp_path / "r"
    table = fake_results(root, ihc_tiles)
    methods = ("vanilla", "gradcam")
    for name, options in (("default", {}), ("magma", {"cmap": "magma", "alpha": 0.3})):
        jobs.write_pictures(
            table, "chunk0000", str(root), methods, str(tmp_path / name / "o"), str(tmp_path / name / "h"), **options,
        )  # fmt: skip
        for method in methods:
            masks = read_masks(root, "chunk0000", method)
            assert sorted(p.name for p in (tmp_path / name / "o" / method).iterdir()) == ["x0_y0.png", "x64_y0.png"]
            assert sorted(p.name for p in (tmp_path / name / "h" / method).iterdir()) == ["x0_y0.png", "x64_y0.png"]
            for i, tile in enumerate(("x0_y0", "x64_y0")):
                got = jobs.read_png(tmp_path / name / "o" / method / f"{tile}.png")
                np.testing.assert_array_equal(got, plot.overlay(ihc_tiles[i], masks[tile], **options))
                heat = jobs.read_png(tmp_path / name / "h" / method / f"{tile}.png")
                np.testing.assert_array_equal(heat, plot.colormap(masks[tile], options.get("cmap", plot.OVERLAY_CMAP))[..., :3])  # fmt: skip


@pytest.mark.parametrize(
    ("chunk", "limit", "expected"),
    [
        ("chunk0000", 1, ["x0_y0"]),  # the slide's first tile only
        ("chunk0001", 2, []),  # the first 2 tiles lie in chunk0000: empty method folders
        ("chunk0001", 3, ["x128_y0"]),
        ("chunk0001", None, ["x128_y0"]),  # every tile
    ],
)
def test_write_pictures_draws_only_the_slides_first_limit_tiles(tmp_path, ihc_tiles, chunk, limit, expected):
    root = tmp_path / "r"
    table = fake_results(root, ihc_tiles)
    jobs.write_pictures(table, chunk, str(root), ["vanilla", "gradcam"], str(tmp_path / "o"), str(tmp_path / "h"), limit=limit)
    for kind in ("o", "h"):
        assert sorted(p.name for p in (tmp_path / kind).iterdir()) == ["gradcam", "vanilla"]
        for method in ("vanilla", "gradcam"):
            assert sorted(p.stem for p in (tmp_path / kind / method).iterdir()) == expected
    if expected:
        mask = read_masks(root, chunk, "gradcam")[expected[0]]
        overlay = jobs.read_png(tmp_path / "o" / "gradcam" / f"{expected[0]}.png")
        np.testing.assert_array_equal(overlay, plot.overlay(ihc_tiles[TILES.index(expected[0])], mask))


def test_picture_rows_are_the_first_limit_rows_of_a_chunk(tmp_path, ihc_tiles):
    table = fake_results(tmp_path, ihc_tiles)
    assert [r["tile"] for r in jobs.picture_rows(table, 2)] == ["x0_y0", "x64_y0"]
    assert [r["tile"] for r in jobs.picture_rows(table, None)] == ["x0_y0", "x64_y0", "x128_y0"]
    assert [r["tile"] for r in jobs.picture_rows(table, None, "chunk0001")] == ["x128_y0"]
    assert jobs.picture_rows(table, 2, "chunk0001") == []


def test_pictures_of_a_corrupt_or_stale_file_are_one_line(tmp_path, ihc_tiles):
    root = tmp_path / "r"
    table = fake_results(root, ihc_tiles)
    layout = Layout(str(root))
    args = (table, "chunk0000", str(root), ["vanilla", "gradcam"], str(tmp_path / "o"), str(tmp_path / "h"))
    mask = Path(layout.mask_file("s1", "chunk0000", "gradcam"))
    mask.write_bytes(mask.read_bytes()[:300])
    with pytest.raises(sg.InputError, match=r"^mask file '.*/masks/s1/gradcam/chunk0000\.npz' is truncated or corrupt \(") as err:
        jobs.write_pictures(*args)
    assert "\n" not in str(err.value)
    mask.unlink()
    with pytest.raises(sg.InputError, match=r"^mask file '.*/masks/s1/gradcam/chunk0000\.npz': file not found"):
        jobs.write_pictures(*args)
    write_tile_chunk(layout.tile_chunk("s1", "chunk0000"), ["x0_y0", "x9_y9"], [0, 9], [0, 9], ihc_tiles[:2])
    with pytest.raises(sg.InputError, match=r"^tile chunk '.*/tiles/s1/chunk0000\.npz': no tile\(s\) \['x64_y0'\] of the tile table"):
        jobs.write_pictures(*args)


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
    layout = Layout(str(root))  # a tile's mask: its chunk's mask file for the method, shared by the chunk's tiles
    assert [(r["slide"], r["tile"], r["method"], r["mask"]) for r in rows[:6]] == [
        ("s1", tile, method, layout.mask_file("s1", chunk, method))
        for tile, chunk in (("x0_y0", "chunk0000"), ("x64_y0", "chunk0000"), ("x128_y0", "chunk0001"))
        for method in ("vanilla", "gradcam")
    ]
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
    assert "\n" not in message and "masks/s1/vanilla/chunk0000.npz" in message
    assert "masks/s2/vanilla/chunk0000.npz" in message and "'tumour'" in message
    assert not (tmp_path / "summary.csv").exists() and not (tmp_path / "s.parquet").exists()
