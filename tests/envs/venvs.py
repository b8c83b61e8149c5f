"""A plain venv per conda env file, from its ``pip:`` section alone (no conda): what `--sdm conda` would install.

``python -m venv`` (CPython 3.11, like the envs' ``python=3.11``; it brings pip and setuptools as
conda's ``pip`` does), then ``pip install -r <the pip section>`` with ``PIP_NO_CACHE_DIR=1``.
pip resolves dependencies: a package the section does not pin still installs, and
:func:`unpinned` reports it.

Each test session builds every env once (in parallel).  ``SLIDEGRAD_ENV_VENVS=<folder>`` keeps the
venvs there, keyed by the env file's hash, and reuses them in later sessions (local work only: CI
starts from a fresh clone).  ``SLIDEGRAD_ENVS_DIR=<folder>`` takes the env files from there
instead of ``envs/`` (e.g. a copy with a dependency removed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..conftest import REPO


def envs_dir() -> Path:
    return Path(os.environ.get("SLIDEGRAD_ENVS_DIR", REPO / "envs")).resolve()


def pip_section(env_file: Path) -> list[str]:
    """The ``pip:`` list of a conda env file."""
    spec = yaml.safe_load(env_file.read_text())
    for dep in spec.get("dependencies", []):
        if isinstance(dep, dict) and "pip" in dep:
            return [str(line) for line in dep["pip"]]
    return []


INSTALLER = {"setuptools", "wheel"}


@dataclass
class EnvVenv:
    env: str
    env_file: Path
    root: Path
    seconds: float  # build time (0: reused)
    size_mb: float  # site-packages on disk
    error: str = ""

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"


def _build(env_file: Path, root: Path) -> tuple[float, str]:
    """Build the venv at ``root``; (seconds, error text or "")."""
    start = time.monotonic()
    if root.exists():
        shutil.rmtree(root)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True)
    requirements = root / "pip-section.txt"
    requirements.write_text("\n".join(pip_section(env_file)) + "\n")
    env = dict(os.environ, PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    cmd = [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", "-r", str(requirements)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        return seconds, f"pip install -r {env_file.name}'s pip section failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    (root / ".complete").write_text(f"{seconds:.1f}\n")
    return seconds, ""


def _size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def build_all(scratch: Path) -> dict[str, EnvVenv]:
    """A venv for every ``*.yaml`` in :func:`envs_dir`, built in parallel (or reused, see the module doc)."""
    cache = os.environ.get("SLIDEGRAD_ENV_VENVS")
    plans = {}
    for env_file in sorted(envs_dir().glob("*.yaml")):
        digest = hashlib.sha256(env_file.read_bytes()).hexdigest()[:12]
        root = (Path(cache).resolve() if cache else scratch) / f"{env_file.stem}-{digest}"
        plans[env_file.stem] = (env_file, root)

    def one(item):
        env, (env_file, root) = item
        if (root / ".complete").exists():
            return EnvVenv(env, env_file, root, 0.0, _size_mb(root))
        seconds, error = _build(env_file, root)
        return EnvVenv(env, env_file, root, seconds, _size_mb(root) if not error else 0.0, error)

    with ThreadPoolExecutor(max_workers=len(plans) or 1) as pool:
        return {v.env: v for v in pool.map(one, plans.items())}


def unpinned(venv: EnvVenv) -> list[str]:
    """Packages installed in the venv that its env's pip section does not pin (name==version as installed)."""
    from slidegrad.envfiles import canonical

    pinned = {}
    for line in pip_section(venv.env_file):
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==")
            pinned[canonical(name)] = version.split("+")[0]
    proc = subprocess.run(
        [str(venv.python), "-m", "pip", "list", "--format=freeze", "--exclude", "pip"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    extra = []
    for line in proc.stdout.split():
        name, version = line.split("==")
        if canonical(name) in INSTALLER and canonical(name) not in pinned:
            continue  # the venv's (conda's pip's) own, where nothing in the env asks for a version
        if pinned.get(canonical(name)) != version.split("+")[0]:
            extra.append(line)
    return extra
