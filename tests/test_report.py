"""The Snakemake report holds every figure and table with captions from the run's own parameters;
methods.md names them; figure options reach the figures."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import slidegrad as sg

from .conftest import run_snakemake
from .test_workflow import make_project

TILES = [{"slide": "s1", "x": 0, "y": 0}, {"slide": "s1", "x": 640, "y": 384}]
METHODS = ["vanilla", {"name": "integrated_gradients", "x_steps": 4}]


@pytest.fixture(scope="module")
def reported(tmp_path_factory, slide_path, model_dir) -> Path:
    root = make_project(
        tmp_path_factory.mktemp("report"), slide_path, model_dir, TILES, methods=METHODS,
        evaluate={"metrics": ["deletion", "insertion"], "steps": 4},
        figure={"formats": ["pdf", "png", "svg"], "dpi": 100},
    )  # fmt: skip
    result = run_snakemake(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = run_snakemake(root, "--report", "report.zip")
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    return root


@pytest.mark.workflow
def test_report_holds_every_figure_and_table(reported):
    with zipfile.ZipFile(reported / "report.zip") as archive:
        names = archive.namelist()
        html = next(archive.read(n) for n in names if n.endswith("report.html")).decode()
        for wanted, source in [
            ("s1.png", "results/figures/s1.png"),
            ("s1.png", "results/figures/overview/s1.png"),
            ("s1.png", "results/figures/evaluation/s1.png"),
            ("summary.csv", "results/summary.csv"),
            ("evaluation.csv", "results/evaluation.csv"),
        ]:
            data = (reported / source).read_bytes()
            assert any(n.endswith(wanted) and archive.read(n) == data for n in names), source
    model = sg.load_model(_model_path(reported))
    # captions: what the picture is, then the run's methods paragraph
    assert "Saliency maps of slide <strong>s1</strong>" in html
    assert "Overview of slide <strong>s1</strong>" in html
    assert model.sha256 in html
    assert "integrated gradients (Sundararajan et al. 2017; black baseline, 4 integration steps)" in html


def _model_path(root: Path) -> str:
    import yaml

    return yaml.safe_load((root / "config.yaml").read_text())["model"]["path"]


@pytest.mark.workflow
def test_methods_paragraph_names_the_runs_parameters(reported):
    text = (reported / "results/methods.md").read_text()
    meta = sg.results.read_mask_records(reported / "results/masks/s1/vanilla/chunk0000.npz")[0]
    for phrase in [
        f"slidegrad {sg.__version__}",
        f"PAIR saliency {meta['pair_version']}",
        f"PyTorch {meta['framework_version']}",
        "for 2 tiles from 1 slide.",
        "Tiles were 64 × 64 px covering 64 µm (read at pyramid level 1 of slides at 0.5 µm/px)",
        f"SHA-256 {meta['model_sha256']}",
        "explained for each tile's predicted class",
        "vanilla gradients (Simonyan et al. 2014)",
        "integrated gradients (Sundararajan et al. 2017; black baseline, 4 integration steps)",
        "native engine on cpu",
        "deletion and insertion curves (Petsiuk et al. 2018; 4 steps, white baseline",
        "- Sundararajan, Taly & Yan, Axiomatic attribution for deep networks, ICML 2017",
        "In this run, ",  # which classes the run's evaluation.csv flagged uninformative (or that none was)
    ]:
        assert phrase in text, phrase


@pytest.mark.workflow
def test_every_format_is_written_and_svg_is_reproducible(reported):
    for kind in ("", "overview/", "evaluation/"):
        for ext in ("pdf", "png", "svg"):
            path = reported / f"results/figures/{kind}s1.{ext}"
            assert path.stat().st_size > 1000, path
    svg = (reported / "results/figures/s1.svg").read_bytes()
    assert b"<dc:date>" not in svg
    again = run_snakemake(reported, "--forcerun", "figure")
    assert again.returncode == 0
    assert (reported / "results/figures/s1.svg").read_bytes() == svg


def test_figure_methods_must_name_run_methods(tmp_path, slide_path, model_dir, monkeypatch):
    from slidegrad.planning import build_plan

    from .test_workflow import _load_config

    root = make_project(tmp_path, slide_path, model_dir, TILES, methods=METHODS, figure={"methods": ["gradcam"]})
    monkeypatch.chdir(root)
    with pytest.raises(sg.InputError, match="config field 'figure.methods': 'gradcam' not among the run's method ids"):
        build_plan(_load_config(root))


def test_old_figure_max_tiles_says_where_it_went(tmp_path, slide_path, model_dir, monkeypatch):
    from slidegrad.planning import build_plan

    from .test_workflow import _load_config

    root = make_project(tmp_path, slide_path, model_dir, TILES, figure_max_tiles=4)
    monkeypatch.chdir(root)
    with pytest.raises(sg.InputError, match="config field 'figure_max_tiles': moved to 'figure.max_tiles'"):
        build_plan(_load_config(root))


def test_top_k_min_distance_reaches_the_tiles_job(tmp_path, slide_path, model_dir, monkeypatch):
    from slidegrad.planning import build_plan

    from .test_workflow import _load_config

    root = make_project(
        tmp_path, slide_path, model_dir, TILES, tile_selection={"mode": "top_k", "k": 2, "min_distance": 1}
    )
    monkeypatch.chdir(root)
    assert build_plan(_load_config(root)).tiles_params("s1")["min_distance"] == 1
    config = {**_load_config(root), "tiles": {"mode": "grid", "min_distance": 1}}
    with pytest.raises(sg.InputError, match="config field 'tiles': min_distance not used by mode 'grid'"):
        build_plan(config)
