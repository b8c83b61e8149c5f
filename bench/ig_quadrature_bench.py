"""Benchmark: IG's quadrature rules — steps against completeness error and correlation to a 256-step reference.

    .venv/bin/python bench/ig_quadrature_bench.py [--tiles 8] [--epochs 4] [--train-tiles 384]

Two trained models: the demo model (SmallCNN, 128 px tiles of the demo slides) and a
ResNet-18 trained here for a few epochs on 64 px demo tiles (labels: the demo model's
rule, DAB OD > 0.05 in ≥ 25% of pixels).  Per rule (``riemann_mean``, PAIR's, and
``gauss_legendre``) and step count: the completeness error
``|Σ attr − (f(x) − f(0))| / |f(x) − f(0)|`` (median and max over tiles) and the
correlation of the raw map to PAIR's rule at 256 steps (min over tiles).  PAIR's IG
default is 25 passes; a third of that is 8.  Then adaptive steps (``tolerance``): each
tile starts at the given steps and doubles until its completeness error is ≤ the
tolerance (at most ``max_steps``); ``passes`` counts every gradient pass a tile took
(mean and max over tiles), plus two forward passes per tile for the scores.
Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import slidegrad as sg  # noqa: E402
from slidegrad.completeness import completeness_errors  # noqa: E402
from slidegrad.torch_nets import ResNet18  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "resources/demo"
STEPS = (2, 4, 6, 8, 12, 16, 25, 32, 64)
ADAPTIVE = (("gauss_legendre", 4), ("gauss_legendre", 6), ("gauss_legendre", 8), ("riemann_mean", 8))
TOLERANCE, MAX_STEPS = 0.01, 64
RULES = ("riemann_mean", "gauss_legendre")


def demo_tiles(size: int, count: int, seed: int) -> np.ndarray:
    """``count`` uint8 ``(size, size, 3)`` tiles at random places of the two demo slides (tissue only)."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for slide, until in (("a", count // 2), ("b", count)):
        with sg.WSI(DEMO / "slides" / f"demo_{slide}.tiff", size, size) as wsi:
            width, height = wsi.dimensions
            while len(out) < until:
                x, y = rng.integers(0, width - wsi.extract_px), rng.integers(0, height - wsi.extract_px)
                tile = wsi.read(int(x), int(y))
                if tile.mean() < 220:  # tissue, not glass
                    out.append(tile)
    return np.stack(out)


def dab_labels(tiles: np.ndarray) -> np.ndarray:
    """The demo model's label rule: DAB OD > 0.05 in ≥ 25% of pixels."""
    from skimage.color import rgb2hed

    return np.array([float((rgb2hed(t)[..., 2] > 0.05).mean() >= 0.25) for t in tiles], np.int64)


def train_resnet18(tiles: np.ndarray, labels: np.ndarray, epochs: int) -> torch.nn.Module:
    """ResNet-18 trained from scratch with Adam on ``(N, 64, 64, 3)`` tiles (``scale`` preprocessing)."""
    torch.manual_seed(0)
    model = ResNet18(n_classes=2)
    x = torch.from_numpy(sg.model.scale(tiles)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), 32):
            idx = order[start : start + 32]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x).argmax(1) == y).float().mean())
        print(f"  epoch {epoch + 1}: loss {loss.item():.3f}, train accuracy {accuracy:.3f}")
    return model.eval()


def table(label: str, model: torch.nn.Module, x: np.ndarray, fixed: bool = True) -> None:
    sal = sg.SaliencyMap(model)
    classes = sal.resolve_classes(x)
    _, reference = sal.attributions(x, "integrated_gradients", class_idx=classes, x_steps=256)
    ref_err = completeness_errors(sal.backend, x, classes, reference, "integrated_gradients", {})
    print(f"\n== {label}: {len(x)} tiles {x.shape[1]} px; reference riemann_mean 256 steps, completeness "
          f"error median {np.median(ref_err):.2e} max {max(ref_err):.2e}")  # fmt: skip

    def row(steps: str, rule: str, **params) -> None:
        start = time.perf_counter()
        _, raws = sal.attributions(x, "integrated_gradients", class_idx=classes, integration=rule, **params)
        seconds = (time.perf_counter() - start) / len(x)
        errors = np.array(completeness_errors(sal.backend, x, classes, raws, "integrated_gradients", {}), float)
        corr = min(float(np.corrcoef(r.ravel(), a.ravel())[0, 1]) for r, a in zip(reference, raws))
        print(f"{steps:>10s} | {rule:18s} | {np.median(errors):17.2e} {errors.max():9.2e} | {corr:17.5f} | {seconds:7.3f}")

    print(f"{'steps':>10s} | {'rule':18s} | {'compl. err median':>17s} {'max':>9s} | {'corr to ref (min)':>17s} | {'s/tile':>7s}")
    for steps in STEPS if fixed else ():
        for rule in RULES:
            row(str(steps), rule, x_steps=steps)
    print(f"adaptive: tolerance {TOLERANCE}, max_steps {MAX_STEPS}; steps: start → gradient passes per tile, mean/max")
    for rule, start in ADAPTIVE:
        row(f"{start}→", rule, x_steps=start, tolerance=TOLERANCE, max_steps=MAX_STEPS)
        passes = [schedule_passes(start, final, MAX_STEPS) for final in sal.engine.tile_steps]
        print(f"{'':>10s}   passes per tile: mean {np.mean(passes):.1f}, max {max(passes)}; final steps {sal.engine.tile_steps}")


def schedule_passes(start: int, final: int, max_steps: int) -> int:
    """Gradient passes a tile took to reach ``final`` steps by doubling from ``start`` (capped at ``max_steps``)."""
    total, steps = start, start
    while steps < final:
        steps = min(2 * steps, max_steps)
        total += steps
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=8, help="tiles per model in the table")
    parser.add_argument("--train-tiles", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--models", nargs="*", default=["demo", "resnet18"], choices=["demo", "resnet18"])
    parser.add_argument("--adaptive-only", action="store_true", help="skip the fixed-steps rows")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, numpy {np.__version__}")
    if "demo" in args.models:
        demo = sg.load_model(DEMO / "model")
        tiles = demo_tiles(128, args.tiles, seed=1)
        table("demo model (SmallCNN, trained)", demo.module, sg.get_preprocess_fn(demo)(tiles), not args.adaptive_only)
    if "resnet18" not in args.models:
        return

    train = demo_tiles(64, args.train_tiles, seed=2)
    labels = dab_labels(train)
    print(f"\nResNet-18: training on {len(train)} demo tiles at 64 px ({int(labels.sum())} DAB-positive), "
          f"{args.epochs} epochs")  # fmt: skip
    start = time.perf_counter()
    resnet = train_resnet18(train, labels, args.epochs)
    print(f"  trained in {time.perf_counter() - start:.0f} s")
    test = demo_tiles(64, args.tiles, seed=3)
    table("ResNet-18 (trained a few epochs, 64 px)", resnet, sg.model.scale(test), not args.adaptive_only)


if __name__ == "__main__":
    main()
