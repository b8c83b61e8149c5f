"""Vision transformers (issue 23): attention rollout and transformer attribution against written-out
references (tests/vit_reference.py), every method on three ViT layouts, registers, parameter errors,
non-ViT models, PAIR, unreadable attention and the memory estimate.

Models are small and random (seeded): the timm-layout :func:`slidegrad.torch_nets.vit_demo` (with and
without register tokens), a ``transformers`` ``ViTForImageClassification`` and a
``Dinov2WithRegistersForImageClassification``.  References run per image in float64 from attention
probabilities they read themselves; slidegrad runs batched in float32, so maps are compared by relative
L2 (:data:`REFERENCE_REL_L2`), never exactly.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import slidegrad as sg
from slidegrad.engines import attention as attention_engine
from slidegrad.methods import min_max_scaled

from . import vit_reference as ref
from .metrics import rel_l2

# slidegrad (float32, batched) against the float64 per-image references; measured ≤ 1e-6 (see the report)
REFERENCE_REL_L2 = 1e-4
PATCH = 16


# -- models and tiles --------------------------------------------------------------------------------
def timm_vit(reg_tokens: int = 0, seed: int = 0) -> torch.nn.Module:
    """The demo ViT (128 px, patch 16: an 8 × 8 grid; 4 blocks, 3 heads, 96 wide), random, seeded."""
    from slidegrad.torch_nets import vit_demo

    torch.manual_seed(seed)
    return vit_demo(2, reg_tokens=reg_tokens).eval()


def hf_vit(seed: int = 0) -> torch.nn.Module:
    """A random ``transformers`` ViT for 64 px (a 4 × 4 grid; 2 layers, 2 heads), its default attention (SDPA).

    ``initializer_range`` 0.2 (not 0.02) so that the random attention is far from uniform."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=64, patch_size=PATCH, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2, initializer_range=0.2,
    )  # fmt: skip
    return ViTForImageClassification(config).eval()


def hf_dinov2_registers(seed: int = 0, registers: int = 2) -> torch.nn.Module:
    """A random ``transformers`` DINOv2 with ``registers`` register tokens, 64 px (2 layers, 2 heads)."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersForImageClassification

    torch.manual_seed(seed)
    config = Dinov2WithRegistersConfig(
        image_size=64, patch_size=PATCH, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
        num_register_tokens=registers, num_labels=2, initializer_range=0.2,
    )  # fmt: skip
    return Dinov2WithRegistersForImageClassification(config).eval()


def eager_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The same ``transformers`` model (same weights) with eager attention, for ``output_attentions=True``."""
    twin = copy.deepcopy(model)
    twin.set_attn_implementation("eager")
    return twin.eval()


# name → (builder, tile size, prefix tokens (CLS + registers), blocks, heads)
MODELS = {
    "timm": (lambda: timm_vit(0), 128, 1, 4, 3),
    "timm_registers": (lambda: timm_vit(2), 128, 3, 4, 3),
    "hf_vit": (hf_vit, 64, 1, 2, 2),
    "hf_dinov2_registers": (hf_dinov2_registers, 64, 3, 2, 2),
}


def tiles(ihc: np.ndarray, size: int, n: int = 2) -> np.ndarray:
    """``n`` preprocessed (``sg.model.scale``) crops of the IHC image, ``(n, size, size, 3)`` float32."""
    corners = [(0, 0), (270, 320), (240, 150), (180, 330)][:n]
    return sg.model.scale(np.stack([ihc[y : y + size, x : x + size] for x, y in corners]))


def grid_of(size: int) -> tuple[int, int]:
    return size // PATCH, size // PATCH


def timm_reference_maps(model, batch, class_idx):
    return ref.per_image(ref.timm_forward, model, batch, class_idx)


def hf_reference_maps(model, batch, class_idx):
    return ref.per_image(ref.hf_attentions, eager_copy(model), batch, class_idx)


def reference_maps(name: str, model, batch, class_idx):
    return (timm_reference_maps if name.startswith("timm") else hf_reference_maps)(model, batch, class_idx)


# -- the references themselves ---------------------------------------------------------------------
@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_the_timm_reference_forward_is_the_models(ihc, reg_tokens):
    """The hand-run blocks of vit_reference reproduce the module's logits (so their attention is the model's)."""
    model = timm_vit(reg_tokens)
    x = torch.from_numpy(tiles(ihc, 128).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        logits, attentions = ref.timm_forward(model, x)
        expected = model(x)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert len(attentions) == 4 and attentions[0].shape == (2, 3, 64 + 1 + reg_tokens, 64 + 1 + reg_tokens)
    torch.testing.assert_close(attentions[0].sum(-1), torch.ones(2, 3, 65 + reg_tokens))


def test_the_reference_formulas_on_a_hand_made_example():
    """Two tokens (CLS and one patch), one head, one block: rollout and relevance by hand."""
    a = np.array([[[0.75, 0.25], [0.5, 0.5]]])
    # (A + I) / 2 = [[0.875, 0.125], [0.25, 0.75]]: rows sum to 1 already
    assert ref.rollout([a], prefix=1) == pytest.approx([0.125])
    assert ref.rollout([a, a], prefix=1) == pytest.approx([0.875 * 0.125 + 0.125 * 0.75])
    g = np.array([[[1.0, -2.0], [4.0, 0.0]]])
    # R = I + relu(g ⊙ a) = [[1.75, 0], [2, 1]]: the CLS row over the patch is 0
    assert ref.chefer([a], [g], prefix=1) == pytest.approx([0.0])
    # a second block whose gradient weights only CLS→patch: Ā = [[0, 1], [0, 0]], R ← R + Ā R = R + [[2, 1], [0, 0]]
    g2 = np.array([[[0.0, 4.0], [0.0, 0.0]]])
    assert ref.chefer([a, a], [g, g2], prefix=1) == pytest.approx([1.0])
    # discard 0.5: the 2 lowest of 4 entries are 0.1 (CLS→CLS, kept) and 0.2 (CLS→patch, zeroed), so the CLS
    # row of (A + I) / 2 is [0.55, 0] → [1, 0]; without the discard it is [0.55, 0.1] / 0.65
    a = np.array([[[0.1, 0.2], [0.3, 0.4]]])
    assert ref.rollout([a], prefix=1, discard_ratio=0.5) == pytest.approx([0.0])
    assert ref.rollout([a], prefix=1) == pytest.approx([0.1 / 0.65])


# -- slidegrad against the references ---------------------------------------------------------------
ROLLOUT_CASES = [("mean", 0.0), ("max", 0.0), ("min", 0.0), ("mean", 0.5), ("max", 0.9), ("min", 0.25)]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("fusion,discard", ROLLOUT_CASES)
def test_attention_rollout_equals_the_reference(ihc, name, fusion, discard):
    build, size, prefix, _, _ = MODELS[name]
    model = build()
    batch = tiles(ihc, size)
    masks, raws = sg.SaliencyMap(model, device="cpu").attributions(
        batch, "attention_rollout", class_idx=1, head_fusion=fusion, discard_ratio=discard
    )
    worst = 0.0
    for raw, mask, (maps, _) in zip(raws, masks, reference_maps(name, model, batch, None)):
        expected_grid = ref.on_grid(ref.rollout(maps, prefix, fusion, discard), grid_of(size))
        expected = ref.resized(expected_grid, (size, size))
        if (fusion, discard) != ("mean", 0.0):  # the parameters change the reference: the case tests them
            plain = ref.on_grid(ref.rollout(maps, prefix), grid_of(size))
            assert rel_l2(expected_grid, plain) > 1e-3, rel_l2(expected_grid, plain)
        assert raw.shape == (size, size) and mask.shape == (size, size)
        worst = max(worst, rel_l2(raw, expected))
        assert rel_l2(mask, min_max_scaled(expected)) < 10 * REFERENCE_REL_L2
    print(f"rollout {name} {fusion} {discard}: relative L2 {worst:.3g}")
    assert worst < REFERENCE_REL_L2, worst


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("class_idx", [0, 1])
def test_transformer_attribution_equals_the_reference(ihc, name, class_idx):
    build, size, prefix, _, _ = MODELS[name]
    model = build()
    batch = tiles(ihc, size)
    masks, raws = sg.SaliencyMap(model, device="cpu").attributions(batch, "transformer_attribution", class_idx=class_idx)
    worst = 0.0
    for raw, (maps, grads) in zip(raws, reference_maps(name, model, batch, class_idx)):
        expected_grid = ref.on_grid(ref.chefer(maps, grads, prefix), grid_of(size))
        assert np.ptp(expected_grid) > 0, "a flat reference map tests nothing"
        worst = max(worst, rel_l2(raw, ref.resized(expected_grid, (size, size))))
    print(f"transformer attribution {name} class {class_idx}: relative L2 {worst:.3g}")
    assert worst < REFERENCE_REL_L2, worst


@pytest.mark.parametrize("name", ["timm_registers", "hf_dinov2_registers"])
def test_registers_are_prefix_tokens_and_not_on_the_map(ihc, name, monkeypatch):
    """With 2 registers: token_prefix() is 1 + 2, and the map on the patch grid is h × w (no register token)."""
    build, size, prefix, _, _ = MODELS[name]
    sal = sg.SaliencyMap(build(), device="cpu")
    assert prefix == 3 and sal.backend.token_prefix() == 3
    grids: list[tuple[int, ...]] = []
    original = attention_engine._resize

    def spy(grid_map, shape):
        grids.append(grid_map.shape)
        return original(grid_map, shape)

    monkeypatch.setattr(attention_engine, "_resize", spy)
    for method in ("attention_rollout", "transformer_attribution"):
        grids.clear()
        sal.get(tiles(ihc, size), method, class_idx=1)
        assert grids == [grid_of(size)] * 2, (method, grids)


def test_token_prefix_without_registers_and_on_a_cnn(tiny_cnn):
    assert sg.SaliencyMap(timm_vit(0), device="cpu").backend.token_prefix() == 1
    assert sg.SaliencyMap(hf_vit(), device="cpu").backend.token_prefix() == 1
    assert sg.SaliencyMap(tiny_cnn, device="cpu").backend.token_prefix() is None


@pytest.mark.parametrize("name", ["timm", "hf_vit"])
def test_rollout_is_class_agnostic_and_transformer_attribution_is_not(ihc, name):
    build, size, *_ = MODELS[name]
    sal = sg.SaliencyMap(build(), device="cpu")
    batch = tiles(ihc, size)
    rollouts = [sal.attributions(batch, "attention_rollout", class_idx=c)[1] for c in (0, 1)]
    for a, b in zip(*rollouts):
        np.testing.assert_array_equal(a, b)  # the same computation: no gradient, no class
    relevance = [sal.attributions(batch, "transformer_attribution", class_idx=c)[1] for c in (0, 1)]
    for a, b in zip(*relevance):
        assert rel_l2(a, b) > 0.01, rel_l2(a, b)


def test_attention_methods_leave_the_model_as_it_was(ihc):
    """Reading attention switches timm's fused attention off and transformers' to eager only while it runs."""
    vit, hf = timm_vit(0), hf_vit()
    implementation = hf.config._attn_implementation
    for model, size in ((vit, 128), (hf, 64)):
        sal = sg.SaliencyMap(model, device="cpu")
        sal.get(tiles(ihc, size, 1), "transformer_attribution", class_idx=1)
        sal.get(tiles(ihc, size, 1), "attention_rollout", class_idx=1)
    assert all(block.attn.fused_attn for block in vit.blocks)
    assert hf.config._attn_implementation == implementation


# -- every method on every layout ----------------------------------------------------------------------
# case → (method, parameters, smooth)
METHOD_CASES = {
    "vanilla": ("vanilla", {}, False),
    "integrated_gradients": ("integrated_gradients", {"x_steps": 4}, False),
    "guided_integrated_gradients": ("guided_integrated_gradients", {"x_steps": 4}, False),
    "blur_integrated_gradients": ("blur_integrated_gradients", {"steps": 4}, False),
    "xrai_fast": ("xrai_fast", {"steps": 4}, False),
    "vanilla_smooth": ("vanilla", {"nsamples": 2}, True),
    "gradcam": ("gradcam", {}, False),
    "attention_rollout": ("attention_rollout", {}, False),
    "transformer_attribution": ("transformer_attribution", {}, False),
    "transformer_attribution_smooth": ("transformer_attribution", {"nsamples": 2}, True),
}


@pytest.mark.parametrize("name", ["timm", "hf_vit", "hf_dinov2_registers"])
@pytest.mark.parametrize("case", list(METHOD_CASES))
def test_every_method_runs_on_vision_transformers(ihc, name, case):
    method, params, smooth = METHOD_CASES[case]
    build, size, *_ = MODELS[name]
    batch = tiles(ihc, size)
    masks = sg.SaliencyMap(build(), device="cpu").get(batch, method, class_idx=1, smooth=smooth, **params)
    assert masks.shape == (2, size, size) and masks.dtype == np.float32
    assert np.isfinite(masks).all() and masks.min() >= 0 and masks.max() <= 1
    assert masks.max() > 0, "an all-zero mask"


# -- errors ---------------------------------------------------------------------------------------
def _one_line_error(call) -> str:
    with pytest.raises(sg.InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.strip() == message, message
    return message


@pytest.mark.parametrize(
    "method,params,expected",
    [
        ("attention_rollout", {"head_fusion": "avg"}, "head_fusion"),
        ("attention_rollout", {"discard_ratio": 1.0}, "discard_ratio"),
        ("attention_rollout", {"discard_ratio": -0.1}, "discard_ratio"),
        ("attention_rollout", {"heads": 2}, "unknown parameter(s) heads"),
        ("transformer_attribution", {"head_fusion": "max"}, "unknown parameter(s) head_fusion"),
    ],
)
def test_parameter_errors_are_one_line(ihc, method, params, expected):
    sal = sg.SaliencyMap(timm_vit(0), device="cpu")
    message = _one_line_error(lambda: sal.get(tiles(ihc, 128, 1), method, class_idx=1, **params))
    print(message)
    assert expected in message and method in message


def test_the_rollout_parameters_accept_their_range(ihc):
    sal = sg.SaliencyMap(timm_vit(0), device="cpu")
    for fusion, discard in (("mean", 0.0), ("max", 0.99), ("min", 0)):
        assert np.isfinite(sal.get(tiles(ihc, 128, 1), "attention_rollout", head_fusion=fusion, discard_ratio=discard)).all()


@pytest.mark.parametrize("method", ["attention_rollout", "transformer_attribution"])
def test_attention_methods_on_a_cnn_say_it_is_not_a_vision_transformer(ihc_tiles, method):
    from slidegrad.torch_nets import SmallCNN

    torch.manual_seed(0)
    sal = sg.SaliencyMap(SmallCNN(2).eval(), device="cpu")
    message = _one_line_error(lambda: sal.get(sg.model.scale(ihc_tiles[:2]), method, class_idx=1))
    print(message)
    assert "not a vision transformer" in message


@pytest.mark.parametrize("method", ["attention_rollout", "transformer_attribution"])
def test_pair_has_no_attention_methods(ihc, method):
    sal = sg.SaliencyMap(timm_vit(0), device="cpu", engine="pair")
    message = _one_line_error(lambda: sal.get(tiles(ihc, 128, 1), method, class_idx=1))
    print(message)
    assert "PAIR" in message and "no such method" in message and method in message


@pytest.mark.parametrize("method", ["attention_rollout", "transformer_attribution"])
def test_attention_without_attn_drop_is_one_line(ihc, method):
    """A timm-layout attention module without ``attn_drop`` cannot be read (its probabilities are never a
    module output): one InputError line naming the module, not a crash or a silently empty map."""
    model = timm_vit(0)
    del model.blocks[2].attn.attn_drop  # the model still runs: fused attention never calls it
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 128, 128)).shape == (1, 2)
    sal = sg.SaliencyMap(model, device="cpu")
    message = _one_line_error(lambda: sal.get(tiles(ihc, 128, 2), method, class_idx=1))
    print(message)
    assert "blocks.2.attn" in message and "attn_drop" in message
    assert all(block.attn.fused_attn for block in model.blocks)  # restored on the error too


# -- the memory estimate ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["timm", "timm_registers", "hf_vit"])
def test_the_memory_estimate_counts_every_blocks_attention(name, monkeypatch):
    """Attention probabilities are no module's output (SDPA / fused attention), yet the attention methods
    hold blocks × heads × T² floats per item: ``activation_bytes`` must count at least that on top of the
    module outputs."""
    from slidegrad.backends import torch_backend

    build, size, prefix, blocks, heads = MODELS[name]
    t = grid_of(size)[0] * grid_of(size)[1] + prefix
    attention = blocks * heads * t * t * 4
    shape = (size, size, 3)
    with_attention = sg.SaliencyMap(build(), device="cpu").backend.activation_bytes(shape)
    monkeypatch.setattr(torch_backend, "attention_bytes", lambda *args, **kwargs: 0)
    without = sg.SaliencyMap(build(), device="cpu").backend.activation_bytes(shape)
    print(f"{name}: activation bytes {with_attention} with attention, {without} without; attention {attention}")
    assert with_attention - without >= attention, (with_attention, without, attention)


def test_the_engine_budget_uses_the_attention_estimate(ihc):
    """The native engine sizes its batches by ``activation_bytes`` (attention included)."""
    from slidegrad import batching

    sal = sg.SaliencyMap(timm_vit(0), device="cpu")
    per_item = sal.engine.engine._per_item_bytes((128, 128, 3))
    assert per_item == batching.item_bytes(sal.backend.activation_bytes((128, 128, 3)), 128 * 128 * 3)
    assert per_item >= 4 * 3 * 65 * 65 * 4
