"""The workflow knows what it ran: a config change reruns exactly the jobs whose output it changes.

One real run (grid mode, two methods), then ``snakemake -n`` with one value changed at a
time; the dry run's job list must be exactly the expected one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from slidegrad.tables import read_tile_table

from .conftest import run_snakemake
from .test_workflow import make_project

METHODS = ["vanilla", {"name": "integrated_gradients", "x_steps": 4}]
BASE = {
    "tile_selection": {"mode": "grid", "roi": [0, 0, 512, 384], "min_tissue": 0.2},
    "methods": METHODS,
    "tiles_per_job": 4,
    "figure": {"max_tiles": 4},
    "tile_px": 64,
    "tile_um": 64,
    "threads": 1,
}


def planned_jobs(output: str) -> list[tuple[str, str]]:
    """``(rule, wildcards)`` of every job a dry run lists, sorted (wildcards ``""`` when it has none)."""
    jobs: list[list[str]] = []
    for line in output.splitlines():
        head = re.match(r"\s*(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if head:  # group members (pictures) are listed indented under "group job ..."
            jobs.append([head.group(1), ""])
        wildcards = re.match(r"\s+wildcards: (.*)$", line)
        if wildcards and jobs:
            jobs[-1][1] = wildcards.group(1).strip()
    return sorted((rule, wildcards) for rule, wildcards in jobs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, slide_path, model_dir) -> Path:
    root = make_project(tmp_path_factory.mktemp("rerun") / "run", slide_path, model_dir, [{"slide": "s1", "x": 0, "y": 0}], **BASE)
    result = run_snakemake(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def dry_run(root: Path, change: dict) -> tuple[list[tuple[str, str]], str]:
    """The jobs ``snakemake -n`` plans with ``change`` applied to the finished run's config."""
    config = yaml.safe_load((root / "config.yaml").read_text())
    for key, value in change.items():
        target = config
        *parents, leaf = key.split(".")
        for part in parents:
            target = target[part] if not isinstance(target, list) else target[int(part)]
        target[int(leaf) if isinstance(target, list) else leaf] = value
    (root / "changed.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_snakemake(root, "-n", "--configfile", "changed.yaml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return planned_jobs(result.stdout), output


def chunks(root: Path) -> list[str]:
    """The slide's chunks (its tile table's)."""
    return list(dict.fromkeys(row["chunk"] for row in read_tile_table(root / "results/tiles/s1.csv")))


def picture_chunks(root: Path) -> list[str]:
    """The chunks with pictures jobs (config pictures: figure): those holding the figure's max_tiles 4 tiles."""
    return chunks(root)[:1]  # tiles_per_job 4


@pytest.mark.workflow
@pytest.mark.parametrize(
    "change",
    [{"threads": 2}, {"memory_budget_mb": 300}, {"methods.1.batch_size": 5}, {"tiles_per_job": 4}],
    ids=["threads", "memory_budget_mb", "batch_size-native", "unchanged"],
)
def test_a_change_that_changes_no_output_reruns_nothing(finished, change):
    jobs, output = dry_run(finished, change)
    assert jobs == [], jobs
    assert "Nothing to be done" in output


PICTURES = ("pictures", "slide=s1, chunk=chunk0000")  # the figure's 4 tiles: the first chunk's (tiles_per_job 4)


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("change", "rerun"),
    [
        # pictures: the tiles they draw are the figure's first max_tiles
        ({"figure.max_tiles": 2}, [("figure", "slide=s1"), PICTURES]),
        ({"figure.dpi": 150}, [("figure", "slide=s1"), ("overview", "slide=s1"), ("prediction_map", "slide=s1")]),
        # the overview draws the slide maps (grid mode) in the slide maps' colour map, not the figure's
        ({"figure.cmap": "magma"}, [("figure", "slide=s1"), ("methods_text", ""), PICTURES]),
        ({"pictures": "all"}, [("pictures", f"slide=s1, chunk=chunk000{i}") for i in range(3)]),
        ({"pictures": "none"}, []),  # nothing to draw; what was drawn stays
        ({"slide_map": {"cmap": "magma"}}, [("overview", "slide=s1"),
                                            *[("slide_map", f"slide=s1, method={m}") for m in ("integrated_gradients", "vanilla")]]),
    ],
    ids=["max_tiles", "dpi", "cmap", "pictures-all", "pictures-none", "slide_map-cmap"],
)
def test_figure_options_rerun_only_what_draws_with_them(finished, change, rerun):
    assert picture_chunks(finished) == ["chunk0000"] and len(chunks(finished)) == 3
    jobs, output = dry_run(finished, change)
    if not rerun:
        assert jobs == [] and "Nothing to be done" in output, jobs
    else:
        assert jobs == sorted([("all", ""), *rerun])


@pytest.mark.workflow
def test_a_method_parameter_reruns_only_that_method(finished):
    jobs, _ = dry_run(finished, {"methods.1.x_steps": 5})
    expected = [
        ("all", ""), ("figure", "slide=s1"), ("methods_text", ""), ("overview", "slide=s1"), ("summary", ""),
        ("qupath", "slide=s1"), ("slide_map", "slide=s1, method=integrated_gradients"),
    ]  # fmt: skip
    for chunk in chunks(finished):
        expected += [("masks", f"slide=s1, method=integrated_gradients, chunk={chunk}")]  # masks/{slide}/{method}/{chunk}
    expected += [("pictures", f"slide=s1, chunk={chunk}") for chunk in picture_chunks(finished)]
    assert len(chunks(finished)) >= 2  # several mask jobs per method, so "only that method" means something
    assert jobs == sorted(expected)


@pytest.mark.workflow
@pytest.mark.parametrize("change", [{"tiles.min_tissue": 0.95}, {"tile_um": 128}], ids=["min_tissue", "tile_um"])
def test_a_tile_selection_change_reruns_the_tiles_checkpoint(finished, change):
    jobs, output = dry_run(finished, change)
    # a dry run lists the checkpoint and the target; what follows it is planned once it has run
    assert jobs == [("all", ""), ("tiles", "slide=s1")]
    assert "Params have changed since last execution" in output
    if "tile_um" in change:  # the model was trained at tile_um 64 (its params.json)
        assert "config tile_um 128 differs from tile_um 64 in the params.json of model" in output


@pytest.mark.workflow
def test_after_a_tile_selection_change_the_results_match_the_new_tiles(tmp_path, slide_path, model_dir):
    root = make_project(tmp_path / "run", slide_path, model_dir, [{"slide": "s1", "x": 0, "y": 0}], **BASE)
    assert run_snakemake(root).returncode == 0
    before = read_tile_table(root / "results/tiles/s1.csv")
    dry_run(root, {"tiles.min_tissue": 0.6})  # 10 tissue tiles at 0.2, 5 at 0.6
    result = run_snakemake(root, "--configfile", "changed.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    after = read_tile_table(root / "results/tiles/s1.csv")
    assert 0 < len(after) < len(before)
    rows = read_tile_table(root / "results/summary.csv")  # any CSV with a header
    assert sorted({r["tile"] for r in rows}) == sorted(r["tile"] for r in after)
    assert "Nothing to be done" in run_snakemake(root, "-n", "--configfile", "changed.yaml").stdout
