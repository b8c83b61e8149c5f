"""Models that break assumptions: frozen or under ``torch.no_grad()``, a fixed input size, NaN outputs,
several outputs, and ``class_idx`` given as a bool, a float, a name or an array.

Each case works, or fails with one InputError line naming the model (and, through the
workflow, the slide and tiles), never a traceback or a NaN mask.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import slidegrad as sg
from slidegrad.model import scale

from .conftest import make_tiny_cnn, run_snakemake
from .test_saliency import FAST
from .test_workflow import make_project

# written into a tmp dir on sys.path / PYTHONPATH, so the workflow's jobs import it as "labnets:..."
LABNETS = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class FixedNet(nn.Module):
        """Conv, flatten, linear: only ``size``×``size`` inputs fit the head."""

        def __init__(self, size=32, n_classes=2):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * size * size, n_classes)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


    class NaNNet(nn.Module):
        """A conv net whose outputs are all NaN."""

        def __init__(self, n_classes=2):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, n_classes)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3))) * float("nan")


    def fixed_net(size=32, n_classes=2):
        torch.manual_seed(0)
        return FixedNet(size, n_classes).eval()


    def nan_net(n_classes=2):
        torch.manual_seed(0)
        return NaNNet(n_classes).eval()
    '''
)


@pytest.fixture()
def labnets(tmp_path, monkeypatch):
    """The ``labnets`` module, importable here and in the workflow's jobs."""
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "labnets.py").write_text(LABNETS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    import importlib

    import labnets

    return importlib.reload(labnets)


def tiles(ihc_tiles: np.ndarray, size: int) -> np.ndarray:
    """The four IHC tiles cropped to ``size``, preprocessed: ``(4, size, size, 3)``."""
    return scale(ihc_tiles[:, :size, :size])


def one_line_error(message: str, call, *args, **kwargs) -> sg.InputError:
    with pytest.raises(sg.InputError, match=message) as err:
        call(*args, **kwargs)
    assert "\n" not in str(err.value)
    return err.value


def assert_failed_cleanly(root: Path, result, message: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(message, output), output[-3000:]
    assert "Traceback" not in output
    masks = root / "results" / "masks"
    assert not masks.exists() or not [p for p in masks.rglob("*") if p.is_file()]


# -- (a) frozen models and torch.no_grad() ---------------------------------------------------
@pytest.mark.parametrize("mode", ["frozen", "no_grad", "inference_mode"])
@pytest.mark.parametrize("method", list(FAST))
def test_frozen_model_and_no_grad_give_the_same_masks(ihc_tiles, mode, method):
    batch = tiles(ihc_tiles[:2], 32)
    expected = sg.SaliencyMap(make_tiny_cnn(), class_idx=1).get(batch, method, **FAST[method])
    model = make_tiny_cnn()
    if mode == "frozen":
        model.requires_grad_(False)
    context = {"frozen": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[mode]
    with context():
        masks = sg.SaliencyMap(model, class_idx=1).get(batch, method, **FAST[method])
    np.testing.assert_allclose(masks, expected, atol=1e-6)
    assert masks.max() > 0


def test_frozen_model_under_no_grad_with_the_pair_engine(ihc_tiles):
    batch = tiles(ihc_tiles[:1], 32)
    model = make_tiny_cnn().requires_grad_(False)
    expected = sg.SaliencyMap(make_tiny_cnn(), class_idx=0, engine="pair").gradcam(batch)
    with torch.no_grad():
        sal = sg.SaliencyMap(model, class_idx=0, engine="pair")
        np.testing.assert_allclose(sal.gradcam(batch), expected, atol=1e-6)
        assert sal.vanilla(batch).max() > 0


# -- (b) a fixed input size ------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("class_idx", [None, 1])
def test_bare_module_with_a_fixed_input_size(labnets, ihc_tiles, size, class_idx):
    batch = tiles(ihc_tiles, size)
    sal = sg.SaliencyMap(labnets.fixed_net(size), class_idx=class_idx)
    for method in ("vanilla", "gradcam"):
        masks = sal.get(batch, method)
        assert masks.shape == (4, size, size) and masks.max() > 0
    assert sal.backend.n_classes == 2
    assert sal.probabilities(batch).shape == (4, 2)


def test_fixed_input_size_errors_name_the_model_and_size(labnets, ihc_tiles):
    sal = sg.SaliencyMap(labnets.fixed_net(32), class_idx=5)  # not checkable until the first batch
    one_line_error(r"class_idx: 5 is out of range; the model has 2 classes", sal.vanilla, tiles(ihc_tiles, 32))
    one_line_error(
        r"model 'FixedNet': fails on 48×48 px inputs \(mat1 and mat2 shapes cannot be multiplied",
        sg.SaliencyMap(labnets.fixed_net(32)).vanilla,
        tiles(ihc_tiles, 48),
    )


def write_state_dict(directory: Path, module: nn.Module, **params) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), directory / "weights.pt")
    (directory / "params.json").write_text(json.dumps({"outcome_labels": ["neg", "pos"], **params}))
    return directory


def test_load_model_tile_px_for_a_fixed_size_state_dict(tmp_path, labnets, ihc_tiles):
    directory = write_state_dict(
        tmp_path / "m", labnets.fixed_net(32), architecture="labnets:fixed_net", architecture_kwargs={"size": 32}
    )
    one_line_error(
        rf"model '{directory}': fails on 64×64 px inputs \(mat1 .*\); give its tile size: params.json 'tile_px', "
        r"load_model\(..., tile_px=\) or the config's tile_px",
        sg.load_model,
        directory,
        allow_code=True,  # params.json names this test's own module:function
    )
    loaded = sg.load_model(directory, tile_px=32, allow_code=True)
    assert (loaded.tile_px, loaded.outcome_labels) == (32, ["neg", "pos"])
    masks = sg.SaliencyMap(loaded, class_idx="pos").gradcam(tiles(ihc_tiles, 32))
    assert masks.shape == (4, 32, 32) and masks.max() > 0
    one_line_error(r"load_model: tile_px must be a positive integer, got 0", sg.load_model, directory, tile_px=0)
    params = json.loads((directory / "params.json").read_text())
    (directory / "params.json").write_text(json.dumps({**params, "tile_px": 32}))
    assert sg.load_model(directory, allow_code=True).tile_px == 32
    one_line_error(
        r"params.json has tile_px 32 but tile_px=48 was given", sg.load_model, directory, tile_px=48, allow_code=True
    )


@pytest.mark.workflow
def test_workflow_passes_the_config_tile_px_to_load_model(tmp_path, labnets, slide_path):
    model_dir = write_state_dict(tmp_path / "model", labnets.fixed_net(32), architecture="labnets:fixed_net")
    tile_list = [{"slide": "s1", "x": 0, "y": 0}, {"slide": "s1", "x": 640, "y": 384}]
    root = make_project(
        tmp_path / "run", slide_path, model_dir, tile_list, tile_px=32, tile_um=32, methods=["vanilla", "gradcam"],
        model={"path": str(model_dir), "allow_code": True},  # params.json names this test's module:function
    )  # fmt: skip
    result = run_snakemake(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    files = sorted(p for p in (root / "results" / "masks").rglob("*") if p.is_file())
    assert [p.relative_to(root / "results" / "masks").as_posix() for p in files] == [
        "s1/gradcam/chunk0000.npz", "s1/vanilla/chunk0000.npz"
    ]  # one file per mask job
    from slidegrad.results import read_mask_chunk

    assert all(read_mask_chunk(p).masks.shape == (2, 32, 32) for p in files)


# -- (c) NaN or inf outputs ------------------------------------------------------------------
class Scaled(nn.Module):
    """The tiny CNN with its outputs multiplied by ``factor`` for the images ``rows``."""

    def __init__(self, factor: float, rows: list[int]) -> None:
        super().__init__()
        self.net, self.factor, self.rows = make_tiny_cnn(), factor, rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        scale = torch.ones(len(x), 1)
        scale[[r for r in self.rows if r < len(x)]] = self.factor
        return out * scale


@pytest.mark.parametrize("factor", [float("nan"), float("inf")])
@pytest.mark.parametrize("engine", ["native", "pair"])
def test_nonfinite_outputs_are_an_error_naming_the_images(ihc_tiles, factor, engine):
    batch = tiles(ihc_tiles, 32)
    rows = [1, 3] if engine == "native" else [0, 1, 2, 3]  # the pair engine runs one image at a time
    sal = sg.SaliencyMap(Scaled(factor, rows), engine=engine)
    message = rf"model 'Scaled': outputs are NaN or inf for image\(s\) {', '.join(map(str, rows))} of the batch"
    err = one_line_error(message, sal.probabilities, batch)
    assert isinstance(err, sg.saliency.NonFiniteError) and err.indices == rows
    one_line_error(message, sal.vanilla, batch)  # the predicted class is never taken from NaN


@pytest.mark.parametrize("method", list(FAST))
def test_nonfinite_gradients_are_an_error_not_a_nan_mask(ihc_tiles, method):
    """With class_idx given no probabilities are computed: the NaN gradients are caught instead."""
    sal = sg.SaliencyMap(Scaled(float("nan"), [0]), class_idx=1)
    one_line_error(
        rf"model 'Scaled': {method} attributions are NaN or inf for image\(s\) 0 of the batch",
        sal.get,
        tiles(ihc_tiles[:2], 32),
        method,
        **FAST[method],
    )


def test_pair_engine_checks_outputs_before_guided_ig(ihc_tiles):
    sal = sg.SaliencyMap(Scaled(float("nan"), [0]), class_idx=1, engine="pair")
    one_line_error(r"outputs are NaN or inf for image\(s\) 0", sal.guided_integrated_gradients, tiles(ihc_tiles, 32))


@pytest.mark.workflow
def test_workflow_nan_model_names_slide_tiles_and_model(tmp_path, labnets, slide_path):
    model_dir = write_state_dict(
        tmp_path / "model", labnets.nan_net(), architecture="labnets:nan_net", tile_px=64, tile_um=64
    )
    tile_list = [{"slide": "s1", "x": 0, "y": 0}, {"slide": "s1", "x": 640, "y": 384}]
    root = make_project(
        tmp_path / "run", slide_path, model_dir, tile_list, methods=["gradcam"],
        model={"path": str(model_dir), "allow_code": True},  # params.json names this test's module:function
    )  # fmt: skip
    message = rf"slidegrad: error: model '{model_dir}': outputs are NaN or inf on slide 's1', "
    message += r"tile\(s\) x0_y0, x640_y384"
    assert_failed_cleanly(root, run_snakemake(root), message)


# -- (d) several outputs ---------------------------------------------------------------------
class TwoHeads(nn.Module):
    def __init__(self, kind: type) -> None:
        super().__init__()
        self.net, self.kind = make_tiny_cnn(), kind

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        return {"a": out, "b": out} if self.kind is dict else self.kind([out, out])


@pytest.mark.parametrize("kind", [tuple, list, dict])
def test_module_with_several_outputs(tmp_path, ihc_tiles, kind):
    message = rf"model '{{}}': returns 2 outputs \(a {kind.__name__}\); expected one \(N, classes\) output"
    batch = tiles(ihc_tiles, 32)
    one_line_error(message.format("TwoHeads"), sg.SaliencyMap(TwoHeads(kind)).vanilla, batch)
    one_line_error(message.format("TwoHeads"), sg.SaliencyMap(TwoHeads(kind), class_idx=0).gradcam, batch)
    torch.save(TwoHeads(kind), tmp_path / "two.pt")
    one_line_error(message.format(tmp_path / "two.pt"), sg.load_model, tmp_path / "two.pt", allow_pickle=True)


# -- (h) class_idx ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("class_idx", "message"),
    [
        (True, r"class_idx: True \(bool\) is not a class index; expected an int$"),
        (1.0, r"class_idx: 1.0 \(float\) is not a class index; expected an int$"),
        (np.float32(1), r"class_idx: 1.0 \(float32\) is not a class index"),
        ("DAB-positive", r"class_idx: 'DAB-positive' is a class name; names need a LoadedModel with outcome_labels"),
        ([[0, 1]], r"class_idx: expected an int or one per image, got shape \(1, 2\)"),
        (-1, r"class_idx: -1 is out of range; the model has 2 classes \(0..1\)"),
    ],
)
def test_bad_class_idx_on_a_bare_module(class_idx, message):
    one_line_error(message, sg.SaliencyMap, make_tiny_cnn(), class_idx=class_idx)


def test_class_idx_names_arrays_and_per_call(model_dir, ihc_tiles):
    model = sg.load_model(model_dir)  # outcome_labels: negative, positive
    batch = tiles(ihc_tiles, 64)
    by_index = sg.SaliencyMap(model, class_idx=1)
    by_name = sg.SaliencyMap(model, class_idx="positive")
    np.testing.assert_array_equal(by_name.gradcam(batch), by_index.gradcam(batch))
    np.testing.assert_array_equal(by_name.resolve_classes(batch), [1, 1, 1, 1])
    per_image = ["negative", "positive", 1, np.int64(0)]
    np.testing.assert_array_equal(by_index.resolve_classes(batch, per_image), [0, 1, 1, 0])
    np.testing.assert_array_equal(by_index.resolve_classes(batch, np.array([1, 0, 0, 1])), [1, 0, 0, 1])
    np.testing.assert_allclose(
        by_index.vanilla(batch, class_idx=["negative", 1, 1, 0])[0], by_index.vanilla(batch[0], class_idx=0), atol=1e-6
    )
    one_line_error(
        r"class_idx: 'DAB-positive' is not a class of the model; its outcome_labels are \['negative', 'positive'\]",
        sg.SaliencyMap,
        model,
        class_idx="DAB-positive",
    )
    one_line_error(r"expected an int or one of the outcome_labels$", by_index.vanilla, batch, class_idx=True)
    message = r"class_idx: 3 values for 4 images; give one, or one per image"
    one_line_error(message, by_index.vanilla, batch, class_idx=[0, 1, 1])
    one_line_error(r"class_idx: 2 is out of range", by_index.gradcam, batch, class_idx=np.array([0, 2, 0, 0]))
    one_line_error(r"class_idx: 0.0 \(float\) is not", by_index.gradcam, batch, class_idx=np.array([0, 1.5, 0, 0]))


@pytest.mark.workflow
def test_top_k_scoring_with_a_nan_model_names_slide_tiles_and_model(tmp_path, labnets, slide_path):
    model_dir = write_state_dict(
        tmp_path / "model", labnets.nan_net(), architecture="labnets:nan_net", tile_px=64, tile_um=64
    )
    root = make_project(
        tmp_path / "run", slide_path, model_dir, [{"slide": "s1", "x": 0, "y": 0}],
        methods=["gradcam"], tile_selection={"mode": "top_k", "k": 1},
        model={"path": str(model_dir), "allow_code": True},  # params.json names this test's module:function
    )  # fmt: skip
    message = rf"slidegrad: error: model '{model_dir}': outputs are NaN or inf on slide 's1', tile\(s\) x"
    result = run_snakemake(root)
    assert_failed_cleanly(root, result, message)
    assert "Error in rule tiles" in result.stdout + result.stderr  # scoring stops it, before any mask job
    assert not (root / "results" / "tiles" / "s1.csv").exists()
