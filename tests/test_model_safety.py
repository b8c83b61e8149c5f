"""A model someone else sent you: loading it runs none of its code unless ``allow_code`` says so.

``params.json``'s ``"module:function"`` is refused before anything is imported or called; a
pickled module needs ``allow_code`` (``allow_pickle``: its old name, still accepted); the
config's ``model.allow_code`` reaches the mask jobs without changing what reruns.  Also the
model behaviours loading reports: training mode, softmax outputs, one-output models.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import slidegrad as sg
from slidegrad.planning import build_plan, model_options
from slidegrad.torch_nets import SmallCNN

from .conftest import make_tiny_cnn
from .test_workflow import make_project

MARKED = f"{__name__}:marked_net"  # "tests.test_model_safety:marked_net"
WIDTHS = [4, 8]


def marked_net(marker: str, n_classes: int = 2, widths: list[int] = WIDTHS) -> nn.Module:
    """A harmless architecture factory that leaves a marker file: proof that it ran."""
    Path(marker).write_text("ran")
    return SmallCNN(n_classes=n_classes, widths=tuple(widths))


class SoftmaxNet(nn.Module):
    """A tile classifier whose last layer is a softmax: probabilities, not logits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_tiny_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def softmax_net() -> nn.Module:
    return SoftmaxNet()


def one_line_error(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(sg.InputError, match=match) as err:
        call(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def code_folder(path: Path, architecture: str, kwargs: dict) -> Path:
    """A model folder: a SmallCNN state dict, and a params.json naming ``architecture`` (code)."""
    path.mkdir(parents=True)
    torch.save(make_tiny_cnn().state_dict(), path / "weights.pt")
    params = {"architecture": architecture, "architecture_kwargs": kwargs, "tile_px": 32, "tile_um": 32}
    (path / "params.json").write_text(json.dumps({**params, "outcome_labels": ["negative", "positive"]}))
    return path


@pytest.mark.parametrize("callable_name", ["os:system", "subprocess:call", "builtins:exec"])
def test_params_json_code_runs_nothing(tmp_path, callable_name):
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if callable_name != "builtins:exec" else f"open({str(marker)!r}, 'w')"
    kwargs = {"command": command} if callable_name == "os:system" else {"args": command, "shell": True}
    if callable_name == "builtins:exec":
        kwargs = {"source": command}
    folder = code_folder(tmp_path / "model", callable_name, kwargs)
    message = one_line_error("is code", sg.load_model, folder)
    assert message.startswith(f"'{folder / 'params.json'}': architecture '{callable_name}' is code ('module:function')")
    assert "allow_code=True (config: model.allow_code: true)" in message
    assert not marker.exists()


def test_params_json_code_loads_only_with_allow_code(tmp_path):
    marker = tmp_path / "ran"
    folder = code_folder(tmp_path / "model", MARKED, {"marker": str(marker), "widths": WIDTHS})
    one_line_error(rf"'{folder / 'params.json'}': architecture '{MARKED}' is code", sg.load_model, folder)
    assert not marker.exists()
    model = sg.load_model(folder, allow_code=True)
    assert marker.read_text() == "ran" and model.n_classes == 2


def test_the_old_name_allow_pickle_still_works(tmp_path, caplog):
    marker = tmp_path / "ran"
    folder = code_folder(tmp_path / "model", MARKED, {"marker": str(marker), "widths": WIDTHS})
    with caplog.at_level(logging.WARNING, logger="slidegrad"):
        assert sg.load_model(folder, allow_pickle=True).n_classes == 2
    assert marker.exists()
    deprecated = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert deprecated == [
        "load_model: allow_pickle is deprecated; use allow_code=True (it also allows params.json's "
        "'module:function' architectures and Keras Lambda layers)"
    ]
    marker.unlink()
    one_line_error(
        r"load_model: allow_code=False and allow_pickle=True \(its old name\) disagree; pass allow_code alone",
        sg.load_model,
        folder,
        allow_code=False,
        allow_pickle=True,
    )
    assert not marker.exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="slidegrad"):  # False asks for nothing: no warning
        one_line_error("is code", sg.load_model, folder, allow_pickle=False)
    assert not caplog.records and not marker.exists()
    assert sg.load_model(folder, allow_code=True, allow_pickle=True).n_classes == 2  # agreeing: fine


def test_a_pickled_module_needs_allow_code(tmp_path):
    torch.save(make_tiny_cnn(), tmp_path / "whole.pt")
    one_line_error(r"a pickled module .* needs allow_code=True \(config: model.allow_code: true\)", sg.load_model,
                   tmp_path / "whole.pt", tile_px=32)
    assert sg.load_model(tmp_path / "whole.pt", tile_px=32, allow_code=True).n_classes == 2
    assert sg.load_model(tmp_path / "whole.pt", tile_px=32, allow_pickle=True).n_classes == 2


class OpensAFile:
    """Unpickled, it opens (creates) a file: what a crafted pickle could do with any callable."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def rewrite_entry(archive: Path, suffix: str, content: bytes) -> None:
    """Replace the one entry of a zip archive whose name ends with ``suffix``."""
    import zipfile

    with zipfile.ZipFile(archive) as source:
        entries = {name: source.read(name) for name in source.namelist()}
    name = next(n for n in entries if n.endswith(suffix))
    entries[name] = content
    with zipfile.ZipFile(archive, "w") as target:
        for key, value in entries.items():
            target.writestr(key, value)


def test_an_export_archive_with_pickled_entries_needs_allow_code(tmp_path):
    import io

    from .test_model_formats import export

    program = export(make_tiny_cnn(), tmp_path / "net.pt2")
    assert sg.load_model(program).n_classes == 2  # torch.export.save's own archive: plain tensors, no code
    marker = tmp_path / "ran"
    crafted = io.BytesIO()
    torch.save(OpensAFile(marker), crafted)
    rewrite_entry(program, "data/sample_inputs/model.pt", crafted.getvalue())
    one_line_error(r"its torch.export archive holds pickled entries \(net/data/sample_inputs/model.pt\) that "
                   r"torch.export.load unpickles, which runs arbitrary code .* needs allow_code=True", sg.load_model,
                   program)  # fmt: skip
    assert not marker.exists()
    with pytest.raises(sg.InputError):  # allowed: torch unpickles it (the code runs), then finds no inputs
        sg.load_model(program, allow_code=True)
    assert marker.exists(), "the entry the check refused does run code when torch.export.load reads it"


def test_an_export_archive_marking_a_weight_pickled_needs_allow_code(tmp_path):
    from .test_model_formats import export

    program = export(make_tiny_cnn(), tmp_path / "net.pt2")
    import zipfile

    with zipfile.ZipFile(program) as archive:
        name = next(n for n in archive.namelist() if n.endswith("_weights_config.json"))
        config = json.loads(archive.read(name))
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    rewrite_entry(program, "_weights_config.json", json.dumps(config).encode())
    one_line_error(rf"holds pickled entries \(net/data/weights/model_weights_config.json:{first}\)", sg.load_model,
                   program)


def test_the_users_own_architecture_is_allowed(tmp_path):
    marker = tmp_path / "ran"
    folder = code_folder(tmp_path / "model", "os:system", {"command": f"touch {tmp_path / 'pwned'}"})
    model = sg.load_model(folder, architecture=MARKED, architecture_kwargs={"marker": str(marker), "widths": WIDTHS})
    assert marker.exists() and not (tmp_path / "pwned").exists() and model.n_classes == 2


def test_built_in_and_registered_names_need_no_permission(tmp_path, monkeypatch):
    folder = code_folder(tmp_path / "model", "small_cnn", {"widths": WIDTHS})
    assert sg.load_model(folder).n_classes == 2
    marker = tmp_path / "ran"
    entry = importlib.metadata.EntryPoint("marked", MARKED, "slidegrad.architectures")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [entry] if group == entry.group else [])
    params = json.loads((folder / "params.json").read_text())
    params.update(architecture="marked", architecture_kwargs={"marker": str(marker), "widths": WIDTHS})
    (folder / "params.json").write_text(json.dumps(params))
    assert sg.load_model(folder).n_classes == 2 and marker.exists()  # an installed package's: no permission
    params["architecture"] = "nope"
    (folder / "params.json").write_text(json.dumps(params))
    one_line_error(r"unknown architecture 'nope'; use one of \[.*'marked'.*'small_cnn'.*\] or 'module:function'",
                   sg.load_model, folder)


def _config(root: Path) -> dict:
    return yaml.safe_load((root / "config.yaml").read_text())


def test_config_allow_code_reaches_the_mask_jobs(tmp_path, slide_path, monkeypatch, caplog):
    marker = tmp_path / "ran"
    folder = code_folder(tmp_path / "model", MARKED, {"marker": str(marker), "widths": WIDTHS})
    root = make_project(tmp_path / "project", slide_path, folder, [{"slide": "s1", "x": 0, "y": 0}])
    monkeypatch.chdir(root)
    config = _config(root)
    plan = build_plan(config)
    options = model_options(plan.config)
    assert options == {"allow_pickle": False}  # as recorded before allow_code existed: nothing reruns
    one_line_error("is code", sg.load_model, folder, **options)  # what the mask job (jobs.load_chunk) calls
    assert not marker.exists()
    config["model"]["allow_code"] = True
    options = model_options(build_plan(config).config)
    assert options == {"allow_code": True}
    assert sg.load_model(folder, **options).n_classes == 2 and marker.exists()
    rule = (Path(__file__).parents[1] / "rules/masks.smk").read_text()
    assert "load_options=model_options(config)" in rule  # the mask jobs' load_model keywords


def test_config_allow_pickle_is_the_old_name(tmp_path, slide_path, monkeypatch):
    folder = code_folder(tmp_path / "model", "small_cnn", {"widths": WIDTHS})
    root = make_project(tmp_path / "project", slide_path, folder, [{"slide": "s1", "x": 0, "y": 0}])
    monkeypatch.chdir(root)
    config = _config(root)
    config["model"]["allow_pickle"] = True
    plan = build_plan(config)
    assert model_options(plan.config) == {"allow_pickle": True}  # as before the rename: nothing reruns
    assert any("'model.allow_pickle': deprecated, renamed 'model.allow_code'" in w for w in plan.warnings)
    config["model"]["allow_code"] = True  # both, agreeing
    assert model_options(build_plan(config).config) == {"allow_code": True}
    config["model"]["allow_code"] = False
    one_line_error(
        r"config fields 'model.allow_code' \(False\) and 'model.allow_pickle' \(True, its old name\) disagree",
        build_plan,
        config,
    )


def test_a_model_saved_in_training_mode_is_put_in_eval_mode(tmp_path, caplog):
    net = make_tiny_cnn().train()
    torch.jit.save(torch.jit.script(net), tmp_path / "train.pt")
    torch.jit.save(torch.jit.script(net.eval()), tmp_path / "eval.pt")
    with caplog.at_level(logging.WARNING, logger="slidegrad"):
        model = sg.load_model(tmp_path / "train.pt", tile_px=32)
    assert not any(m.training for m in model.module.modules())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"model '{tmp_path / 'train.pt'}': in training mode; put in eval mode "
        "(dropout off, batch norm on its running statistics)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="slidegrad"):
        sg.load_model(tmp_path / "eval.pt", tile_px=32)
    assert not caplog.records


def test_softmax_outputs_are_explained_as_given_with_a_warning(tmp_path, caplog, ihc_tiles):
    folder = code_folder(tmp_path / "model", "small_cnn", {"widths": WIDTHS})
    torch.save(SoftmaxNet().state_dict(), folder / "weights.pt")
    with caplog.at_level(logging.WARNING, logger="slidegrad"):
        model = sg.load_model(folder, architecture=f"{__name__}:softmax_net", architecture_kwargs={})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "its outputs look like probabilities" in lines[0], lines
    assert "maps explain the class probability as given (its gradients)" in lines[0]
    # the class score is the model's output as given: the vanilla map is the probability's gradient
    batch = sg.get_preprocess_fn(model)(ihc_tiles[:1, :32, :32])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).requires_grad_(True)
    model.module(x)[0, 1].backward()
    expected = x.grad.permute(0, 2, 3, 1).numpy()[0]
    _, raw = sg.SaliencyMap(model, class_idx=1, device="cpu").attributions(batch[0], "vanilla")
    np.testing.assert_allclose(raw.reshape(expected.shape) if raw.size == expected.size else raw, expected,
                               rtol=1e-4, atol=1e-7)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="slidegrad"):  # logits: no warning
        sg.load_model(code_folder(tmp_path / "logits", "small_cnn", {"widths": WIDTHS}))
    assert not caplog.records


def test_a_one_output_model_is_refused(tmp_path):
    folder = code_folder(tmp_path / "model", "small_cnn", {"widths": WIDTHS, "n_classes": 1})
    torch.save(SmallCNN(n_classes=1, widths=tuple(WIDTHS)).state_dict(), folder / "weights.pt")
    params = json.loads((folder / "params.json").read_text())
    (folder / "params.json").write_text(json.dumps({**params, "outcome_labels": ["tumour"]}))
    message = one_line_error("gives 1 output per image", sg.load_model, folder)
    assert message == (
        f"model '{folder}': gives 1 output per image; slidegrad explains one class among 2 or more, one output each: "
        "for a one-logit (sigmoid) model z, output [0, z] instead (its softmax is [1 - sigmoid(z), sigmoid(z)])"
    )
