"""A framework is one unit: the registry (detection, names), params.json read once per plan, and the
framework string called ``framework`` (``backend`` kept as a deprecated alias where it was public).

No test here imports torch or TensorFlow: detection and planning must not need them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from slidegrad import model as model_module
from slidegrad.backends import FRAMEWORKS, framework_at, framework_of, get_framework
from slidegrad.errors import InputError
from slidegrad.model import LoadedModel, detect_framework, model_params
from slidegrad.planning import build_plan
from slidegrad.slide import WSI

from .conftest import REPO
from .test_workflow import _load_config, make_project


def test_the_registry_names_each_framework_once():
    assert tuple(FRAMEWORKS) == ("torch", "tensorflow")
    assert get_framework("pytorch") is FRAMEWORKS["torch"] and get_framework("tf") is FRAMEWORKS["tensorflow"]
    assert [f.default_preprocessing for f in FRAMEWORKS.values()] == ["scale", "standardize"]
    with pytest.raises(InputError, match=r"^model 'm': backend 'jax' is not supported; expected one of"):
        get_framework("jax", "model 'm': backend")


def test_detection_by_file_layout_and_object_imports_no_framework(tmp_path):
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    assert framework_at(tmp_path / "net.keras").name == "tensorflow"
    assert framework_at(tmp_path / "saved").name == "tensorflow"
    assert framework_at(tmp_path / "net.pt").name == "torch"
    assert framework_of(object()) is None
    code = (
        "import sys, slidegrad, slidegrad.model, slidegrad.jobs, slidegrad.planning, slidegrad.evaluate.sanity\n"
        "from pathlib import Path\n"
        "from slidegrad.backends import framework_at, framework_of\n"
        "framework_at(Path('x.keras')); framework_of(object())\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))\n"
    )
    env = {"PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_params_json_is_read_once_into_one_object(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.pt").write_bytes(b"")
    (folder / "params.json").write_text(
        json.dumps({"tile_px": 64, "tile_um": 128, "outcome_labels": {"0": "a", "1": "b"}, "backend": "pytorch"})
    )
    params = model_params(folder)
    assert (params.tile_px, params.tile_um, params.outcome_labels, params.framework) == (64, 128, ["a", "b"], "torch")
    assert detect_framework(params) is FRAMEWORKS["torch"]
    with pytest.raises(InputError, match=r"^model '.*': params.json has no 'architecture'; add it$"):
        params.require("architecture")
    (folder / "params.json").write_text("{not json")
    with pytest.raises(InputError, match=r"params.json': not valid JSON"):
        model_params(folder)


def test_a_plan_reads_params_json_once(tmp_path, slide_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.pt").write_bytes(b"")
    (folder / "params.json").write_text(json.dumps({"tile_px": 64, "tile_um": 128, "outcome_labels": ["a", "b"]}))
    root = make_project(tmp_path / "project", slide_path, folder, [{"slide": "s1", "x": 0, "y": 0}])
    monkeypatch.chdir(root)
    reads = []
    read = model_module._read_params_file
    monkeypatch.setattr(model_module, "_read_params_file", lambda file: reads.append(file) or read(file))
    config = _load_config(root)
    config["model"]["class_idx"] = "b"
    plan = build_plan(config)
    assert (plan.framework, plan.config["model"]["class_idx"], len(reads)) == ("torch", 1, 1)


def test_config_model_backend_is_the_old_name_of_framework(tmp_path, slide_path, monkeypatch):
    root = make_project(tmp_path, slide_path, tmp_path / "not-built", [{"slide": "s1", "x": 0, "y": 0}])
    monkeypatch.chdir(root)
    config = _load_config(root)
    config.update(tile_px=64, tile_um=128)
    assert build_plan(json.loads(json.dumps(config))).framework == "torch"  # not built yet: torch
    config["model"]["framework"] = "tensorflow"
    plan = build_plan(json.loads(json.dumps(config)))
    assert plan.framework == "tensorflow" and not any("model.backend" in w for w in plan.warnings)
    del config["model"]["framework"]
    config["model"]["backend"] = "tensorflow"
    plan = build_plan(json.loads(json.dumps(config)))
    assert plan.framework == "tensorflow" and "backend" not in plan.config["model"]
    assert "config field 'model.backend': deprecated, renamed 'model.framework'" in plan.warnings
    config["model"]["framework"] = "torch"
    with pytest.raises(InputError, match=r"'model.framework' \('torch'\) and 'model.backend' \('tensorflow'"):
        build_plan(config)


def test_loaded_model_backend_keyword_is_deprecated(caplog):
    with caplog.at_level(logging.WARNING, logger="slidegrad"):
        model = LoadedModel(module=None, backend="torch", outcome_labels=["a", "b"])
    assert (model.framework, model.backend, model.n_classes) == ("torch", "torch", 2)
    assert [r.getMessage() for r in caplog.records] == ["LoadedModel: backend= is deprecated; use framework="]
    with pytest.raises(TypeError, match="disagree"):
        LoadedModel(None, "torch", ["a", "b"], backend="tensorflow")


def test_slide_reader_keyword_and_its_old_name(slide_path, caplog):
    with WSI(slide_path, 64, 128, reader="tiffslide") as wsi:
        assert wsi.reader == wsi.backend == "tiffslide"
    with caplog.at_level(logging.WARNING, logger="slidegrad"), WSI(slide_path, 64, 128, backend="tiffslide") as wsi:
        assert wsi.reader == "tiffslide"
    assert [r.getMessage() for r in caplog.records] == [
        "WSI: backend= is deprecated; use reader= (the library that reads the slide)"
    ]
    with pytest.raises(InputError, match="reader must be one of auto, openslide, tiffslide, got 'vips'"):
        WSI(slide_path, 64, 128, reader="vips")
    with pytest.raises(InputError, match="disagree"):
        WSI(slide_path, 64, 128, reader="openslide", backend="tiffslide")
