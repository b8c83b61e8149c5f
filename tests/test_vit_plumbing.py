"""ViT plumbing outside the maps: tile size against patch size, SaliencyMap.all, methods text, mask records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import slidegrad as sg
from slidegrad import jobs
from slidegrad.config import MethodSpec
from slidegrad.methods_text import method_phrase
from slidegrad.tables import TILE_TABLE_COLUMNS
from slidegrad.torch_nets import VisionTransformer


def tiny_vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    options = {"img_size": 64, "patch_size": 16, "dim": 16, "depth": 2, "num_heads": 2, **kwargs}
    return VisionTransformer(2, **options).eval()


def vit_dir(path, tile_px: int, **kwargs):
    path.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_vit(**kwargs).state_dict(), path / "weights.pt")
    arch = {"img_size": 64, "patch_size": 16, "dim": 16, "depth": 2, "num_heads": 2, **kwargs}
    params = {"backend": "torch", "architecture": "vit", "architecture_kwargs": arch, "tile_px": tile_px,
              "tile_um": tile_px, "outcome_labels": ["negative", "positive"], "preprocessing": "scale"}  # fmt: skip
    (path / "params.json").write_text(json.dumps(params))
    return path


def test_tile_px_not_a_multiple_of_the_patch_size_is_one_line(tmp_path):
    folder = vit_dir(tmp_path / "vit", tile_px=60)
    with pytest.raises(sg.InputError) as err:
        sg.load_model(folder)
    assert str(err.value) == f"model '{folder}': tile_px 60 is not a multiple of the vision transformer's patch size 16"


def test_a_model_that_interpolates_takes_any_tile_size(tmp_path):
    folder = vit_dir(tmp_path / "vit", tile_px=80, dynamic_img_size=True)
    model = sg.load_model(folder)
    masks = sg.SaliencyMap(model, class_idx=1, device="cpu").attention_rollout(np.zeros((1, 80, 80, 3), np.float32))
    assert masks.shape == (1, 80, 80)


def test_all_includes_the_transformer_methods_on_a_vit_only():
    x = np.random.RandomState(0).uniform(-1, 1, (64, 64, 3)).astype(np.float32)
    out = sg.SaliencyMap(tiny_vit(), class_idx=1, device="cpu").all(x)
    assert sorted(out) == sorted(sg.METHODS)
    assert all(mask.shape == (64, 64) and np.isfinite(mask).all() for mask in out.values())


def test_methods_text_names_the_token_layer_and_the_prefix_tokens():
    meta = {"method_name": "gradcam", "smooth": False, "params": {"layer": None},
            "gradcam_layer": "blocks.1.norm1", "prefix_tokens": 3}  # fmt: skip
    phrase, cites = method_phrase(meta)
    assert phrase == "Grad-CAM (Selvaraju et al. 2017; layer blocks.1.norm1, on the patch tokens (3 prefix token(s) dropped))"
    rollout = {"method_name": "attention_rollout", "smooth": False, "prefix_tokens": 1,
               "params": {"head_fusion": "max", "discard_ratio": 0.5}}  # fmt: skip
    phrase, cites = method_phrase(rollout)
    assert cites == ["Abnar & Zuidema 2020"]
    assert phrase == (
        "attention rollout (Abnar & Zuidema 2020; on the patch tokens (1 prefix token(s) dropped), "
        "lowest 0.5 of the fused attention discarded, heads fused by their max)"
    )


@pytest.mark.parametrize(
    ("method", "layer", "prefix"),
    [("gradcam", "blocks.1.norm1", 3), ("attention_rollout", None, 3), ("vanilla", None, None)],
)
def test_mask_records_record_the_layer_and_the_prefix_tokens(tmp_path, method, layer, prefix):
    """A mask job on a ViT with 2 registers: its records say which layer and how many prefix tokens were dropped."""
    from slidegrad.results import read_mask_chunk, read_mask_records, write_tile_chunk

    folder = vit_dir(tmp_path / "vit", tile_px=64, reg_tokens=2)
    tiles = tmp_path / "tiles" / "c0.npz"
    rng = np.random.RandomState(0)
    write_tile_chunk(tiles, ["t0"], [0], [0], rng.randint(0, 255, (1, 64, 64, 3), dtype=np.uint8))
    table = tmp_path / "tiles.csv"
    columns = {column: "" for column in TILE_TABLE_COLUMNS}
    columns.update(slide="s1", tile="t0", x="0", y="0", chunk="c0", tile_px="64")
    table.write_text(",".join(columns) + "\n" + ",".join(columns.values()) + "\n")
    spec = MethodSpec(method, method, False, {})
    jobs.run_mask_job(str(folder), str(table), "c0", str(tiles), spec, str(tmp_path / "out.npz"), device="cpu")
    (record,) = read_mask_records(tmp_path / "out.npz")
    assert record["tile"] == "t0" and record["method"] == method
    assert record["gradcam_layer"] == layer
    assert record["prefix_tokens"] == prefix
    assert read_mask_chunk(tmp_path / "out.npz").masks.shape == (1, 64, 64)
