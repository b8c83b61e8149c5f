"""Benchmark: native engine vs PAIR (per tile, as Slideflow calls it) vs Captum, against the model's floor.

    .venv/bin/python bench/saliency_bench.py [--model resnet18|demo|both|vit_demo|vit_small] [--tiles 8]
        [--device cpu] [--methods ...] [--pair-tiles N] [--single-reps 15] [--interleaved-reps 3]
        [--max-steps N] [--floor-reps 3] [--attention-reps 5] [--new-reps 2] [--new-tiles 4]

Per method it prints seconds per tile for each implementation, the floor (model
passes per tile × the best per-image fwd+bwd time measured in this run), the
ratios, and the native engine's peak memory (host RSS high-water mark on CPU,
``max_memory_allocated`` on CUDA).  Not a test: nothing here asserts a time.

Where native time goes: ``batch floor`` times plain fwd+bwd passes at exactly the
batch sizes the native engine used (right after it, so the same machine state), and
``host %`` is the share of native time outside the model's passes (noise, blurs,
region selection, copies).  ``native/floor`` ≈ ``batch floor/floor`` (the batch sizes
the tiles and the budget allow) × ``native/batch floor`` (the engine's own cost).

First, a single-call section: one tile per call, vanilla and Grad-CAM, native
(a fresh ``SaliencyMap`` per call, as Slideflow code does, and a reused one)
against PAIR's ``GetMask`` over a plain ``call_model_function`` and against the
PAIR engine; medians of interleaved calls, so load on the machine hits both alike.

Vision transformers (``--model vit_demo``: 128 px, 4 blocks; ``vit_small``: ViT-S/16, 224 px; random
weights, seeded): the table adds ``attention_rollout`` (1 forward with attention read, counted as one
pass) and ``transformer_attribution`` (1 fwd+bwd to the attention maps); PAIR has neither (``n/a``), and
Captum's Grad-CAM is skipped (its conv layer is the patch embedding, not the last block's norm1 tokens
slidegrad uses).  A last section times what reading attention costs: plain forward (fused attention, as
the model runs) against a forward with ``capture_attention`` on, and plain fwd+bwd to the input against
fwd+bwd to the attention maps, per image at the batch sizes the attention methods used (medians of
interleaved reps).  ``--max-steps N`` caps every method's steps (IG's ``x_steps``, Blur IG's and XRAI's
``steps``) to keep a large model's run short; the floor's pass counts follow the cap.  A method that fails
prints its error line and the others go on.

Last, the methods of issue 28 against their anchors' own code on the first ``--new-tiles`` (4) tiles (CNNs
only): occlusion vs PAIR's ``Occlusion.GetMask`` per image and Captum's ``Occlusion``; RISE vs its authors'
reference loop (masks made once, then per image in model batches of 100); Score-CAM, HiResCAM and LayerCAM vs
pytorch-grad-cam 1.5.7; Input × Gradient and GradientSHAP vs Captum.  The floor is the model passes a tile
needs × this run's best per-image pass: forward only for the gradient-free methods (occlusion:
(H − 14)² windows, RISE: ``n_masks``, Score-CAM: one per channel of the layer + 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import slidegrad as sg  # noqa: E402
from slidegrad.backends.torch_vit import capture_attention, token_model  # noqa: E402
from slidegrad.methods import METHODS as REGISTRY  # noqa: E402
from slidegrad.torch_nets import ResNet18, SmallCNN, vit_demo, vit_small  # noqa: E402

# Slideflow's defaults; the model passes one tile costs with them.
METHODS = {
    "vanilla": ("vanilla", {}, False, 1),
    "integrated_gradients": ("integrated_gradients", {}, False, 25),
    "guided_integrated_gradients": ("guided_integrated_gradients", {}, False, 25),
    "blur_integrated_gradients": ("blur_integrated_gradients", {}, False, 100),
    "xrai": ("xrai", {}, False, 200),
    "xrai_fast": ("xrai_fast", {}, False, 200),
    "gradcam": ("gradcam", {}, False, 1),
    "vanilla_smooth": ("vanilla", {}, True, 25),
    "integrated_gradients_smooth": ("integrated_gradients", {"nsamples": 5}, True, 125),
    "attention_rollout": ("attention_rollout", {}, False, 1),  # 1 forward with attention read
    "transformer_attribution": ("transformer_attribution", {}, False, 1),  # 1 fwd+bwd to the attention maps
}
# the step parameter of each stepped method and its default (passes scale with it under --max-steps)
STEPS = {
    "integrated_gradients": ("x_steps", 25),
    "guided_integrated_gradients": ("x_steps", 25),
    "blur_integrated_gradients": ("steps", 100),
    "xrai": ("steps", 100),
    "xrai_fast": ("steps", 100),
    "integrated_gradients_smooth": ("x_steps", 25),
}


def method_setup(key: str, max_steps: int | None) -> tuple[str, dict, bool, int, int | None]:
    """``(method, params, smooth, passes per tile, steps)`` of a METHODS entry, steps capped at ``max_steps``."""
    method, params, smooth, passes = METHODS[key]
    if key not in STEPS:
        return method, dict(params), smooth, passes, None
    name, default = STEPS[key]
    steps = default if max_steps is None else min(default, max_steps)
    params = dict(params)
    if steps != default:
        params[name] = steps
    return method, params, smooth, passes * steps // default, steps


def rss_peak_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def fwd_bwd_seconds(model: torch.nn.Module, x: np.ndarray, device: torch.device, size: int, reps: int = 3) -> float:
    """Best of ``reps`` plain fwd+bwd passes over a batch of ``size`` (input in the engine's layout).

    Each pass gets a fresh input tensor (scaled copies of the tiles), as the engine's passes do.
    """
    batch = torch.from_numpy(np.resize(x, (size, *x.shape[1:]))).permute(0, 3, 1, 2).to(device)
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    batch = batch.contiguous(memory_format=layout)
    times = []
    for rep in range(reps):
        inputs = (batch * (1.0 - 0.01 * rep)).requires_grad_(True)
        start = time.perf_counter()
        out = model(inputs)
        torch.autograd.grad(out[:, 0].sum(), inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def floor_per_image(model: torch.nn.Module, x: np.ndarray, device: torch.device, reps: int = 3) -> tuple[float, int]:
    """Best per-image fwd+bwd time over batch sizes (and that batch size)."""
    return min((fwd_bwd_seconds(model, x, device, size, reps) / size, size) for size in (1, 4, 8, 16, 25, 32))


class PassTimer:
    """Times the native engine's model passes (``TorchOps.grad``, ``TorchBackend.conv_gradients``,
    ``TorchBackend.attention_maps``) and their batch sizes."""

    def __init__(self, native: sg.SaliencyMap) -> None:
        self.seconds, self.sizes = 0.0, Counter()
        backend = type(native.backend)
        for owner, name in ((type(native.backend.ops), "grad"), (backend, "conv_gradients"), (backend, "attention_maps")):
            original = getattr(owner, name)
            setattr(owner, name, self._timed(getattr(original, "untimed", original)))  # one timer at a time

    def _timed(self, fn):
        def wrapper(this, x, *args, **kwargs):
            start = time.perf_counter()
            out = fn(this, x, *args, **kwargs)
            if isinstance(x, torch.Tensor) and x.device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - start
            self.sizes[int(x.shape[0])] += 1
            return out

        wrapper.untimed = fn
        return wrapper

    def reset(self) -> None:
        self.seconds, self.sizes = 0.0, Counter()


def captum_runner(name: str, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, ig_steps: int = 25):
    """Captum's equivalent of a METHODS entry, or ``None`` where it has none (on a ViT, Grad-CAM: Captum's
    conv layer would be the patch embedding, not the last block's norm1 tokens slidegrad uses)."""
    try:
        from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
    except ImportError:
        return None
    if name == "vanilla":
        return lambda: Saliency(model).attribute(x, target=target, abs=False)
    if name == "integrated_gradients":
        return lambda: IntegratedGradients(model).attribute(
            x, target=target, n_steps=ig_steps, internal_batch_size=len(x) * ig_steps
        )
    if name == "vanilla_smooth":
        tunnel = NoiseTunnel(Saliency(model))
        return lambda: tunnel.attribute(x, target=target, nt_type="smoothgrad_sq", nt_samples=25, stdevs=0.3, abs=False)
    if name == "gradcam" and token_model(model) is None:
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        return lambda: LayerGradCam(model, convs[-1]).attribute(x, target=target)
    return None


def bench_model(
    label: str,
    model: torch.nn.Module,
    tiles: np.ndarray,
    device: str,
    methods: list[str],
    pair_tiles: int | None = None,
    max_steps: int | None = None,
    floor_reps: int = 3,
    batch_floor_on: bool = True,
) -> dict[str, dict[int, int]]:
    """``pair_tiles``: time PAIR's per-tile loop on the first that many tiles only (its cost is linear in
    tiles; per-tile seconds are reported either way); 0: skip PAIR.  Returns the batch sizes the native
    engine used per method (``{method: {size: count}}``)."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    x = sg.model.scale(tiles)
    n = len(x)
    per_image, best_batch = floor_per_image(model, x, dev, floor_reps)
    n_pair = n if pair_tiles is None else min(n, pair_tiles)
    reps = min(2, floor_reps)
    steps_note = "default steps" if max_steps is None else f"steps capped at {max_steps}"
    print(f"\n== {label}: {n} tiles {x.shape[1]} px (PAIR: {n_pair}), device {device}, {steps_note}; "
          f"fwd+bwd floor {per_image * 1e3:.1f} ms/image (batch {best_batch}); load average {_load()}")  # fmt: skip
    print(f"{'method':30s} {'native s/tile':>13s} {'PAIR s/tile':>12s} {'Captum s/tile':>13s} {'floor s/tile':>12s} "
          f"{'native/floor':>12s} {'PAIR/native':>11s} {'Captum/native':>13s} {'peak MiB':>9s} "
          f"{'batch floor':>11s} {'native/batch floor':>18s} {'host %':>6s}  batches")  # fmt: skip
    native = sg.SaliencyMap(model, class_idx=1, device=device, engine="native")
    passes_timer = PassTimer(native)
    pair = sg.SaliencyMap(model, class_idx=1, device=device, engine="pair")
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).to(dev)
    target = torch.ones(n, dtype=torch.long, device=dev)
    native.get(x, "vanilla")  # warm-up, and the engine's one probe of the model's activation size at this batch
    notes: list[str] = []
    batches: dict[str, dict[int, int]] = {}
    drift = [per_image]  # the floor's batch re-timed after each method: this machine's spread over the run
    nan = float("nan")
    for key in methods:
        method, params, smooth, passes, steps = method_setup(key, max_steps)
        rss_peak_reset()
        base = rss_kib("VmRSS")
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        passes_timer.reset()
        try:
            t_native, _ = timed(lambda: native.get(x, method, smooth=smooth, **params))
        except Exception as error:  # a method that fails on this model: its error line, and the others go on
            print(f"{key:30s} native ERROR {_error_line(error)}")
            continue
        peak = (torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else (rss_kib("VmHWM") - base) / 1024
        used = dict(passes_timer.sizes)
        batches[key] = used
        batch_floor = nan
        if batch_floor_on:
            batch_floor = sum(count * fwd_bwd_seconds(model, x, dev, size, reps=reps) for size, count in used.items()) / n
        host = 100 * (1 - passes_timer.seconds / t_native)
        t_pair = nan
        if n_pair and REGISTRY[method].pair is not None:  # PAIR has no attention methods
            try:
                t_pair, _ = timed(lambda: pair.get(x[:n_pair], method, smooth=smooth, **params))
                t_pair *= n / n_pair  # as if on all n tiles
            except Exception as error:
                notes.append(f"{key}: PAIR ERROR {_error_line(error)}")
        runner = captum_runner(key, model, xt, target, steps or 25)
        t_captum = nan
        if runner:
            try:
                t_captum = timed(runner)[0]
            except Exception as error:
                notes.append(f"{key}: Captum ERROR {_error_line(error)}")
        floor = passes * per_image
        if batch_floor_on:
            drift.append(fwd_bwd_seconds(model, x, dev, best_batch, reps=reps) / best_batch)
        if steps is not None and steps != STEPS[key][1]:
            notes.append(f"{key}: {STEPS[key][0]}={steps} (default {STEPS[key][1]}), {passes} passes per tile")
        if method == "xrai":  # its host work apart from the passes: segmentation, alone and serial
            from slidegrad.engines import xrai_regions

            t_seg = timed(lambda: [xrai_regions.segments(image) for image in x])[0] / n
            notes.append(f"{key}: Felzenszwalb segmentation alone {t_seg:.3f} s/tile (one thread)")
        print(f"{key:30s} {t_native / n:13.3f} {_num(t_pair / n, 12, 3)} {_num(t_captum / n, 13, 3)} {floor:12.3f} "
              f"{t_native / n / floor:12.2f} {_num(t_pair / t_native, 11, 2)} {_num(t_captum / t_native, 13, 2)} {peak:9.0f} "
              f"{_num(batch_floor, 11, 3)} {_num(t_native / n / batch_floor, 18, 2)} {host:6.1f}  {used}")  # fmt: skip
    for note in notes:
        print(note)
    if len(drift) > 1:
        print(f"floor re-timed after each method (batch {best_batch}): {min(drift) * 1e3:.1f}–{max(drift) * 1e3:.1f} ms/image "
              f"(spread {max(drift) / min(drift) - 1:.0%}); the ratios use the first, {per_image * 1e3:.1f}")  # fmt: skip
    print(f"load average at the end: {_load()}")
    return batches


def _load() -> str:
    """This machine's 1/5/15-minute load averages (other work on it slows every timing)."""
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _num(value: float, width: int, digits: int) -> str:
    """``value`` in ``width`` columns, ``n/a`` where it was not measured (NaN)."""
    return f"{'n/a':>{width}s}" if value != value else f"{value:{width}.{digits}f}"


def _error_line(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def bench_attention(label: str, model: torch.nn.Module, tiles: np.ndarray, device: str, sizes: list[int], reps: int) -> None:
    """What reading attention costs, per image at each batch size in ``sizes``: plain forward (fused
    attention, no grad) vs forward with ``capture_attention`` (no grad: rollout's pass), and plain fwd+bwd
    to the input vs fwd+bwd to the attention maps (transformer attribution's pass); medians of ``reps``
    interleaved reps after one warm-up."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    tokens = token_model(model)
    if tokens is None:
        return
    x = sg.model.scale(tiles)
    layout = torch.channels_last if dev.type == "cpu" else torch.contiguous_format
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def plain_fwd(batch):
        with torch.no_grad():
            model(batch)

    def capture_fwd(batch):
        with capture_attention(model, tokens, label) as maps, torch.no_grad():
            model(batch)
        assert len(maps) == len(tokens.attentions)

    def plain_fwd_bwd(batch):
        inputs = batch.clone().requires_grad_(True)
        torch.autograd.grad(model(inputs)[:, 1].sum(), inputs)

    def capture_fwd_bwd(batch):
        inputs = batch.clone().requires_grad_(True)
        with capture_attention(model, tokens, label) as maps:
            out = model(inputs)
        torch.autograd.grad(out[:, 1].sum(), maps)

    passes = {"fwd": plain_fwd, "fwd+capture": capture_fwd, "fwd+bwd": plain_fwd_bwd, "fwd+bwd to maps": capture_fwd_bwd}
    print(f"\n== attention read, {label}: ms/image, median of {reps} interleaved reps; {len(tokens.attentions)} blocks; "
          f"load average {_load()}")  # fmt: skip
    print(f"{'batch':>5s} {'fwd':>8s} {'fwd+capture':>11s} {'fwd+bwd':>8s} {'fwd+bwd to maps':>15s} "
          f"{'capture/fwd':>11s} {'maps bwd/fwd+bwd':>16s} {'capture/fwd+bwd':>15s}")  # fmt: skip
    for size in sizes:
        batch = torch.from_numpy(np.resize(x, (size, *x.shape[1:]))).permute(0, 3, 1, 2).to(dev)
        batch = batch.contiguous(memory_format=layout)
        times: dict[str, list[float]] = {name: [] for name in passes}
        for fn in passes.values():  # warm-up
            fn(batch)
        for _ in range(reps):
            for name, fn in passes.items():
                start = time.perf_counter()
                fn(batch)
                sync()
                times[name].append(time.perf_counter() - start)
        med = {name: float(np.median(t)) / size * 1e3 for name, t in times.items()}
        print(f"{size:5d} {med['fwd']:8.1f} {med['fwd+capture']:11.1f} {med['fwd+bwd']:8.1f} {med['fwd+bwd to maps']:15.1f} "
              f"{med['fwd+capture'] / med['fwd']:11.2f} {med['fwd+bwd to maps'] / med['fwd+bwd']:16.2f} "
              f"{med['fwd+capture'] / med['fwd+bwd']:15.2f}")  # fmt: skip


def bench_interleaved(label: str, model: torch.nn.Module, tiles: np.ndarray, device: str, reps: int) -> None:
    """Native IG against plain fwd+bwd passes at the same batch sizes, interleaved ``reps`` times.

    Shows how far the engine's own passes are from the model's, apart from this machine's drift.
    """
    dev = torch.device(device)
    model = model.to(dev).eval()
    x = sg.model.scale(tiles)
    native = sg.SaliencyMap(model, class_idx=1, device=device, engine="native")
    timer = PassTimer(native)
    native.get(x, "integrated_gradients")  # warm-up, and the batch sizes it uses
    sizes = dict(timer.sizes)
    print(f"\n== interleaved, {label}: native IG ({len(x)} tiles, 25 steps) and plain passes at its batches {sizes}")
    for rep in range(reps):
        plain = sum(count * fwd_bwd_seconds(model, x, dev, size, reps=1) for size, count in sizes.items())
        t_native = timed(lambda: native.get(x, "integrated_gradients"))[0]
        print(f"rep {rep + 1}: native {t_native:.2f} s, plain passes {plain:.2f} s, native/plain {t_native / plain:.2f}")


def plain_pair_call(model: torch.nn.Module, device: torch.device):
    """PAIR's ``call_model_function`` written directly over the module, as a user of PAIR writes it."""
    import saliency.core as pair

    last_conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]

    def call(x_batch, call_model_args=None, expected_keys=None):
        k = call_model_args["class_idx"]
        inputs = torch.from_numpy(np.ascontiguousarray(x_batch.transpose(0, 3, 1, 2))).to(device)
        if pair.OUTPUT_LAYER_VALUES in expected_keys:  # Occlusion: the class logit, forward only
            with torch.no_grad():
                return {pair.OUTPUT_LAYER_VALUES: model(inputs)[:, k].cpu().numpy()}
        if pair.INPUT_OUTPUT_GRADIENTS in expected_keys:
            inputs.requires_grad_(True)
            (grads,) = torch.autograd.grad(model(inputs)[:, k].sum(), inputs)
            return {pair.INPUT_OUTPUT_GRADIENTS: grads.permute(0, 2, 3, 1).cpu().numpy()}
        captured = []
        handle = last_conv.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            out = model(inputs)
        finally:
            handle.remove()
        (grads,) = torch.autograd.grad(out[:, k].sum(), captured[0])
        to_np = lambda t: t.detach().permute(0, 2, 3, 1).cpu().numpy()  # noqa: E731
        return {pair.CONVOLUTION_LAYER_VALUES: to_np(captured[0]), pair.CONVOLUTION_OUTPUT_GRADIENTS: to_np(grads)}

    return call


def bench_single_call(label: str, model: torch.nn.Module, tile: np.ndarray, device: str, reps: int) -> None:
    """One tile per call (the interactive use): per-call overhead against PAIR, median of interleaved reps."""
    import saliency.core as pair

    dev = torch.device(device)
    model = model.to(dev).eval()
    x = sg.model.scale(tile)
    call = plain_pair_call(model, dev)
    runners = {
        "vanilla": {
            "native": lambda: sg.SaliencyMap(model, class_idx=1, device=device).vanilla(x),
            "native (reused object)": lambda: reused.vanilla(x),
            "PAIR engine": lambda: pair_engine.vanilla(x),
            "PAIR": lambda: pair.GradientSaliency().GetMask(x, call, {"class_idx": 1}),
        },
        "gradcam": {
            "native": lambda: sg.SaliencyMap(model, class_idx=1, device=device).gradcam(x),
            "native (reused object)": lambda: reused.gradcam(x),
            "PAIR engine": lambda: pair_engine.gradcam(x),
            "PAIR": lambda: pair.GradCam().GetMask(x, call, {"class_idx": 1}, should_resize=True, three_dims=True),
        },
    }
    if token_model(model) is not None:  # a ViT: the plain PAIR call's last conv is the patch embedding
        del runners["gradcam"]
    reused = sg.SaliencyMap(model, class_idx=1, device=device)
    pair_engine = sg.SaliencyMap(model, class_idx=1, device=device, engine="pair")
    print(f"\n== single call, {label}: one {x.shape[0]} px tile, device {device}, median of {reps} interleaved calls")
    print(f"{'method':10s} {'native s':>9s} {'reused s':>9s} {'PAIR-eng s':>10s} {'PAIR s':>8s} "
          f"{'native/PAIR':>11s} {'reused/PAIR':>11s} {'native/PAIR-eng':>15s}")  # fmt: skip
    for method, calls in runners.items():
        times: dict[str, list[float]] = {name: [] for name in calls}
        for name, fn in calls.items():  # warm-up
            fn()
        for _ in range(reps):
            for name, fn in calls.items():
                times[name].append(timed(fn)[0])
        med = {name: float(np.median(t)) for name, t in times.items()}
        print(f"{method:10s} {med['native']:9.4f} {med['native (reused object)']:9.4f} {med['PAIR engine']:10.4f} "
              f"{med['PAIR']:8.4f} {med['native'] / med['PAIR']:11.2f} "
              f"{med['native (reused object)'] / med['PAIR']:11.2f} {med['native'] / med['PAIR engine']:15.2f}")  # fmt: skip


# The issue-28 methods against their anchors' own code, on the same tiles: (method, params, anchor label,
# model passes per tile, whether those passes are forward only).  Occlusion, RISE and Score-CAM are
# gradient-free: their floor is forward passes.
NEW_METHODS = {
    "occlusion": ({}, "PAIR Occlusion.GetMask, per image", "occlusion", True),
    "occlusion_captum": ({}, "Captum Occlusion (batch, 8 windows per eval)", "occlusion", True),
    "rise": ({}, "RISE reference loop (Petsiuk et al.), per image", "rise", True),
    "scorecam": ({}, "pytorch-grad-cam ScoreCAM (per image, 16 channels a call)", "channels", True),
    "hirescam": ({}, "pytorch-grad-cam HiResCAM (batch)", 1, False),
    "layercam": ({}, "pytorch-grad-cam LayerCAM (batch)", 1, False),
    "input_x_gradient": ({}, "Captum InputXGradient (batch)", 1, False),
    "gradient_shap": ({}, "Captum GradientShap (batch; black, white, blurred baselines)", "n_samples", False),
}


def fwd_seconds(model: torch.nn.Module, x: np.ndarray, device: torch.device, size: int, reps: int = 3) -> float:
    """Best of ``reps`` plain forward passes (no gradient) over a batch of ``size``."""
    batch = torch.from_numpy(np.resize(x, (size, *x.shape[1:]))).permute(0, 3, 1, 2).to(device)
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format  # the engine's layout
    batch = batch.contiguous(memory_format=layout)
    times = []
    with torch.no_grad():
        for _ in range(reps):
            start = time.perf_counter()
            model(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return min(times)


def anchor_runner(key: str, model: torch.nn.Module, x: np.ndarray, device: torch.device, params: dict):
    """The anchor's own call of a NEW_METHODS entry over ``x`` ``(N, H, W, 3)`` (class 1), as its users write it."""
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)
    target = torch.ones(len(x), dtype=torch.long, device=device)
    last_conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    method = REGISTRY[key.removesuffix("_captum")]
    settings = {**method.defaults, **params}
    if key == "occlusion":
        import saliency.core as pair

        call, occlusion = plain_pair_call(model, device), pair.Occlusion()
        return lambda: [occlusion.GetMask(image, call, {"class_idx": 1}, size=settings["size"], value=0) for image in x]
    if key == "occlusion_captum":
        from captum.attr import Occlusion

        size = settings["size"]
        occlusion = Occlusion(model)
        return lambda: occlusion.attribute(xt, (3, size, size), target=target, baselines=0.0, perturbations_per_eval=8)
    if key == "rise":
        return lambda: rise_reference(model, xt, 1, settings["n_masks"], settings["grid"], settings["p"])
    if key in ("scorecam", "hirescam", "layercam"):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.gradcam_reference import pytorch_grad_cam

        cams = pytorch_grad_cam()
        cls = {"scorecam": "ScoreCAM", "hirescam": "HiResCAM", "layercam": "LayerCAM"}[key]
        cam = getattr(cams, cls)(model=model, target_layers=[last_conv])
        return lambda: cam(input_tensor=xt, targets=[cams.ClassifierOutputTarget(1)] * len(x))
    from captum.attr import GradientShap, InputXGradient

    if key == "input_x_gradient":
        return lambda: InputXGradient(model).attribute(xt.clone().requires_grad_(True), target=target)
    from scipy.ndimage import gaussian_filter

    blurred = torch.from_numpy(np.stack([gaussian_filter(t, (5, 5, 0)) for t in x])).permute(0, 3, 1, 2).to(device)
    baselines = torch.cat([torch.zeros_like(xt[:1]), torch.ones_like(xt[:1]), blurred])
    return lambda: GradientShap(model).attribute(xt, baselines, n_samples=settings["n_samples"], target=target)


def rise_reference(model: torch.nn.Module, x: torch.Tensor, class_idx: int, n: int, s: int, p1: float, batch: int = 100):
    """RISE as its authors' reference code runs it (github.com/eclique/RISE, ``explanations.RISE``): the
    masks made once, then per image the masked copies in model batches of ``batch``; softmax probabilities."""
    from skimage.transform import resize

    height, width = x.shape[-2:]
    rng = np.random.default_rng(0)
    cell = np.ceil(np.array([height, width]) / s).astype(int)
    grid = (rng.random((n, s, s)) < p1).astype(np.float32)
    masks = np.empty((n, height, width), np.float32)
    for i in range(n):
        dx, dy = rng.integers(0, cell[0]), rng.integers(0, cell[1])
        up = resize(grid[i], (s + 1) * cell, order=1, mode="reflect", anti_aliasing=False)
        masks[i] = up[dx : dx + height, dy : dy + width]
    masks_t = torch.from_numpy(masks)[:, None].to(x.device)
    maps = []
    with torch.no_grad():
        for image in x:
            probs = torch.cat([
                torch.softmax(model(masks_t[i : i + batch] * image), 1)[:, class_idx] for i in range(0, n, batch)
            ])  # fmt: skip
            maps.append((probs @ masks_t.view(n, -1)).view(height, width) / n / p1)
    return maps


def bench_new_methods(label: str, model: torch.nn.Module, tiles: np.ndarray, device: str, reps: int) -> None:
    """The issue-28 methods (NEW_METHODS), native against the anchor's own code on the same tiles; best of
    ``reps`` alternating runs each, the floor from this run's best per-image pass (forward only for the
    gradient-free methods)."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    x = sg.model.scale(tiles)
    n = len(x)
    native = sg.SaliencyMap(model, class_idx=1, device=device, engine="native")
    native.get(x[:1], "vanilla")  # warm-up
    fwd = min(fwd_seconds(model, x, dev, size) / size for size in (1, 8, 32, 64))
    fwd_bwd, _ = floor_per_image(model, x, dev)
    channels = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1].out_channels
    print(f"\n== new methods vs their anchors, {label}: {n} tiles {x.shape[1]} px, device {device}, best of {reps}; "
          f"floor fwd {fwd * 1e3:.2f} ms/image, fwd+bwd {fwd_bwd * 1e3:.2f} ms/image; load average {_load()}")  # fmt: skip
    print(f"{'method':18s} {'native s/tile':>13s} {'anchor s/tile':>13s} {'anchor/native':>13s} {'floor s/tile':>12s} "
          f"{'native/floor':>12s}  anchor")  # fmt: skip
    for key, (params, anchor_label, passes, forward_only) in NEW_METHODS.items():
        name = key.removesuffix("_captum")
        if name not in REGISTRY:
            print(f"{key:18s} not in this slidegrad")
            continue
        settings = {**REGISTRY[name].defaults, **params}
        count = {"occlusion": (x.shape[1] - settings.get("size", 1) + 1) ** 2, "rise": settings.get("n_masks"),
                 "channels": channels + 1, "n_samples": settings.get("n_samples")}.get(passes, passes)  # fmt: skip
        floor = count * (fwd if forward_only else fwd_bwd)
        try:
            runner = anchor_runner(key, model, x, dev, params)
            t_native = t_anchor = float("inf")
            for _ in range(reps):
                t_native = min(t_native, timed(lambda: native.get(x, name, **params))[0])
                t_anchor = min(t_anchor, timed(runner)[0])
        except Exception as error:
            print(f"{key:18s} ERROR {_error_line(error)}")
            continue
        print(f"{key:18s} {t_native / n:13.3f} {t_anchor / n:13.3f} {t_anchor / t_native:13.2f} {floor:12.3f} "
              f"{t_native / n / floor:12.2f}  {anchor_label}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "demo", "both", "vit_demo", "vit_small"], default="both")
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--pair-tiles", type=int, default=None, help="time PAIR on the first N tiles only (0: skip PAIR)")
    parser.add_argument("--single-reps", type=int, default=15, help="single-call section: interleaved reps (0: skip)")
    parser.add_argument("--interleaved-reps", type=int, default=3, help="native IG vs plain passes, interleaved (0: skip)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap every method's steps (default: the methods' own)")
    parser.add_argument("--floor-reps", type=int, default=3, help="reps of each fwd+bwd floor timing (best of)")
    parser.add_argument(
        "--no-batch-floor", action="store_true", help="skip the per-method batch floor and the floor's re-timing (large models)"
    )
    parser.add_argument("--attention-reps", type=int, default=5, help="ViTs: interleaved reps of the attention-read timing (0: skip)")
    parser.add_argument("--new-reps", type=int, default=2, help="new methods vs their anchors: reps, best of (0: skip)")
    parser.add_argument("--new-tiles", type=int, default=4, help="new methods vs their anchors: tiles")
    args = parser.parse_args()
    from skimage.data import immunohistochemistry

    ihc = immunohistochemistry()
    rng = np.random.RandomState(0)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, numpy {np.__version__}, load average {_load()}")
    for name in (["resnet18", "demo"] if args.model == "both" else [args.model]):
        size = 224 if name in ("resnet18", "vit_small") else 128
        corners = rng.randint(0, 512 - size // 2, size=(args.tiles, 2))
        tiles = np.stack([np.asarray(_resize(ihc[y : y + size // 2, x : x + size // 2], size)) for x, y in corners])
        if name == "resnet18":
            model = ResNet18(n_classes=2)
        elif name in ("vit_demo", "vit_small"):
            torch.manual_seed(0)  # random weights, seeded
            model = (vit_demo if name == "vit_demo" else vit_small)(n_classes=2)
        else:
            demo_dir = Path("resources/demo/model")
            model = sg.load_model(demo_dir).module if demo_dir.exists() else SmallCNN(n_classes=2)
        if args.single_reps:
            bench_single_call(name, model, tiles[0], args.device, args.single_reps)
        if args.methods:
            batches = bench_model(
                name, model, tiles, args.device, args.methods, args.pair_tiles, args.max_steps, args.floor_reps,
                not args.no_batch_floor,
            )
            if args.attention_reps:
                attention = ("attention_rollout", "transformer_attribution")
                sizes = sorted({size for key in attention for size in batches.get(key, {})})
                bench_attention(name, model, tiles, args.device, sizes or [len(tiles)], args.attention_reps)
        if args.interleaved_reps:
            bench_interleaved(name, model, tiles, args.device, args.interleaved_reps)
        if args.new_reps and name in ("demo", "resnet18"):
            bench_new_methods(name, model, tiles[: args.new_tiles], args.device, args.new_reps)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


if __name__ == "__main__":
    main()
