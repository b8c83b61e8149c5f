"""The conda env files (``envs/*.yaml``), rendered from ``requirements.lock``: one source for every version;
and ``requirements.txt``, rendered from pyproject.toml: one source for every range.

Each env is slidegrad's own dependencies (``[project] dependencies`` in pyproject.toml) plus
what its rules add (:data:`ENVS`), and everything those pull in, each pinned to its
``requirements.lock`` version; so an env's ``pip:`` section alone installs a complete,
reproducible env.  What a package pulls in comes from the installed packages' metadata
(the dev venv ``make install`` builds from the lock), evaluated for this interpreter:
render on CPython 3.11 on Linux x86-64, like the envs (conda-forge ``python=3.11``).

    python -m slidegrad.envfiles                      # rewrite envs/*.yaml and requirements.txt (make envs)
    python -m slidegrad.envfiles --check              # exit 1 where they differ (tests/test_envfiles.py)
    python -m slidegrad.envfiles --torch-build cu128  # envs/torch.yaml with PyTorch's CUDA 12.8 build

``requirements.txt`` lists slidegrad's direct dependencies with their ranges: pyproject.toml's
``[project] dependencies`` and then each extra (:func:`requirements_txt`), so a range is edited in
pyproject.toml only.

No Snakemake import.  ``tests/envs`` builds a venv from each env's ``pip:`` section and
runs every rule of the env in it.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = "3.11"  # the envs' conda python=; render with it (markers are evaluated for the running one)
TORCH_INDEX = "https://download.pytorch.org/whl"
# Packages the slide readers need beyond pyproject's list: tiffslide reads JPEG / JPEG 2000 tiles with them.
SLIDE_CODECS = ["imagecodecs"]


@dataclass(frozen=True)
class EnvSpec:
    """One env file: its first comment line and the packages its rules need beyond slidegrad's own."""

    description: str
    extras: tuple[str, ...]


ENVS: dict[str, EnvSpec] = {
    "base": EnvSpec(
        "Light rules: demo slides, tiles (but top_k), overlays, summary (CSV + Parquet), figures, "
        "overviews, methods text, evaluation table and figures (no deep-learning framework).",
        ("pandas", "pyarrow"),
    ),
    "torch": EnvSpec(
        "Mask, evaluate and top_k tiles rules for PyTorch models, and the demo model's training. "
        "GPU nodes: README 'Conda environments' (--torch-build). transformers: Hugging Face models.",
        ("torch", "transformers"),
    ),
    "tensorflow": EnvSpec(
        "Mask, evaluate and top_k tiles rules for Keras / TensorFlow models, and the demo's Keras twin.",
        ("tensorflow", "tf_keras"),
    ),
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = REPO / "requirements.lock") -> dict[str, tuple[str, str]]:
    """``canonical name -> (name as the lock spells it, version)``."""
    pins = {}
    for line in path.read_text().splitlines():
        text = line.split("#")[0].strip()
        if text:
            name, version = text.split("==")
            pins[canonical(name)] = (name, version)
    return pins


def core_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """slidegrad's own dependencies (names only) and the slide codecs."""
    from packaging.requirements import Requirement

    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(r).name for r in project["dependencies"]] + SLIDE_CODECS


def closure(names: list[str]) -> list[str]:
    """``names`` and every distribution they require (this interpreter's markers, no extras), canonical, in
    discovery order."""
    from packaging.requirements import Requirement

    seen: dict[str, None] = {}
    stack = [canonical(n) for n in reversed(names)]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen[name] = None
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            raise SystemExit(f"envfiles: {name} is not installed here; run `make install` first") from None
        for line in reversed(requires):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(canonical(req.name))
    return list(seen)


def pins(env: str, lock: dict[str, tuple[str, str]] | None = None) -> tuple[list[str], list[str]]:
    """An env's ``name==version`` lines: (its top-level packages, what they pull in, sorted)."""
    lock = read_lock() if lock is None else lock
    top = list(dict.fromkeys(canonical(n) for n in core_requirements() + list(ENVS[env].extras)))
    every = closure(top)
    missing = [n for n in every if n not in lock]
    if missing:
        raise SystemExit(f"envfiles: env {env!r} needs {', '.join(missing)}, which requirements.lock does not pin")
    for name in every:
        installed = metadata.version(name).split("+")[0]
        if installed != lock[name][1]:
            raise SystemExit(
                f"envfiles: {name} {installed} is installed but requirements.lock pins {lock[name][1]}; "
                "run `make install` first"
            )

    def line(name: str) -> str:
        return f"{lock[name][0]}=={lock[name][1]}"

    pulled = sorted((n for n in every if n not in top), key=str.lower)
    return [line(n) for n in top], [line(n) for n in pulled]


def render(env: str, torch_build: str | None = None) -> str:
    """The text of ``envs/{env}.yaml``.  ``torch_build`` (torch env only): a PyTorch wheel index tag such
    as ``cu128`` or ``cpu``; torch then comes from ``download.pytorch.org/whl/{tag}`` as ``torch==V+{tag}``."""
    if sys.version_info[:2] != tuple(map(int, PYTHON.split("."))):
        raise SystemExit(f"envfiles: render with Python {PYTHON} (the envs' python); this is {sys.version.split()[0]}")
    top, pulled = pins(env)
    index: list[str] = []
    if torch_build:
        if env != "torch":
            raise SystemExit("envfiles: --torch-build applies to the torch env only")
        index = [f"--extra-index-url {TORCH_INDEX}/{torch_build}"]
        top = [f"{p}+{torch_build}" if canonical(p.split("==")[0]) == "torch" else p for p in top]
    lines = [f"# {text}" for text in textwrap.wrap(ENVS[env].description, 96)]
    lines += [
        "# Generated from requirements.lock by `make envs` (python -m slidegrad.envfiles): change the lock or",
        "# ENVS in src/slidegrad/envfiles.py, not the pins here; tests/test_envfiles.py checks they agree,",
        "# tests/envs builds a venv from the pip section alone and runs this env's rules in it.",
    ]
    if torch_build:
        lines.append(f"# torch: PyTorch's {torch_build} build (python -m slidegrad.envfiles --torch-build {torch_build}).")
    lines += ["channels:", "  - conda-forge", "  - nodefaults", "dependencies:", f"  - python={PYTHON}", "  - pip", "  - pip:"]
    lines += [f"      - {item}" for item in index + top]
    lines.append("      # pulled in by the packages above")
    lines += [f"      - {item}" for item in pulled]
    return "\n".join(lines) + "\n"


def requirements_txt(pyproject: Path = REPO / "pyproject.toml") -> str:
    """The text of ``requirements.txt``: pyproject's dependencies, then each extra's, as written there."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = [
        "# Direct dependencies and their ranges; exact versions of everything are in requirements.lock.",
        "# Generated from pyproject.toml ([project] dependencies and optional-dependencies, the one source)",
        "# by `make envs` (python -m slidegrad.envfiles): edit pyproject.toml, not this file.",
        *project["dependencies"],
    ]
    for extra, requirements in project.get("optional-dependencies", {}).items():
        lines += [f"# [{extra}]", *requirements]
    return "\n".join(lines) + "\n"


def env_path(env: str, envs_dir: Path = REPO / "envs") -> Path:
    return envs_dir / f"{env}.yaml"


def stale(envs_dir: Path = REPO / "envs") -> list[str]:
    """Envs whose file differs from :func:`render`."""
    return [env for env in ENVS if not env_path(env, envs_dir).exists() or env_path(env, envs_dir).read_text() != render(env)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slidegrad.envfiles", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if an env file differs from its rendering")
    parser.add_argument("--torch-build", metavar="TAG", help="torch env from download.pytorch.org/whl/TAG (cu128, cpu, …)")
    parser.add_argument("--envs-dir", type=Path, default=REPO / "envs")
    parser.add_argument("--requirements", type=Path, default=REPO / "requirements.txt", help="requirements.txt to write")
    args = parser.parse_args(argv)
    requirements = requirements_txt()
    if args.check:
        bad = stale(args.envs_dir)
        for env in bad:
            print(f"envfiles: {env_path(env, args.envs_dir)} differs from requirements.lock; run `make envs`", file=sys.stderr)
        if not args.requirements.exists() or args.requirements.read_text() != requirements:
            print(f"envfiles: {args.requirements} differs from pyproject.toml; run `make envs`", file=sys.stderr)
            bad.append("requirements.txt")
        return 1 if bad else 0
    if not args.torch_build and (not args.requirements.exists() or args.requirements.read_text() != requirements):
        args.requirements.write_text(requirements)
        print(f"envfiles: wrote {args.requirements}")
    for env in ENVS:
        if args.torch_build and env != "torch":
            continue
        path = env_path(env, args.envs_dir)
        text = render(env, args.torch_build if env == "torch" else None)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"envfiles: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
