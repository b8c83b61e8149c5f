"""Stain normalisation: parity with Slideflow's own normalisers on real IHC tiles, the fit read from a
Slideflow ``params.json``, the model's input pipeline, one-line errors, and a Slideflow model folder
with ``hp.normalizer: reinhard`` run end to end in the workflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import slidegrad as sg
from slidegrad import stain

from .conftest import run_snakemake
from .stain_reference import slideflow_norm
from .test_model_formats import slideflow_dir
from .test_workflow import _write_csv

SLIDEFLOW_FIT = {"target_means": [60.1, 21.5, -10.2], "target_stds": [13.9, 8.8, 6.4]}  # a norm_fit as Slideflow writes it


@pytest.fixture(scope="module")
def parity_tiles(ihc) -> list[np.ndarray]:
    """Sixteen 128 px tiles of skimage's IHC image, plus two larger crops."""
    tiles = [ihc[y : y + 128, x : x + 128] for y in range(0, 512, 128) for x in range(0, 512, 128)]
    return tiles + [ihc[:256, :256], ihc[100:300, 50:250]]


@pytest.fixture(scope="module")
def reference():
    with slideflow_norm() as sf:
        yield sf


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize("method", stain.METHODS)
def test_every_tile_within_one_level_of_slideflow_numpy(reference, parity_tiles, method):
    ref = reference.numpy[method]()  # fit: Slideflow's default preset v3
    ours = stain.StainNormalizer(method, stain.preset_fit(method, "v3", "test"))
    for k, value in ref.get_fit().items():  # the presets are Slideflow's
        np.testing.assert_allclose(np.asarray(value, np.float64), ours.fit[k], rtol=1e-6)
    exact = []
    for tile in parity_tiles:
        expected, got = ref.transform(tile.copy()), ours(tile)
        assert got.dtype == np.uint8 and got.shape == tile.shape
        assert _max_diff(expected, got) <= 1, method  # within 1/255
        exact.append(np.mean(expected == got))
        assert _max_diff(got, tile) > 10  # the tile really changed
    assert np.mean(exact) > 0.999  # the same arithmetic: off by one only where a float truncates differently


@pytest.mark.parametrize("method", stain.METHODS)
def test_every_tile_within_one_level_of_slideflow_torch(reference, parity_tiles, method):
    """Slideflow picks its PyTorch normalisers for a PyTorch model (sf.norm.autoselect)."""
    module = reference.torch_module("macenko" if method.startswith("macenko") else "reinhard")
    name = "".join(part.title() for part in method.split("_")) + "Normalizer"
    ref = getattr(module, name)()
    ours = stain.StainNormalizer(method, stain.preset_fit(method, "v3", "test"))
    for tile in parity_tiles:
        expected = ref.transform(torch.from_numpy(tile.copy())).numpy()
        assert _max_diff(expected.reshape(tile.shape), ours(tile)) <= 1, method


def test_a_fit_set_like_slideflow_set_fit(reference, parity_tiles):
    ref = reference.numpy["reinhard"]()
    ref.set_fit(**{k: np.array(v) for k, v in SLIDEFLOW_FIT.items()})
    ours = stain.StainNormalizer("reinhard", stain.parse_fit("reinhard", SLIDEFLOW_FIT, "test"))
    assert max(_max_diff(ref.transform(t.copy()), ours(t)) for t in parity_tiles) <= 1


def test_batches_normalise_tile_by_tile(parity_tiles):
    norm = stain.StainNormalizer("macenko", stain.preset_fit("macenko", "v1", "test"))
    batch = np.stack(parity_tiles[:4])
    np.testing.assert_array_equal(norm(batch), np.stack([norm(t) for t in batch]))


# -- the model's input pipeline -------------------------------------------------------------------
def _slideflow_model(path: Path, **hp_fields) -> Path:
    """A Slideflow PyTorch model folder (ResNet-18, 64 px) whose params.json sets the normaliser."""
    slideflow_dir(path, epochs=(1,))
    params = json.loads((path / "params.json").read_text())
    params["hp"].update(hp_fields)
    if "norm_fit" in hp_fields:
        params["norm_fit"] = params["hp"].pop("norm_fit")
    (path / "params.json").write_text(json.dumps(params))
    return path


def test_preprocess_fn_includes_the_normaliser(tmp_path, ihc_tiles):
    path = _slideflow_model(tmp_path / "sf", normalizer="reinhard", norm_fit=SLIDEFLOW_FIT)
    model = sg.load_model(path)
    assert model.normalizer.method == "reinhard" and model.normalizer.source == "params.json norm_fit"
    tiles = ihc_tiles[:3]
    expected = sg.model.scale(stain.StainNormalizer("reinhard", stain.parse_fit("reinhard", SLIDEFLOW_FIT, "t"))(tiles))
    for preprocess in (sg.get_preprocess_fn(model), sg.get_preprocess_fn(path)):
        np.testing.assert_array_equal(preprocess(tiles), expected)
        np.testing.assert_array_equal(sg.get_preprocess_fn(model, stain_normalize=False)(tiles), sg.model.scale(tiles))
    assert "reinhard" in repr(sg.get_preprocess_fn(model))


def test_fit_sources_and_overrides(tmp_path):
    path = _slideflow_model(tmp_path / "sf", normalizer="macenko", normalizer_source="v2")
    assert sg.load_model(path).normalizer.source == "preset v2"
    np.testing.assert_allclose(sg.load_model(path).normalizer.fit["target_concentrations"], [1.9705, 1.0308])
    assert sg.load_model(path, normalizer_fit="v1").normalizer.source == "preset v1"
    override = sg.load_model(path, normalizer="reinhard_fast").normalizer  # norm_fit belongs to macenko: preset v3
    assert override.source == "preset v3"
    np.testing.assert_allclose(override.fit["target_means"], [58.12343, 26.483482, -12.701005])
    assert sg.load_model(path, normalizer="none").normalizer is None
    bare = _slideflow_model(tmp_path / "plain")
    assert sg.load_model(bare).normalizer is None
    assert sg.load_model(bare, normalizer="reinhard_mask").normalizer.source == "preset v3"


@pytest.mark.parametrize(
    "hp, message",
    [
        ({"normalizer": "reinhardt"}, r"hp.normalizer: unknown stain normalizer 'reinhardt'; supported: reinhard, "),
        ({"normalizer": "vahadane"}, r"hp.normalizer: stain normalizer 'vahadane' is not supported \(.*SPAMS"),
        ({"normalizer": "augment"}, r"stain normalizer 'augment' is not supported \(it is a training-time"),
        ({"normalizer": "reinhard", "normalizer_source": "v9"}, r"hp.normalizer_source: unknown preset 'v9' for"),
        ({"normalizer": "reinhard", "normalizer_source": "/data/target.png"}, r"fitting to an image is not supported"),
        ({"normalizer": "reinhard", "norm_fit": {"target_means": [1, 2, 3]}}, r"norm_fit: missing target_stds for"),
        (
            {"normalizer": "reinhard", "norm_fit": {"target_means": [1, 2], "target_stds": [1, 1, 1]}},
            r"norm_fit: target_means must be finite numbers of shape \(3,\), got shape \(2,\)",
        ),
        (
            {"normalizer": "macenko", "norm_fit": {"stain_matrix_target": "x", "target_concentrations": [1, 1]}},
            r"norm_fit: stain_matrix_target must be numbers, got 'x'",
        ),
        (
            {"normalizer": "reinhard", "norm_fit": {"target_means": [1, 2, 3], "target_stds": [1, 0, 1]}},
            r"norm_fit: target_stds must be positive",
        ),
    ],
)
def test_bad_normaliser_fields_are_one_line(tmp_path, hp, message):
    path = _slideflow_model(tmp_path / "sf", **hp)
    with pytest.raises(sg.InputError, match=message) as err:
        sg.load_model(path)
    assert "\n" not in str(err.value) and str(path / "params.json") in str(err.value)


def test_bad_overrides_are_one_line(tmp_path):
    path = _slideflow_model(tmp_path / "sf")
    with pytest.raises(sg.InputError, match=r"config 'model.normalizer_fit' is set but the model has no normalizer"):
        sg.load_model(path, normalizer_fit="v1")
    with pytest.raises(sg.InputError, match=r"config 'model.normalizer': unknown stain normalizer 'mackenzie'"):
        sg.load_model(path, normalizer="mackenzie")
    with pytest.raises(sg.InputError, match=r"config 'model.normalizer_fit': missing stain_matrix_target"):
        sg.load_model(path, normalizer="macenko", normalizer_fit={"target_concentrations": [1, 1]})


@pytest.mark.parametrize("method", stain.METHODS)
def test_a_blank_tile_is_one_line_naming_it(ihc_tiles, method):
    norm = stain.StainNormalizer(method, stain.preset_fit(method, "v3", "test"))
    batch = np.concatenate([ihc_tiles[:2], np.full((1, 64, 64, 3), 255, np.uint8)])
    if method.startswith("reinhard"):  # a white tile has colour variation nowhere; a flat grey one neither
        batch[2] = 200
    with pytest.raises(stain.BlankTileError, match=rf"stain normalizer '{method}' cannot normalise tile\(s\) 2 of") as err:
        norm(batch)
    assert err.value.indices == [2] and "\n" not in str(err.value)
    with pytest.raises(sg.InputError, match=r"expected uint8 tiles \(H, W, 3\) or \(N, H, W, 3\), got float32"):
        norm(batch.astype(np.float32))


def test_a_mask_job_names_the_blank_tile(tmp_path, ihc_tiles):
    path = _slideflow_model(tmp_path / "sf", normalizer="macenko")
    model = sg.load_model(path)
    tiles = np.concatenate([ihc_tiles[:1], np.full((1, 64, 64, 3), 255, np.uint8)])
    with pytest.raises(sg.InputError) as err:
        sg.jobs.model_input(model, str(path), tiles, "s1", ["x0_y0", "x64_y0"])
    assert str(err.value) == (
        f"model '{path}': stain normalizer 'macenko' cannot normalise slide 's1' tile(s) x64_y0: "
        "blank (no stain or no contrast)"
    )


def test_perturbation_metrics_perturb_the_normalised_tile(tmp_path, ihc_tiles):
    """Deletion / insertion and PIC normalise each tile once, then perturb and only preprocess: the same
    numbers as the model without its normaliser scoring tiles normalised beforehand."""
    from slidegrad.evaluate.perturbation import deletion_insertion
    from slidegrad.evaluate.pic import pic_metric

    path = _slideflow_model(tmp_path / "sf", normalizer="macenko")
    with_norm, without = sg.load_model(path), sg.load_model(path, normalizer="none")
    tiles = ihc_tiles[:2]
    masks = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    ours = deletion_insertion(with_norm, tiles, masks, steps=4, class_idx=1)
    ref = deletion_insertion(without, with_norm.normalizer(tiles), masks, steps=4, class_idx=1)
    np.testing.assert_allclose(ours["deletion_curve"], ref["deletion_curve"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["insertion_curve"], ref["insertion_curve"], rtol=1e-5, atol=1e-6)
    pic = pic_metric(with_norm, tiles, masks, 1, seed=0).auc
    np.testing.assert_allclose(pic, pic_metric(without, with_norm.normalizer(tiles), masks, 1, seed=0).auc, rtol=1e-5)


# -- the workflow ------------------------------------------------------------------------------------
@pytest.mark.workflow
def test_a_slideflow_reinhard_model_runs_end_to_end(tmp_path, slide_path):
    """Masks of a Slideflow model with hp.normalizer reinhard equal a direct SaliencyMap call on the
    normalised, preprocessed tiles; overlays lie over the original tiles."""
    model_path = _slideflow_model(tmp_path / "sf_model", normalizer="reinhard", norm_fit=SLIDEFLOW_FIT)
    params = json.loads((model_path / "params.json").read_text())
    params["tile_um"] = 64  # the test slide: 64 µm tiles at 0.5 µm/px
    (model_path / "params.json").write_text(json.dumps(params))
    _write_csv(tmp_path / "samples.csv", [{"slide": "s1", "path": str(slide_path)}])
    _write_csv(tmp_path / "tiles.csv", [{"slide": "s1", "x": x, "y": 384} for x in (256, 512, 640)])
    config = {
        "samples": "samples.csv", "tiles": "tiles.csv", "model": {"path": str(model_path)},
        "methods": ["vanilla", {"name": "integrated_gradients", "x_steps": 4}], "threads": 1,
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "--configfile", "config.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    model = sg.load_model(model_path)
    names = ["x256_y384", "x512_y384", "x640_y384"]
    layout = sg.layout.Layout(str(tmp_path / "results"))
    chunks = list(dict.fromkeys(row["chunk"] for row in sg.tables.read_tile_table(layout.tile_table("s1"))))
    stored = [sg.results.read_tile_chunk(layout.tile_chunk("s1", chunk)) for chunk in chunks]
    assert [n for chunk in stored for n in chunk.names] == names
    tiles = np.concatenate([chunk.images for chunk in stored])
    normalised = model.normalizer(tiles)
    batch = sg.model.scale(normalised)
    sal = sg.SaliencyMap(model)
    direct = {"vanilla": sal.vanilla(batch), "integrated_gradients": sal.integrated_gradients(batch, x_steps=4)}
    for method, expected in direct.items():
        loaded = sg.results.load(layout.outdir, "s1", method)
        assert loaded.tiles["tile"].tolist() == names
        got = loaded.masks
        np.testing.assert_allclose(got, expected, atol=1e-5)
        unnormalised = sal.vanilla(sg.model.scale(tiles)) if method == "vanilla" else None
        if unnormalised is not None:  # the normaliser matters: skipping it gives other maps
            assert np.abs(got - unnormalised).max() > 0.05
    first = sg.results.read_mask_chunk(layout.mask_file("s1", chunks[0], "vanilla"))
    meta = first.records[0]
    assert meta["tile"] == names[0]
    assert meta["stain_normalizer"]["method"] == "reinhard"
    assert meta["stain_normalizer"]["fit"]["target_means"] == pytest.approx(SLIDEFLOW_FIT["target_means"])
    overlay = sg.jobs.read_png(f"{layout.picture_dir('overlays', 's1', chunks[0])}/vanilla/{names[0]}.png")
    np.testing.assert_array_equal(overlay, sg.plot.overlay(tiles[0], first.masks[0]))  # over the original tile
    methods_md = (tmp_path / "results/methods.md").read_text()
    assert "stain-normalised as in training (Reinhard, Slideflow's reinhard; fit: params.json norm_fit)" in methods_md
    assert "stain normalizer reinhard (fit: params.json norm_fit)" in "".join(
        p.read_text() for p in (tmp_path / "results/logs").rglob("*.log")
    )


@pytest.mark.workflow
def test_bad_normaliser_config_stops_before_any_job(tmp_path, slide_path, model_dir):
    _write_csv(tmp_path / "samples.csv", [{"slide": "s1", "path": str(slide_path)}])
    _write_csv(tmp_path / "tiles.csv", [{"slide": "s1", "x": 0, "y": 0}])
    config = {"samples": "samples.csv", "tiles": "tiles.csv", "methods": ["vanilla"],
              "model": {"path": str(model_dir), "normalizer": "vahadane"}}  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "-n", "--configfile", "config.yaml")
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "slidegrad: error" in line]
    assert result.returncode != 0 and "Traceback" not in output
    assert lines == [
        "slidegrad: error: config 'model.normalizer': stain normalizer 'vahadane' is not supported "
        f"({stain.NOT_SUPPORTED['vahadane']})"
    ], output
