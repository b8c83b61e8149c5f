"""The workflow's evaluation stage: evaluate jobs per (slide, chunk), evaluation.csv, one figure
per slide, and bad `evaluate:` settings refused before any job runs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import slidegrad as sg
from slidegrad.evaluate import deletion_insertion, max_sensitivity, model_randomisation, pointing_ratio, pic_metric
from slidegrad.evaluate.jobs import evaluation_columns
from slidegrad.evaluate.road import road
from slidegrad.config import parse_methods
from slidegrad.planning import build_plan

from .conftest import run_snakemake
from .test_config_errors import fails_cleanly, job_counts
from .test_workflow import _load_config, make_project

TILES = [{"slide": "s1", "x": 0, "y": 0}, {"slide": "s1", "x": 640, "y": 384}, {"slide": "s1", "x": 320, "y": 128}]
NAMES = ["x0_y0", "x640_y384", "x320_y128"]
METHODS = [
    "vanilla",
    {"name": "vanilla", "smooth": True, "nsamples": 2, "seed": 3},  # its own seed: not evaluate.seed
    {"name": "integrated_gradients", "x_steps": 4},
    "gradcam",
]
METHOD_IDS = ["vanilla", "vanilla_smooth", "integrated_gradients", "gradcam"]
EVERY_METRIC = {
    "metrics": ["deletion", "insertion", "pic", "pointing", "road", "sanity", "stability"],
    "steps": 8,
    "ground_truth": "truth",
    "perturbations": {"n": 3},
}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, slide_path, model_dir):
    """One run with every metric: 3 tiles in 2 chunks, 3 methods, a ground-truth folder."""
    root = make_project(
        tmp_path_factory.mktemp("evaluate"), slide_path, model_dir, TILES, methods=METHODS, evaluate=EVERY_METRIC
    )
    for i, name in enumerate(NAMES):  # truth: the left half (tile 0), the top rows (1), nothing (2)
        truth = np.zeros((64, 64), np.uint8)
        if i == 0:
            truth[:, :32] = 255
        elif i == 1:
            truth[:16] = 1
        (root / "truth/s1").mkdir(parents=True, exist_ok=True)
        Image.fromarray(truth).save(root / f"truth/s1/{name}.png")
    result = run_snakemake(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


@pytest.mark.workflow
def test_evaluation_table_has_every_tile_method_and_metric(evaluated):
    rows = read_rows(evaluated / "results/evaluation.csv")
    assert list(rows[0]) == evaluation_columns(EVERY_METRIC["metrics"])
    assert [(r["tile"], r["method"]) for r in rows] == [
        (name, method) for chunk in (NAMES[:2], NAMES[2:]) for method in METHOD_IDS for name in chunk
    ]  # fmt: skip
    for row in rows:
        for key in ("deletion_auc", "deletion_chance", "insertion_auc", "insertion_chance"):
            assert 0 <= float(row[key]) <= 1, (key, row)
        assert -1 <= float(row["sanity_spearman"]) <= 1 and -1 <= float(row["sanity_ssim"]) <= 1
        assert row["sanity_passes"] == str(abs(float(row["sanity_spearman"])) < 0.5).lower()
        assert float(row["max_sensitivity"]) >= 0
    # pointing: no truth pixel in tile 2 → NaN, not a number pretending to be one
    assert {r["pointing_ratio"] for r in rows if r["tile"] == "x320_y128"} == {"nan"}
    assert {r["pointing_chance"] for r in rows if r["tile"] != "x320_y128"} == {"1.000000"}
    # the chance level is the tile's, whatever the method (same class explained)
    for name in NAMES:
        assert len({r["deletion_chance"] for r in rows if r["tile"] == name}) == 1


@pytest.mark.workflow
def test_evaluate_job_equals_the_library(evaluated, model_dir):
    """A job's numbers are the library's on the same tiles, masks and settings."""
    rows = {(r["tile"], r["method"]): r for r in read_rows(evaluated / "results/evaluation.csv")}
    model = sg.load_model(model_dir)
    layout = sg.layout.Layout(str(evaluated / "results"))
    names = NAMES[:2]
    stored = sg.results.read_tile_chunk(layout.tile_chunk("s1", "chunk0000"))
    assert stored.names == names
    tiles = stored.images
    truth = np.stack([np.asarray(Image.open(evaluated / f"truth/s1/{n}.png")) > 0 for n in names])
    sal = sg.SaliencyMap(model, device="cpu")
    for method in ("vanilla", "integrated_gradients"):
        result = sg.results.read_mask_chunk(layout.mask_file("s1", "chunk0000", method))
        assert result.names == names
        masks = result.masks
        classes = np.array([int(rows[(n, method)]["class_idx"]) for n in names])
        curves = deletion_insertion(sal, tiles, masks, class_idx=classes, steps=8)
        sic = pic_metric(sal, tiles, masks, classes, metric="sic", seed=0).auc
        ratio = pointing_ratio(masks, truth)
        roads = road(sal, sg.get_preprocess_fn(model)(tiles), masks, class_idx=classes, seed=0)
        for i, name in enumerate(names):
            row = rows[(name, method)]
            assert float(row["road"]) == pytest.approx(roads["road"][i], abs=2e-6)
            assert float(row["road_morf"]) == pytest.approx(roads["road_morf"][i], abs=2e-6)
            assert float(row["probability"]) == pytest.approx(curves["deletion_curve"][i, 0], abs=1e-5)
            assert (row["baseline"], row["reference_tile"]) == ("white", "")
            assert row["uninformative"] in ("true", "false") and row["road_uninformative"] in ("true", "false")
            assert float(row["road_chance_morf"]) == pytest.approx(
                road(sal, sg.get_preprocess_fn(model)(tiles), None, classes, seed=0, order="random")["road_morf"][i], abs=2e-6
            )
            assert float(row["deletion_auc"]) == pytest.approx(curves["deletion_auc"][i], abs=2e-6)
            assert float(row["insertion_auc"]) == pytest.approx(curves["insertion_auc"][i], abs=2e-6)
            assert (row["sic"] == "nan") == math.isnan(sic[i])
            if not math.isnan(sic[i]):
                assert float(row["sic"]) == pytest.approx(sic[i], abs=2e-6)
            assert float(row["pointing_ratio"]) == pytest.approx(ratio[i], abs=2e-6)
    batch = sg.get_preprocess_fn(model)(tiles)
    classes = np.array([int(rows[(n, "vanilla")]["class_idx"]) for n in names])
    sanity = model_randomisation(model, batch, "vanilla", classes, 0, device="cpu")
    stability = max_sensitivity(sal, batch, "vanilla", 3, None, 0, classes)
    smooth = {"smooth": True, **parse_methods(METHODS)[1].for_engine("native").params}
    assert smooth["seed"] == 3
    sanity_smooth = model_randomisation(model, batch, "vanilla", classes, 0, device="cpu", method_options=smooth)
    stability_smooth = max_sensitivity(sal, batch, "vanilla", 3, None, 0, classes, method_options=smooth)
    for i, name in enumerate(names):
        assert float(rows[(name, "vanilla")]["sanity_spearman"]) == pytest.approx(sanity["spearman_full"][i], abs=2e-6)
        assert float(rows[(name, "vanilla")]["max_sensitivity"]) == pytest.approx(stability[i], rel=1e-5)
        row = rows[(name, "vanilla_smooth")]
        assert float(row["sanity_spearman"]) == pytest.approx(sanity_smooth["spearman_full"][i], abs=2e-6)
        assert float(row["max_sensitivity"]) == pytest.approx(stability_smooth[i], rel=1e-5)


@pytest.mark.workflow
def test_evaluate_job_refuses_a_mask_file_of_other_tiles(evaluated, model_dir, monkeypatch, tmp_path):
    """A chunk's mask file that holds other tiles (a stale or misplaced file) is one line naming it."""
    from slidegrad.evaluate.jobs import run_evaluation_job

    monkeypatch.chdir(evaluated)
    evaluation = build_plan(_load_config(evaluated)).evaluate_params()
    layout = sg.layout.Layout("results")
    stale = layout.mask_file("s1", "chunk0001", "vanilla")
    with pytest.raises(sg.InputError) as err:
        run_evaluation_job(
            str(model_dir), layout.tile_table("s1"), "chunk0000", layout.tile_chunk("s1", "chunk0000"),
            {"vanilla": stale}, evaluation["methods"], {**evaluation["settings"], "metrics": ["deletion"]},
            str(tmp_path / "e.csv"), str(tmp_path / "e.npz"), device="cpu",
        )  # fmt: skip
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"mask file '{stale}': holds other tiles than chunk0000"), message
    assert not (tmp_path / "e.csv").exists() and not (tmp_path / "e.npz").exists()


@pytest.mark.workflow
def test_curves_and_figures(evaluated):
    with np.load(evaluated / "results/evaluation/s1/chunk0000.npz") as data:
        assert list(data["tiles"]) == NAMES[:2]
        for method in METHOD_IDS:
            for kind in ("deletion", "insertion", "deletion_chance", "insertion_chance"):
                assert data[f"{method}:{kind}"].shape == (2, 9)
            # step 0 of deletion is the untouched tile; the last step of insertion too
            np.testing.assert_allclose(data[f"{method}:deletion"][:, 0], data[f"{method}:insertion"][:, -1], atol=1e-6)
            for kind in ("road_morf", "road_lerf", "road_morf_chance", "road_lerf_chance"):
                assert data[f"{method}:{kind}"].shape == (2, 10)
        np.testing.assert_allclose(data["x:road_morf"], np.linspace(0, 0.9, 10))
    assert (evaluated / "results/figures/evaluation/s1.pdf").read_bytes().startswith(b"%PDF")
    png = sg.jobs.read_png(evaluated / "results/figures/evaluation/s1.png")
    assert png.shape[0] > 1000 and png.shape[1] > 1000 and png.std() > 10  # drawn, not blank
    log = (evaluated / "results/logs/evaluate/s1/chunk0000.log").read_text()
    assert "evaluation of chunk0000: 2 tiles × 4 methods" in log
    assert (evaluated / "results/benchmarks/evaluate/s1/chunk0001.tsv").exists()


@pytest.mark.workflow
def test_changing_evaluate_settings_reruns_only_the_evaluation(evaluated):
    config = _load_config(evaluated)
    config["evaluate"] = {**config["evaluate"], "steps": 10}
    import yaml

    changed = evaluated / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    result = run_snakemake(evaluated, "-n", "--configfile", str(changed))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    counts = job_counts(output)
    expected = {"evaluate": "2", "evaluation_table": "1", "evaluation_figure": "1", "methods_text": "1", "qupath": "1", "all": "1"}
    # methods_text: its paragraph states the settings; qupath: its detections carry the evaluation's metrics
    assert counts == {**expected, "total": "7"}, output


@pytest.mark.workflow
def test_evaluation_is_off_by_default(tmp_path, slide_path, model_dir, monkeypatch):
    root = make_project(tmp_path, slide_path, model_dir, TILES[:1])
    monkeypatch.chdir(root)
    plan = build_plan(_load_config(root))
    assert not plan.evaluating and plan.config["evaluate"]["metrics"] == []
    result = run_snakemake(root, "-n")
    counts = job_counts(result.stdout + result.stderr)
    assert "masks" in counts and not {"evaluate", "evaluation_table", "evaluation_figure"} & set(counts)


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("evaluate", "message"),
    [
        ({"metrics": ["deletion", "faithfulness"]}, "config field 'evaluate.metrics\\[1\\]': 'faithfulness' is not one of"),
        ({"metrics": ["deletion"], "baseline": "grey"}, "config field 'evaluate.baseline': 'grey' is not one of"),
        ({"metrics": ["deletion"], "steps": 0}, "config field 'evaluate.steps': 0 is less than the minimum of 1"),
        ({"metrics": ["deletion"], "sigma": 0}, "config field 'evaluate.sigma': 0 is less than or equal to the minimum"),
        ({"metrics": ["pointing"]}, "config field 'evaluate.ground_truth': metric 'pointing' needs one: 'dab' or a folder"),
        ({"metrics": ["pointing"], "ground_truth": "no/such"}, "config field 'evaluate.ground_truth': folder 'no/such' does not"),
        ({"metrics": ["stability"], "perturbations": {"n": 0}}, "config field 'evaluate.perturbations.n': 0 is less than"),
        ({"metrics": ["deletion"], "top": 1.5}, "config field 'evaluate.top': 1.5 is greater than the maximum of 1"),
        ({"metrics": ["deletion", "deletion"]}, "config field 'evaluate.metrics': .* has non-unique elements"),
        ({"metrics": ["road"], "road_percentiles": [0, 50]}, "config field 'evaluate.road_percentiles\\[0\\]': 0 is less than or equal"),
        ({"metrics": ["road"], "road_percentiles": []}, "config field 'evaluate.road_percentiles': \\[\\] should be non-empty"),
        ({"metrics": ["road"], "road_noise": -0.1}, "config field 'evaluate.road_noise': -0.1 is less than the minimum of 0"),
    ],
)
def test_bad_evaluate_settings_fail_before_any_job(tmp_path, slide_path, model_dir, evaluate, message):
    root = make_project(tmp_path, slide_path, model_dir, TILES[:1], evaluate=evaluate)
    fails_cleanly(root, message)


def test_unused_settings_are_a_warning(tmp_path, slide_path, model_dir, monkeypatch):
    root = make_project(tmp_path, slide_path, model_dir, TILES[:1], evaluate={"steps": 10})
    monkeypatch.chdir(root)
    plan = build_plan(_load_config(root))
    assert plan.warnings == ["config field 'evaluate': settings given but 'metrics' is empty; the maps are not evaluated"]


@pytest.mark.workflow
def test_missing_ground_truth_mask_is_one_line(tmp_path, slide_path, model_dir):
    root = make_project(
        tmp_path, slide_path, model_dir, TILES[:1], methods=["vanilla"],
        evaluate={"metrics": ["pointing"], "ground_truth": "truth"},
    )  # fmt: skip
    (root / "truth").mkdir()
    result = run_snakemake(root)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "slidegrad: error: evaluate.ground_truth: no mask 'truth/s1/x0_y0.png' for tile x0_y0 of slide s1" in output
    assert "Traceback" not in output
    assert not (root / "results/evaluation/s1/chunk0000.csv").exists()
    assert not (root / "results/evaluation/s1/chunk0000.npz").exists()


@pytest.mark.workflow
def test_evaluate_job_records_the_reference_tile(evaluated, model_dir, monkeypatch, tmp_path):
    """baseline: reference: each row names a tile the model gives another class, the same one in every chunk
    (seeded per slide); a slide of one class is one error line."""
    from slidegrad.evaluate.jobs import run_evaluation_job

    monkeypatch.chdir(evaluated)
    evaluation = build_plan(_load_config(evaluated)).evaluate_params()
    layout = sg.layout.Layout("results")
    model = sg.load_model(model_dir)
    images = np.concatenate([sg.results.read_tile_chunk(layout.tile_chunk("s1", c)).images for c in ("chunk0000", "chunk0001")])
    predicted = dict(zip(NAMES, sg.SaliencyMap(model, device="cpu").engine.engine.probabilities(
        sg.get_preprocess_fn(model)(images)).argmax(axis=1)))  # fmt: skip
    settings = {**evaluation["settings"], "metrics": ["deletion"], "baseline": "reference"}

    def run(chunk):
        out = tmp_path / f"{chunk}.csv"
        run_evaluation_job(
            str(model_dir), layout.tile_table("s1"), chunk, layout.tile_chunk("s1", chunk),
            {"vanilla": layout.mask_file("s1", chunk, "vanilla")}, evaluation["methods"], settings,
            str(out), str(tmp_path / f"{chunk}.npz"), device="cpu",
        )  # fmt: skip
        return read_rows(out)

    assert set(predicted.values()) == {0}  # the random test model gives every tile class 0: no reference for 0
    with pytest.raises(sg.InputError, match=r"^config field 'evaluate.baseline': 'reference' needs a tile the model "
                       r"gives another class than 'negative', and slide 's1' has none \(all 3 tiles are 'negative'\)") as err:  # fmt: skip
        run("chunk0000")
    assert "\n" not in str(err.value)

    from slidegrad.evaluate import jobs

    original = jobs.read_mask_chunk

    def explaining_class_1(path):  # the masks explain class 1: every tile is another class
        result = original(path)
        result.records = [{**record, "class_idx": 1, "class_label": "positive"} for record in result.records]
        return result

    monkeypatch.setattr(jobs, "read_mask_chunk", explaining_class_1)
    rows = run("chunk0000") + run("chunk0001")
    table_names = [r["tile"] for r in sg.tables.read_tile_table(layout.tile_table("s1"))]
    first = table_names[np.random.default_rng(settings["seed"]).permutation(len(table_names))[0]]
    assert [r["reference_tile"] for r in rows] == [first] * len(NAMES)  # seeded, the same in every chunk
    assert all(r["baseline"] == "reference" and r["class_idx"] == "1" for r in rows)
