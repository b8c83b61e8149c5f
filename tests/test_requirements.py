"""The install files pin packages by name and version only: a fresh machine can install them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO

PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
LOCAL = re.compile(r"(file:|@\s*[/.~]|^[/.~]|\.whl\b|\.tar\.gz\b|^-e\s|^--find-links|^-f\s)")


def requirement_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, requirement) for every non-comment line of a requirements file."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split(" #")[0].strip()
        if text and not text.startswith("#"):
            lines.append((number, text))
    return lines


def local_paths(path: Path) -> list[str]:
    """Lines that name a local file or folder instead of a package on an index."""
    return [f"{path.name}:{n}: {text}" for n, text in requirement_lines(path) if LOCAL.search(text)]


@pytest.mark.parametrize("name", ["requirements.lock", "requirements.txt", "requirements-reference.txt"])
def test_no_local_paths(name):
    assert local_paths(REPO / name) == []


def test_reference_lines_are_name_and_version():
    lines = requirement_lines(REPO / "requirements-reference.txt")
    assert [text for _, text in lines if not PIN.match(text)] == [] and ("slideflow==3.0.2" in dict(lines).values())


def test_every_lock_line_is_name_and_version():
    bad = [f"line {n}: {text}" for n, text in requirement_lines(REPO / "requirements.lock") if not PIN.match(text)]
    assert bad == []


def test_torch_is_the_cpu_pin():
    pins = dict(text.split("==") for _, text in requirement_lines(REPO / "requirements.lock"))
    assert pins["torch"] == "2.13.0"
    assert pins["tensorflow"] == "2.21.0" and pins["tf_keras"] == "2.21.0"


@pytest.mark.parametrize(
    "line",
    [
        "tensorflow @ file:///tmp/tfwheels/tensorflow-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl",
        "tf_keras @ /tmp/tfwheels/tf_keras-2.21.0-py3-none-any.whl",
        "./wheels/foo-1.0-py3-none-any.whl",
        "-e /work/main",
    ],
)
def test_the_check_catches_local_paths(tmp_path, line):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# header\nnumpy==2.4.6\n{line}\n")
    assert local_paths(lock) == [f"requirements.lock:3: {line}"]


# -- one source for the ranges: pyproject.toml ----------------------------------------------
def pyproject_requirements(path: Path = REPO / "pyproject.toml") -> list[str]:
    """Every requirement pyproject.toml declares: ``[project] dependencies`` and every extra's."""
    import tomllib

    project = tomllib.loads(path.read_text())["project"]
    return project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]


def outside_the_ranges(requirements: list[str], lock: Path = REPO / "requirements.lock") -> list[str]:
    """Requirements the lock does not pin, or pins to a version outside the requirement's range."""
    from packaging.requirements import Requirement

    from slidegrad.envfiles import canonical

    pins = {canonical(text.split("==")[0]): text.split("==")[1] for _, text in requirement_lines(lock)}
    bad = []
    for line in requirements:
        req = Requirement(line)
        version = pins.get(canonical(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            bad.append(f"{line} (requirements.lock: {version or 'not pinned'})")
    return bad


def test_requirements_txt_is_rendered_from_pyproject():
    from slidegrad.envfiles import requirements_txt

    assert (REPO / "requirements.txt").read_text() == requirements_txt(), (
        "requirements.txt differs from pyproject.toml's dependencies: edit pyproject.toml, then `make envs`"
    )


def test_the_lock_pins_every_direct_dependency_within_its_range():
    requirements = pyproject_requirements()
    assert "numpy>=2.0" in requirements and "tensorflow==2.21.0" in requirements and "snakemake" in requirements
    assert outside_the_ranges(requirements) == []


def test_a_range_the_lock_misses_is_caught(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\nnumpy==2.4.6\ntf_keras==2.21.0\n")
    assert outside_the_ranges(["numpy>=2.0", "tf-keras==2.21.0"], lock) == []
    assert outside_the_ranges(["numpy>=2.5", "scipy"], lock) == [
        "numpy>=2.5 (requirements.lock: 2.4.6)",
        "scipy (requirements.lock: not pinned)",
    ]


def test_license_file_is_the_one_pyproject_declares():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("Copyright ") and "the slidegrad authors" in text.splitlines()[0]
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
