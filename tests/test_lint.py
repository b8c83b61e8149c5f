"""Workflow style: ``snakemake --lint`` and ``snakefmt --check`` are clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, local_snakemake_env


@pytest.mark.workflow
def test_snakemake_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--cores", "1"], cwd=REPO, capture_output=True, text=True,
        env=local_snakemake_env(),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Congratulations, your workflow is in a good condition!" in output, output


def test_snakefmt_check_is_clean():
    snakefmt = Path(sys.executable).with_name("snakefmt")
    result = subprocess.run([str(snakefmt), "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_script_redirects_stderr_to_its_log():
    for script in sorted((REPO / "scripts").glob("*.py")):
        assert 'sys.stderr = open(snakemake.log[0], "w", buffering=1)' in script.read_text(), script.name
