"""Tests for slidegrad.qupath: a slide's explained tiles as QuPath GeoJSON (issue 26 item 4).

The tables are built with the summary's own columns (slidegrad.jobs.summary_columns /
summary_frame, from CSV-like text cells) and the evaluation's (evaluation_columns); the file is
read back with json (strict: no NaN) and shapely.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from shapely.geometry import Polygon, box, shape

from slidegrad.errors import InputError
from slidegrad.evaluate.jobs import ID_COLUMNS, evaluation_columns
from slidegrad.jobs import summary_columns, summary_frame
from slidegrad.overview import class_colours
from slidegrad.qupath import EVALUATION_IDS, measurement_names, slide_features, write_geojson

LABELS = ["normal", "tumour"]
METHODS = ["gradcam", "ig"]
EXTRACT = 256
# Two tiles of slide A at half-tile stride (they overlap by 128 px), one on slide B.
TILES = {
    ("A", "x512_y256"): (512, 256, 1, [0.125, 0.875]),
    ("A", "x640_y256"): (640, 256, 0, [0.625, 0.375]),
    ("B", "x0_y0"): (0, 0, 1, [0.25, 0.75]),
}
# (mask_mean, top10_mass) per (tile, method); one top10_mass is empty (a NaN in the frame).
STATS = {
    ("x512_y256", "gradcam"): ("0.312500", "0.437500"),
    ("x512_y256", "ig"): ("0.062500", "0.750000"),
    ("x640_y256", "gradcam"): ("0.187500", ""),
    ("x640_y256", "ig"): ("0.093750", "0.562500"),
    ("x0_y0", "gradcam"): ("0.5", "0.5"),
    ("x0_y0", "ig"): ("0.5", "0.5"),
}


def summary_rows() -> list[dict[str, str]]:
    """Text rows as write_summary makes them: one per (slide, tile, method)."""
    rows = []
    for (slide, tile), (x, y, k, probs) in TILES.items():
        for method in METHODS:
            mean, top10 = STATS[tile, method]
            rows.append({
                "slide": slide, "tile": tile, "x": str(x), "y": str(y), "method": method, "class_idx": str(k),
                "class_label": LABELS[k], "probability": f"{probs[k]:.6f}",
                **{f"p_{label}": f"{p:.6f}" for label, p in zip(LABELS, probs)},
                "mask_mean": mean, "mask_max": "1.000000", "top10_mass": top10, "completeness_error": "",
                "selected_for": "", "selection_score": "", "mask": f"masks/{slide}/{method}/chunk0000.npz",
                "model_sha256": "0" * 64, "method_params": "{}", "tile_px": "64", "tile_um": "128", "mpp": "0.5",
                "level": "0", "extract_px": str(EXTRACT), "engine": "native",
            })  # fmt: skip
    return rows


def summary(rows: list[dict[str, str]] | None = None) -> pd.DataFrame:
    return summary_frame(summary_rows() if rows is None else rows, summary_columns(LABELS))


def evaluation() -> pd.DataFrame:
    """evaluation.csv's columns for deletion and sanity, read as pandas reads the CSV (true/false: bools)."""
    columns = evaluation_columns(["deletion", "sanity"])
    rows = []
    for i, ((slide, tile), (_, _, k, _)) in enumerate(TILES.items()):
        for j, method in enumerate(METHODS):
            rows.append({
                "slide": slide, "tile": tile, "method": method, "class_idx": k, "class_label": LABELS[k],
                "deletion_auc": 0.1 + 0.25 * i + 0.03125 * j, "deletion_chance": 0.5,
                "sanity_spearman": math.nan if (i, j) == (0, 1) else 0.25, "sanity_ssim": 0.375,
                "sanity_passes": j == 0,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def read_back(path) -> dict:
    def no_constants(name):
        raise AssertionError(f"non-strict JSON constant {name} in {path}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)


def by_name(collection: dict) -> dict[str, dict]:
    return {f["properties"]["name"]: f for f in collection["features"]}


def assert_one_line(err: pytest.ExceptionInfo[InputError], *needles: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


# -- the file ---------------------------------------------------------------------------------
def test_one_feature_per_tile_with_its_level0_square(tmp_path):
    path = tmp_path / "qupath" / "A.geojson"
    write_geojson(path, slide_features(summary(), "A"))
    data = read_back(path)
    assert data["type"] == "FeatureCollection"
    features = by_name(data)
    assert sorted(features) == ["x512_y256", "x640_y256"]  # slide A only, one feature per tile (not per method)
    for name, feature in features.items():
        x, y, _, _ = TILES["A", name]
        polygon = shape(feature["geometry"])
        assert isinstance(polygon, Polygon) and polygon.is_valid
        assert polygon.equals(box(x, y, x + EXTRACT, y + EXTRACT)), (name, polygon.wkt)
        assert polygon.area == EXTRACT * EXTRACT
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] == [x, y] and len(ring) == 5  # closed; QuPath's rectangle order
        assert polygon.exterior.is_ccw  # RFC 7946 exterior orientation (by signed area)
    overlap = shape(features["x512_y256"]["geometry"]).intersection(shape(features["x640_y256"]["geometry"]))
    assert overlap.equals(box(640, 256, 768, 512))  # the stride overlap is kept, not clipped


def test_properties_are_qupaths_detection_form():
    collection = slide_features(summary(), "A")
    colours = class_colours(LABELS)
    for feature in collection["features"]:
        props = feature["properties"]
        name = props["name"]
        k = TILES["A", name][2]
        assert feature["type"] == "Feature" and props["objectType"] == "detection"
        assert props["classification"]["name"] == LABELS[k]
        assert props["classification"]["color"] == [round(v * 255) for v in colours[LABELS[k]]]
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in props["classification"]["color"])
        assert isinstance(props["measurements"], dict)  # QuPath >= 0.4: an object name -> number
    classes = [f["properties"]["classification"] for f in collection["features"]]
    colour = {c["name"]: c["color"] for c in classes}
    assert colour["normal"] != colour["tumour"]


def test_measurements_are_the_summary_values(tmp_path):
    path = tmp_path / "A.geojson"
    frame = summary()
    write_geojson(path, slide_features(frame, "A"))
    features = by_name(read_back(path))
    for name in ("x512_y256", "x640_y256"):
        rows = frame[(frame["slide"] == "A") & (frame["tile"] == name)]
        expected = {f"p_{label}": float(rows[f"p_{label}"].iloc[0]) for label in LABELS}
        for _, row in rows.iterrows():
            expected[f"{row['method']}: mask mean"] = float(row["mask_mean"])
            if not math.isnan(row["top10_mass"]):
                expected[f"{row['method']}: top-10% mass"] = float(row["top10_mass"])
        assert features[name]["properties"]["measurements"] == expected
    measured = features["x640_y256"]["properties"]["measurements"]
    assert measured["p_normal"] == 0.625 and measured["ig: top-10% mass"] == 0.5625
    assert "gradcam: top-10% mass" not in measured  # the empty cell is left out, not NaN or null
    assert set(measured) <= set(measurement_names(LABELS, METHODS))


def test_evaluation_metrics_become_method_measurements(tmp_path):
    assert EVALUATION_IDS == ID_COLUMNS
    path = tmp_path / "A.geojson"
    table = evaluation()
    write_geojson(path, slide_features(summary(), "A", table))
    features = by_name(read_back(path))
    metrics = [c for c in table.columns if c not in ID_COLUMNS]
    for _, row in table[table["slide"] == "A"].iterrows():
        measured = features[row["tile"]]["properties"]["measurements"]
        for metric in metrics:
            key = f"{row['method']}: {metric}"
            value = row[metric]
            if isinstance(value, float) and math.isnan(value):
                assert key not in measured
            else:
                assert measured[key] == float(value), key
    first = features["x512_y256"]["properties"]["measurements"]
    assert first["gradcam: deletion_auc"] == 0.1 and first["ig: deletion_auc"] == 0.13125
    assert first["gradcam: sanity_passes"] == 1 and first["ig: sanity_passes"] == 0
    assert "ig: sanity_spearman" not in first and first["gradcam: sanity_spearman"] == 0.25
    assert set(first) <= set(measurement_names(LABELS, METHODS, metrics))
    assert "gradcam: slide" not in first and "gradcam: class_idx" not in first  # id columns are no metrics


def test_evaluation_read_from_csv_text(tmp_path):
    csv = tmp_path / "evaluation.csv"
    evaluation().to_csv(csv, index=False)
    text = csv.read_text().replace("True", "true").replace("False", "false")  # as format_cell writes them
    csv.write_text(text)
    collection = slide_features(summary(), "A", pd.read_csv(csv, dtype=str, keep_default_na=False))
    measured = by_name(collection)["x640_y256"]["properties"]["measurements"]
    assert measured["gradcam: sanity_passes"] == 1.0 and measured["ig: deletion_auc"] == 0.38125


def test_no_nan_in_the_file(tmp_path):
    rows = summary_rows()
    rows[0]["p_normal"] = rows[1]["p_normal"] = "nan"
    rows[2]["mask_mean"] = "inf"
    path = tmp_path / "A.geojson"
    write_geojson(path, slide_features(summary(rows), "A"))
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    features = by_name(read_back(path))
    assert "p_normal" not in features["x512_y256"]["properties"]["measurements"]
    assert "gradcam: mask mean" not in features["x640_y256"]["properties"]["measurements"]


def test_write_refuses_nan_and_leaves_no_file(tmp_path):
    collection = slide_features(summary(), "A")
    collection["features"][0]["properties"]["measurements"]["bad"] = math.nan
    path = tmp_path / "A.geojson"
    with pytest.raises(InputError) as err:
        write_geojson(path, collection)
    assert_one_line(err, "A.geojson", "strict JSON")
    assert list(tmp_path.iterdir()) == []


def test_reruns_are_byte_identical_and_row_order_free(tmp_path):
    first, second, shuffled = tmp_path / "1.geojson", tmp_path / "2.geojson", tmp_path / "3.geojson"
    write_geojson(first, slide_features(summary(), "A", evaluation()))
    write_geojson(second, slide_features(summary(), "A", evaluation()))
    write_geojson(shuffled, slide_features(summary(summary_rows()[::-1]), "A", evaluation().iloc[::-1]))
    assert first.read_bytes() == second.read_bytes() == shuffled.read_bytes()
    names = [f["properties"]["name"] for f in read_back(first)["features"]]
    assert names == ["x512_y256", "x640_y256"]


def test_parquet_round_trip_gives_the_same_file(tmp_path):
    from slidegrad.jobs import write_parquet

    write_parquet(tmp_path / "summary.parquet", summary())
    a, b = tmp_path / "csv.geojson", tmp_path / "parquet.geojson"
    write_geojson(a, slide_features(summary(), "B"))
    write_geojson(b, slide_features(pd.read_parquet(tmp_path / "summary.parquet"), "B"))
    assert a.read_bytes() == b.read_bytes()
    assert shape(read_back(b)["features"][0]["geometry"]).equals(box(0, 0, EXTRACT, EXTRACT))


# -- bad input ---------------------------------------------------------------------------------
def test_unknown_slide():
    with pytest.raises(InputError) as err:
        slide_features(summary(), "C")
    assert_one_line(err, "'C'", "not in the summary", "A, B")


def test_missing_extract_px_column():
    with pytest.raises(InputError) as err:
        slide_features(summary().drop(columns=["extract_px"]), "A")
    assert_one_line(err, "summary", "extract_px")


def test_empty_extract_px_cell():
    rows = summary_rows()
    rows[3]["extract_px"] = ""
    with pytest.raises(InputError) as err:
        slide_features(summary(rows), "A")
    assert_one_line(err, "x640_y256", "'ig'", "extract_px")


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("x", "513", "on x (method 'gradcam': 512, method 'ig': 513)"),
        ("y", "0", "on y ("),
        ("extract_px", "512", "on extract_px ("),
        ("p_tumour", "0.900000", "on p_tumour ("),
        ("class_label", "normal", "on class_label ("),
    ],
)
def test_a_tiles_rows_must_agree(column, value, needle):
    rows = summary_rows()
    rows[1][column] = value  # tile x512_y256, method ig
    with pytest.raises(InputError) as err:
        slide_features(summary(rows), "A")
    assert_one_line(err, "x512_y256", "disagree", needle, "'gradcam'", "'ig'")


def test_probabilities_agree_within_rounding():
    rows = summary_rows()
    rows[1]["p_tumour"] = "0.875001"  # one unit in the CSV's last decimal
    features = by_name(slide_features(summary(rows), "A"))
    assert features["x512_y256"]["properties"]["measurements"]["p_tumour"] == 0.875  # the first method's row


def test_duplicate_rows_and_evaluation_mismatches():
    rows = summary_rows()
    with pytest.raises(InputError) as err:
        slide_features(summary([*rows, rows[0]]), "A")
    assert_one_line(err, "x512_y256", "'gradcam'", "two rows")

    table = evaluation()
    table.loc[0, "tile"] = "x9_y9"
    with pytest.raises(InputError) as err:
        slide_features(summary(), "A", table)
    assert_one_line(err, "evaluation", "x9_y9", "no such tile")

    table = evaluation().astype({"deletion_auc": object})
    table.loc[0, "deletion_auc"] = "abc"
    with pytest.raises(InputError) as err:
        slide_features(summary(), "A", table)
    assert_one_line(err, "evaluation", "deletion_auc", "'abc'")

    with pytest.raises(InputError) as err:
        slide_features(summary(), "A", evaluation().drop(columns=["method"]))
    assert_one_line(err, "evaluation", "method")
