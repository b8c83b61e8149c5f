"""envs/*.yaml follow from requirements.lock (src/slidegrad/envfiles.py): they cannot drift from it.

The slow half, tests/envs, builds a venv from each env's pip section and runs its rules there.
"""

from __future__ import annotations

import shutil

import yaml

from slidegrad import envfiles

from .conftest import REPO


def pip_pins(text: str) -> dict[str, str]:
    spec = yaml.safe_load(text)
    section = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    return {envfiles.canonical(p.split("==")[0]): p.split("==")[1] for p in section if not p.startswith("-")}


def test_env_files_are_rendered_from_the_lock():
    assert envfiles.stale() == [], "envs/*.yaml differ from requirements.lock: run `make envs`"


def test_every_pin_is_the_lock_version():
    lock = envfiles.read_lock()
    for env in envfiles.ENVS:
        pins = pip_pins(envfiles.env_path(env).read_text())
        assert {name: version for name, version in pins.items() if lock[name][1] != version} == {}, env


def test_envs_hold_slidegrad_dependencies_and_their_extras():
    core = {envfiles.canonical(n) for n in envfiles.core_requirements()}
    pins = {env: set(pip_pins(envfiles.env_path(env).read_text())) for env in envfiles.ENVS}
    for env, names in pins.items():
        assert core <= names, env
    assert {"pandas", "pyarrow"} <= pins["base"]
    assert "torch" in pins["torch"] and "tensorflow" not in pins["torch"]
    assert {"tensorflow", "tf-keras"} <= pins["tensorflow"] and "torch" not in pins["tensorflow"]


def test_a_hand_edited_env_file_is_caught(tmp_path):
    shutil.copytree(REPO / "envs", tmp_path / "envs")
    shutil.copy(REPO / "requirements.txt", tmp_path / "requirements.txt")
    paths = ["--envs-dir", str(tmp_path / "envs"), "--requirements", str(tmp_path / "requirements.txt")]
    path = tmp_path / "envs/base.yaml"
    path.write_text(path.read_text().replace("      - pyarrow==26.0.1\n", ""))
    assert envfiles.stale(tmp_path / "envs") == ["base"]
    assert envfiles.main(["--check", *paths]) == 1
    assert envfiles.main(paths) == 0
    assert envfiles.stale(tmp_path / "envs") == [] and envfiles.main(["--check", *paths]) == 0


def test_a_hand_edited_requirements_txt_is_caught(tmp_path):
    shutil.copytree(REPO / "envs", tmp_path / "envs")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text((REPO / "requirements.txt").read_text().replace("numpy>=2.0", "numpy>=2.4"))
    paths = ["--envs-dir", str(tmp_path / "envs"), "--requirements", str(requirements)]
    assert envfiles.main(["--check", *paths]) == 1
    assert envfiles.main(paths) == 0
    assert requirements.read_text() == envfiles.requirements_txt() and envfiles.main(["--check", *paths]) == 0


def test_torch_build_takes_torch_from_pytorchs_index():
    text = envfiles.render("torch", "cu128")
    section = yaml.safe_load(text)["dependencies"][2]["pip"]
    assert section[0] == "--extra-index-url https://download.pytorch.org/whl/cu128"
    assert "torch==2.13.0+cu128" in section
    assert pip_pins(text).keys() == pip_pins(envfiles.render("torch")).keys()
