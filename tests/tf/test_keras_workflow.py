"""The workflow on the demo's Keras twin gives the PyTorch run's masks (reduced demo)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from slidegrad.results import read_mask_chunk, read_mask_records

from ..conftest import REPO, run_snakemake, write_positive_demo_tiles

pytestmark = pytest.mark.workflow

METHODS = ["vanilla", {"name": "integrated_gradients", "x_steps": 5}, {"name": "vanilla", "smooth": True, "nsamples": 3}]


def test_keras_demo_matches_torch_demo(tmp_path):
    picks = write_positive_demo_tiles(tmp_path / "tiles.csv")
    base = {
        "samples": str(REPO / "config/demo/samples.csv"),
        "tiles": "tiles.csv",
        "model": {"path": "resources/demo/model"},
        "methods": METHODS + [{"name": "gradcam"}],
        "demo": {"epochs": 1},
        "threads": 1,
        "evaluate": {"metrics": ["deletion", "insertion", "sanity"], "steps": 10},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(base))
    keras = {
        "outdir": "results/keras",
        "model": {"path": "resources/demo/model_keras", "backend": "tensorflow"},
        "methods": METHODS + [{"name": "gradcam", "layer": "conv2"}],
    }
    (tmp_path / "keras.yaml").write_text(yaml.safe_dump(keras))

    torch_run = run_snakemake(tmp_path)
    assert torch_run.returncode == 0, torch_run.stdout[-3000:] + torch_run.stderr[-3000:]
    keras_run = run_snakemake(tmp_path, "--configfile", "config.yaml", "keras.yaml")  # keras.yaml overlays
    assert keras_run.returncode == 0, keras_run.stdout[-3000:] + keras_run.stderr[-3000:]

    assert (tmp_path / "resources/demo/model_keras/model.keras").exists()
    for pick in picks:
        tile = f"x{pick['x']}_y{pick['y']}"
        for method in ("vanilla", "integrated_gradients", "vanilla_smooth", "gradcam"):
            torch_masks = read_mask_chunk(tmp_path / f"results/masks/{pick['slide']}/{method}/chunk0000.npz")
            keras_masks = read_mask_chunk(tmp_path / f"results/keras/masks/{pick['slide']}/{method}/chunk0000.npz")
            assert torch_masks.names == keras_masks.names == [tile], method
            assert np.abs(torch_masks.masks - keras_masks.masks).max() <= 1e-4, method
        (meta_t,) = read_mask_records(tmp_path / f"results/masks/{pick['slide']}/vanilla/chunk0000.npz")
        (meta_k,) = read_mask_records(tmp_path / f"results/keras/masks/{pick['slide']}/vanilla/chunk0000.npz")
        assert (meta_t["backend"], meta_k["backend"]) == ("torch", "tensorflow")
        np.testing.assert_allclose(meta_k["probabilities"], meta_t["probabilities"], atol=1e-5)
    assert (tmp_path / "results/keras/figures/demo_a.pdf").exists()

    # the evaluation stage on Keras: same weights, so the same curves; its own randomised models
    def evaluation(outdir: str) -> dict:
        with open(tmp_path / outdir / "evaluation.csv") as handle:
            return {(r["tile"], r["method"]): r for r in csv.DictReader(handle)}

    torch_rows, keras_rows = evaluation("results"), evaluation("results/keras")
    assert set(torch_rows) == set(keras_rows) and len(keras_rows) == 2 * 4
    for key, row in keras_rows.items():
        for column in ("deletion_auc", "deletion_chance", "insertion_auc", "insertion_chance"):
            assert abs(float(row[column]) - float(torch_rows[key][column])) <= 1e-4, (key, column)
        assert -1 <= float(row["sanity_spearman"]) <= 1 and row["sanity_passes"] in ("true", "false")
    assert (tmp_path / "results/keras/figures/evaluation/demo_b.png").exists()
