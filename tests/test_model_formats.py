"""PyTorch model formats: torch.export, state dict + ``module:function``, Slideflow, pickled modules.

Each format is built here from a seeded network, loaded with ``sg.load_model`` and
checked against the original: the same logits on real tiles, the same Grad-CAM
and gradient masks, and the outcome labels from ``params.json``.  Every bad input
gives one InputError line naming it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import slidegrad as sg
from slidegrad.model import file_sha256, require_param, scale
from slidegrad.torch_nets import ResNet18

from .conftest import make_tiny_cnn

FACTORY = f"{__name__}:two_conv_net"  # "tests.test_model_formats:two_conv_net"
LABELS = ["stroma", "tumour"]


class TwoConvNet(nn.Module):
    """Conv–ReLU–pool, conv–ReLU, global average pool, linear: ``(N, 3, H, W)`` → ``(N, n_classes)``."""

    def __init__(self, n_classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.max_pool2d(torch.relu(self.conv1(x)), 2)))
        return self.fc(x.mean(dim=(2, 3)))


def two_conv_net(n_classes: int = 2, width: int = 4) -> nn.Module:
    """The ``module:function`` factory the tests name (seeded, so two calls give the same weights)."""
    torch.manual_seed(1)
    return TwoConvNet(n_classes, width).eval()


not_a_factory = 42


class SlideflowWrapper(nn.Module):
    """Slideflow's ``ModelWrapper`` layout: the network as ``model`` with its ``fc`` removed, the head as ``fc0``."""

    def __init__(self, net: nn.Module, n_classes: int, hidden: int = 0) -> None:
        super().__init__()
        n_features = net.fc.in_features
        net.fc = nn.Identity()
        self.model = net
        if hidden:
            self.h0 = nn.Linear(n_features, hidden)
        self.fc0 = nn.Linear(hidden or n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model(x)
        return self.fc0(self.h0(x) if hasattr(self, "h0") else x)


@pytest.fixture(scope="module")
def batch(ihc_tiles) -> np.ndarray:
    """The four real IHC tiles, preprocessed: ``(4, 64, 64, 3)`` float32."""
    return scale(ihc_tiles)


def assert_same_model(
    loaded: sg.LoadedModel, original: nn.Module, batch: np.ndarray, labels=LABELS, masks: bool = True
) -> None:
    """Same labels, same logits on the tiles, same Grad-CAM and gradient masks (with ``masks``) as ``original``."""
    assert loaded.backend == "torch"
    assert loaded.outcome_labels == labels
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.module(x).numpy(), original(x).numpy(), rtol=1e-5, atol=1e-6)
    if not masks:
        return
    ours, theirs = sg.SaliencyMap(loaded, class_idx=1), sg.SaliencyMap(original, class_idx=1)
    np.testing.assert_allclose(ours.gradcam(batch), theirs.gradcam(batch), atol=1e-5)
    np.testing.assert_allclose(ours.vanilla(batch), theirs.vanilla(batch), atol=1e-5)


def write_params(directory: Path, **fields) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    params = {"tile_px": 64, "tile_um": 64, "outcome_labels": LABELS, **fields}
    (directory / "params.json").write_text(json.dumps(params))
    return directory


def export(model: nn.Module, path: Path, dynamic_batch: bool = True) -> Path:
    dynamic = {"x": {0: torch.export.Dim("batch")}} if dynamic_batch else None
    torch.export.save(torch.export.export(model, (torch.zeros(2, 3, 64, 64),), dynamic_shapes=dynamic), path)
    return path


def expect_error(message: str, *args, **kwargs) -> None:
    with pytest.raises(sg.InputError, match=message) as err:
        sg.load_model(*args, **kwargs)
    assert "\n" not in str(err.value)


# -- torch.export ------------------------------------------------------------------------
@pytest.mark.parametrize("make", [make_tiny_cnn, lambda: ResNet18(2).eval()], ids=["small_cnn", "resnet18"])
def test_export_directory_gradcam_hooks_the_original_layers(tmp_path, batch, make):
    original = make()
    directory = write_params(tmp_path / "m")
    export(original, directory / "model.pt2")
    loaded = sg.load_model(directory)
    assert (loaded.tile_px, loaded.tile_um) == (64, 64)
    assert loaded.sha256 == file_sha256([directory / "model.pt2", directory / "params.json"])
    convs = [name for name, m in loaded.module.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == [name for name, m in original.named_modules() if isinstance(m, nn.Conv2d)]
    assert_same_model(loaded, original, batch)
    sal = sg.SaliencyMap(loaded, class_idx=1)
    assert sal.backend.gradcam_layer(None) == convs[-1]  # the original model's name for its last conv
    np.testing.assert_array_equal(sal.gradcam(batch, layer=convs[0]), sal.gradcam(batch, layer=convs[0]))
    assert not np.array_equal(sal.gradcam(batch, layer=convs[0]), sal.gradcam(batch))


def test_export_file_without_params_and_bare_exported_module(tmp_path, batch):
    original = make_tiny_cnn()
    loaded = sg.load_model(export(original, tmp_path / "net.pt2"))
    assert loaded.outcome_labels == ["0", "1"] and loaded.tile_px is None
    assert_same_model(loaded, original, batch, labels=["0", "1"])
    bare = torch.export.load(str(tmp_path / "net.pt2")).module()  # not through load_model
    np.testing.assert_allclose(
        sg.SaliencyMap(bare, class_idx=0).gradcam(batch),
        sg.SaliencyMap(original, class_idx=0).gradcam(batch),
        atol=1e-5,
    )


def test_export_errors(tmp_path):
    fixed = write_params(tmp_path / "fixed")
    export(make_tiny_cnn(), fixed / "model.pt2", dynamic_batch=False)
    expect_error(r"model.pt2': exported with a fixed batch size of 2; export with a dynamic one", fixed)
    small = write_params(tmp_path / "small", tile_px=32)
    export(make_tiny_cnn(), small / "model.pt2")
    expect_error(r"model.pt2': exported for 64×64 inputs but tile_px is 32", small)
    (tmp_path / "garbage.pt2").write_bytes(b"garbage")
    expect_error(r"garbage.pt2': not a torch.export program \(not a zip archive", tmp_path / "garbage.pt2")
    data = (fixed / "model.pt2").read_bytes()
    (tmp_path / "truncated.pt2").write_bytes(data[: len(data) // 2])
    expect_error(r"truncated.pt2': not a torch.export program", tmp_path / "truncated.pt2")
    torch.save(make_tiny_cnn().state_dict(), tmp_path / "state.pt2")
    expect_error(r"state.pt2': not a readable torch.export program", tmp_path / "state.pt2")


# -- state dict + architecture -------------------------------------------------------------
def test_state_dict_with_module_function_from_params(tmp_path, batch):
    original = two_conv_net(width=6)
    directory = write_params(tmp_path / "m", architecture=FACTORY, architecture_kwargs={"width": 6})
    torch.save(original.state_dict(), directory / "weights.pt")
    expect_error(rf"params.json': architecture '{FACTORY}' is code \('module:function'\); .*allow_code=True", directory)
    loaded = sg.load_model(directory, allow_code=True)  # params.json's code runs only when allowed
    assert loaded.params["architecture"] == FACTORY
    assert_same_model(loaded, original, batch)


def test_keywords_override_params_architecture(tmp_path, batch):
    original = two_conv_net(width=5)
    directory = write_params(tmp_path / "m", architecture="small_cnn", architecture_kwargs={"widths": [4, 8]})
    torch.save(original.state_dict(), directory / "model.pth")
    expect_error("cannot load the state dict", directory)
    loaded = sg.load_model(directory, architecture=FACTORY, architecture_kwargs={"width": 5})
    assert (loaded.params["architecture"], loaded.params["architecture_kwargs"]) == (FACTORY, {"width": 5})
    assert_same_model(loaded, original, batch)


def test_state_dict_file_with_explicit_architecture(tmp_path, batch):
    original = two_conv_net(n_classes=3)
    torch.save(original.state_dict(), tmp_path / "net.pth")
    expect_error(
        r"a state dict needs its architecture: 'architecture' in params.json or load_model", tmp_path / "net.pth"
    )
    loaded = sg.load_model(tmp_path / "net.pth", architecture=FACTORY, architecture_kwargs={"n_classes": 3})
    assert loaded.outcome_labels == ["0", "1", "2"]
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.module(x).numpy(), original(x).numpy())


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ("no_such_module_xyz:build", r"cannot import architecture 'no_such_module_xyz:build' \(No module named"),
        (f"{__name__}:nope", rf"cannot import architecture '{__name__}:nope' \(module '{__name__}' has no attribute"),
        (f"{__name__}:not_a_factory", rf"architecture '{__name__}:not_a_factory' is not callable"),
        (f"{__name__}:", rf"architecture '{__name__}:' is not 'module:function'"),
        ("resnet99", r"unknown architecture 'resnet99'; use one of \['resnet18', 'small_cnn', 'vit', 'vit_demo', 'vit_small'\]"),
    ],
)
def test_bad_architecture_names(tmp_path, architecture, message):
    directory = write_params(tmp_path / "m")
    torch.save(two_conv_net().state_dict(), directory / "weights.pt")
    expect_error(rf"model '{directory}': {message}", directory, architecture=architecture)


def test_bad_architecture_keywords(tmp_path):
    directory = write_params(tmp_path / "m")
    torch.save(two_conv_net().state_dict(), directory / "weights.pt")
    expect_error("load_model: architecture must be a name or 'module:function'", directory, architecture=3)
    expect_error(
        "load_model: architecture_kwargs must be a dict", directory, architecture=FACTORY, architecture_kwargs=[6]
    )
    message = r"architecture '.*two_conv_net' with kwargs \{'depth': 2, 'n_classes': 2\} failed \(.*'depth'"
    expect_error(message, directory, architecture=FACTORY, architecture_kwargs={"depth": 2})


# -- Slideflow ------------------------------------------------------------------------------
def slideflow_dir(path: Path, epochs=(1, 3), hidden: int = 0, model: str = "resnet18") -> dict[int, nn.Module]:
    """A Slideflow PyTorch model directory: ``params.json`` + ``{name}_epoch{N}.zip`` state dicts."""
    path.mkdir(parents=True)
    wrappers = {}
    for epoch in epochs:
        torch.manual_seed(epoch)
        wrappers[epoch] = SlideflowWrapper(ResNet18(1000), n_classes=2, hidden=hidden).eval()
        torch.save(wrappers[epoch].state_dict(), path / f"er_status-HP0-kfold1_epoch{epoch}.zip")
    params = {  # the fields Slideflow's Trainer / Project.train write
        "slideflow_version": "3.0.2",
        "backend": "torch",
        "model_name": "er_status-HP0",
        "stage": "training",
        "img_format": "png",
        "tile_px": 64,
        "tile_um": 128,
        "model_type": "classification",
        "outcomes": ["er_status"],
        "input_features": None,
        "input_feature_sizes": None,
        "outcome_labels": {"1": "ER+", "0": "ER-"},
        "hp": {"model": model, "tile_px": 64, "tile_um": 128, "normalizer": None, "hidden_layers": int(bool(hidden))},
    }
    (path / "params.json").write_text(json.dumps(params))
    return wrappers


def test_slideflow_directory_and_epoch_file(tmp_path, batch):
    wrappers = slideflow_dir(tmp_path / "00001-er_status-HP0-kfold1")
    directory = tmp_path / "00001-er_status-HP0-kfold1"
    loaded = sg.load_model(directory)  # the highest epoch
    assert (loaded.tile_px, loaded.tile_um, loaded.preprocessing) == (64, 128, "scale")
    assert loaded.sha256 == file_sha256([directory / "er_status-HP0-kfold1_epoch3.zip", directory / "params.json"])
    assert_same_model(loaded, wrappers[3], batch, labels=["ER-", "ER+"])
    first = sg.load_model(directory / "er_status-HP0-kfold1_epoch1.zip")
    assert_same_model(first, wrappers[1], batch, labels=["ER-", "ER+"], masks=False)


def test_slideflow_errors(tmp_path):
    slideflow_dir(tmp_path / "hidden", epochs=(1,), hidden=16)
    expect_error(r"Slideflow model with h0 \(hidden layers or several outcomes\) is not supported", tmp_path / "hidden")
    slideflow_dir(tmp_path / "xception", epochs=(1,), model="xception")
    message = r"needs its architecture: .*\(Slideflow's hp.model 'xception' is not built into slidegrad\)"
    expect_error(message, tmp_path / "xception")
    slideflow_dir(tmp_path / "multi", epochs=(1,))
    params = json.loads((tmp_path / "multi" / "params.json").read_text())
    params["outcome_labels"] = {"er_status": {"0": "ER-", "1": "ER+"}, "pr_status": {"0": "PR-", "1": "PR+"}}
    (tmp_path / "multi" / "params.json").write_text(json.dumps(params))
    expect_error(
        r"field 'outcome_labels' has keys \['er_status', 'pr_status'\]; expected one outcome's", tmp_path / "multi"
    )


def test_slideflow_regression_labels_null(tmp_path):
    slideflow_dir(tmp_path / "m", epochs=(2,))
    params = json.loads((tmp_path / "m" / "params.json").read_text())
    params["outcome_labels"] = None  # Slideflow writes null for non-categorical models
    (tmp_path / "m" / "params.json").write_text(json.dumps(params))
    assert sg.load_model(tmp_path / "m").outcome_labels == ["0", "1"]


# -- pickled modules ------------------------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pickled_module_needs_allow_pickle(tmp_path, batch, legacy):
    original = make_tiny_cnn()
    directory = write_params(tmp_path / "m")
    torch.save(original, directory / "model.pt", _use_new_zipfile_serialization=not legacy)
    expect_error(
        r"model.pt': a pickled module \(slidegrad.torch_nets.SmallCNN, saved with torch.save\(model\)\); loading it "
        r"runs arbitrary code from the file, so it needs allow_code=True \(config: model.allow_code: true\)",
        directory,
    )
    assert_same_model(sg.load_model(directory, allow_code=True), original, batch)
    assert_same_model(sg.load_model(directory, allow_pickle=True), original, batch)  # the old name still works


def test_pickled_module_class_missing(tmp_path):
    torch.save(TwoConvNet(), tmp_path / "net.pth")
    (tmp_path / "net.pth").write_bytes((tmp_path / "net.pth").read_bytes().replace(b"TwoConvNet", b"TwoConvNix"))
    expect_error(r"net.pth': cannot unpickle the module \(.*TwoConvNix", tmp_path / "net.pth", allow_pickle=True)


# -- files and directories ------------------------------------------------------------------
def test_torchscript_in_directory_and_zip_sniffing(tmp_path, batch):
    directory = write_params(tmp_path / "m")
    torch.jit.script(make_tiny_cnn()).save(str(directory / "model.pt"))
    loaded = sg.load_model(directory)
    assert isinstance(loaded.module, torch.jit.ScriptModule) and loaded.outcome_labels == LABELS
    torch.jit.script(make_tiny_cnn()).save(str(tmp_path / "scripted.pth"))  # contents, not the name, decide
    assert isinstance(sg.load_model(tmp_path / "scripted.pth").module, torch.jit.ScriptModule)


def test_bad_files_and_directories(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"garbage")
    expect_error(r"garbage.pth': not a readable PyTorch file \(Unsupported operand", tmp_path / "garbage.pth")
    with zipfile.ZipFile(tmp_path / "broken.pt", "w") as archive:
        archive.writestr("broken/data.pkl", b"garbage")
    expect_error(r"broken.pt': not a readable PyTorch file", tmp_path / "broken.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "checkpoint.pt")
    expect_error(r"checkpoint.pt': holds a dict, not a state dict or a module", tmp_path / "checkpoint.pt")
    empty = write_params(tmp_path / "empty")
    expect_error(r"empty': no model file; expected model.pt2, weights.pt, model.pt, one", empty)
    several = write_params(tmp_path / "several")
    for name in ("a.pth", "b.pth"):
        torch.save(make_tiny_cnn().state_dict(), several / name)
    expect_error(r"several': several model files \(a.pth, b.pth\); pass the path of the one to load", several)


def test_require_param(tmp_path):
    directory = write_params(tmp_path / "m")
    assert require_param(directory, "tile_px") == 64
    params = json.loads((directory / "params.json").read_text())
    del params["tile_px"]
    (directory / "params.json").write_text(json.dumps(params))
    with pytest.raises(
        sg.InputError, match=rf"model '{directory}': params.json has no 'tile_px'; add it or set tile_px"
    ):
        require_param(directory, "tile_px", hint="or set tile_px in the config")
    export(make_tiny_cnn(), tmp_path / "net.pt2")
    with pytest.raises(sg.InputError, match=r"net.pt2': no params.json to read 'tile_um' from; add it$"):
        require_param(tmp_path / "net.pt2", "tile_um")
