"""Config fields that decide which jobs run: `pictures` (overlay/heatmap PNGs) and `slide_map.enabled`."""

from __future__ import annotations

import re

import pytest

from .conftest import run_snakemake
from .test_user_config import MINIMAL, user_project


def _jobs(root, **extra) -> dict[str, str]:
    import yaml

    fields = {**yaml.safe_load((root / "my.yaml").read_text()), **extra}
    (root / "my.yaml").write_text(yaml.safe_dump(fields))
    result = run_snakemake(root, "-n", "--configfile", "my.yaml", "--quiet", "rules")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))


@pytest.mark.workflow
@pytest.mark.parametrize(("pictures", "jobs"), [("figure", "1"), ("all", "2"), ("none", None)])
def test_pictures_decides_the_picture_jobs(tmp_path, slide_path, model_dir, pictures, jobs):
    root = user_project(tmp_path, slide_path, model_dir, **MINIMAL, model={"path": str(model_dir)})
    counts = _jobs(root, pictures=pictures)  # 70 tiles, 64 per job: 2 chunks; the figure's 16 lie in the first
    assert counts.get("pictures") == jobs, counts
    assert counts["masks"] == "2" and "slide_map" not in counts and "prediction_map" not in counts, counts
    assert counts["qupath"] == "1", counts


@pytest.mark.workflow
def test_slide_map_enabled_makes_slide_maps_in_table_mode(tmp_path, slide_path, model_dir):
    root = user_project(tmp_path, slide_path, model_dir, **MINIMAL, model={"path": str(model_dir)})
    counts = _jobs(root, slide_map={"enabled": True}, methods=["vanilla", "gradcam"])
    assert counts["slide_map"] == "2" and counts["prediction_map"] == "1", counts


@pytest.mark.workflow
def test_a_bad_pictures_value_is_one_line(tmp_path, slide_path, model_dir):
    root = user_project(tmp_path, slide_path, model_dir, **MINIMAL, model={"path": str(model_dir)}, pictures="some")
    result = run_snakemake(root, "-n", "--configfile", "my.yaml")
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "slidegrad: error" in line]
    assert result.returncode != 0 and len(lines) == 1 and "'pictures'" in lines[0], output
    assert "Traceback" not in output
