"""Colour maps, overlays and publication figures for saliency masks.

Masks are ``(H, W)`` float32 in [0, 1]; images are uint8 ``(H, W, 3)``.
Figures are written deterministically (no timestamps) so reruns compare
byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402

from .errors import check  # noqa: E402

OVERLAY_ALPHA = 0.6


def _colormap(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask, dtype=np.float32)
    check(mask.ndim == 2, f"mask: expected a 2-D (H, W) mask, got shape {mask.shape}")
    return (colormaps[name](np.clip(mask, 0, 1)) * 255).round().astype(np.uint8)


def inferno(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` mask in [0, 1] → uint8 RGBA ``(H, W, 4)`` with matplotlib's inferno."""
    return _colormap(mask, "inferno")


def oranges(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` mask in [0, 1] → uint8 RGBA ``(H, W, 4)`` with matplotlib's Oranges."""
    return _colormap(mask, "Oranges")


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend ``oranges(mask)`` over a uint8 ``(H, W, 3)`` image at ``alpha`` (Slideflow: 0.6) → uint8 RGB."""
    image = np.asarray(image)
    check(
        image.ndim == 3 and image.shape[:2] == np.shape(mask),
        f"overlay: image {image.shape} and mask {np.shape(mask)} differ in size",
    )
    colour = oranges(mask)[..., :3].astype(np.float32)
    blended = (1 - alpha) * image[..., :3].astype(np.float32) + alpha * colour
    return np.clip(blended.round(), 0, 255).astype(np.uint8)


def comparison_figure(
    images: Sequence[np.ndarray],
    masks: dict[str, np.ndarray],
    row_labels: Sequence[str],
    title: str = "",
    cmap: str = "inferno",
    panel_inches: float = 1.4,
) -> matplotlib.figure.Figure:
    """Tiles in rows; the original, then one column per method; one shared colour bar.

    ``images``: N uint8 ``(H, W, 3)`` tiles; ``masks``: column title → ``(N, H, W)``
    masks in [0, 1]; ``row_labels``: N strings (tile, class, probability).
    """
    n_rows, n_cols = len(images), len(masks) + 1
    check(n_rows > 0, "figure: no tiles to plot")
    check(len(row_labels) == n_rows, "figure: need one row label per tile")
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(panel_inches * n_cols + 0.9, panel_inches * n_rows + 0.6),
        squeeze=False,
        layout="constrained",
    )
    shown = None
    for r, image in enumerate(images):
        axes[r, 0].imshow(image, interpolation="nearest")
        axes[r, 0].set_ylabel(row_labels[r], fontsize=7)
        for c, (name, stack) in enumerate(masks.items(), start=1):
            shown = axes[r, c].imshow(stack[r], cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    for c, name in enumerate(["tile", *masks], start=0):
        axes[0, c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes, shrink=0.6, fraction=0.02, pad=0.01)
        bar.set_label("attribution (normalized)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def save_figure(fig: matplotlib.figure.Figure, path: str | Path, dpi: int = 300) -> None:
    """Save ``fig`` to ``path`` (.pdf or .png) without timestamps, so reruns are identical."""
    path = Path(path)
    metadata = {"CreationDate": None} if path.suffix == ".pdf" else {"Software": None}
    fig.savefig(path, dpi=dpi, metadata=metadata)
