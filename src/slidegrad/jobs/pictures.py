"""Pictures: overlay and heatmap PNGs of chosen tiles, and the slide's comparison figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import check, quote
from ..layout import Layout
from ..progress import LOGGER
from ..results import read_mask_chunk, read_tile_chunk
from ..tables import read_tile_table, row_geometry
from .common import write_png


def picture_rows(table_path: str, limit: int | None, chunk: str | None = None) -> list[dict[str, str]]:
    """The tile-table rows pictures are drawn for: the first ``limit`` (all: ``None``), only ``chunk``'s if given."""
    rows = read_tile_table(table_path)
    return [row for row in rows[:limit] if chunk is None or row["chunk"] == chunk]


def chunk_pictures(
    table_path: str, outdir: str, rows: Sequence[dict[str, str]], method_ids: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, list[dict[str, Any]]]]:
    """The tiles of ``rows`` (uint8 ``(N, H, W, 3)``), and per method id their masks (``(N, H, W)`` float32
    in [0, 1]) and records, read chunk by chunk from the run's result files."""
    layout = Layout(outdir)
    slide = rows[0]["slide"] if rows else ""
    images: list[np.ndarray] = []
    masks: dict[str, list[np.ndarray]] = {m: [] for m in method_ids}
    records: dict[str, list[dict[str, Any]]] = {m: [] for m in method_ids}
    for chunk in dict.fromkeys(row["chunk"] for row in rows):
        names = [row["tile"] for row in rows if row["chunk"] == chunk]
        tiles = read_tile_chunk(layout.tile_chunk(slide, chunk))
        where = {name: i for i, name in enumerate(tiles.names)}
        missing = [n for n in names if n not in where]
        check(not missing, f"tile chunk {quote(layout.tile_chunk(slide, chunk))}: no tile(s) {missing[:3]} of the tile table '{table_path}'")
        images += [tiles.images[where[n]] for n in names]
        for method_id in method_ids:
            result = read_mask_chunk(layout.mask_file(slide, chunk, method_id))
            at = {name: i for i, name in enumerate(result.names)}
            missing = [n for n in names if n not in at]
            check(not missing, f"mask file {quote(result.path)}: no tile(s) {missing[:3]} of the tile table '{table_path}'")
            masks[method_id] += [result.masks[at[n]] for n in names]
            records[method_id] += [result.records[at[n]] for n in names]
    return np.stack(images), {m: np.stack(v) for m, v in masks.items()}, records


def write_pictures(
    table_path: str,
    chunk: str,
    outdir: str,
    method_ids: Sequence[str],
    overlay_dir: str,
    heatmap_dir: str,
    limit: int | None = None,
    cmap: str | None = None,
    alpha: float | None = None,
) -> None:
    """Per tile of ``chunk`` among the slide's first ``limit`` (``None``: every tile) and per method:
    ``plot.overlay(tile, mask, cmap, alpha)`` and the mask in ``cmap`` (the heatmap), as
    ``{overlay_dir,heatmap_dir}/{method}/{tile}.png``.  ``None`` cmap/alpha: the library's defaults
    (``plot.OVERLAY_CMAP``, ``plot.OVERLAY_ALPHA``).  A signed method's masks (its records say ``signed``) are
    drawn with the diverging ``plot.signed_cmap(cmap)`` on [−1, 1]."""
    from .. import plot

    cmap = plot.check_cmap(plot.OVERLAY_CMAP if cmap is None else cmap)
    alpha = plot.check_alpha(plot.OVERLAY_ALPHA if alpha is None else alpha)
    rows = picture_rows(table_path, limit, chunk)
    for folder in (overlay_dir, heatmap_dir):
        for method_id in method_ids:
            (Path(folder) / method_id).mkdir(parents=True, exist_ok=True)
    if rows:
        images, masks, records = chunk_pictures(table_path, outdir, rows, method_ids)
        for method_id in method_ids:
            signed = signed_masks(records[method_id])
            for row, image, mask in zip(rows, images, masks[method_id]):
                shown = plot.overlay(image, mask, cmap=cmap, alpha=alpha, signed=signed)
                write_png(Path(overlay_dir) / method_id / f"{row['tile']}.png", shown)
                write_png(Path(heatmap_dir) / method_id / f"{row['tile']}.png", plot.colormap(mask, cmap, signed))
    LOGGER.info(
        "%s: overlays (%s at alpha %g) and heatmaps of %d tiles × %d methods", chunk, cmap, alpha, len(rows),
        len(method_ids),
    )  # fmt: skip


def signed_masks(records: Sequence[dict[str, Any]]) -> bool:
    """Whether a method's masks are signed (in [−1, 1]), as its mask files' records say (``signed``)."""
    return bool(records and records[0].get("signed", False))


# -- figure --------------------------------------------------------------------------
def tile_um_per_px(row: dict[str, str]) -> float | None:
    """µm per pixel of a tile-table row's tile: ``tile_um / tile_px``, or with a magnification
    ``tile_um`` (``"20x"``) ``extract_px · mpp / tile_px``; ``None`` where the geometry does not say."""
    geometry = row_geometry(row)
    tile_px, tile_um = geometry["tile_px"], geometry["tile_um"]
    if not tile_px:
        return None
    if isinstance(tile_um, (int, float)) and tile_um > 0:
        return float(tile_um) / tile_px
    if geometry["extract_px"] and geometry["mpp"]:
        return geometry["extract_px"] * geometry["mpp"] / tile_px
    return None


def write_figure(
    slide: str,
    table_path: str,
    outdir: str,
    method_ids: Sequence[str],
    method_titles: Sequence[str],
    max_tiles: int,
    out_paths: Sequence[str],
    overlay: bool = False,
    cmap: str | None = None,
    alpha: float | None = None,
    dpi: int = 300,
) -> Any:
    """The slide's figure: tiles in rows (the first ``max_tiles``), original + one column per method.

    Row labels give the tile, the explained class's name (``outcome_labels``) and its probability.
    Method panels show the mask in ``cmap`` or, with ``overlay``, over the tile (``plot.overlay`` at
    ``alpha``); ``None``: ``plot.OVERLAY_CMAP`` / ``plot.OVERLAY_ALPHA``; signed methods' columns in the diverging
    ``plot.signed_cmap(cmap)`` on [−1, 1], with a colour bar of their own.  The first tile panel has a µm
    scale bar where the tile table gives the geometry (:func:`tile_um_per_px`).  ``out_paths``: .pdf,
    .png and/or .svg files (``dpi`` for rasters), byte-identical on reruns.  Returns the figure.
    """
    from .. import plot

    cmap = plot.check_cmap(plot.OVERLAY_CMAP if cmap is None else cmap)
    alpha = plot.check_alpha(plot.OVERLAY_ALPHA if alpha is None else alpha)
    rows = picture_rows(table_path, max_tiles)
    images, by_method, records = chunk_pictures(table_path, outdir, rows, method_ids)
    masks = {t: by_method[m] for m, t in zip(method_ids, method_titles)}
    labels = [
        f"{row['tile']}\n{meta['class_label']}\np = {meta['probability']:.3f}"
        for row, meta in zip(rows, records[method_ids[0]])
    ]
    signed = [t for m, t in zip(method_ids, method_titles) if signed_masks(records[m])]
    fig = plot.comparison_figure(
        images, masks, labels, title=f"slide {slide}", cmap=cmap, overlay=overlay, alpha=alpha,
        um_per_px=[tile_um_per_px(r) for r in rows], signed=signed,
    )  # fmt: skip
    plot.save_figures(fig, out_paths, dpi=dpi)
    LOGGER.info("figure of slide %s: %d tiles × %d methods", slide, len(rows), len(method_ids))
    return fig

