"""Cross-backend parity: one SmallCNN in PyTorch and, with ported weights, in Keras.

Each framework runs in its own subprocess (``tests/parity_maps.py``); this test
imports neither.  Same class probabilities (≤ 1e-5) and the same normalized
masks (relative L2 and correlation, ``tests/metrics.py``) for every method and
smooth variant: the two frameworks run other conv kernels, so near a max-pool
tie a gradient may take the other argmax, which a max-abs bar cannot allow.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from .conftest import REPO, make_tiny_cnn
from .metrics import assert_masks_close
from .parity_maps import METHODS


@pytest.fixture(scope="module")
def parity_outputs(tmp_path_factory, ihc_tiles):
    root = tmp_path_factory.mktemp("parity")
    state = {k: v.detach().numpy() for k, v in make_tiny_cnn(seed=3).state_dict().items()}
    np.savez(root / "weights.npz", **state)
    np.save(root / "tiles.npy", ihc_tiles)
    outputs = {}
    for framework in ("torch", "tensorflow"):
        out = root / f"{framework}.npz"
        result = subprocess.run(
            [sys.executable, str(REPO / "tests/parity_maps.py"), framework, root / "weights.npz", root / "tiles.npy", out],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[framework] = dict(np.load(out))
    return outputs


def test_same_probabilities(parity_outputs):
    torch_p, tf_p = parity_outputs["torch"]["probabilities"], parity_outputs["tensorflow"]["probabilities"]
    assert torch_p.shape == (4, 2)
    np.testing.assert_allclose(tf_p, torch_p, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_same_maps(parity_outputs, method):
    torch_m, tf_m = parity_outputs["torch"][method], parity_outputs["tensorflow"][method]
    assert torch_m.shape == tf_m.shape == (4, 64, 64)
    assert torch_m.max() > 0
    print(f"parity {method}: max abs diff {float(np.abs(torch_m - tf_m).max()):.3g}")
    worst = assert_masks_close(tf_m, torch_m)
    print(f"parity {method}: {worst}")
