"""The README's Python example runs verbatim on the demo slides and model."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
from PIL import Image

from .conftest import REPO


def readme_python_example() -> str:
    """The code block under the README's "Python API" heading."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section should hold one example"
    return blocks[0]


def test_readme_python_example_runs_verbatim(demo_assets, tmp_path):
    demo = tmp_path / "resources" / "demo"
    (demo / "slides").mkdir(parents=True)
    (demo / "slides" / "demo_a.tiff").symlink_to(demo_assets["slides"]["a"])
    (demo / "model").symlink_to(demo_assets["model"], target_is_directory=True)
    code = readme_python_example()
    # run as written, then report what it made
    probe = (
        "\nimport json\n"
        "print(json.dumps({'m': list(m.shape), 'ms': list(ms.shape), 'mask': list(mask.shape),"
        " 'raw': list(raw.shape), 'masks': list(masks.shape), 'raws': len(raws), 'probs': list(probs.shape),"
        " 'm_range': [float(m.min()), float(m.max())]}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code + probe], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    shapes = json.loads(result.stdout.strip().splitlines()[-1])
    assert shapes["m"] == [128, 128] and shapes["ms"] == [2, 128, 128]
    assert shapes["mask"] == [128, 128] and shapes["raw"] == [128, 128, 3]
    assert shapes["masks"] == [2, 128, 128] and shapes["raws"] == 2
    assert shapes["probs"] == [1, 2]
    assert 0.0 <= shapes["m_range"][0] < shapes["m_range"][1] <= 1.0
    figure = np.asarray(Image.open(tmp_path / "comparison.png"))
    assert figure.ndim == 3 and figure.shape[0] > 200 and figure.std() > 0
