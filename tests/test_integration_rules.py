"""IG's quadrature rules (``integration``) and the completeness error in mask records and the summary."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import slidegrad as sg
from slidegrad.completeness import completeness_error, completeness_errors
from slidegrad.engines.native import quadrature

from .conftest import make_tiny_cnn


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_gauss_legendre_is_exact_on_polynomials_of_degree_up_to_2n_minus_1(n):
    nodes, weights = quadrature("gauss_legendre", n)
    assert nodes.min() > 0 and nodes.max() < 1 and weights.sum() == pytest.approx(1.0)
    for degree in range(2 * n):
        assert float(weights @ nodes**degree) == pytest.approx(1 / (degree + 1), rel=1e-12, abs=1e-14), degree
    assert abs(float(weights @ nodes ** (2 * n)) - 1 / (2 * n + 1)) > 1e-13  # not exact one degree higher


@pytest.mark.parametrize("n", [2, 3, 25])
def test_riemann_mean_is_pairs_linspace_mean_and_exact_on_degree_1(n):
    nodes, weights = quadrature("riemann_mean", n)
    np.testing.assert_array_equal(nodes, np.linspace(0, 1, n))
    assert np.all(weights == 1 / n)
    assert float(weights @ nodes) == pytest.approx(0.5, rel=1e-12)
    assert abs(float(weights @ nodes**2) - 1 / 3) > 1e-4  # degree 2: only approximate


@pytest.mark.parametrize("n", [2, 3, 25])
def test_trapezoid_halves_the_end_weights_and_its_error_falls_as_1_over_n_squared(n):
    nodes, weights = quadrature("trapezoid", n)
    np.testing.assert_array_equal(nodes, np.linspace(0, 1, n))
    assert weights[0] == weights[-1] == pytest.approx(0.5 / (n - 1)) and weights.sum() == pytest.approx(1.0)
    assert float(weights @ nodes) == pytest.approx(0.5, rel=1e-12)  # exact on degree 1
    # on x²: the trapezoid error is 1/(6 (n-1)²); the mean's 1/(6 (n-1)) — larger by a factor n - 1
    assert float(weights @ nodes**2) - 1 / 3 == pytest.approx(1 / (6 * (n - 1) ** 2), rel=1e-9)
    nodes_1, weights_1 = quadrature("trapezoid", 1)  # one step: the midpoint
    assert nodes_1.tolist() == [0.5] and weights_1.tolist() == [1.0]


def test_riemann_trapezoid_is_an_old_name_of_riemann_mean_with_one_warning(tiny_cnn, caplog):
    import logging

    x = sg.model.scale(np.zeros((1, 64, 64, 3), np.uint8) + 120)
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
    with caplog.at_level(logging.WARNING, logger="slidegrad"):
        old = sal.integrated_gradients(x, x_steps=3, integration="riemann_trapezoid")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "method integrated_gradients: integration 'riemann_trapezoid' is an old name (deprecated); use "
        "'riemann_mean', the same rule"
    ]
    np.testing.assert_array_equal(old, sal.integrated_gradients(x, x_steps=3, integration="riemann_mean"))
    resolved = sg.methods.resolve_params(sg.methods.get_method("xrai"), {"integration": "riemann_trapezoid"}, False)
    assert resolved["integration"] == "riemann_mean"


class _Linear(torch.nn.Module):
    """A linear model on channels-first 8×8 images: its IG is exact for any rule."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("rule", ["riemann_mean", "trapezoid", "gauss_legendre"])
def test_completeness_on_a_linear_model_is_exact(rule):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    sal = sg.SaliencyMap(_Linear(), class_idx=1)
    _, raws = sal.attributions(x, "integrated_gradients", x_steps=4, integration=rule)
    errors = completeness_errors(sal.backend, x, np.ones(3, int), raws, "integrated_gradients", {})
    assert all(e is not None and e < 1e-4 for e in errors), errors


def test_gauss_legendre_converges_to_the_dense_riemann_reference(ihc_tiles):
    model = make_tiny_cnn(seed=3)
    x = sg.model.scale(ihc_tiles[:2])
    sal = sg.SaliencyMap(model, class_idx=1)
    _, reference = sal.attributions(x, "integrated_gradients", x_steps=256)
    _, gauss = sal.attributions(x, "integrated_gradients", x_steps=16, integration="gauss_legendre")
    for ref, g in zip(reference, gauss):
        assert np.corrcoef(ref.ravel(), g.ravel())[0, 1] > 0.99
    errors = completeness_errors(sal.backend, x, np.ones(2, int), gauss, "integrated_gradients", {})
    assert all(e is not None and e < 0.05 for e in errors), errors


def test_xrai_takes_the_integration_rule(ihc_tiles):
    x = sg.model.scale(ihc_tiles[:1])
    sal = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1)
    _, (gauss,) = sal.attributions(x, "xrai", steps=4, integration="gauss_legendre")
    _, (riemann,) = sal.attributions(x, "xrai", steps=4)
    assert gauss.shape == riemann.shape == (64, 64) and not np.array_equal(gauss, riemann)


def test_unknown_integration_rule_is_one_line_naming_the_field(tiny_cnn):
    x = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(
        sg.InputError, match=r"parameter 'integration' must be one of riemann_mean, trapezoid, gauss_legendre"
    ):
        sg.SaliencyMap(tiny_cnn).integrated_gradients(x, integration="simpson")
    with pytest.raises(sg.InputError, match=r"'integration' must be riemann_mean with the pair engine"):
        sg.SaliencyMap(tiny_cnn, engine="pair").integrated_gradients(x, integration="gauss_legendre")
    schema = sg.methods.method_schema()["oneOf"][1]["properties"]["integration"]
    # the old name stays valid in configs (resolve_params maps it to riemann_mean with a warning)
    assert schema["enum"] == ["riemann_mean", "trapezoid", "gauss_legendre", "riemann_trapezoid"]
    assert schema["default"] == "riemann_mean"


def test_completeness_error_formula_and_undefined_cases(tiny_cnn):
    assert completeness_error(1.1, 3.0, 2.0) == pytest.approx(0.1)
    assert completeness_error(1.0, 2.0, 2.0) is None and completeness_error(np.nan, 1.0, 0.0) is None
    sal = sg.SaliencyMap(tiny_cnn)
    x = np.zeros((2, 64, 64, 3), np.float32)
    raws = [np.zeros((64, 64)), np.zeros((64, 64))]
    assert completeness_errors(sal.backend, x, np.zeros(2, int), raws, "xrai", {}) == [None, None]
    assert completeness_errors(sal.backend, x, np.zeros(2, int), raws, "integrated_gradients", {}, True) == [None, None]


def test_mask_records_and_summary_report_completeness(tmp_path, ihc):
    from slidegrad import jobs
    from slidegrad.config import MethodSpec
    from slidegrad.layout import Layout
    from slidegrad.results import read_mask_records, write_tile_chunk
    from slidegrad.tables import Tile, write_tile_table

    from .conftest import write_model_dir

    tiles = [Tile("s1", x, y) for x, y in [(0, 0), (320, 270)]]
    tile_file = Layout(str(tmp_path / "out")).tile_chunk("s1", "chunk0000")
    images = np.stack([ihc[tile.y : tile.y + 64, tile.x : tile.x + 64] for tile in tiles])
    write_tile_chunk(tile_file, [t.name for t in tiles], [t.x for t in tiles], [t.y for t in tiles], images)
    table = tmp_path / "tiles.csv"
    write_tile_table(table, tiles, per_job=8, geometry={"tile_px": 64})
    model_dir = write_model_dir(tmp_path / "model", tile_px=64, tile_um=64)
    layout = Layout(str(tmp_path / "out"))
    specs = [
        MethodSpec("ig_gl", "integrated_gradients", False, {"x_steps": 8, "batch_size": 20, "integration": "gauss_legendre"}),
        MethodSpec("vanilla", "vanilla", False, {}),
        MethodSpec("ig_adaptive", "integrated_gradients", False, {"x_steps": 2, "batch_size": 20, "tolerance": 1e-9, "max_steps": 8}),
    ]
    for spec in specs:
        out = layout.mask_file("s1", "chunk0000", spec.id)
        jobs.run_mask_job(str(model_dir), str(table), "chunk0000", tile_file, spec, out, class_idx=1)
    metas = [m for spec in specs for m in read_mask_records(layout.mask_file("s1", "chunk0000", spec.id))]
    assert len(metas) == 3 * 2 and [m["tile"] for m in metas[:2]] == ["x0_y0", "x320_y270"]
    by_method: dict[str, list] = {}
    for meta in metas:
        by_method.setdefault(meta["method"], []).append(meta["completeness_error"])
    assert by_method["vanilla"] == [None, None] and all(0 <= e < 0.5 for e in by_method["ig_gl"])
    assert {m["method"]: m.get("ig_steps") for m in metas} == {"ig_gl": None, "vanilla": None, "ig_adaptive": 8}
    jobs.write_summary([str(table)], str(tmp_path / "out"), ["ig_gl", "vanilla"], str(tmp_path / "summary.csv"))
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert "completeness_error" in rows[0]
    assert {r["method"]: r["completeness_error"] == "" for r in rows} == {"ig_gl": False, "vanilla": True}


def test_methods_paragraph_names_gauss_legendre_only():
    from slidegrad.methods_text import method_phrase

    meta = {"method_name": "integrated_gradients", "smooth": False, "params": {"x_steps": 8, "batch_size": 20}}
    gauss, _ = method_phrase({**meta, "params": {**meta["params"], "integration": "gauss_legendre"}})
    riemann, _ = method_phrase({**meta, "params": {**meta["params"], "integration": "riemann_mean"}})
    older, _ = method_phrase({**meta, "params": {**meta["params"], "integration": "riemann_trapezoid"}})  # old sidecars
    assert older == riemann
    assert "black baseline, Gauss–Legendre quadrature, 8 integration steps" in gauss
    assert riemann == method_phrase(meta)[0] == "integrated gradients (Sundararajan et al. 2017; black baseline, 8 integration steps)"
    fixed, _ = method_phrase({**meta, "params": {**meta["params"], "tolerance": 0.0, "max_steps": 128}})
    adaptive, _ = method_phrase({**meta, "params": {**meta["params"], "tolerance": 0.01, "max_steps": 128}})
    assert fixed == riemann
    assert "at most 128 steps, steps doubled per tile until its completeness error ≤ 0.01, 8 integration steps" in adaptive


def test_cuda_segment_sum_path_equals_index_add():
    """The one-hot matmul segment sum (used on CUDA, deterministic) equals ``index_add_`` within float rounding."""
    from slidegrad.backends.torch_backend import TorchOps

    rng = np.random.default_rng(0)
    for dtype in (torch.float32, torch.float64):
        t = torch.from_numpy(rng.normal(size=(24, 5, 5, 3))).to(dtype)
        index = torch.from_numpy(np.repeat(np.arange(4), 6))
        expected = torch.zeros((4, 5, 5, 3), dtype=dtype).index_add_(0, index, t)
        got = TorchOps.onehot_segment_sum(t, index, 4)
        assert got.dtype == dtype and got.shape == expected.shape
        torch.testing.assert_close(got, expected)


def test_adaptive_steps_rerun_only_the_tiles_above_the_tolerance(ihc_tiles):
    model = make_tiny_cnn(seed=3)
    x = sg.model.scale(ihc_tiles[:4])
    classes = np.ones(4, int)
    sal = sg.SaliencyMap(model, class_idx=1)
    _, fixed = sal.attributions(x, "integrated_gradients", x_steps=2, integration="gauss_legendre")
    before = completeness_errors(sal.backend, x, classes, fixed, "integrated_gradients", {})
    tolerance = float(np.median(before))  # some tiles meet it at 2 steps, some do not
    _, adaptive = sal.attributions(
        x, "integrated_gradients", x_steps=2, integration="gauss_legendre", tolerance=tolerance, max_steps=64
    )
    steps = sal.engine.tile_steps
    after = completeness_errors(sal.backend, x, classes, adaptive, "integrated_gradients", {})
    for i in range(4):
        if before[i] <= tolerance:  # met it: left as computed with 2 steps
            assert steps[i] == 2
            np.testing.assert_array_equal(adaptive[i], fixed[i])
        else:  # doubled until it met the tolerance (or reached max_steps)
            assert steps[i] > 2 and (after[i] <= tolerance or steps[i] == 64), (i, steps[i], after[i])
            assert after[i] < before[i]
    assert sorted(set(steps)) != [2], steps


def test_adaptive_steps_stop_at_max_steps_and_pair_refuses_them(ihc_tiles, tiny_cnn):
    x = sg.model.scale(ihc_tiles[:2])
    sal = sg.SaliencyMap(make_tiny_cnn(seed=3), class_idx=1)
    sal.attributions(x, "integrated_gradients", x_steps=3, tolerance=1e-12, max_steps=10)
    assert sal.engine.tile_steps == [10, 10]  # 3 → 6 → 10: capped
    with pytest.raises(sg.InputError, match=r"'tolerance' \(adaptive steps\) must be 0 with the pair engine, got 0.01"):
        sg.SaliencyMap(tiny_cnn, engine="pair").integrated_gradients(x[:1], tolerance=0.01)
    with pytest.raises(sg.InputError, match=r"parameter 'tolerance' must be a number ≥ 0"):
        sal.integrated_gradients(x[:1], tolerance=-1)
