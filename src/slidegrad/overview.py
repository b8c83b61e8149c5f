"""A per-slide overview figure: where the explained tiles lie on the slide, and what each method saw.

Panel 1 is the slide's thumbnail with the tissue outline (the contour of
:func:`slidegrad.tiling.tissue_mask`) and one box per explained tile at its level-0
coordinates, ``extract_px`` level-0 pixels wide.  A box's **colour is the class it
explains** (the first method's mask sidecar, ``class_label``; one colour per entry of
``outcome_labels``, in that order, so colours agree across slides), its **fill opacity
is the class's probability** (``FILL_ALPHA × probability``; the edge is opaque; where
boxes overlap the later tile's fill wins, :func:`box_fill`).

With ``mosaic`` (grid, random and top_k modes) one more panel per method: the tiles'
masks stitched into a low-resolution saliency map over a greyed thumbnail
(:func:`saliency_mosaic`), in ``cmap`` on [0, 1], transparent where there is no tile (a signed
method's in the diverging :func:`slidegrad.plot.signed_cmap` on [−1, 1]).
Where tiles overlap (``stride_div > 1``) a thumbnail pixel shows the **mean** of the
masks covering it.  Every panel has a µm scale bar (when the slide's mpp is known).

Coordinates: thumbnail pixel ``(i, j)`` spans ``[j, j + 1) × [i, i + 1)``; images are
drawn with ``extent=(0, w, h, 0)``, so a box ``(x0, y0, x1, y1)`` from :func:`tile_boxes`
is drawn at exactly those data coordinates.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .errors import check, quote
from .layout import Layout
from .progress import LOGGER
from .tables import read_tile_table, row_geometry

__all__ = [
    "tile_boxes", "resize_mask", "saliency_mosaic", "box_fill", "box_linewidth", "class_colours", "box_alpha", "tissue_contours",
    "overview_figure", "write_overview",
]  # fmt: skip

FILL_ALPHA = 0.6  # a box's fill opacity is FILL_ALPHA × the class probability
BOX_LINEWIDTH = 0.6  # points
TISSUE_COLOUR = "#2f2f2f"
TISSUE_MIN_FRACTION = 0.001  # the outline skips tissue specks and holes under 0.1 % of the thumbnail
GREY_CONTRAST = 0.35  # the mosaic panels' thumbnail: luma at this contrast, towards white
Box = tuple[float, float, float, float]


# -- geometry ------------------------------------------------------------------------
def tile_boxes(
    rows: Sequence[dict[str, str]], scale: float | tuple[float, float], extract_px: int | None = None
) -> list[Box]:
    """Each tile-table row's box ``(x0, y0, x1, y1)`` in thumbnail pixels (floats).

    ``scale``: thumbnail pixels per level-0 pixel (``thumb_w / width``), or ``(sx, sy)``
    (``(thumb_w / width, thumb_h / height)``).  A tile covers level-0 ``[x, x + extract_px)``
    (likewise in y); ``extract_px`` from the row, else the argument.
    """
    sx, sy = (float(scale), float(scale)) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
    boxes = []
    for row in rows:
        size = row_geometry(row)["extract_px"] or extract_px
        check(size is not None, f"tile {row.get('tile')!r}: no 'extract_px' in the tile table")
        x, y = int(row["x"]), int(row["y"])
        boxes.append((x * sx, y * sy, (x + size) * sx, (y + size) * sy))
    return boxes


def _pixel_span(lo: float, hi: float) -> tuple[int, int]:
    """The whole thumbnail pixels a box edge pair covers: rounded, at least one pixel."""
    a = int(math.floor(lo + 0.5))
    b = max(int(math.floor(hi + 0.5)), a + 1)
    return a, b


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``(H, W)`` mask resized to ``size = (h, w)``: Pillow's bilinear filter (antialiased when it
    shrinks), float32."""
    from PIL import Image

    h, w = size
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.float32), mode="F")
    return np.asarray(image.resize((int(w), int(h)), Image.BILINEAR), dtype=np.float32)


def saliency_mosaic(thumb_shape: Sequence[int], boxes: Sequence[Box], masks: Iterable[np.ndarray]) -> np.ndarray:
    """``(h, w)`` float32: the tiles' masks stitched at their boxes; NaN where no tile lies.

    Each box ``(x0, y0, x1, y1)`` (thumbnail pixels) covers the whole pixels
    ``round(x0) .. round(x1) - 1`` (at least one); its mask is resized to that size
    (:func:`resize_mask`) and cropped to the thumbnail.  Where boxes overlap a pixel is the
    mean of the masks covering it.  ``masks`` may be a generator (one mask in memory at a time).
    """
    h, w = int(thumb_shape[0]), int(thumb_shape[1])
    total = np.zeros((h, w), np.float64)
    count = np.zeros((h, w), np.int32)
    n = 0
    for n, (box, mask) in enumerate(zip(boxes, masks), start=1):
        c0, c1 = _pixel_span(box[0], box[2])
        r0, r1 = _pixel_span(box[1], box[3])
        piece = resize_mask(mask, (r1 - r0, c1 - c0))
        top, left = max(r0, 0), max(c0, 0)
        bottom, right = min(r1, h), min(c1, w)
        if bottom <= top or right <= left:
            continue
        total[top:bottom, left:right] += piece[top - r0 : bottom - r0, left - c0 : right - c0]
        count[top:bottom, left:right] += 1
    check(n == len(boxes), f"saliency mosaic: {len(boxes)} boxes but {n} masks")
    out = np.full((h, w), np.nan, np.float32)
    np.divide(total, count, out=out, where=count > 0, casting="unsafe")
    return out


def _drop_small(mask: np.ndarray, area: int) -> np.ndarray:
    """``mask`` without its 8-connected components of fewer than ``area`` pixels."""
    from scipy.ndimage import label

    labels, _ = label(mask, structure=np.ones((3, 3), bool))
    keep = np.bincount(labels.ravel()) >= area
    keep[0] = False
    return keep[labels]


def box_fill(
    thumb_shape: Sequence[int],
    boxes: Sequence[Box],
    colours: Sequence[tuple[float, float, float]],
    alphas: Sequence[float],
) -> np.ndarray:
    """``(h, w, 4)`` float RGBA: each box's pixels (as in :func:`saliency_mosaic`) in its colour at its
    alpha; where boxes overlap the later box wins; transparent where there is none.

    Drawn as one image rather than as filled patches, so overlapping tiles (``stride_div > 1``)
    do not stack their opacity and the opacity keeps meaning the probability.
    """
    h, w = int(thumb_shape[0]), int(thumb_shape[1])
    out = np.zeros((h, w, 4), np.float32)
    for box, colour, alpha in zip(boxes, colours, alphas):
        c0, c1 = _pixel_span(box[0], box[2])
        r0, r1 = _pixel_span(box[1], box[3])
        out[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = (*colour, alpha)
    return out


def box_linewidth(boxes: Sequence[Box], thumb_width: int, panel_inches: float) -> float:
    """Box edge width in points: ``BOX_LINEWIDTH``, thinner for boxes under 12 pt wide (at least 0.15 pt)."""
    if not boxes:
        return BOX_LINEWIDTH
    side = float(np.median([b[2] - b[0] for b in boxes])) * panel_inches * 72 / thumb_width
    return float(np.clip(side / 20, 0.15, BOX_LINEWIDTH))


def tissue_contours(mask: np.ndarray, min_fraction: float = TISSUE_MIN_FRACTION) -> list[np.ndarray]:
    """Outlines of a boolean tissue mask as ``(n, 2)`` ``(x, y)`` arrays in mask pixel-edge coordinates.

    For display only, specks and holes smaller than ``min_fraction`` of the mask's area are
    dropped first (8-connected components of tissue, then of background, under that area).
    """
    from skimage.measure import find_contours

    mask = np.asarray(mask, dtype=bool)
    area = max(1, int(min_fraction * mask.size))
    mask = ~_drop_small(~_drop_small(mask, area), area)
    padded = np.pad(mask.astype(np.float32), 1)  # closes contours at the border
    return [c[:, ::-1] - 1 + 0.5 for c in find_contours(padded, 0.5)]


# -- colours -------------------------------------------------------------------------
def class_colours(labels: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One RGB colour per class label, in order: matplotlib's ``tab10`` (``tab20`` past 10 classes)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: tuple(float(v) for v in cmap(i % cmap.N)[:3]) for i, label in enumerate(labels)}


def box_alpha(probability: float) -> float:
    """A box's fill opacity: ``FILL_ALPHA × probability`` (probability clipped to [0, 1])."""
    return FILL_ALPHA * float(np.clip(probability, 0.0, 1.0))


# -- the figure ------------------------------------------------------------------------
def _panel_grid(n_panels: int) -> tuple[int, int]:
    n_cols = min(n_panels, 3 if n_panels <= 9 else 4)
    return math.ceil(n_panels / n_cols), n_cols


def _grey(thumb: np.ndarray) -> np.ndarray:
    """The thumbnail in light grey (luma at ``GREY_CONTRAST`` towards white), uint8 RGB."""
    luma = thumb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = 255 - GREY_CONTRAST * (255 - luma)
    return np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=2)


def overview_figure(
    thumb: np.ndarray,
    tissue: np.ndarray | None,
    boxes: Sequence[Box],
    tile_classes: Sequence[str],
    tile_probabilities: Sequence[float],
    class_labels: Sequence[str],
    um_per_px: float | None,
    title: str = "",
    mosaics: dict[str, np.ndarray] | None = None,
    cmap: str = "inferno",
    panel_inches: float = 2.6,
    predictions: dict[str, np.ndarray] | None = None,
    mosaic_label: str = "attribution (normalized)",
    signed: Sequence[str] = (),
) -> Any:
    """The overview as a matplotlib Figure (see the module docstring).

    ``thumb``: uint8 ``(h, w, 3)``; ``tissue``: bool ``(h', w')`` tissue mask (any size; its
    outline is scaled onto the thumbnail) or None; ``boxes``: :func:`tile_boxes`;
    ``tile_classes`` / ``tile_probabilities``: per box, the class explained and its probability;
    ``class_labels``: every class, in the model's order (the legend and colours); ``um_per_px``:
    µm per thumbnail pixel (None: no scale bar); ``mosaics``: panel title → :func:`saliency_mosaic` (or a
    slide map on the thumbnail, :func:`slidegrad.slide_map.map_on_thumbnail`; colour bar ``mosaic_label``);
    ``predictions``: panel title → a class's probability on the thumbnail (``(h, w)`` in [0, 1], NaN
    outside tiles; colour map coolwarm, as the prediction heatmap); ``signed``: the titles of the mosaics
    that are signed (in [−1, 1]): drawn with the diverging ``plot.signed_cmap(cmap)`` on [−1, 1], with a
    colour bar of their own.

    The first axes holds the tile boxes' edges as ``Rectangle`` patches (gid ``tile-box``), in box
    order, and their fills as one RGBA image (:func:`box_fill`), above the thumbnail.
    """
    import matplotlib.pyplot as plt
    from matplotlib import patheffects
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    from . import plot

    from .prediction_map import PREDICTION_CMAP

    predictions, signed = predictions or {}, set(signed or ())
    # (title, panel, (colour map, vmin)); one colour bar per (colour map, vmin)
    panels = [
        (name, panel, (plot.signed_cmap(cmap), -1.0) if name in signed else (cmap, 0.0))
        for name, panel in (mosaics or {}).items()
    ]
    panels += [(name, panel, (PREDICTION_CMAP, 0.0)) for name, panel in predictions.items()]
    mosaics = dict((name, panel) for name, panel, _ in panels)
    check(len(boxes) == len(tile_classes) == len(tile_probabilities), "overview: one class and probability per box")
    h, w = thumb.shape[:2]
    n_rows, n_cols = _panel_grid(1 + len(mosaics))
    aspect = h / w
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(panel_inches * n_cols + (0.7 if mosaics else 0.0), panel_inches * aspect * n_rows + 0.9),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    extent = (0, w, h, 0)
    colours = class_colours(class_labels)
    for label in dict.fromkeys(tile_classes):  # a label missing from outcome_labels still gets a colour
        if label not in colours:
            colours = class_colours([*colours, label])

    ax = axes[0, 0]
    ax.imshow(thumb, extent=extent, interpolation="antialiased")
    if tissue is not None and np.any(tissue):
        ty, tx = h / tissue.shape[0], w / tissue.shape[1]
        for contour in tissue_contours(tissue):
            ax.plot(contour[:, 0] * tx, contour[:, 1] * ty, color=TISSUE_COLOUR, lw=0.5, ls=(0, (2, 1.5)))
    rgb = [colours[label] for label in tile_classes]
    ax.imshow(box_fill((h, w), boxes, rgb, [box_alpha(p) for p in tile_probabilities]), extent=extent,
              interpolation="nearest")  # fmt: skip
    lw = box_linewidth(boxes, w, panel_inches)
    for box, colour in zip(boxes, rgb):
        ax.add_patch(
            Rectangle(
                (box[0], box[1]), box[2] - box[0], box[3] - box[1], facecolor="none", edgecolor=(*colour, 1.0),
                lw=lw, gid="tile-box",
            )  # fmt: skip
        )
    ax.set_title("tiles: class explained (fill opacity = probability)", fontsize=6.5)
    shown = [label for label in colours if label in set(tile_classes)] or list(colours)
    handles = [
        Patch(facecolor=(*colours[k], FILL_ALPHA), edgecolor=colours[k], lw=BOX_LINEWIDTH, label=k) for k in shown
    ]
    if tissue is not None and np.any(tissue):
        handles.append(Line2D([], [], color=TISSUE_COLOUR, lw=0.5, ls=(0, (2, 1.5)), label="tissue"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.01), ncols=min(len(handles), 3),
              fontsize=5.5, frameon=False, handlelength=1.2, columnspacing=1.0, borderaxespad=0.2)  # fmt: skip

    images: dict[tuple[str, float], Any] = {}
    grey = _grey(thumb) if mosaics else None
    for i, (name, mosaic, panel_cmap) in enumerate(panels, start=1):  # panel_cmap: (colour map, vmin)
        ax = axes.flat[i]
        ax.imshow(grey, extent=extent, interpolation="antialiased")
        images[panel_cmap] = ax.imshow(
            np.ma.masked_invalid(mosaic), extent=extent, cmap=panel_cmap[0], vmin=panel_cmap[1], vmax=1.0,
            interpolation="nearest",
        )  # fmt: skip
        ax.set_title(name, fontsize=7)
    for i, ax in enumerate(axes.flat):
        if i > len(mosaics):
            ax.set_axis_off()
            continue
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_linewidth(0.4)
        if um_per_px:
            plot.add_scale_bar(ax, um_per_px, w)
            halo = [patheffects.withStroke(linewidth=1.6, foreground="white")]  # readable over dark tissue
            ax.lines[-1].set_path_effects(halo)
            ax.texts[-1].set_path_effects(halo)
    labels = {(cmap, 0.0): mosaic_label, (PREDICTION_CMAP, 0.0): "probability"}
    labels[plot.signed_cmap(cmap), -1.0] = f"signed {mosaic_label}"
    for panel_cmap, image in images.items():
        bar = fig.colorbar(image, ax=axes[:, :], shrink=0.5 if len(images) == 1 else 0.4, fraction=0.03, pad=0.01)
        bar.set_label(labels[panel_cmap], fontsize=6)
        bar.ax.tick_params(labelsize=5)
        bar.outline.set_linewidth(0.4)
    if title:
        fig.suptitle(title if n_cols > 1 else title.replace(" · ", "\n", 1), fontsize=7.5)
    return fig


# -- the job ---------------------------------------------------------------------------
def _records(layout: Layout, slide: str, rows: list[dict[str, str]], method_id: str) -> list[dict[str, Any]]:
    """The mask files' records of ``rows`` (tile-table order) for one method."""
    from .results import read_mask_records

    records = []
    for chunk in dict.fromkeys(row["chunk"] for row in rows):
        path = layout.mask_file(slide, chunk, method_id)
        by_tile = {r["tile"]: r for r in read_mask_records(path, ("class_label", "probability"))}
        names = [row["tile"] for row in rows if row["chunk"] == chunk]
        missing = [n for n in names if n not in by_tile]
        check(not missing, f"mask file {quote(path)}: no tile(s) {missing[:3]} of slide {slide}'s tile table")
        records += [by_tile[n] for n in names]
    return records


def _masks(layout: Layout, slide: str, rows: list[dict[str, str]], method_id: str) -> Iterator[np.ndarray]:
    """The masks of ``rows`` for one method, ``(H, W)`` float32 each, read one chunk at a time."""
    from .results import read_mask_chunk

    for chunk in dict.fromkeys(row["chunk"] for row in rows):
        result = read_mask_chunk(layout.mask_file(slide, chunk, method_id))
        at = {name: i for i, name in enumerate(result.names)}
        for row in rows:
            if row["chunk"] == chunk:
                check(row["tile"] in at, f"mask file {quote(result.path)}: no tile {row['tile']}")
                yield result.masks[at[row["tile"]]]


def _title(slide: str, rows: list[dict[str, str]], geometry: dict[str, Any], mpp: float | None) -> str:
    n = len(rows)
    tile_um = geometry["tile_um"]
    um = f"{tile_um:g} µm" if isinstance(tile_um, (int, float)) else str(tile_um)
    parts = [f"slide {slide}", f"{n} tile{'s' if n != 1 else ''}", f"{geometry['tile_px']} px / {um}"]
    if mpp:
        parts.append(f"{mpp:g} µm/px")
    return " · ".join(parts)


def write_overview(
    slide: str,
    slide_path: str,
    mpp: float | None,
    table_path: str,
    outdir: str,
    method_ids: Sequence[str],
    method_titles: Sequence[str],
    mosaic: bool,
    out_paths: Sequence[str],
    cmap: str = "inferno",
    dpi: int = 300,
    thumbnail_px: int = 1024,
    slide_maps: Sequence[str] = (),
    prediction_map: str | None = None,
) -> None:
    """The slide's overview figure (see the module docstring), written to every path in ``out_paths``
    (``.pdf``, ``.png`` or ``.svg``; byte-identical on reruns).

    ``mpp``: the sample sheet's µm per level-0 pixel (None: the table's, else the file's);
    ``mosaic``: add one stitched saliency panel per method (``method_titles`` name them): from
    ``slide_maps`` (one slide map ``.npz`` per method, scaled once for the slide) where given, else each
    tile's own mask at its place.  ``prediction_map``: the slide's prediction heatmap ``.npz`` (one
    panel per class).
    A missing table, slide or mask file raises :class:`InputError` naming the file.
    """
    import matplotlib.pyplot as plt

    from . import plot

    check(bool(method_ids), "overview: no methods")
    check(len(method_ids) == len(method_titles), "overview: need one title per method")
    check(Path(table_path).is_file(), f"tile table '{table_path}': file not found")
    rows = read_tile_table(table_path)
    check(bool(rows), f"tile table '{table_path}': no tiles")
    layout = Layout(outdir)
    geometry = row_geometry(rows[0])
    check(
        geometry["tile_px"] is not None and geometry["tile_um"] is not None,
        f"tile table '{table_path}': no 'tile_px'/'tile_um' geometry",
    )
    metas = _records(layout, slide, rows, method_ids[0])
    for method_id in method_ids[1:] if mosaic and not slide_maps else ():  # checked before the slide is read
        for chunk in dict.fromkeys(row["chunk"] for row in rows):
            path = layout.mask_file(slide, chunk, method_id)
            check(Path(path).is_file(), f"mask file {quote(path)}: file not found (did the masks job run?)")

    thumb, tissue, (width, height), level0_mpp, extract_px = read_slide(
        layout, slide, slide_path, geometry, mpp, thumbnail_px
    )
    h, w = thumb.shape[:2]
    boxes = tile_boxes(rows, (w / width, h / height), extract_px)
    labels: list[str] = []
    for meta in metas:
        for label in meta.get("outcome_labels") or []:
            if str(label) not in labels:
                labels.append(str(label))
    classes = [str(meta["class_label"]) for meta in metas]
    probabilities = [float(meta["probability"]) for meta in metas]
    mosaics, signed = ({}, [])
    if mosaic:
        mosaics, signed = _mosaic_panels(layout, slide, rows, boxes, (h, w), method_ids, method_titles, slide_maps)
    predictions = _prediction_panels(prediction_map, (h, w)) if prediction_map else {}
    um_per_px = level0_mpp * width / w if level0_mpp else None
    if um_per_px is None:
        LOGGER.warning("slide %s: microns per pixel unknown; no scale bar", slide)
    fig = overview_figure(
        thumb, tissue, boxes, classes, probabilities, labels or sorted(set(classes)), um_per_px,
        title=_title(slide, rows, geometry, level0_mpp), mosaics=mosaics, cmap=cmap, predictions=predictions,
        mosaic_label="attribution (scaled per slide)" if slide_maps else "attribution (scaled per tile)", signed=signed,
    )  # fmt: skip
    try:
        plot.save_figures(fig, out_paths, dpi=dpi)
    finally:
        plt.close(fig)
    LOGGER.info(
        "overview of slide %s: %d tiles, %d saliency panels (%s), %d prediction panels", slide, len(rows),
        len(mosaics), "slide maps" if slide_maps else "tile masks", len(predictions),
    )  # fmt: skip


def _mosaic_panels(
    layout: Layout, slide: str, rows: list[dict[str, str]], boxes: Sequence[Box], size: tuple[int, int],
    method_ids: Sequence[str], method_titles: Sequence[str], slide_maps: Sequence[str],
) -> tuple[dict[str, np.ndarray], list[str]]:  # fmt: skip
    """Title → each method's stitched panel on a ``size`` thumbnail (from ``slide_maps`` where given, else
    each tile's mask at its box), and the titles of the signed ones (their records or maps say ``signed``)."""
    if slide_maps:
        return _slide_map_panels(slide_maps, method_titles, size)
    mosaics, signed = {}, []
    for method_id, title in zip(method_ids, method_titles):
        mosaics[title] = saliency_mosaic(size, boxes, _masks(layout, slide, rows, method_id))
        if _records(layout, slide, rows[:1], method_id)[0].get("signed", False):
            signed.append(title)
    return mosaics, signed


def _slide_map_panels(
    paths: Sequence[str], titles: Sequence[str], size: tuple[int, int]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Title → the slide map at ``paths`` (``.npz``, one per method), scaled for the slide, on a ``size`` thumbnail;
    and the titles of the signed maps (in [−1, 1])."""
    from .slide_map import map_on_thumbnail, normalise, read_map_npz, read_map_signed

    panels, signed = {}, []
    for path, title in zip(paths, titles):
        values, scale, geometry = read_map_npz(path)
        is_signed = read_map_signed(path)
        panels[title] = map_on_thumbnail(normalise(values, scale, is_signed), geometry, size, is_signed)
        signed += [title] if is_signed else []
    return panels, signed


def _prediction_panels(path: str, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """``p(label)`` → that class's probability map (the prediction heatmap ``.npz``) on a ``size`` thumbnail."""
    from .prediction_map import read_prediction_npz
    from .slide_map import map_on_thumbnail

    stored = read_prediction_npz(path)
    return {f"p({label})": map_on_thumbnail(m, stored.geometry, size) for label, m in zip(stored.labels, stored.maps)}


def read_slide(
    layout: Layout, slide: str, slide_path: str, geometry: dict[str, Any], mpp: float | None, thumbnail_px: int,
    tissue: bool = True, job: str = "overview",
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int], float | None, int]:
    """The slide's thumbnail, tissue mask (``None`` unless ``tissue``), level-0 size, µm/px and tile size in
    level-0 px.  ``job`` names the job reading it in an error line.

    The file must still be the one the tiles job read (its record, :mod:`slidegrad.sources`),
    before and after it is read: one line names a slide deleted or changed mid-run."""
    from .slide import WSI
    from .sources import check_unchanged, read_stamp
    from .tiling import tissue_mask

    stamp = read_stamp(layout.tile_source(slide))
    stamp = stamp if stamp is not None and Path(stamp.path) == Path(slide_path) else None
    rerun = f"delete its tile table {quote(layout.tile_table(slide))} and rerun to tile it again"
    if stamp is not None:
        check_unchanged(slide, stamp, "after its tiles were read", rerun)
    # mpp: the sample sheet's, else the one the tiles job read the tiles at (the table's), else the file's
    with WSI(slide_path, int(geometry["tile_px"]), geometry["tile_um"], mpp=mpp or geometry["mpp"]) as wsi:
        thumb = wsi.thumbnail(thumbnail_px)
        tissue_found = tissue_mask(wsi, thumbnail_px)[0] if tissue else None
        dimensions = wsi.dimensions
        level0_mpp = geometry["mpp"] or wsi.mpp
        extract_px = wsi.extract_px
    if stamp is not None:
        check_unchanged(slide, stamp, f"while the {job} job read it", rerun)
    return thumb, tissue_found, dimensions, level0_mpp, extract_px
