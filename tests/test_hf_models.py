"""Hugging Face ``transformers`` models (``save_pretrained`` folders, bare modules, ``.logits`` outputs)
and the ``{mean, std}`` preprocessing.  Small random configs, no downloads."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import slidegrad as sg
from slidegrad.config import validate_config
from slidegrad.methods import grayscale_p99
from slidegrad.model import Preprocess, get_preprocess_fn
from slidegrad.planning import build_plan, model_options

from .conftest import write_model_dir
from .test_workflow import _load_config, make_project

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TILE = 64
LABELS = {0: "negative", 1: "positive"}
HOPTIMUS = {"mean": [0.707223, 0.578729, 0.703617], "std": [0.211883, 0.230117, 0.177517]}
SMALL = dict(image_size=TILE, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_labels=2)


def vit_config(**changes):
    return transformers.ViTConfig(**{**SMALL, "intermediate_size": 64, "id2label": LABELS, **changes})


def dinov2_registers_config(**changes):
    return transformers.Dinov2WithRegistersConfig(
        **{**SMALL, "mlp_ratio": 2, "num_register_tokens": 4, "id2label": LABELS, **changes}
    )


def hf_classifier(config, seed: int = 0):
    torch.manual_seed(seed)
    return transformers.AutoModelForImageClassification.from_config(config, attn_implementation="eager")


def save_hf(path: Path, model) -> Path:
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    return save_hf(tmp_path_factory.mktemp("hf") / "vit", hf_classifier(vit_config()))


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory) -> Path:
    return save_hf(tmp_path_factory.mktemp("hf") / "dinov2_reg", hf_classifier(dinov2_registers_config()))


def copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for file in src.iterdir():
        (dst / file.name).write_bytes(file.read_bytes())
    return dst


def patch_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))


def tile(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (TILE, TILE, 3), dtype=np.uint8)


def autograd_vanilla(module, x: np.ndarray) -> np.ndarray:
    """Vanilla gradient by hand: d(.logits of the predicted class)/d(input), then PAIR's p99 grayscale."""
    inputs = torch.from_numpy(x).permute(2, 0, 1)[None].clone().requires_grad_(True)
    logits = module(inputs).logits
    logits[0, int(logits.argmax(1))].backward()
    return grayscale_p99(inputs.grad[0].permute(1, 2, 0).numpy())


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# -- loading a save_pretrained folder ---------------------------------------------------
@pytest.mark.parametrize("folder", ["vit_dir", "dinov2_dir"])
def test_save_pretrained_folder_loads_with_labels_tile_size_and_eager_attention(request, folder):
    path = request.getfixturevalue(folder)
    model = sg.load_model(path)
    assert (model.backend, model.outcome_labels, model.tile_px, model.preprocessing) == (
        "torch",
        ["negative", "positive"],
        TILE,
        "scale",
    )
    assert model.module.config._attn_implementation == "eager"
    assert not any(m.training for m in model.module.modules())
    assert next(model.module.parameters()).dtype == torch.float32
    assert model.sha256 and len(model.sha256) == 64


@pytest.mark.parametrize("folder", ["vit_dir", "dinov2_dir"])
def test_vanilla_is_the_autograd_gradient_of_the_logits(request, folder):
    model = sg.load_model(request.getfixturevalue(folder))
    x = get_preprocess_fn(model)(tile())
    mask = sg.SaliencyMap(model).vanilla(x)
    assert mask.shape == (TILE, TILE) and mask.dtype == np.float32
    assert 0 <= mask.min() and mask.max() <= 1
    assert relative_l2(mask, autograd_vanilla(model.module, x)) < 1e-5


def test_pair_engine_and_bare_module_give_the_same_map(vit_dir):
    model = sg.load_model(vit_dir)
    x = get_preprocess_fn(model)(tile(1))
    expected = autograd_vanilla(model.module, x)
    assert relative_l2(sg.SaliencyMap(model, engine="pair").vanilla(x), expected) < 1e-5
    bare = hf_classifier(vit_config())  # same seed: the same weights; still in train mode
    assert bare.training
    assert relative_l2(sg.SaliencyMap(bare).vanilla(x), expected) < 1e-5
    assert sg.SaliencyMap(bare).backend.n_classes == 2


def test_model_logits_takes_the_logits_field():
    from slidegrad.backends.torch_backend import forward, model_logits

    logits = torch.ones(2, 3)
    assert model_logits(logits) is logits
    assert model_logits(transformers.modeling_outputs.ImageClassifierOutput(logits=logits)) is logits
    assert model_logits({"logits": logits, "hidden": None}) is logits
    assert model_logits(type("Out", (), {"logits": logits})()) is logits
    assert model_logits((logits,)) == (logits,)  # other outputs pass through (checked_output reports them)
    module = hf_classifier(vit_config()).eval()
    out = forward(module, torch.zeros(1, 3, TILE, TILE), "vit", no_grad=True)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2)


def test_params_json_wins_and_labels_follow_id2label_order(vit_dir, tmp_path):
    path = copy_folder(vit_dir, tmp_path / "m")
    patch_config(path, id2label={"1": "tumour", "0": "stroma", "2": "fat"}, label2id=None, num_labels=None)
    assert sg.model.read_params(path)["outcome_labels"] == ["stroma", "tumour", "fat"]
    with pytest.raises(sg.InputError, match=r"weights' shapes differ from what config.json describes \(e.g. its id2l"):
        sg.load_model(path)  # 3 labels make a 3-class head: the saved one has 2
    patch_config(path, id2label={"1": "tumour", "0": "stroma"})
    assert sg.load_model(path).outcome_labels == ["stroma", "tumour"]
    (path / "params.json").write_text(
        json.dumps({"outcome_labels": ["a", "b"], "tile_um": 128, "preprocessing": HOPTIMUS})
    )
    model = sg.load_model(path)
    assert (model.outcome_labels, model.tile_px, model.tile_um, model.preprocessing) == (
        ["a", "b"],
        TILE,
        128,
        HOPTIMUS,
    )


def test_tile_px_from_params_json_or_load_model_overrides_image_size(dinov2_dir, tmp_path):
    # DINOv2 interpolates its position embeddings: it takes 32 px tiles although config.json says 64
    assert sg.load_model(dinov2_dir, tile_px=32).tile_px == 32
    path = copy_folder(dinov2_dir, tmp_path / "m")
    (path / "params.json").write_text(json.dumps({"tile_px": 32}))
    model = sg.load_model(path)
    assert (model.tile_px, model.outcome_labels) == (32, ["negative", "positive"])
    with pytest.raises(sg.InputError, match="params.json has tile_px 32 but tile_px=64 was given"):
        sg.load_model(path, tile_px=64)


def test_transformers_is_imported_only_for_a_transformers_folder(tmp_path):
    path = write_model_dir(tmp_path / "m")
    code = f"import sys, slidegrad as sg; sg.load_model({str(path)!r}); print('transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_folder_with_a_slidegrad_model_file_is_not_a_transformers_folder(tmp_path):
    path = write_model_dir(tmp_path / "m")
    (path / "config.json").write_text("{}")  # some other config beside weights.pt
    assert sg.load_model(path).module.__class__.__name__ == "SmallCNN"


def test_the_workflow_plans_a_transformers_folder(tmp_path, slide_path, vit_dir, monkeypatch):
    path = copy_folder(vit_dir, tmp_path / "model")
    (path / "params.json").write_text(json.dumps({"tile_um": 128}))  # tile_px and labels: config.json
    root = make_project(tmp_path / "project", slide_path, path, [{"slide": "s1", "x": 0, "y": 0}])
    monkeypatch.chdir(root)
    config = _load_config(root)
    config["model"]["class_idx"] = "positive"
    plan = build_plan(config)
    assert plan.config["model"]["class_idx"] == 1


# -- transformers folder errors -----------------------------------------------------------
def _remove_weights(path: Path) -> None:
    (path / "model.safetensors").unlink()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_remove_weights, r"^model '.*m': config.json but no \*.safetensors weights; expected a transformers"),
        (lambda p: (p / "config.json").write_text("{not json"), r"^'.*config.json': not valid JSON"),
        (lambda p: (p / "config.json").write_text("[1, 2]"), r"^'.*config.json': expected a JSON object"),
        (lambda p: patch_config(p, model_type=None), r"^'.*config.json': field 'model_type' must name"),
        (lambda p: patch_config(p, model_type="nonesuch_vit"), r"^'.*config.json': unknown model_type 'nonesuch_vit'"),
        (lambda p: patch_config(p, model_type="bert"), r"^'.*config.json': model_type 'bert' has no image classifier"),
        (
            lambda p: patch_config(p, auto_map={"AutoModelForImageClassification": "modeling_evil.EvilNet"}),
            r"^'.*config.json': its auto_map asks for the model's own code \(remote code\), which slidegrad never "
            r"runs \(trust_remote_code=False\)",
        ),
        (lambda p: patch_config(p, id2label=["a", "b"]), r"^'.*config.json': field 'id2label' must map class indices"),
        (lambda p: patch_config(p, hidden_size=48), r"^model '.*m': the safetensors weights' shapes differ from what"),
        (
            lambda p: patch_config(p, hidden_act="nonesuch_act"),
            r"^model '.*m': transformers cannot load it \('nonesuch_act'\)$",
        ),
    ],
)
def test_bad_transformers_folders(vit_dir, tmp_path, mutate, message):
    path = copy_folder(vit_dir, tmp_path / "m")
    mutate(path)
    with pytest.raises(sg.InputError, match=message) as err:
        sg.load_model(path)
    assert "\n" not in str(err.value)


def test_a_backbone_without_its_classifier_is_refused(tmp_path):
    torch.manual_seed(0)
    path = save_hf(tmp_path / "backbone", transformers.ViTModel(vit_config(), add_pooling_layer=False))
    patch_config(path, architectures=["ViTForImageClassification"])
    with pytest.raises(
        sg.InputError, match=r"safetensors weights lack 2 of the classifier's tensors \(classifier.bias"
    ):
        sg.load_model(path)


def test_remote_code_config_is_refused_before_any_import(vit_dir, tmp_path):
    path = copy_folder(vit_dir, tmp_path / "m")
    patch_config(path, model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (path / "configuration_evil.py").write_text("raise SystemExit('remote code ran')\n")
    code = (
        "import sys, slidegrad as sg\n"
        f"try:\n    sg.load_model({str(path)!r})\nexcept sg.InputError as err:\n    print(err)\n"
        "print('transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "config.json': its auto_map asks for the model's own code" in lines[0]
    assert lines[1] == "False"


# -- {mean, std} preprocessing -----------------------------------------------------------
def test_mean_std_preprocessing_is_img_over_255_minus_mean_over_std(ihc_tiles):
    prep = Preprocess(HOPTIMUS)
    out = prep(ihc_tiles)
    mean, std = np.array(HOPTIMUS["mean"], np.float32), np.array(HOPTIMUS["std"], np.float32)
    assert out.dtype == np.float32 and out.shape == ihc_tiles.shape
    np.testing.assert_allclose(out, (ihc_tiles / 255.0 - mean) / std, rtol=1e-6, atol=1e-6)
    assert repr(prep) == "Preprocess(mean [0.707223, 0.578729, 0.703617] std [0.211883, 0.230117, 0.177517])"
    assert prep.preprocessing == HOPTIMUS
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    np.testing.assert_array_equal(Preprocess(imagenet)(ihc_tiles), Preprocess("imagenet")(ihc_tiles))


def test_mean_std_from_load_model_params_json_and_the_config(tmp_path, ihc_tiles, slide_path, monkeypatch):
    path = write_model_dir(tmp_path / "m")
    given = {"mean": (0.5, 0.5, 0.5), "std": [1, 2, 0.25]}  # a tuple and integers: stored as float lists
    stored = {"mean": [0.5, 0.5, 0.5], "std": [1.0, 2.0, 0.25]}
    model = sg.load_model(path, preprocessing=given)
    assert model.preprocessing == stored and get_preprocess_fn(model).preprocessing == stored
    expected = (ihc_tiles / 255.0 - 0.5) / np.array([1.0, 2.0, 0.25])
    np.testing.assert_allclose(get_preprocess_fn(model)(ihc_tiles), expected, rtol=1e-6, atol=1e-6)
    assert sg.load_model(path, preprocessing="imagenet").preprocessing == "imagenet"  # names still work
    params = json.loads((path / "params.json").read_text())
    (path / "params.json").write_text(json.dumps({**params, "preprocessing": HOPTIMUS}))
    assert sg.load_model(path).preprocessing == HOPTIMUS
    assert get_preprocess_fn(path).preprocessing == HOPTIMUS
    root = make_project(tmp_path / "project", slide_path, path, [{"slide": "s1", "x": 0, "y": 0}])
    monkeypatch.chdir(root)
    config = _load_config(root)
    config["model"]["preprocessing"] = {"mean": [0.5, 0.5, 0.5], "std": [1, 2, 0.25]}  # as YAML gives it
    plan = build_plan(config)
    options = model_options(plan.config)
    assert options["preprocessing"] == stored
    assert json.loads(json.dumps(options))["preprocessing"] == stored  # the rules' params: JSON-serialisable


BAD = [
    (
        {"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]},
        "'mean' must be 3 numbers (r, g, b on the 0-1 scale), got [0.5, 0.5]",
    ),
    (
        {"mean": [0.5] * 3, "std": [0.2, 0, 0.2]},
        "'std' must be 3 numbers > 0 (r, g, b on the 0-1 scale), got [0.2, 0, 0.2]",
    ),
    ({"mean": [0.5] * 3, "std": [0.2] * 3, "max": 1}, "has unknown key(s) 'max'; expected exactly 'mean' and 'std'"),
    (
        {"mean": ["a", 0.5, 0.5], "std": [0.2] * 3},
        "'mean' must be 3 numbers (r, g, b on the 0-1 scale), got ['a', 0.5, 0.5]",
    ),
    (
        {"mean": [True, 0.5, 0.5], "std": [0.2] * 3},
        "'mean' must be 3 numbers (r, g, b on the 0-1 scale), got [True, 0.5, 0.5]",
    ),
    ({"mean": [0.5] * 3}, "has no 'std'; expected exactly 'mean' and 'std'"),
    (
        "macenko",
        "is 'macenko'; supported: scale, standardize, imagenet, or {mean: [r, g, b], std: [r, g, b]} on the 0-1 scale",
    ),
]
BAD_IDS = ["short", "std0", "unknown_key", "not_number", "bool", "no_std", "unknown_name"]


def _separator(message: str) -> str:
    return "" if message.startswith(("has ", "is ")) else ":"


@pytest.mark.parametrize(("value", "message"), BAD, ids=BAD_IDS)
def test_bad_mean_std_in_load_model(tmp_path, value, message):
    path = write_model_dir(tmp_path / "m")
    with pytest.raises(sg.InputError) as err:
        sg.load_model(path, preprocessing=value)
    assert str(err.value) == f"model '{path}': preprocessing{_separator(message)} {message}"


@pytest.mark.parametrize(("value", "message"), BAD, ids=BAD_IDS)
def test_bad_mean_std_in_params_json(tmp_path, value, message):
    path = write_model_dir(tmp_path / "m")
    params = json.loads((path / "params.json").read_text())
    (path / "params.json").write_text(json.dumps({**params, "preprocessing": value}))
    for load in (sg.load_model, get_preprocess_fn):
        with pytest.raises(sg.InputError) as err:
            load(path)
        assert str(err.value) == f"'{path / 'params.json'}': field 'preprocessing'{_separator(message)} {message}"


def test_non_finite_mean_std_is_refused(tmp_path):
    path = write_model_dir(tmp_path / "m")
    with pytest.raises(sg.InputError, match=r"'std' must be 3 numbers > 0 .*got \[0.2, inf, 0.2\]$"):
        sg.load_model(path, preprocessing={"mean": [0.5] * 3, "std": [0.2, math.inf, 0.2]})


MINIMAL = {"samples": "samples.csv", "tiles": "tiles.csv", "methods": ["vanilla"]}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"mean": [0.5, 0.5], "std": [0.2] * 3}, "model.preprocessing.mean': [0.5, 0.5] is too short"),
        ({"mean": [0.5] * 4, "std": [0.2] * 3}, "model.preprocessing.mean': [0.5, 0.5, 0.5, 0.5] is too long"),
        (
            {"mean": [0.5] * 3, "std": [0.2, 0, 0.2]},
            "model.preprocessing.std[1]': 0 is less than or equal to the minimum of 0",
        ),
        (
            {"mean": [0.5] * 3, "std": [0.2] * 3, "max": 1},
            "model.preprocessing': Additional properties are not allowed ('max' was unexpected)",
        ),
        ({"mean": ["a", 0.5, 0.5], "std": [0.2] * 3}, "model.preprocessing.mean[0]': 'a' is not of type 'number'"),
        ({"mean": [0.5] * 3}, "model.preprocessing.std': required, but the config has none"),
        ("macenko", "model.preprocessing': 'macenko' is not one of [None, 'scale', 'standardize', 'imagenet']"),
    ],
)
def test_bad_mean_std_in_the_config(value, message):
    with pytest.raises(sg.InputError) as err:
        validate_config({**MINIMAL, "model": {"path": "m", "preprocessing": value}})
    assert str(err.value) == f"config field '{message}"


def test_config_mean_std_passes_the_schema_and_nan_is_caught_by_the_plan(tmp_path, slide_path, model_dir, monkeypatch):
    assert (
        validate_config({**MINIMAL, "model": {"path": "m", "preprocessing": HOPTIMUS}})["model"]["preprocessing"]
        == HOPTIMUS
    )
    root = make_project(tmp_path, slide_path, model_dir, [{"slide": "s1", "x": 0, "y": 0}])
    monkeypatch.chdir(root)
    config = _load_config(root)
    config["model"]["preprocessing"] = {"mean": [0.5, math.nan, 0.5], "std": [0.2] * 3}  # YAML .nan: a number
    with pytest.raises(sg.InputError) as err:
        build_plan(config)
    assert str(err.value) == (
        "config field 'model.preprocessing': 'mean' must be 3 numbers (r, g, b on the 0-1 scale), got [0.5, nan, 0.5]"
    )
