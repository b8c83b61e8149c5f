"""Bad config and tables caught before any job runs: method parameters, tile-table columns
and grid, outdir, class_idx, CSV encoding, slides with no tiles."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import slidegrad as sg
from slidegrad import planning
from slidegrad.layout import Layout
from slidegrad.results import read_mask_records
from slidegrad.planning import build_plan
from slidegrad.methods import METHODS, PARAMS, SMOOTH_DEFAULTS, get_method, resolve_params
from slidegrad.model import scale

from .conftest import result_files, run_snakemake
from .test_workflow import _load_config, _write_csv, make_project

ONE_TILE = [{"slide": "s1", "x": 0, "y": 0}]


def fails_cleanly(root: Path, pattern: str) -> None:
    """A dry run fails: non-zero, one clear line, no traceback, no file written under results/."""
    before = result_files(root)
    result = run_snakemake(root, "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert re.search(pattern, output), output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert result_files(root) == before


def job_counts(output: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.M))


# -- e. method parameters ------------------------------------------------------------
def test_every_method_parameter_is_declared_and_its_default_valid():
    defaults = [*(m.defaults.items() for m in METHODS.values()), SMOOTH_DEFAULTS.items()]
    for key, value in (item for items in defaults for item in items):
        assert key in PARAMS, key
        assert PARAMS[key].accepts(value), (key, value)


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("integrated_gradients", {"x_steps": "many"}, "'x_steps' must be an integer ≥ 1, got 'many'"),
        ("integrated_gradients", {"x_steps": 0}, "'x_steps' must be an integer ≥ 1, got 0"),
        ("integrated_gradients", {"x_steps": -5}, "'x_steps' must be an integer ≥ 1, got -5"),
        ("integrated_gradients", {"x_steps": 2.5}, "'x_steps' must be an integer ≥ 1, got 2.5"),
        ("integrated_gradients", {"batch_size": True}, "'batch_size' must be an integer ≥ 1, got True"),
        ("guided_integrated_gradients", {"max_dist": 1.5}, "'max_dist' must be a number ≥ 0 and ≤ 1, got 1.5"),
        ("guided_integrated_gradients", {"fraction": 0}, "'fraction' must be a number > 0 and ≤ 1, got 0"),
        ("blur_integrated_gradients", {"max_sigma": 0.0}, "'max_sigma' must be a number > 0, got 0.0"),
        ("blur_integrated_gradients", {"grad_step": float("nan")}, "'grad_step' must be a number > 0, got nan"),
        ("blur_integrated_gradients", {"sqrt": "yes"}, "'sqrt' must be true or false, got 'yes'"),
        ("xrai", {"steps": 2.0}, "'steps' must be an integer ≥ 1, got 2.0"),
        ("gradcam", {"layer": 3}, "'layer' must be a layer name or null, got 3"),
        ("attention_rollout", {"head_fusion": "avg"}, "'head_fusion' must be one of mean, max, min, got 'avg'"),
        ("attention_rollout", {"discard_ratio": 1.0}, "'discard_ratio' must be a number ≥ 0 and < 1, got 1.0"),
        ("attention_rollout", {"discard_ratio": -0.1}, "'discard_ratio' must be a number ≥ 0 and < 1, got -0.1"),
        ("transformer_attribution", {"smooth": True, "nsamples": 0}, "'nsamples' must be an integer ≥ 1, got 0"),
        ("vanilla", {"smooth": True, "stdev_spread": -0.1}, "'stdev_spread' must be a number ≥ 0, got -0.1"),
        ("vanilla", {"smooth": True, "nsamples": 0}, "'nsamples' must be an integer ≥ 1, got 0"),
        ("vanilla", {"smooth": True, "magnitude": 1}, "'magnitude' must be true or false, got 1"),
        ("vanilla", {"smooth": True, "seed": -1}, "'seed' must be an integer ≥ 0 and ≤ 4294967295, got -1"),
    ],
)
def test_method_parameter_errors_name_field_and_range(tmp_path, slide_path, model_dir, monkeypatch, method, params, message):
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE)
    monkeypatch.chdir(root)
    config = {**_load_config(root), "methods": ["vanilla", "gradcam", {"name": method, **params}]}
    with pytest.raises(sg.InputError) as err:
        build_plan(config)
    assert str(err.value) == f"config field 'methods[2]': method {method}: parameter {message}"


def test_method_parameters_accept_ints_for_floats_and_are_recorded_as_numbers():
    resolved = resolve_params(get_method("blur_integrated_gradients"), {"max_sigma": 10, "steps": np.int64(4)}, False)
    assert resolved["max_sigma"] == 10.0 and isinstance(resolved["max_sigma"], float)
    assert resolved["steps"] == 4 and type(resolved["steps"]) is int
    assert resolve_params(get_method("gradcam"), {"layer": "features.3"}, True)["layer"] == "features.3"


@pytest.mark.workflow
@pytest.mark.parametrize(("value", "got"), [("many", "'many'"), (0, "0"), (2.5, "2.5")])
def test_method_parameter_error_through_snakemake(tmp_path, slide_path, model_dir, value, got):
    methods = ["vanilla", "gradcam", {"name": "integrated_gradients", "x_steps": value}]
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE, methods=methods)
    fails_cleanly(
        root,
        f"slidegrad: error: config field 'methods\\[2\\]': method integrated_gradients: "
        f"parameter 'x_steps' must be an integer ≥ 1, got {got}\n",
    )


def test_method_parameter_error_in_the_python_api(tiny_cnn, ihc_tiles):
    sal = sg.SaliencyMap(tiny_cnn)
    with pytest.raises(sg.InputError, match="^method integrated_gradients: parameter 'x_steps' must be an integer ≥ 1, got 0$"):
        sal.get(scale(ihc_tiles[:1]), "integrated_gradients", x_steps=0)
    with pytest.raises(sg.InputError, match="'x_steps' must be an integer ≥ 1, got 2.5"):
        sal.integrated_gradients(scale(ihc_tiles[0]), x_steps=2.5)


@pytest.mark.workflow
def test_schema_integers_are_not_floats(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE, tiles_per_job=2.0)
    fails_cleanly(root, "slidegrad: error: config field 'tiles_per_job': 2.0 is not of type 'integer'")


# -- f. tile table columns and grid ------------------------------------------------------
@pytest.mark.workflow
def test_tile_table_with_both_xy_and_col_row_is_an_error(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path, slide_path, model_dir, [{"slide": "s1", "x": 0, "y": 0, "col": 1, "row": 1}])
    fails_cleanly(
        root,
        "slidegrad: error: tile table 'tiles.csv': has both level-0 'x','y' and grid 'col','row' columns; keep one pair",
    )


@pytest.mark.workflow
def test_out_of_grid_col_row_names_file_line_and_grid(tmp_path, slide_path, model_dir):
    # 1024 px slide, tile_um 64 at 0.5 µm/px = 128 px tiles: an 8 × 8 grid
    tiles = [{"slide": "s1", "col": 7, "row": 7}, {"slide": "s1", "col": 8, "row": 0}]
    root = make_project(tmp_path, slide_path, model_dir, tiles)
    fails_cleanly(
        root,
        "slidegrad: error: tile table 'tiles.csv' line 3: tile col=8, row=0 lies outside the grid "
        "of slide 's1' \\(8 cols x 8 rows\\)",
    )


# -- g. outdir ----------------------------------------------------------------------------
@pytest.mark.workflow
def test_outdir_that_is_a_file(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE, outdir="out.txt")
    (root / "out.txt").write_text("not a folder\n")
    fails_cleanly(root, "slidegrad: error: config field 'outdir': 'out.txt' is a file; expected a folder")
    assert (root / "out.txt").read_text() == "not a folder\n"


@pytest.mark.workflow
def test_outdir_below_a_file(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE, outdir="out.txt/results")
    (root / "out.txt").write_text("not a folder\n")
    fails_cleanly(
        root, "slidegrad: error: config field 'outdir': 'out.txt/results' cannot be created: 'out.txt' is a file, not a folder"
    )


@pytest.mark.workflow
def test_result_folder_that_is_a_file(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE)
    (root / "results").mkdir()
    (root / "results/tiles").write_text("")
    fails_cleanly(root, "slidegrad: error: config field 'outdir': 'results/tiles' is a file; expected a folder")


def test_outdir_not_writable_when_the_probe_fails(tmp_path, slide_path, model_dir, monkeypatch):
    """The probe (create and remove a file) decides, as root too; here it is made to fail."""
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE)
    (root / "results/tiles").mkdir(parents=True)
    monkeypatch.chdir(root)

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", dir)

    monkeypatch.setattr(planning.tempfile, "mkstemp", refuse)
    with pytest.raises(sg.InputError, match="^config field 'outdir': folder 'results' is not writable$"):
        build_plan(_load_config(root))


def _make_read_only(folder: Path) -> None:
    """chmod a-w; as root (which ignores mode bits) the immutable flag, else skip."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return
    flagged = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if flagged.returncode != 0:
        folder.chmod(0o755)
        pytest.skip(f"running as root, which writes to read-only folders, and chattr +i failed: {flagged.stderr.strip()}")


@pytest.mark.workflow
@pytest.mark.parametrize("sub", ["", "tiles"])
def test_read_only_outdir_through_snakemake(tmp_path, slide_path, model_dir, sub):
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE)
    folder = root / "results" / sub
    folder.mkdir(parents=True)
    _make_read_only(folder)
    try:
        fails_cleanly(root, f"slidegrad: error: config field 'outdir': folder '{Path('results', sub)}' is not writable")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


# -- h. class_idx ------------------------------------------------------------------------
@pytest.mark.workflow
@pytest.mark.parametrize(
    ("class_idx", "message"),
    [
        (1.0, "config field 'model.class_idx': 1.0 is not of type 'integer', 'string', 'null'"),
        (True, "config field 'model.class_idx': True is not of type 'integer', 'string', 'null'"),
        ("", "config field 'model.class_idx': '' should be non-empty"),
        ("tumour", "config field 'model.class_idx': unknown label 'tumour'; model '.*' has labels negative, positive"),
        (2, "config field 'model.class_idx': 2 is out of range; model '.*' has 2 classes \\(negative, positive\\)"),
    ],
)
def test_class_idx_errors(tmp_path, slide_path, model_dir, class_idx, message):
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE, model={"path": str(model_dir), "class_idx": class_idx})
    fails_cleanly(root, f"slidegrad: error: {message}")


def test_class_idx_label_without_outcome_labels(tmp_path, slide_path, model_dir, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.pt").write_bytes((model_dir / "weights.pt").read_bytes())
    params = json.loads((model_dir / "params.json").read_text())
    del params["outcome_labels"]
    (model / "params.json").write_text(json.dumps(params))
    root = make_project(tmp_path / "run", slide_path, model, ONE_TILE, model={"path": str(model), "class_idx": "positive"})
    monkeypatch.chdir(root)
    with pytest.raises(sg.InputError, match="^config field 'model.class_idx': label 'positive' needs 'outcome_labels'"):
        build_plan(_load_config(root))


@pytest.mark.parametrize(("class_idx", "resolved"), [("positive", 1), ("negative", 0), (1, 1), (None, None)])
def test_class_idx_label_resolves_to_its_index(tmp_path, slide_path, model_dir, monkeypatch, class_idx, resolved):
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE, model={"path": str(model_dir), "class_idx": class_idx})
    monkeypatch.chdir(root)
    assert build_plan(_load_config(root)).config["model"]["class_idx"] == resolved


@pytest.mark.workflow
def test_class_idx_label_reaches_the_mask_job_as_an_index(tmp_path, slide_path, model_dir):
    root = make_project(
        tmp_path, slide_path, model_dir, ONE_TILE, methods=["vanilla"], model={"path": str(model_dir), "class_idx": "positive"}
    )
    mask_file = Layout("results").mask_file("s1", "chunk0000", "vanilla")
    result = run_snakemake(root, mask_file)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (meta,) = read_mask_records(root / mask_file)
    assert (meta["tile"], meta["class_idx"], meta["class_label"]) == ("x0_y0", 1, "positive")


# -- i. CSVs with a byte-order mark ------------------------------------------------------
@pytest.mark.workflow
def test_csvs_with_a_byte_order_mark(tmp_path, slide_path, model_dir):
    tiles = [{"slide": "s1", "x": x, "y": 0} for x in (0, 128, 256)]
    root = make_project(tmp_path, slide_path, model_dir, tiles, methods=["vanilla", "gradcam"])
    for name in ("samples.csv", "tiles.csv"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    result = run_snakemake(root, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # 3 tiles, 2 per job → 2 chunks × 2 methods
    assert job_counts(result.stdout) == {
        "all": "1", "figure": "1", "summary": "1", "tiles": "1", "masks": "4", "pictures": "2", "overview": "1",
        "qupath": "1", "methods_text": "1", "total": "13",
    }  # fmt: skip


@pytest.mark.workflow
def test_csv_that_is_not_utf8(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE)
    (root / "samples.csv").write_bytes(f"slide,path\ns1,{slide_path}\ns\xe9,x.tiff\n".encode("latin-1"))
    fails_cleanly(root, "slidegrad: error: sample sheet 'samples.csv': not UTF-8 text \\(byte \\d+\\); save it as CSV UTF-8")


# -- j. slides without tiles ---------------------------------------------------------------
@pytest.mark.workflow
def test_slides_without_tiles_are_skipped_with_a_warning(tmp_path, slide_path, model_dir):
    samples = [{"slide": s, "path": str(slide_path)} for s in ("s1", "s2", "s3")]
    root = make_project(tmp_path, slide_path, model_dir, ONE_TILE, samples_rows=samples, methods=["vanilla"])
    result = run_snakemake(root, "-n", "--quiet", "rules")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert (
        "slidegrad: warning: sample sheet 'samples.csv': slide(s) s2, s3 have no rows in tile table 'tiles.csv'; skipped"
        in output
    )
    counts = job_counts(result.stdout)
    assert (counts["tiles"], counts["masks"], counts["figure"]) == ("1", "1", "1")
