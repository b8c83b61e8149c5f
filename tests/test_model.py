"""Model loading (state dict + architecture, TorchScript) and preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import slidegrad as sg
from slidegrad.model import file_sha256

from .conftest import make_tiny_cnn, write_model_dir


def test_state_dict_directory_round_trip(tmp_path, ihc_tiles):
    path = write_model_dir(tmp_path / "m")
    model = sg.load_model(path)
    assert model.backend == "torch"
    assert model.outcome_labels == ["negative", "positive"]
    assert (model.tile_px, model.tile_um, model.n_classes) == (64, 64, 2)
    assert model.sha256 == file_sha256([path / "weights.pt", path / "params.json"])
    x = torch.from_numpy(sg.get_preprocess_fn(path)(ihc_tiles)).permute(0, 3, 1, 2)
    with torch.no_grad():
        np.testing.assert_allclose(model.module(x).numpy(), make_tiny_cnn()(x).numpy(), rtol=1e-6)


def test_torchscript_file_and_gradcam_error(tmp_path, ihc_tiles):
    script = torch.jit.script(make_tiny_cnn())
    script.save(str(tmp_path / "model.pt"))
    model = sg.load_model(tmp_path / "model.pt")
    assert model.n_classes == 2
    sal = sg.SaliencyMap(model, class_idx=1)
    batch = sg.model.scale(ihc_tiles[:1])
    eager = sg.SaliencyMap(make_tiny_cnn(), class_idx=1).vanilla(batch)
    np.testing.assert_allclose(sal.vanilla(batch), eager, atol=1e-5)
    with pytest.raises(sg.InputError, match="TorchScript model has no forward hooks"):
        sal.gradcam(batch)


def test_gradcam_layer_names_the_layer_gradcam_uses(tmp_path, ihc_tiles):
    from torch import nn

    from slidegrad.backends import get_backend

    backend = get_backend(make_tiny_cnn(), device="cpu")
    convs = [name for name, m in backend.module.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == ["features.0", "features.3"]
    assert backend.gradcam_layer(None) == backend.gradcam_layer() == "features.3"  # the last nn.Conv2d
    assert backend.gradcam_layer("features.0") == "features.0"
    batch = sg.model.scale(ihc_tiles[:1])
    acts, _ = backend.conv_gradients(batch, np.array([1]))
    assert acts.shape[-1] == 8  # features.3's 8 channels: the layer gradcam_layer named
    unknown = "gradcam: layer 'nope' not found; conv layers: features.0, features.3"
    with pytest.raises(sg.InputError, match=unknown):
        backend.gradcam_layer("nope")
    with pytest.raises(sg.InputError, match=unknown):
        backend.conv_gradients(batch, np.array([1]), "nope")
    flat = get_backend(nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 2)).eval(), device="cpu")
    with pytest.raises(sg.InputError, match="the model has no nn.Conv2d layer; pass layer= explicitly"):
        flat.gradcam_layer(None)
    torch.jit.script(make_tiny_cnn()).save(str(tmp_path / "model.pt"))
    scripted = get_backend(sg.load_model(tmp_path / "model.pt"), device="cpu")
    for call in (lambda: scripted.gradcam_layer(None), lambda: scripted.conv_gradients(batch, np.array([1]))):
        with pytest.raises(sg.InputError, match="gradcam: a TorchScript model has no forward hooks"):
            call()


def test_torch_devices():
    from slidegrad.backends.torch_backend import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        for device in ("cuda", "cuda:1"):
            with pytest.raises(sg.InputError, match=f"device: '{device}' was asked for but torch sees no CUDA"):
                resolve_device(device)
    else:
        count = torch.cuda.device_count()
        assert resolve_device(f"cuda:{count - 1}") == torch.device(f"cuda:{count - 1}")
        with pytest.raises(sg.InputError, match=f"torch sees {count} CUDA device"):
            resolve_device(f"cuda:{count}")
    with pytest.raises(sg.InputError, match="device: 'gpu0' is not a torch device"):
        resolve_device("gpu0")


def test_slideflow_style_outcome_labels_dict(tmp_path):
    path = write_model_dir(tmp_path / "m")
    params = json.loads((path / "params.json").read_text())
    params["outcome_labels"] = {"1": "tumour", "0": "normal"}
    (path / "params.json").write_text(json.dumps(params))
    assert sg.load_model(path).outcome_labels == ["normal", "tumour"]


def test_preprocess_scale_range(ihc_tiles):
    x = sg.model.scale(ihc_tiles)
    assert x.dtype == np.float32 and x.shape == ihc_tiles.shape
    assert sg.model.scale(np.array([[[0, 255, 127]]], np.uint8)).tolist() == [[[-1.0, 1.0, pytest.approx(-0.00392157)]]]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: (p / "params.json").unlink(), "no params.json in the model directory"),
        (lambda p: (p / "params.json").write_text("{not json"), "params.json': not valid JSON"),
        (lambda p: _patch(p, architecture="nonesuch"), "unknown architecture 'nonesuch'"),
        (lambda p: _patch(p, architecture="nomodule_xyz:f"), "architecture 'nomodule_xyz:f' is code"),
        (lambda p: _patch(p, preprocessing="macenko"), "field 'preprocessing' is 'macenko'"),
        (lambda p: _patch(p, backend="jax"), "backend 'jax' is not supported"),
        (lambda p: _patch(p, tile_px="big"), "field 'tile_px' must be a positive integer"),
        (lambda p: (p / "weights.pt").write_bytes(b"garbage"), r"weights.pt': not a readable PyTorch file"),
        (
            lambda p: _patch(p, architecture_kwargs={"widths": [4, 9]}),
            r"weights.pt': cannot load the state dict \(.*size mismatch",
        ),
        (
            lambda p: _patch(p, architecture_kwargs={"depth": 3}),
            r"architecture 'small_cnn' with kwargs \{'depth': 3, 'n_classes': 2\} failed \(.*depth",
        ),
        (lambda p: _patch(p, architecture=None), "a state dict needs its architecture"),
        (lambda p: _patch(p, architecture=["small_cnn"]), "field 'architecture' must be a string"),
        (lambda p: _patch(p, architecture_kwargs=[4, 8]), "field 'architecture_kwargs' must be an object"),
        (lambda p: _patch(p, tile_px=True), "field 'tile_px' must be a positive integer"),
    ],
)
def test_bad_model_directories(tmp_path, mutate, message):
    path = write_model_dir(tmp_path / "m")
    mutate(path)
    with pytest.raises(sg.InputError, match=message) as err:
        sg.load_model(path)
    assert "\n" not in str(err.value)


def test_missing_model_path(tmp_path):
    with pytest.raises(sg.InputError, match="file not found"):
        sg.load_model(tmp_path / "nope")


def _patch(path, **changes):
    params = json.loads((path / "params.json").read_text())
    params.update(changes)
    (path / "params.json").write_text(json.dumps(params))
