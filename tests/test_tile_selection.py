"""Tile selection modes (``tiles.mode``): table, grid, random, top_k and tfrecords.

Every test checks coordinates or pixels against a computation that does not go through
the code under test: grid tiles against the geometry of the pasted tissue, top_k against
numpy over the model's probabilities, tfrecords pixels against the records written here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import slidegrad as sg
from slidegrad import jobs, tiling
from slidegrad.planning import build_plan
from slidegrad.tables import read_tile_table
from slidegrad.tfrecords import write_tfrecord

from .conftest import result_files, run_snakemake, write_model_dir
from .test_tiling import ALIGNED, CROP_H, CROP_W, TILE, slides  # noqa: F401 (the fixture)
from .test_workflow import _write_csv, make_project


@pytest.fixture(scope="module")
def canvas(slides, tmp_path_factory) -> dict[str, Path]:
    """test_tiling's slides (white, 1 µm/px, IHC tissue pasted at ALIGNED; blank) and a 64 px model."""
    model = write_model_dir(tmp_path_factory.mktemp("canvas") / "model", tile_px=TILE, tile_um=TILE)
    return {"slide": slides["aligned"], "blank": slides["blank"], "model": model}


def pasted_tiles(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Grid tiles (row-major) lying inside the box, by geometry alone."""
    return [(x, y) for y in range(y0, y1 - TILE + 1, TILE) for x in range(x0, x1 - TILE + 1, TILE)]


def selection_project(root: Path, slide: Path, model: Path, tiles: dict, **overrides) -> Path:
    return make_project(root, slide, model, [{"slide": "s1", "x": 0, "y": 0}], tile_selection=tiles, **overrides)


def select(project: Path, monkeypatch, slide: str = "s1") -> list[dict[str, str]]:
    """Run the tile_table job's library call for one slide; returns the written rows."""
    monkeypatch.chdir(project)
    config = yaml.safe_load((project / "config.yaml").read_text())
    out = project / "table.csv"
    plan = build_plan(config)
    jobs.select_tiles(
        plan.slides[slide].path, str(out), str(project / "tiles"), plan.tiles_params(slide),
        plan.config["model"]["path"], threads=plan.config["threads"],
    )  # fmt: skip
    rows = read_tile_table(out)
    stored = stored_tiles(project / "tiles", rows)
    with sg.WSI(config_slide(project, slide), TILE, TILE) as wsi:  # the stored tiles are the slide's tiles
        for row in rows[:3]:
            np.testing.assert_array_equal(stored[row["tile"]], wsi.read(int(row["x"]), int(row["y"])))
    return rows


def stored_tiles(folder: Path, rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """The tiles job's chunk files in ``folder``, by tile name; each holds its chunk's rows of the table, in order."""
    from slidegrad.results import read_tile_chunk

    tiles = {}
    for chunk in dict.fromkeys(row["chunk"] for row in rows):
        stored = read_tile_chunk(folder / f"{chunk}.npz")
        assert stored.names == [row["tile"] for row in rows if row["chunk"] == chunk]
        assert stored.x.tolist() == [int(row["x"]) for row in rows if row["chunk"] == chunk]
        assert stored.y.tolist() == [int(row["y"]) for row in rows if row["chunk"] == chunk]
        tiles.update(zip(stored.names, stored.images))
    assert sorted(p.name for p in folder.glob("chunk*.npz")) == [f"{c}.npz" for c in dict.fromkeys(r["chunk"] for r in rows)]
    return tiles


def config_slide(project: Path, slide: str) -> str:
    with open(project / "samples.csv") as handle:
        return next(r["path"] for r in csv.DictReader(handle) if r["slide"] == slide)


# -- grid ------------------------------------------------------------------------------
def test_grid_finds_exactly_the_pasted_tissue(tmp_path, canvas, monkeypatch):
    project = selection_project(tmp_path, canvas["slide"], canvas["model"], {"mode": "grid"}, tiles_per_job=5)
    rows = select(project, monkeypatch)
    x0, y0 = ALIGNED
    assert [(int(r["x"]), int(r["y"])) for r in rows] == pasted_tiles(x0, y0, x0 + CROP_W, y0 + CROP_H)
    assert [r["chunk"] for r in rows] == ["chunk0000"] * 5 + ["chunk0001"] * 5 + ["chunk0002"] * 2


@pytest.mark.workflow
def test_grid_with_roi_through_the_workflow(tmp_path, canvas):
    x0, y0 = ALIGNED
    roi = [x0, y0, x0 + 4 * TILE, y0 + 2 * TILE]
    project = selection_project(
        tmp_path, canvas["slide"], canvas["model"], {"mode": "grid", "roi": roi}, tiles_per_job=3, methods=["vanilla"]
    )
    result = run_snakemake(project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = read_tile_table(project / "results/tiles/s1.csv")
    assert [(int(r["x"]), int(r["y"])) for r in rows] == pasted_tiles(*roi)
    stored = stored_tiles(project / "results/tiles/s1", rows)
    masks = sg.results.load(str(project / "results"), "s1", "vanilla")
    assert masks.tiles["tile"].tolist() == [r["tile"] for r in rows] and masks.masks.shape == (len(rows), 64, 64)
    with sg.WSI(canvas["slide"], TILE, TILE) as wsi:
        for row in rows:
            np.testing.assert_array_equal(stored[row["tile"]], wsi.read(int(row["x"]), int(row["y"])))
    with open(project / "results/summary.csv") as handle:
        assert [r["tile"] for r in csv.DictReader(handle)] == [r["tile"] for r in rows]


def test_grid_with_no_tissue_is_an_error(tmp_path, canvas, monkeypatch):
    project = selection_project(tmp_path, canvas["blank"], canvas["model"], {"mode": "grid"})
    with pytest.raises(sg.InputError, match="blank.tiff': no tissue tiles") as err:
        select(project, monkeypatch)
    assert "\n" not in str(err.value)
    assert not (project / "table.csv").exists()


# -- random ----------------------------------------------------------------------------
def test_random_is_seeded_and_a_subset_of_the_tissue(tmp_path, canvas, monkeypatch):
    x0, y0 = ALIGNED
    tissue = pasted_tiles(x0, y0, x0 + CROP_W, y0 + CROP_H)
    chosen = {}
    for seed in (0, 0, 1):
        project = selection_project(tmp_path / f"s{seed}", canvas["slide"], canvas["model"], {"mode": "random", "n": 5, "seed": seed})
        chosen.setdefault(seed, []).append([(int(r["x"]), int(r["y"])) for r in select(project, monkeypatch)])
    first, again = chosen[0]
    assert first == again and len(first) == 5 and len(set(first)) == 5
    assert set(first) <= set(tissue) and first == sorted(first, key=lambda xy: (xy[1], xy[0]))
    assert chosen[1][0] != first


# -- top_k -----------------------------------------------------------------------------
def direct_top_k(slide: Path, model_dir: Path, k: int) -> tuple[list[tuple[int, int, int]], np.ndarray, list]:
    """Every tissue tile scored by the model in one pass; per class, the k highest among its predicted tiles."""
    model = sg.load_model(model_dir)
    with sg.WSI(slide, model.tile_px, model.tile_um) as wsi:
        coords = tiling.tissue_tiles(wsi)
        images = np.stack([wsi.read(x, y) for x, y in coords])
    probs = sg.SaliencyMap(model).probabilities(sg.get_preprocess_fn(model)(images))
    predicted = probs.argmax(axis=1)
    expected = []
    for c in range(probs.shape[1]):
        order = [i for i in np.argsort(-probs[:, c], kind="stable") if predicted[i] == c][:k]
        expected += [(coords[i][0], coords[i][1], c) for i in order]
    return expected, probs, coords


def test_top_k_larger_than_the_tissue_keeps_all_and_warns(tmp_path, canvas, monkeypatch):
    project = selection_project(tmp_path, canvas["slide"], canvas["model"], {"mode": "top_k", "k": 50})
    with pytest.warns(UserWarning, match="fewer than k=50"):
        rows = select(project, monkeypatch)
    expected, probs, coords = direct_top_k(canvas["slide"], canvas["model"], 50)
    assert len(rows) == len(coords) == 12
    assert [(int(r["x"]), int(r["y"]), int(r["class_idx"])) for r in rows] == expected
    # every scored tissue tile's probabilities, kept for the prediction heatmap
    scores = sg.results.read_tile_scores(project / "tiles" / "scores.npz")
    assert list(zip(scores.x.tolist(), scores.y.tolist())) == [tuple(xy) for xy in coords]
    np.testing.assert_allclose(scores.probabilities, probs, atol=1e-6)
    assert scores.labels == sg.load_model(canvas["model"]).outcome_labels and scores.extract_px == TILE


@pytest.mark.workflow
def test_top_k_on_the_demo_end_to_end(tmp_path, demo_assets):
    """Acceptance: tiles: {mode: top_k, k: 4} on the demo; the chosen tiles are the model's most confident."""
    slides = demo_assets["slides"]
    samples = [{"slide": f"demo_{v}", "path": str(p)} for v, p in slides.items()]
    project = selection_project(
        tmp_path, slides["a"], demo_assets["model"], {"mode": "top_k", "k": 4},
        samples_rows=samples, methods=["vanilla", "gradcam"], tiles_per_job=4,
    )  # fmt: skip
    result = run_snakemake(project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    labels = json.loads((demo_assets["model"] / "params.json").read_text())["outcome_labels"]
    with open(project / "results/summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    for variant, slide in slides.items():
        rows = read_tile_table(project / f"results/tiles/demo_{variant}.csv")
        expected, probs, coords = direct_top_k(slide, demo_assets["model"], 4)
        # Otsu on saturation keeps the DAB-rich half of the demo image as tissue, where the model predicts
        # DAB-positive: the top 4 positives, and the negatives among tissue tiles (there may be none; it warns)
        assert sum(c == 1 for _, _, c in expected) == 4
        assert [(int(r["x"]), int(r["y"]), int(r["class_idx"])) for r in rows] == expected
        for row in rows:
            i = coords.index((int(row["x"]), int(row["y"])))
            assert float(row["score"]) == pytest.approx(probs[i, int(row["class_idx"])], abs=1e-5)
            assert row["label"] == labels[int(row["class_idx"])]
        records = sg.results.load(str(project / "results"), f"demo_{variant}", "gradcam").tiles
        assert records["tile"].tolist() == [row["tile"] for row in rows]
        for row, (_, meta) in zip(rows, records.iterrows()):
            assert meta["class_idx"] == int(row["class_idx"]) and meta["class_label"] == row["label"]
        slide_rows = [r for r in summary if r["slide"] == f"demo_{variant}" and r["method"] == "vanilla"]
        assert [(r["tile"], r["selected_for"]) for r in slide_rows] == [(r["tile"], r["label"]) for r in rows]
    assert (project / "results/figures/demo_a.pdf").read_bytes().startswith(b"%PDF")


# -- tfrecords -------------------------------------------------------------------------
@pytest.fixture()
def tfrecord_project(tmp_path, slide_path, model_dir):
    """Slideflow-style TFRecords of three slide tiles (PNG, lossless), and a project reading two of them."""
    locations = [(0, 0), (256, 128), (640, 384)]
    with sg.WSI(slide_path, 64, 64) as wsi:
        images = {xy: wsi.read(*xy) for xy in locations}
    records = tmp_path / "tfrecords"
    records.mkdir()
    write_tfrecord(records / "s1.tfrecords", [("s1", x, y, images[(x, y)]) for x, y in locations], fmt="png")
    project = make_project(tmp_path / "run", slide_path, model_dir, [{"slide": "s1", "x": 0, "y": 0}], methods=["vanilla"])
    _write_csv(project / "tiles.csv", [{"slide": "s1", "x": 640, "y": 384}, {"slide": "s1", "x": 0, "y": 0}])
    config = yaml.safe_load((project / "config.yaml").read_text())
    config["tiles"] = {"mode": "tfrecords", "directory": str(records), "path": "tiles.csv"}
    del config["samples"]  # tfrecords mode needs no slides
    (project / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return project, images


@pytest.mark.workflow
def test_tfrecords_mode_through_the_workflow(tfrecord_project, model_dir):
    project, images = tfrecord_project
    result = run_snakemake(project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = read_tile_table(project / "results/tiles/s1.csv")
    assert [r["tile"] for r in rows] == ["x640_y384", "x0_y0"]
    model = sg.load_model(model_dir)
    stored = stored_tiles(project / "results/tiles/s1", rows)
    masks = sg.results.load(str(project / "results"), "s1", "vanilla").masks
    for row, mask in zip(rows, masks):
        tile = stored[row["tile"]]
        np.testing.assert_array_equal(tile, images[(int(row["x"]), int(row["y"]))])
        direct = sg.SaliencyMap(model).vanilla(sg.get_preprocess_fn(model)(tile))
        np.testing.assert_allclose(mask, direct, atol=1e-6)


@pytest.mark.workflow
def test_tfrecords_location_not_in_the_file(tfrecord_project):
    project, _ = tfrecord_project
    _write_csv(project / "tiles.csv", [{"slide": "s1", "x": 0, "y": 0}, {"slide": "s1", "x": 64, "y": 64}])
    result = run_snakemake(project)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "s1.tfrecords': no tile at loc_x=64, loc_y=64" in output, output[-3000:]
    assert "Traceback" not in output
    assert not result_files(project)



# -- top_k min_distance ----------------------------------------------------------------
# p(positive) on a 4 × 4 grid of 10 px tiles (rows y, columns x); a tile counts for class 1 where p > 0.5
SCORE_GRID = np.array(
    [[0.10, 0.20, 0.30, 0.40], [0.95, 0.99, 0.98, 0.60], [0.90, 0.97, 0.45, 0.70], [0.05, 0.80, 0.85, 0.75]]
)


def score_grid() -> tuple[list[tuple[int, int]], np.ndarray]:
    coords = [(10 * col, 10 * row) for row in range(4) for col in range(4)]
    p = SCORE_GRID.ravel()
    return coords, np.stack([1 - p, p], axis=1)


def chosen(rows: list[dict]) -> list[tuple[int, int, int]]:
    """(col, row, class) of top_k rows on the 10 px grid."""
    return [(r["x"] // 10, r["y"] // 10, r["class_idx"]) for r in rows]


def test_top_k_min_distance_is_greedy_in_score_order():
    coords, probs = score_grid()
    plain = tiling.top_k_tiles(coords, probs, 2)
    assert chosen(plain) == [(0, 3, 0), (0, 0, 0), (1, 1, 1), (2, 1, 1)]
    # by hand, all classes in one score order (ties row-major), at least 2 tile widths (Chebyshev) apart:
    # (1,1) .99 taken; (2,1) .98, (1,2) .97, (0,1) .95 touch it; (0,3) .95 [class 0] taken; (0,0), (0,2) touch
    # (1,1); (2,3) .85 taken, class 1 is full; (1,0), (2,0) touch (1,1); (3,0) .60 [class 0] taken
    spread = tiling.top_k_tiles(coords, probs, 2, min_distance=2, tile_width=10)
    assert chosen(spread) == [(0, 3, 0), (3, 0, 0), (1, 1, 1), (2, 3, 1)]
    assert [r["score"] for r in spread] == pytest.approx([0.95, 0.60, 0.99, 0.85])
    # 1 tile width with tiles as wide as the grid step: neighbours are allowed, as with 0
    assert tiling.top_k_tiles(coords, probs, 2, min_distance=1, tile_width=10) == plain
    assert tiling.top_k_tiles(coords, probs, 2, min_distance=0) == plain
    # tiles twice as wide as the grid step (stride_div 2): min_distance 1 keeps chosen tiles from overlapping
    overlapping = tiling.top_k_tiles(coords, probs, 2, min_distance=1, tile_width=20)
    assert overlapping == spread


def test_top_k_min_distance_leaving_too_few_warns_and_keeps_what_there_is():
    coords, probs = score_grid()
    with pytest.warns(UserWarning, match=r"min_distance=3 tile widths leaves fewer than k=2 tiles of class '0' \(0 of 6\), '1' \(1 of 10\)"):  # fmt: skip
        rows = tiling.top_k_tiles(coords, probs, 2, min_distance=3, tile_width=10)
    assert chosen(rows) == [(1, 1, 1)]  # nothing else lies 3 tiles from (1,1) on a 4 × 4 grid
    for bad, width in ((-1, 10), (1.5, 10), (True, 10), (2, None), (2, 0)):
        with pytest.raises(sg.InputError, match="min_distance") as err:
            tiling.top_k_tiles(coords, probs, 2, min_distance=bad, tile_width=width)
        assert "\n" not in str(err.value)


def test_top_k_min_distance_through_the_tiles_job(tmp_path, canvas, monkeypatch):
    project = selection_project(tmp_path, canvas["slide"], canvas["model"], {"mode": "top_k", "k": 3, "min_distance": 2})
    with pytest.warns(UserWarning, match="fewer than k=3"):  # the model predicts no positive tissue tile here
        rows = select(project, monkeypatch)
    plain, probs, coords = direct_top_k(canvas["slide"], canvas["model"], 3)
    # the greedy rule, written out: every tile for its predicted class, best first, 2 tiles (2 * TILE px) apart
    predicted = probs.argmax(axis=1)
    order = sorted(range(len(coords)), key=lambda i: (-probs[i, predicted[i]], coords[i][1], coords[i][0]))
    taken: list[int] = []
    for i in order:
        full = sum(predicted[j] == predicted[i] for j in taken) >= 3
        near = any(max(abs(coords[i][0] - coords[j][0]), abs(coords[i][1] - coords[j][1])) < 2 * TILE for j in taken)
        if not full and not near:
            taken.append(i)
    expected = [(coords[i][0], coords[i][1], int(predicted[i])) for c in (0, 1) for i in taken if predicted[i] == c]
    assert [(int(r["x"]), int(r["y"]), int(r["class_idx"])) for r in rows] == expected != plain
    xy = [(int(r["x"]), int(r["y"])) for r in rows]
    assert all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 2 * TILE for a in xy for b in xy if a != b)
