"""The Snakemake workflow: config validation, DAG shape, an end-to-end run and bad input."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

import slidegrad as sg
from slidegrad.config import parse_methods
from slidegrad.jobs import select_tiles
from slidegrad.planning import build_plan
from slidegrad.tables import read_tile_table

from slidegrad.slide import write_pyramidal_tiff

from .conftest import REPO, result_files, run_snakemake, write_model_dir, write_test_slide

APERIO = "Aperio Image Library v12.0.0\n2048x1536 [0,0 2048x1536] (256x256) JPEG/RGB Q=90|AppMag = 20|MPP = 0.5"

FAST_METHODS = [
    "vanilla",
    {"name": "vanilla", "smooth": True, "nsamples": 4},
    {"name": "integrated_gradients", "x_steps": 8},
    {"name": "guided_integrated_gradients", "x_steps": 8},
    {"name": "blur_integrated_gradients", "steps": 8},
    {"name": "xrai", "steps": 4},
    {"name": "gradcam"},
]


def make_project(root: Path, slide: Path, model_path: Path, tiles: list[dict], **overrides) -> Path:
    """A work directory with config.yaml, a one-slide sample sheet and a tile table."""
    root.mkdir(parents=True, exist_ok=True)
    samples = overrides.pop("samples_rows", [{"slide": "s1", "path": str(slide), "mpp": ""}])
    _write_csv(root / "samples.csv", samples)
    _write_csv(root / "tiles.csv", tiles)
    config = {
        "samples": "samples.csv",
        "tiles": "tiles.csv",
        "model": {"path": str(model_path)},
        "methods": FAST_METHODS,
        "tiles_per_job": 2,
        "threads": 1,
    }
    config["tiles"] = overrides.pop("tile_selection", config["tiles"])
    config.update(overrides)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _load_config(root: Path) -> dict:
    return yaml.safe_load((root / "config.yaml").read_text())


# -- config and plan (no snakemake) ------------------------------------------------
def test_plan_expands_slides_tiles_methods_and_chunks(tmp_path, slide_path, model_dir, monkeypatch):
    tiles = [{"slide": "s1", "x": x, "y": 0} for x in (0, 128, 256, 384, 512)]
    root = make_project(tmp_path, slide_path, model_dir, tiles + [tiles[0]])
    monkeypatch.chdir(root)
    plan = build_plan(_load_config(root))
    assert plan.locations.by_slide["s1"] == [(0, 0), (128, 0), (256, 0), (384, 0), (512, 0)]
    assert plan.static_chunks("s1") == ["chunk0000", "chunk0001", "chunk0002"]
    assert plan.method_ids == [
        "vanilla", "vanilla_smooth", "integrated_gradients", "guided_integrated_gradients",
        "blur_integrated_gradients", "xrai", "gradcam",
    ]  # fmt: skip
    smooth = plan.method("vanilla_smooth")
    assert smooth.params == {"stdev_spread": 0.15, "nsamples": 4, "magnitude": True, "seed": 0}
    assert plan.method("integrated_gradients").params == {
        "x_steps": 8, "batch_size": 20, "integration": "riemann_mean", "tolerance": 0.0, "max_steps": 128
    }
    assert plan.config["device"] == "auto" and plan.config["tiles_per_job"] == 2


def test_grid_col_row_become_level0_coordinates(tmp_path, slide_path, model_dir, monkeypatch):
    root = make_project(tmp_path, slide_path, model_dir, [{"slide": "s1", "col": 3, "row": 2}], stride_div=2)
    monkeypatch.chdir(root)
    plan = build_plan(_load_config(root))
    assert plan.tiles_params("s1")["locations"] == [[3, 2]]  # no slide is opened to plan
    select_tiles(slide_path, "t.csv", "t", plan.tiles_params("s1"), str(model_dir))
    # tile_um 64 at 0.5 µm/px = 128 px extract; stride_div 2 → 64 px stride
    assert [row["tile"] for row in read_tile_table("t.csv")] == ["x192_y128"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tiles_per_job": 0}, "config field 'tiles_per_job': 0 is less than the minimum of 1"),
        ({"device": "tpu"}, "config field 'device': 'tpu' is not one of"),
        ({"methods": ["vanilla", "saliency"]}, "config field 'methods\\[1\\]': method: unknown method 'saliency'"),
        ({"methods": [{"name": "xrai", "smooth": True}]}, "'methods\\[0\\]': method xrai: does not support smooth"),
        ({"methods": ["vanilla", "vanilla"]}, "id 'vanilla' is used twice"),
        ({"methods": [{"name": "vanilla", "steps": 3}]}, "unknown parameter\\(s\\) steps"),
        ({"colour": "red"}, "Additional properties are not allowed \\('colour' was unexpected\\)"),
        ({"model": {"path": "m", "class_idx": -1}}, "config field 'model.class_idx': -1 is less than the minimum"),
        ({"samples": "nope.csv"}, "sample sheet 'nope.csv': file not found"),
    ],
)
def test_config_errors_name_the_field(tmp_path, slide_path, model_dir, monkeypatch, change, message):
    root = make_project(tmp_path, slide_path, model_dir, [{"slide": "s1", "x": 0, "y": 0}])
    monkeypatch.chdir(root)
    config = {**_load_config(root), **change}
    with pytest.raises(sg.InputError, match=message) as err:
        build_plan(config)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("samples", "tiles", "message"),
    [
        ([{"slide": "s1", "path": "a"}, {"slide": "s1", "path": "b"}], None, "line 3: slide 's1' is listed twice"),
        ([{"slide": "s 1", "path": "a"}], None, "slide name 's 1' must match"),
        ([{"slide": "s1", "path": "a", "mpp": "-2"}], None, "'mpp' must be a positive number, got '-2'"),
        ([{"name": "s1", "path": "a"}], None, "missing column\\(s\\) slide"),
        (None, [{"slide": "s2", "x": 0, "y": 0}], "line 2: slide 's2' is not in the sample sheet"),
        (None, [{"slide": "s1", "x": -5, "y": 0}], "'x' must be a non-negative integer, got -5"),
        (None, [{"slide": "s1", "left": 0, "top": 0}], "needs level-0 'x','y' or grid 'col','row' columns"),
    ],
)
def test_table_errors_name_file_and_line(tmp_path, slide_path, model_dir, monkeypatch, samples, tiles, message):
    root = make_project(tmp_path, slide_path, model_dir, tiles or [{"slide": "s1", "x": 0, "y": 0}])
    if samples:
        _write_csv(root / "samples.csv", samples)
    monkeypatch.chdir(root)
    with pytest.raises(sg.InputError, match=message) as err:
        build_plan(_load_config(root))
    assert "\n" not in str(err.value)


# -- snakemake ----------------------------------------------------------------------
@pytest.mark.workflow
def test_dry_run_job_count(tmp_path, slide_path, model_dir):
    tiles = [{"slide": "s1", "x": x, "y": 0} for x in (0, 128, 256)]
    samples = [{"slide": "s1", "path": str(slide_path)}, {"slide": "s2", "path": str(slide_path)}]
    tiles += [{"slide": "s2", "x": 0, "y": 128}]
    root = make_project(tmp_path, slide_path, model_dir, tiles, samples_rows=samples)
    result = run_snakemake(root, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    # one tiles job per slide; s1: 3 tiles → chunks of 2 → 2 chunks; s2: 1 chunk.
    # A mask job per chunk × 7 methods, a pictures job per chunk the figure shows (figure.max_tiles 16: all);
    # a figure, an overview and a QuPath file per slide.
    assert counts == {
        "all": "1", "figure": "2", "summary": "1", "tiles": "2", "masks": "21", "pictures": "3", "overview": "2",
        "qupath": "2", "methods_text": "1", "total": "35",
    }  # fmt: skip


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("pictures", "max_tiles", "jobs"),
    [
        ("figure", 2, 2),  # s1's first 2 tiles lie in its chunk0000: s1/chunk0000 and s2/chunk0000
        ("figure", 3, 3),
        ("all", 1, 3),  # every chunk, whatever the figure shows
        ("none", 16, 0),  # no pictures jobs
    ],
)
def test_dry_run_pictures_jobs_follow_the_pictures_field(tmp_path, slide_path, model_dir, pictures, max_tiles, jobs):
    tiles = [{"slide": "s1", "x": x, "y": 0} for x in (0, 128, 256)] + [{"slide": "s2", "x": 0, "y": 128}]
    samples = [{"slide": "s1", "path": str(slide_path)}, {"slide": "s2", "path": str(slide_path)}]
    root = make_project(
        tmp_path, slide_path, model_dir, tiles, samples_rows=samples, methods=["vanilla"], pictures=pictures,
        figure={"max_tiles": max_tiles},
    )  # fmt: skip
    result = run_snakemake(root, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    assert int(counts.get("pictures", 0)) == jobs and counts["masks"] == "3", counts


@pytest.mark.workflow
def test_workflow_end_to_end_two_tiles(tmp_path, slide_path, model_dir, ihc):
    tiles = [{"slide": "s1", "x": 0, "y": 0}, {"slide": "s1", "x": 640, "y": 384}]
    root = make_project(tmp_path / "run", slide_path, model_dir, tiles, save_raw=True)
    result = run_snakemake(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = ["x0_y0", "x640_y384"]
    model = sg.load_model(model_dir)

    table = read_tile_table(root / "results/tiles/s1.csv")
    assert [(r["tile"], r["x"], r["y"], r["chunk"]) for r in table] == [
        ("x0_y0", "0", "0", "chunk0000"), ("x640_y384", "640", "384", "chunk0000"),
    ]  # fmt: skip
    layout = sg.layout.Layout(str(root / "results"))
    ids = parse_methods(FAST_METHODS)

    # tiles: one chunk file (no file per tile); the slide region, resized from the 2× pyramid level
    tile_files = sorted(p.name for p in (root / "results/tiles/s1").iterdir() if not p.name.startswith("."))
    assert tile_files == ["chunk0000.npz", "source.json"]  # (and Snakemake's .snakemake_timestamp)
    tiles = sg.results.read_tile_chunk(layout.tile_chunk("s1", "chunk0000"))
    assert tiles.names == names and tiles.x.tolist() == [0, 640] and tiles.y.tolist() == [0, 384]
    assert tiles.images.shape == (2, 64, 64, 3) and tiles.images.dtype == np.uint8
    with sg.WSI(slide_path, 64, 64) as wsi:
        np.testing.assert_array_equal(tiles.images[0], wsi.read(0, 0))
        np.testing.assert_array_equal(tiles.images[1], wsi.read(640, 384))

    # masks: one file per (chunk, method), holding both tiles
    inexact: list[str] = []
    assert sorted(p.relative_to(root / "results/masks").as_posix() for p in (root / "results/masks").rglob("*") if p.is_file()) == sorted(
        f"s1/{spec.id}/chunk0000.npz" for spec in ids
    )  # fmt: skip
    for spec in ids:
        result = sg.results.read_mask_chunk(layout.mask_file("s1", "chunk0000", spec.id), ("masks", "attributions", "raw"))
        assert result.names == names and result.x.tolist() == [0, 640] and result.y.tolist() == [0, 384]
        assert result.masks.shape == (2, 64, 64) and result.masks.dtype == np.float32
        assert 0 <= result.masks.min() and result.masks.max() <= 1
        assert result.raw is not None and result.raw.shape[:3] == (2, 64, 64)  # save_raw
        assert result.attributions.shape == (2, 64, 64) and result.attributions.dtype == np.float32
        method = sg.methods.get_method(spec.name)
        for i, name in enumerate(names):
            assert not np.array_equal(result.raw[i], result.masks[i])
            # the masks and attributions are the method's normalisation and reduction of the stored raw
            normalized, reduced = sg.methods.normalize(method, result.raw[i]), sg.methods.reduce(method, result.raw[i])
            np.testing.assert_allclose(result.masks[i], normalized, rtol=0, atol=1e-6)
            np.testing.assert_allclose(result.attributions[i], reduced, rtol=1e-6, atol=0)
            if not (np.array_equal(result.masks[i], normalized) and np.array_equal(result.attributions[i], reduced)):
                inexact.append(f"{spec.id}/{name}")  # checked last, so that the rest runs
            overlay = sg.jobs.read_png(f"{layout.picture_dir('overlays', 's1', 'chunk0000')}/{spec.id}/{name}.png")
            np.testing.assert_array_equal(overlay, sg.plot.overlay(tiles.images[i], result.masks[i]))
            heatmap = sg.jobs.read_png(f"{layout.picture_dir('heatmaps', 's1', 'chunk0000')}/{spec.id}/{name}.png")
            np.testing.assert_array_equal(heatmap, sg.plot.colormap(result.masks[i])[..., :3])

    # a mask job's result equals the library called directly
    direct = sg.SaliencyMap(model).integrated_gradients(sg.get_preprocess_fn(model)(tiles.images[1]), x_steps=8)
    ig = sg.results.read_mask_chunk(layout.mask_file("s1", "chunk0000", "integrated_gradients"))
    np.testing.assert_allclose(ig.masks[1], direct, atol=1e-6)
    loaded = sg.results.load(str(root / "results"), "s1", "integrated_gradients", attributions=True)
    np.testing.assert_array_equal(loaded.masks, ig.masks)
    assert loaded.tiles["tile"].tolist() == names and loaded.attributions.shape == (2, 64, 64)

    with open(root / "results/summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(ids) * len(names)
    assert {(r["tile"], r["method"]) for r in rows} == {(n, m.id) for n in names for m in ids}
    assert {r["model_sha256"] for r in rows} == {model.sha256}
    assert {(r["method"], r["mask"]) for r in rows} == {(m.id, f"results/masks/s1/{m.id}/chunk0000.npz") for m in ids}
    meta = sg.results.read_mask_records(layout.mask_file("s1", "chunk0000", "vanilla"))[0]
    assert meta["tile"] == "x0_y0"
    assert rows[0]["class_label"] == meta["class_label"] == model.outcome_labels[meta["class_idx"]]
    # provenance: how the tile was read (64 µm at 0.5 µm/px = 128 px, read from the 2× level) and what ran
    from importlib.metadata import version

    expected = {
        "tile_px": 64, "tile_um": 64, "mpp": 0.5, "level": 1, "extract_px": 128, "engine": "native",
        "device": "cpu", "slidegrad_version": sg.__version__, "framework": "torch",
        "framework_version": version("torch"), "pair_version": version("saliency"),
    }  # fmt: skip
    for spec in ids:
        records = sg.results.read_mask_records(layout.mask_file("s1", "chunk0000", spec.id))
        assert [record["tile"] for record in records] == names
        for record in records:
            assert {key: record[key] for key in expected} == expected, spec.id
            assert record["method"] == spec.id and record["model_sha256"] == model.sha256
            assert record["gradcam_layer"] == ("features.3" if spec.name == "gradcam" else None)
    for row in rows:
        assert {key: row[key] for key in expected} == {key: str(value) for key, value in expected.items()}
        assert row["gradcam_layer"] == ("features.3" if row["method"] == "gradcam" else "")
    assert {r["tile_px"] for r in table} == {"64"} and {r["extract_px"] for r in table} == {"128"}
    log = (root / "results/logs/masks/s1/chunk0000/integrated_gradients.log").read_text()
    assert "integrated_gradients: 2/2 tiles" in log and "s/tile" in log  # progress, through logging
    assert (root / "results/figures/s1.pdf").read_bytes().startswith(b"%PDF")
    assert (root / "results/figures/s1.png").exists()
    assert (root / "results/benchmarks/masks/s1/chunk0000/vanilla.tsv").exists()

    # nothing left to do; a forced rerun of the summary is byte-identical
    again = run_snakemake(root, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    before = (root / "results/summary.csv").read_bytes()
    rerun = run_snakemake(root, "--forcerun", "summary")
    assert rerun.returncode == 0
    assert (root / "results/summary.csv").read_bytes() == before
    # the stored raw is the raw the mask was made from, bit for bit (XRAI's is float64)
    assert inexact == [], inexact


# -- bad input through snakemake: one clear line, non-zero exit, no partial output ----
def _bad_case(tmp_path, ihc, slide_path, model_dir, case):
    tiles = [{"slide": "s1", "x": 0, "y": 0}]
    kwargs: dict = {"methods": ["vanilla"]}
    slide = slide_path
    if case == "missing_slide":
        slide = tmp_path / "gone.svs"
    elif case == "not_a_slide":
        slide = tmp_path / "notes.svs"
        slide.write_text("this is not a slide\n")
    elif case == "no_mpp":
        slide = write_test_slide(tmp_path / "nompp.tiff", ihc, mpp=None)
        kwargs["tile_px"], kwargs["tile_um"] = 64, 64
    elif case == "tile_outside":
        tiles = [{"slide": "s1", "x": 1000, "y": 0}]
    elif case == "unknown_method":
        kwargs["methods"] = ["vanilla", "shap"]
    elif case == "class_idx":
        kwargs["model"] = {"path": str(model_dir), "class_idx": 2}
    elif case == "schema":
        kwargs["threads"] = "many"
    elif case == "unknown_slide":
        tiles = [{"slide": "s9", "x": 0, "y": 0}]
    elif case == "corrupt_svs":
        slide = tmp_path / "cut.svs"
        write_pyramidal_tiff(tmp_path / "whole.svs", ihc, 0.5, compression="jpeg", min_level_size=128, description=APERIO)
        raw = (tmp_path / "whole.svs").read_bytes()
        slide.write_bytes(raw[: len(raw) // 2])
    elif case == "slide_is_directory":
        slide = tmp_path / "slides.svs"
        slide.mkdir()
    elif case == "tile_um_too_large":
        kwargs["tile_px"], kwargs["tile_um"] = 64, 5000
    elif case == "stride_div_0":
        kwargs["stride_div"] = 0
    elif case == "tfrecord_not_one":
        (tmp_path / "records").mkdir()
        (tmp_path / "records/s1.tfrecords").write_bytes(b"PK\x03\x04 this is a zip, not a TFRecord" * 4)
        kwargs["tile_selection"] = {"mode": "tfrecords", "directory": str(tmp_path / "records"), "path": "tiles.csv"}
    elif case == "params_no_tile_px":
        model_dir = write_model_dir(tmp_path / "model")
        params = json.loads((model_dir / "params.json").read_text())
        del params["tile_px"]
        (model_dir / "params.json").write_text(json.dumps(params))
    elif case == "factory_not_importable":
        model_dir = write_model_dir(tmp_path / "model")
        params = json.loads((model_dir / "params.json").read_text())
        params["architecture"] = "my_lab_models.nets:resnet_dab"
        (model_dir / "params.json").write_text(json.dumps(params))
        kwargs["model"] = {"path": str(model_dir), "allow_code": True}  # params.json's code, allowed: then not found
    return make_project(tmp_path / "run", slide, model_dir, tiles, **kwargs)


BAD_CASES = {
    "missing_slide": "gone.svs",
    "not_a_slide": "slide '.*notes.svs': not a readable whole-slide image",
    "no_mpp": "slide '.*nompp.tiff': no microns-per-pixel",
    "tile_outside": "tile at x=1000, y=0 .* lies outside the slide",
    "unknown_method": "config field 'methods\\[1\\]': method: unknown method 'shap'",
    "class_idx": "config field 'model.class_idx': 2 is out of range; model '.*' has 2 classes",
    "schema": "config field 'threads': 'many' is not of type 'integer'",
    "unknown_slide": "tile table 'tiles.csv' line 2: slide 's9' is not in the sample sheet 'samples.csv'",
    "corrupt_svs": "slide '.*cut.svs': not a readable whole-slide image",
    "slide_is_directory": "slide '.*slides.svs'.* is a directory",
    "tile_um_too_large": "slide '.*test.tiff': tile_um=5000 µm \\(10000 px at level 0, mpp 0.5\\) is larger than the slide",
    "stride_div_0": "config field 'stride_div': 0 is less than the minimum of 1",
    "tfrecord_not_one": "s1.tfrecords'.*not a TFRecord",
    "params_no_tile_px": "model '.*model': params.json has no 'tile_px'; add it or set tile_px in the config",
    "factory_not_importable": "cannot import architecture 'my_lab_models.nets:resnet_dab'",
}
# jobs that fail after earlier jobs succeeded: those outputs are complete; the failing job's are absent
FAILS_IN = {"factory_not_importable": "masks"}


@pytest.mark.workflow
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_fails_cleanly(tmp_path, ihc, slide_path, model_dir, case):
    root = _bad_case(tmp_path, ihc, slide_path, model_dir, case)
    result = run_snakemake(root)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(BAD_CASES[case], output), output[-3000:]
    assert "Traceback" not in output
    assert not result_files(root, FAILS_IN.get(case, ""))
    failed_logs = [p.read_text() for p in (root / "results/logs").rglob("*.log") if "slidegrad: error" in p.read_text()]
    assert len(failed_logs) == ("Error in rule" in output)  # a job that failed left its log, which says why
    assert all(re.search(BAD_CASES[case], log) for log in failed_logs)
