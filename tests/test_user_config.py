"""A user's config file replaces the demo's: documented defaults for what it leaves out, one line
for what it must give, and the README's defaults table says what the schema says."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from slidegrad.config import load_schema, validate_config

from .conftest import REPO, run_snakemake
from .test_workflow import _write_csv

README = (REPO / "README.md").read_text()


def user_project(tmp_path, slide_path, model_dir, **fields):
    """A folder with a sample sheet, a tile table and ``my.yaml`` holding only ``fields``, and a
    ``config.yaml`` like the demo's that the run must ignore."""
    _write_csv(tmp_path / "samples.csv", [{"slide": "s1", "path": str(slide_path)}])
    _write_csv(tmp_path / "tiles.csv", [{"slide": "s1", "x": 64 * i, "y": 0} for i in range(70)])
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(fields))
    demo = {"samples": "other.csv", "tiles": "other.csv", "model": {"path": "other"}, "methods": ["xrai"],
            "tiles_per_job": 6, "threads": 1}  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(demo))
    return tmp_path


MINIMAL = {"samples": "samples.csv", "tiles": "tiles.csv", "methods": ["vanilla"]}


@pytest.mark.workflow
def test_a_minimal_user_config_gets_the_documented_defaults(tmp_path, slide_path, model_dir):
    root = user_project(tmp_path, slide_path, model_dir, **MINIMAL, model={"path": str(model_dir)})
    result = run_snakemake(root, "-n", "--configfile", "my.yaml", "--quiet", "rules")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    # 70 tiles at the default tiles_per_job 64: 2 chunks × 1 method (not the demo's 6 per job, 7 methods);
    # pictures (default: figure) only of the first chunk, which holds the figure's default 16 tiles
    assert counts["masks"] == "2" and counts["pictures"] == "1", counts
    plan = run_snakemake(root, "-n", "--configfile", "my.yaml")
    assert "threads: 2" in plan.stdout  # the default threads, not the demo's 1


@pytest.mark.workflow
@pytest.mark.parametrize("missing", ["tiles", "model", "methods"])
def test_a_required_field_left_out_is_one_line(tmp_path, slide_path, model_dir, missing):
    fields = {**MINIMAL, "model": {"path": str(model_dir)}}
    del fields[missing]
    root = user_project(tmp_path, slide_path, model_dir, **fields)
    result = run_snakemake(root, "-n", "--configfile", "my.yaml")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "slidegrad: error" in line]
    assert lines == [f"slidegrad: error: config field '{missing}': required, but the config has none"], output
    assert "Traceback" not in output


def test_model_path_is_required_too():
    with pytest.raises(ValueError, match="config field 'model.path': required, but the config has none"):
        validate_config({**MINIMAL, "model": {}})


def test_validated_config_has_every_schema_default():
    config = validate_config({**MINIMAL, "model": {"path": "m"}})
    schema = load_schema()
    for key, sub in schema["properties"].items():
        if "default" in sub:
            assert key in config, key
        for inner, spec in sub.get("properties", {}).items():
            if spec.get("type") == "object" and key in config:  # a nested section: its own defaults
                for leaf, leaf_spec in spec["properties"].items():
                    assert config[key][inner][leaf] == leaf_spec["default"], (key, inner, leaf)
            elif "default" in spec and key in config:
                assert config[key][inner] == spec["default"], (key, inner)
    assert config["tiles_per_job"] == 64 and config["threads"] == 2 and config["outdir"] == "results"


# -- the README's config reference against the schema --------------------------------------
def readme_table() -> dict[str, str]:
    """``field`` → default cell of README's "Config reference" table (a row may name several fields)."""
    section = README.split("## Config reference", 1)[1].split("\n## ", 1)[0]
    table = section.split("| field | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.strip().splitlines()[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([a-z_.]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def rendered(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def schema_fields() -> dict[str, dict]:
    schema = load_schema()
    fields = {}
    for key, sub in schema["properties"].items():
        fields[key] = sub
        if sub.get("type") == "object" and key != "mask_resources" and key != "demo":
            fields.update({f"{key}.{inner}": spec for inner, spec in sub.get("properties", {}).items()})
    return fields


def test_readme_defaults_table_matches_the_schema():
    table, schema = readme_table(), load_schema()
    fields = schema_fields()
    assert set(table) == set(fields) - {"model"}, "README fields differ from the schema's"
    for name, spec in fields.items():
        if name == "model":
            continue
        cell = table[name]
        if name in schema["required"] or name == "model.path":
            assert cell.startswith("required"), (name, cell)
        elif spec.get("type") == "object":  # each inner default as `key: value`
            for inner, sub in spec["properties"].items():
                if "default" in sub:
                    assert f"`{inner}: {rendered(sub['default'])}`" in cell, (name, inner, cell)
        elif "default" in spec:
            quoted = re.match(r"`([^`]*)`", cell)
            shown = quoted.group(1) if quoted else cell.split(" ")[0]
            assert shown == rendered(spec["default"]), (name, cell, spec["default"])
        else:
            assert cell.startswith("required"), (name, cell)
