"""The embedded demo: two IHC whole-slide images and small DAB classifiers (a CNN, its Keras twin, a ViT).

Everything is built from ``skimage.data.immunohistochemistry()`` (a real
512×512 IHC image, brown DAB stain) — no downloads.  Labels come from colour
deconvolution (``skimage.color.rgb2hed``): a tile is *DAB-positive* when at
least :data:`POSITIVE_FRACTION` of its pixels have DAB optical density above
:data:`DAB_THRESHOLD`.  A model that learns this should look at brown pixels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .errors import check

DEMO_MPP = 0.5
DEMO_SIZE = 4096
DEMO_TILE_PX = 128
DEMO_TILE_UM = 128
DAB_THRESHOLD = 0.05
POSITIVE_FRACTION = 0.25
BACKGROUND_LEVEL = 215
OUTCOME_LABELS = ["DAB-negative", "DAB-positive"]
NUMPY_WEIGHTS_FILE = "weights.npz"
VARIANTS = ("a", "b")
VIT_EPOCHS = 2  # train_demo_vit's default (config/demo-vit.yaml's demo.epochs); seed 0: accuracy 0.9938 after 1, 0.9886 after 2
VIT_LR = 1e-3
VIT_WEIGHT_DECAY = 0.05


def demo_image(variant: str = "a") -> np.ndarray:
    """uint8 ``(4096, 4096, 3)`` slide image: the IHC image mirrored 2×2, then upscaled ×4 (bicubic).

    Variant ``b`` is the transposed, flipped arrangement, so the two slides differ.
    """
    from skimage.data import immunohistochemistry

    check(variant in VARIANTS, f"demo variant: {variant!r}; expected one of {VARIANTS}")
    src = immunohistochemistry()
    if variant == "b":
        src = np.ascontiguousarray(np.flipud(src.transpose(1, 0, 2)))
    top = np.concatenate([src, src[:, ::-1]], axis=1)
    mosaic = np.concatenate([top, top[::-1]], axis=0)
    big = Image.fromarray(mosaic).resize((DEMO_SIZE, DEMO_SIZE), Image.Resampling.BICUBIC)
    return np.asarray(big)


def write_demo_slide(path: str | Path, variant: str) -> None:
    """Write demo slide ``variant`` as a pyramidal tiled TIFF at :data:`DEMO_MPP` µm/px."""
    from .slide import write_pyramidal_tiff

    write_pyramidal_tiff(path, demo_image(variant), mpp=DEMO_MPP)


def dab_fraction(tiles: np.ndarray) -> np.ndarray:
    """Fraction of DAB-positive pixels per tile: uint8 ``(N, H, W, 3)`` → ``(N,)`` in [0, 1]."""
    from skimage.color import rgb2hed

    tiles = np.asarray(tiles)
    flat = tiles.reshape(-1, tiles.shape[-2], 3)
    dab = rgb2hed(flat)[..., 2].reshape(tiles.shape[:-1])
    return (dab > DAB_THRESHOLD).mean(axis=(1, 2))


def dab_labels(tiles: np.ndarray) -> np.ndarray:
    """1 for DAB-positive tiles, 0 otherwise: ``(N,)`` int64."""
    return (dab_fraction(tiles) >= POSITIVE_FRACTION).astype(np.int64)


def grid_tiles(slide_path: str | Path, stride_div: int = 1) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Every grid tile of a demo slide: uint8 ``(N, 128, 128, 3)`` and level-0 ``(x, y)`` corners."""
    from .slide import WSI

    with WSI(slide_path, DEMO_TILE_PX, DEMO_TILE_UM, stride_div=stride_div) as wsi:
        cols, rows = wsi.grid_shape
        coords = [wsi.grid_to_xy(c, r) for r in range(rows) for c in range(cols)]
        return np.stack([wsi.read(x, y) for x, y in coords]), coords


def tissue_fraction(tiles: np.ndarray) -> np.ndarray:
    """Fraction of non-background pixels (mean RGB < :data:`BACKGROUND_LEVEL`) per tile: ``(N,)`` in [0, 1]."""
    return (np.asarray(tiles).mean(axis=-1) < BACKGROUND_LEVEL).mean(axis=(1, 2))


def select_demo_tiles(slide_path: str | Path, per_class: int = 3) -> list[tuple[int, int, int]]:
    """The ``per_class`` clearest negatives, then positives, of a slide: ``(x, y, label)``.

    Only tiles in the top-left quadrant (the unmirrored source) are candidates.
    Negatives: DAB-negative tiles that are at least half tissue, lowest DAB
    fraction first; positives: highest DAB fraction first; ties by position.
    """
    tiles, coords = grid_tiles(slide_path)
    frac, tissue = dab_fraction(tiles), tissue_fraction(tiles)
    extract = DEMO_TILE_UM / DEMO_MPP
    quadrant = np.array([x + extract <= DEMO_SIZE / 2 and y + extract <= DEMO_SIZE / 2 for x, y in coords])
    index = np.arange(len(frac))
    negatives = index[quadrant & (frac < POSITIVE_FRACTION) & (tissue >= 0.5)]
    negatives = negatives[np.lexsort((negatives, frac[negatives]))][:per_class]
    positives = index[quadrant]
    positives = positives[np.lexsort((positives, -frac[positives]))][:per_class]
    return [(*coords[i], 0) for i in negatives] + [(*coords[i], 1) for i in positives]


def train_demo_model(
    slide_paths: Sequence[str | Path],
    out_dir: str | Path,
    epochs: int = 6,
    seed: int = 0,
    threads: int = 2,
) -> dict:
    """Train :class:`~slidegrad.torch_nets.SmallCNN` on the demo slides; write ``weights.pt`` + ``params.json``.

    Seeded and deterministic for a given thread count.  Returns the params
    written, with the training accuracy under ``"train_accuracy"``.
    """
    import torch

    from .torch_nets import SmallCNN

    return _train_demo(
        slide_paths,
        out_dir,
        architecture="small_cnn",
        build=lambda: SmallCNN(n_classes=len(OUTCOME_LABELS)),
        optimiser=lambda parameters: torch.optim.Adam(parameters, lr=3e-3),
        epochs=epochs,
        seed=seed,
        threads=threads,
        numpy_weights=True,  # the Keras twin is built from them
    )


def train_demo_vit(
    slide_paths: Sequence[str | Path],
    out_dir: str | Path,
    epochs: int = VIT_EPOCHS,
    seed: int = 0,
    threads: int = 2,
) -> dict:
    """Train the demo's small ViT (:func:`~slidegrad.torch_nets.vit_demo`) on the demo slides' tiles and
    labels (the same as :func:`train_demo_model`'s); write ``weights.pt`` + ``params.json``.

    AdamW at :data:`VIT_LR`, otherwise :func:`train_demo_model`'s loop.  Seeded and deterministic
    for a given thread count.  Returns the params written, with ``"train_accuracy"``.
    """
    import torch

    from .torch_nets import vit_demo

    return _train_demo(
        slide_paths,
        out_dir,
        architecture="vit_demo",
        build=lambda: vit_demo(n_classes=len(OUTCOME_LABELS)),
        optimiser=lambda parameters: torch.optim.AdamW(parameters, lr=VIT_LR, weight_decay=VIT_WEIGHT_DECAY),
        epochs=epochs,
        seed=seed,
        threads=threads,
    )


def _train_demo(
    slide_paths: Sequence[str | Path],
    out_dir: str | Path,
    architecture: str,
    build: Callable[[], Any],
    optimiser: Callable[[Any], Any],
    epochs: int,
    seed: int,
    threads: int,
    numpy_weights: bool = False,
    batch_size: int = 64,
) -> dict:
    """The demo models' training: every half-stride grid tile of the slides, labelled by :func:`dab_labels`,
    ``epochs`` shuffled passes in batches of ``batch_size``, each batch rotated by a random multiple of
    90°; cross-entropy.  ``build()`` makes the :mod:`slidegrad.torch_nets` model ``architecture`` (after
    the global seed is set), ``optimiser(parameters)`` its optimiser.  Writes ``weights.pt`` (and
    ``weights.npz`` when ``numpy_weights``) and ``params.json``; returns the params."""
    import torch

    from .model import PARAMS_FILE, WEIGHTS_FILE, scale

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    images = np.concatenate([grid_tiles(p, stride_div=2)[0] for p in slide_paths])
    labels = dab_labels(images)
    x = torch.from_numpy(scale(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels)
    model = build()
    optim = optimiser(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            batch = x[idx]
            flips = torch.randint(0, 4, (1,), generator=generator).item()
            batch = torch.rot90(batch, k=flips, dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(batch), y[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / WEIGHTS_FILE)
    if numpy_weights:  # the same weights as numpy, so the Keras twin is built without importing torch
        np.savez(out_dir / NUMPY_WEIGHTS_FILE, **{k: v.numpy() for k, v in model.state_dict().items()})
    params = {
        "backend": "torch",
        "architecture": architecture,
        "architecture_kwargs": {},
        "tile_px": DEMO_TILE_PX,
        "tile_um": DEMO_TILE_UM,
        "outcome_labels": OUTCOME_LABELS,
        "preprocessing": "scale",
        "label_rule": f"DAB OD > {DAB_THRESHOLD} in >= {POSITIVE_FRACTION:.0%} of pixels (skimage rgb2hed)",
        "train_tiles": int(len(x)),
        "train_positive": int(labels.sum()),
        "train_accuracy": round(accuracy, 4),
        "seed": seed,
    }
    (out_dir / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")
    return params


def write_keras_twin(torch_dir: str | Path, out_dir: str | Path) -> dict:
    """Port the trained demo model to Keras: ``model.keras`` + ``params.json`` in ``out_dir``.

    Same architecture, weights and preprocessing (``scale``), so both backends
    give the same maps.  Reads ``weights.npz``; imports no torch.
    """
    from .keras_nets import port_small_cnn
    from .model import KERAS_FILE, PARAMS_FILE, read_params

    params = read_params(torch_dir)
    state = dict(np.load(Path(torch_dir) / NUMPY_WEIGHTS_FILE))
    model = port_small_cnn(state, params["tile_px"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / KERAS_FILE)
    twin = {**params, "backend": "tensorflow", "preprocessing": "scale", "ported_from": str(torch_dir)}
    for key in ("architecture", "architecture_kwargs"):
        twin.pop(key, None)
    (out_dir / PARAMS_FILE).write_text(json.dumps(twin, indent=2) + "\n")
    return twin
