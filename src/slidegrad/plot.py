"""Colour maps, overlays and publication figures for saliency masks.

Masks are ``(H, W)`` float32 in [0, 1]; images are uint8 ``(H, W, 3)``.  Signed masks (``signed=True``,
in [−1, 1]: positive evidence > 0, negative < 0) are drawn with a diverging colour map centred on 0
(:data:`DIVERGING_CMAP`, blue < 0 < red, white at 0) on [−1, 1].
Figures are written deterministically (no timestamps) so reruns compare
byte for byte.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Collection, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from .errors import check  # noqa: E402

OVERLAY_CMAP = "viridis"  # green-yellow: a hue neither H&E (pink/purple) nor IHC (brown DAB, blue haematoxylin) has
OVERLAY_ALPHA = 0.8  # opacity where the mask is 1; the opacity scales with the mask, so mask 0 leaves the tile as is


DIVERGING_CMAP = "RdBu_r"  # signed masks: blue (negative) – white (0) – red (positive)
DIVERGING_CMAPS = frozenset(
    base + tail
    for base in (
        "RdBu", "bwr", "coolwarm", "seismic", "PiYG", "PRGn", "BrBG", "PuOr", "RdGy", "RdYlBu", "RdYlGn", "Spectral",
    )  # fmt: skip
    for tail in ("", "_r")
)
"""Matplotlib's diverging colour maps: a signed mask keeps one of these when asked for (else :data:`DIVERGING_CMAP`)."""


def signed_cmap(cmap: str) -> str:
    """The colour map a signed mask is drawn with: ``cmap`` if it is diverging (:data:`DIVERGING_CMAPS`), else
    :data:`DIVERGING_CMAP` (a sequential map such as viridis has no neutral middle for 0)."""
    return cmap if cmap in DIVERGING_CMAPS else DIVERGING_CMAP


def is_signed(mask: np.ndarray, signed: bool | None = None) -> bool:
    """``signed`` if given, else whether ``mask`` holds negative values (a signed mask, in [−1, 1])."""
    if signed is not None:
        return bool(signed)
    values = np.asarray(mask, dtype=np.float32)
    return bool(values.size) and bool(np.nanmin(values) < 0)


def check_cmap(name: str) -> str:
    """``name`` if it is a matplotlib colour map, else an :class:`InputError` (one line)."""
    check(
        isinstance(name, str) and name in colormaps,
        f"colour map {name!r} is not a matplotlib colour map (e.g. viridis, inferno, magma, cividis, turbo, Oranges)",
    )
    return name


def check_alpha(alpha: float) -> float:
    """``alpha`` if it is a number in [0, 1], else an :class:`InputError` (one line)."""
    ok = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and 0 <= float(alpha) <= 1
    check(ok, f"overlay alpha: expected a number in [0, 1] (opacity at mask 1), got {alpha!r}")
    return float(alpha)


def colormap(mask: np.ndarray, cmap: str = OVERLAY_CMAP, signed: bool | None = None) -> np.ndarray:
    """``(H, W)`` mask in [0, 1] → uint8 RGBA ``(H, W, 4)`` with matplotlib's colour map ``cmap``.

    A signed mask (``signed``; ``None``: whether it holds negative values) in [−1, 1] is drawn on [−1, 1]
    with :func:`signed_cmap` of ``cmap`` (a diverging map; 0 is its middle colour, white for ``RdBu_r``).
    """
    check_cmap(cmap)
    mask = np.asarray(mask, dtype=np.float32)
    check(mask.ndim == 2, f"mask: expected a 2-D (H, W) mask, got shape {mask.shape}")
    if is_signed(mask, signed):
        return (colormaps[signed_cmap(cmap)]((np.clip(mask, -1, 1) + 1) / 2) * 255).round().astype(np.uint8)
    return (colormaps[cmap](np.clip(mask, 0, 1)) * 255).round().astype(np.uint8)


def inferno(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` mask in [0, 1] → uint8 RGBA ``(H, W, 4)`` with matplotlib's inferno."""
    return colormap(mask, "inferno")


def oranges(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` mask in [0, 1] → uint8 RGBA ``(H, W, 4)`` with matplotlib's Oranges."""
    return colormap(mask, "Oranges")


def overlay(
    image: np.ndarray, mask: np.ndarray, cmap: str = OVERLAY_CMAP, alpha: float = OVERLAY_ALPHA,
    signed: bool | None = None,
) -> np.ndarray:  # fmt: skip
    """Blend ``colormap(mask, cmap)`` over a uint8 ``(H, W, 3)`` image → uint8 RGB.

    The opacity of each pixel is ``alpha · mask`` (clipped to [0, 1]): ``alpha`` where the mask is 1, and
    where the mask is 0 the tile shows unchanged, so tissue the model ignored stays readable::

        out = round((1 - alpha·m) · image + alpha·m · cmap(m))

    A signed mask in [−1, 1] (``signed``; ``None``: whether it holds negative values) is coloured with
    the diverging :func:`signed_cmap` of ``cmap`` on [−1, 1] at opacity ``alpha · |m|``: red where it
    speaks for the class, blue where against, the tile unchanged at 0.

    Defaults (:data:`OVERLAY_CMAP`, :data:`OVERLAY_ALPHA`): viridis at 0.8, whose greens and yellows
    stand apart from H&E's pinks and purples and from IHC's brown DAB and blue haematoxylin.
    ``cmap="Oranges", alpha=0.6`` gives Slideflow's colours (Slideflow's opacity is constant).
    """
    alpha = check_alpha(alpha)
    image = np.asarray(image)
    check(
        image.ndim == 3 and image.shape[:2] == np.shape(mask),
        f"overlay: image {image.shape} and mask {np.shape(mask)} differ in size",
    )
    signed = is_signed(mask, signed)
    colour = colormap(mask, cmap, signed)[..., :3].astype(np.float32)
    values = np.asarray(mask, dtype=np.float32)
    weight = alpha * np.clip(np.abs(values) if signed else values, 0, 1)[..., None]
    blended = (1 - weight) * image[..., :3].astype(np.float32) + weight * colour
    return np.clip(blended.round(), 0, 255).astype(np.uint8)


_overlay = overlay  # comparison_figure's keyword ``overlay`` hides the function's name there


def scale_bar_length(extent_um: float) -> float:
    """A round scale-bar length in µm (1, 2, 5 × 10^k) of at most a quarter of ``extent_um``."""
    check(extent_um > 0, f"scale bar: expected a positive extent in µm, got {extent_um!r}")
    target = extent_um / 4
    power = 10 ** np.floor(np.log10(target))
    for step in (5, 2, 1):
        if step * power <= target:
            return float(step * power)
    return float(power)


def add_scale_bar(ax: matplotlib.axes.Axes, um_per_px: float, image_width_px: int, colour: str = "black") -> float:
    """Draw a µm scale bar in the lower right of an ``imshow`` axes whose image is ``image_width_px``
    pixels wide at ``um_per_px`` µm per pixel; returns its length in µm."""
    check(um_per_px > 0, f"scale bar: expected µm per pixel > 0, got {um_per_px!r}")
    length_um = scale_bar_length(um_per_px * image_width_px)
    length_px = length_um / um_per_px
    x1 = image_width_px * 0.95
    y_top, y_bottom = ax.get_ylim()[1], ax.get_ylim()[0]  # imshow: y grows downwards
    y = y_bottom - 0.06 * (y_bottom - y_top)
    ax.plot([x1 - length_px, x1], [y, y], color=colour, lw=2, solid_capstyle="butt")
    label = f"{length_um:g} µm" if length_um < 1000 else f"{length_um / 1000:g} mm"
    ax.text(x1 - length_px / 2, y - 0.02 * (y_bottom - y_top), label, color=colour, ha="center", va="bottom", fontsize=5)
    return length_um


def _bar_colour(image: np.ndarray) -> str:
    """Black on a light lower-right corner (where :func:`add_scale_bar` draws), white on a dark one."""
    h, w = image.shape[:2]
    corner = np.asarray(image[int(h * 0.8) :, int(w * 0.5) :, :3], dtype=np.float32)
    return "white" if corner.size and float(corner.mean()) < 110 else "black"


def comparison_figure(
    images: Sequence[np.ndarray],
    masks: dict[str, np.ndarray],
    row_labels: Sequence[str],
    title: str = "",
    cmap: str = OVERLAY_CMAP,
    panel_inches: float = 1.4,
    *,
    overlay: bool = False,
    alpha: float = OVERLAY_ALPHA,
    um_per_px: float | Sequence[float | None] | None = None,
    signed: Collection[str] | None = None,
) -> matplotlib.figure.Figure:
    """Tiles in rows; the original, then one column per method; one shared colour bar.

    ``images``: N uint8 ``(H, W, 3)`` tiles; ``masks``: column title → ``(N, H, W)``
    masks in [0, 1]; ``row_labels``: N strings (tile, class, probability).  Method
    panels show the mask in ``cmap``, or with ``overlay`` the tile under it
    (:func:`overlay` at ``alpha``); the colour bar gives the colours either way.
    ``signed``: the titles of the columns whose masks are signed (in [−1, 1]; ``None``: the columns
    holding a negative value): drawn with :func:`signed_cmap` of ``cmap`` on [−1, 1], with a colour
    bar of their own from −1 to 1.
    ``um_per_px`` (µm per tile pixel; one number, or one per row with ``None`` where
    unknown): a µm scale bar in the first row's tile panel, and again in any row whose
    scale differs from that of the bar above it.
    """
    check_cmap(cmap)
    alpha = check_alpha(alpha)
    n_rows, n_cols = len(images), len(masks) + 1
    check(n_rows > 0, "figure: no tiles to plot")
    check(len(row_labels) == n_rows, "figure: need one row label per tile")
    if um_per_px is None or isinstance(um_per_px, numbers.Real):
        scales: list[float | None] = [None if um_per_px is None else float(um_per_px)] * n_rows
    else:
        scales = [None if v is None else float(v) for v in um_per_px]
        check(len(scales) == n_rows, f"figure: need one µm per pixel per tile ({n_rows}), got {len(scales)}")
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(panel_inches * n_cols + 0.9, panel_inches * n_rows + 0.6),
        squeeze=False,
        layout="constrained",
    )
    signed = {name for name, stack in masks.items() if is_signed(stack)} if signed is None else set(signed)
    for r, image in enumerate(images):
        axes[r, 0].imshow(image, interpolation="nearest")
        axes[r, 0].set_ylabel(row_labels[r], fontsize=7)
        for c, (name, stack) in enumerate(masks.items(), start=1):
            if overlay:
                axes[r, c].imshow(_overlay(image, stack[r], cmap, alpha, name in signed), interpolation="nearest")
            else:
                shown = (signed_cmap(cmap), -1.0) if name in signed else (cmap, 0.0)
                axes[r, c].imshow(stack[r], cmap=shown[0], vmin=shown[1], vmax=1.0, interpolation="nearest")
    last = None  # the scale of the bar above
    for r, scale in enumerate(scales):
        if scale is not None and (last is None or abs(scale - last) > 1e-9 * last):
            add_scale_bar(axes[r, 0], scale, np.shape(images[r])[1], colour=_bar_colour(np.asarray(images[r])))
            last = scale
    for c, name in enumerate(["tile", *masks], start=0):
        axes[0, c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    bars = [(cmap, 0.0, "attribution (normalized)")] if set(masks) - signed else []
    bars += [(signed_cmap(cmap), -1.0, "signed attribution (normalized)")] if set(masks) & signed else []
    for bar_cmap, low, label in bars:
        shown = ScalarMappable(norm=Normalize(low, 1.0), cmap=bar_cmap)
        bar = fig.colorbar(shown, ax=axes, shrink=0.6 if len(bars) == 1 else 0.45, fraction=0.02, pad=0.01)
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


FIGURE_FORMATS = (".pdf", ".png", ".svg")


def save_figure(fig: matplotlib.figure.Figure, path: str | Path, dpi: int = 300) -> None:
    """Save ``fig`` to ``path`` (.pdf, .png or .svg; ``dpi``: pixels per inch of rasters) without
    timestamps or random ids, so reruns are byte-identical."""
    path = Path(path)
    suffix = path.suffix.lower()
    check(suffix in FIGURE_FORMATS, f"figure '{path}': expected a .pdf, .png or .svg file name")
    check(
        isinstance(dpi, numbers.Real) and not isinstance(dpi, bool) and dpi > 0,
        f"figure '{path}': dpi must be a positive number, got {dpi!r}",
    )
    metadata = {".pdf": {"CreationDate": None}, ".png": {"Software": None}, ".svg": {"Date": None}}[suffix]
    with matplotlib.rc_context({"svg.hashsalt": "slidegrad"}):  # svg ids: else random per save
        fig.savefig(path, dpi=dpi, metadata=metadata)


def save_figures(fig: matplotlib.figure.Figure, paths: Sequence[str | Path], dpi: int = 300) -> None:
    """:func:`save_figure` to each of ``paths`` (a figure in several formats), creating their folders."""
    for path in paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_figure(fig, path, dpi=dpi)
