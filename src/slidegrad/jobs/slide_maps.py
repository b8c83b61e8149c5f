"""Slide-level jobs: a slide's saliency map per method, its prediction heatmap and its QuPath file.

Each reads the slide's result files one chunk at a time (:mod:`slidegrad.results`) into a canvas of
map size (:mod:`slidegrad.slide_map`, :mod:`slidegrad.prediction_map`), so memory stays bounded by
the map and one chunk, never by the slide's level-0 size or its tile count.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from ..errors import check, quote
from ..layout import Layout
from ..progress import LOGGER
from ..results import iter_mask_chunks, read_tile_scores
from ..tables import read_tile_table, row_geometry

MAP_THUMBNAIL_PX = 2048  # the longer side of the slide thumbnail a map's PNG is drawn over
FIGURE_THUMBNAIL_PX = 1024  # … and the prediction figure's panels (2.4 in at 300 dpi: 720 px)


def _slide(
    slide: str, slide_path: str, mpp: float | None, table_path: str, outdir: str, map_um: float, job: str,
    thumbnail_px: int = MAP_THUMBNAIL_PX,
) -> tuple[Any, Any, float]:
    """The slide's thumbnail, the map's :class:`~slidegrad.slide_map.MapGeometry` and the tiles' level-0 side.

    The slide must still be the file the tiles job read (checked before and after reading it)."""
    from ..overview import read_slide
    from ..slide_map import MapGeometry

    rows = read_tile_table(table_path)
    check(bool(rows), f"tile table {quote(table_path)}: no tiles")
    geometry = row_geometry(rows[0])
    thumb, _, (width, height), level0_mpp, extract_px = read_slide(
        Layout(outdir), slide, slide_path, geometry, mpp, thumbnail_px, tissue=False, job=job
    )  # fmt: skip
    return thumb, MapGeometry(width, height, level0_mpp, map_um), float(geometry["extract_px"] or extract_px)


def write_slide_map(
    slide: str,
    slide_path: str,
    mpp: float | None,
    table_path: str,
    outdir: str,
    method_id: str,
    out_tiff: str,
    out_png: str,
    out_npz: str,
    map_um: float,
    percentile: float,
    cmap: str,
    alpha: float,
) -> None:
    """One slide's saliency map for ``method_id``: every tile's channel-reduced attribution stitched at
    ``map_um`` µm per map pixel (overlaps averaged, NaN outside tiles), scaled once for the whole slide
    (``percentile`` of |value|, :func:`slidegrad.slide_map.slide_scale`), then written as a pyramidal
    RGBA TIFF aligned with the slide (``out_tiff``), as a PNG over the slide's thumbnail (``out_png``)
    and as numbers (``out_npz``: ``values`` float32 ``(rows, cols)`` unscaled, ``scale``, the geometry).

    A signed method's map (its mask files' records say ``signed``) keeps the sign: the same scale brings it
    to [−1, 1], drawn with the diverging ``plot.signed_cmap(cmap)`` centred on 0; ``out_npz`` records ``signed``."""
    from ..plot import signed_cmap
    from ..slide_map import SlideCanvas, map_overlay_png, normalise, slide_scale, write_map_npz, write_map_tiff

    thumb, geometry, extract_px = _slide(slide, slide_path, mpp, table_path, outdir, map_um, "slide_map")
    canvas, signed = SlideCanvas(geometry), False
    for chunk in iter_mask_chunks(outdir, slide, method_id, ("attributions",)):
        signed = signed or bool(chunk.records and chunk.records[0].get("signed", False))
        canvas.add_many(np.stack([chunk.x, chunk.y], axis=1), extract_px, chunk.attributions)
    values = canvas.result()
    scale = slide_scale(values, percentile)
    shown = normalise(values, scale, signed)
    description = json.dumps({
        "slide": slide, "method": method_id, "map_um": map_um, "scale": scale, "percentile": percentile,
        **({"signed": True} if signed else {}),
    })  # fmt: skip
    write_map_tiff(out_tiff, shown, geometry, cmap, description=description, signed=signed)
    map_overlay_png(out_png, thumb, shown, geometry, cmap, alpha, signed)
    write_map_npz(out_npz, values, scale, percentile, geometry, signed)
    LOGGER.info(
        "slide map of %s, %s: %d tiles on %d × %d map px (%g µm/px), scale %.4g (p%g of |attribution|), canvas %.1f MB%s",
        slide, method_id, canvas.tiles, geometry.shape[1], geometry.shape[0], map_um, scale, percentile, canvas.nbytes / 1e6,
        f"; signed, in {signed_cmap(cmap)} on [-1, 1]" if signed else "",
    )  # fmt: skip


def write_prediction_map(
    slide: str,
    slide_path: str,
    mpp: float | None,
    table_path: str,
    outdir: str,
    method_id: str,
    scores: bool,
    out_npz: str,
    out_paths: Sequence[str],
    map_um: float,
    cmap: str | None = None,
    alpha: float | None = None,
    dpi: int = 300,
) -> None:
    """The slide's prediction heatmap: each tile's class probabilities as one map per class, placed as
    the saliency map places tiles.  ``scores``: from every tissue tile the tiles job scored (top_k's
    ``scores.npz``); else from the tiles' records in ``method_id``'s mask files (every tile explained).
    Writes the maps (``out_npz``) and a figure, one panel per class (``out_paths``); ``None`` cmap/alpha:
    Slideflow's (:data:`~slidegrad.prediction_map.PREDICTION_CMAP`, ``PREDICTION_ALPHA``)."""
    from ..prediction_map import PREDICTION_ALPHA, PREDICTION_CMAP, PredictionCanvas, prediction_figure, write_prediction_npz

    cmap, alpha = cmap or PREDICTION_CMAP, PREDICTION_ALPHA if alpha is None else alpha

    layout = Layout(outdir)
    thumb, geometry, extract_px = _slide(
        slide, slide_path, mpp, table_path, outdir, map_um, "prediction_map", FIGURE_THUMBNAIL_PX
    )  # fmt: skip
    if scores:
        tile_scores = read_tile_scores(layout.tile_scores(slide))
        labels = tile_scores.labels
        canvas = PredictionCanvas(geometry, len(labels))
        canvas.add_many(np.stack([tile_scores.x, tile_scores.y], axis=1), tile_scores.extract_px, tile_scores.probabilities)
    else:
        canvas, labels = None, []
        for chunk in iter_mask_chunks(outdir, slide, method_id, arrays=()):
            if canvas is None:
                labels = [str(label) for label in chunk.records[0]["outcome_labels"]]
                canvas = PredictionCanvas(geometry, len(labels))
            probabilities = np.array([r["probabilities"] for r in chunk.records], np.float64)
            canvas.add_many(np.stack([chunk.x, chunk.y], axis=1), extract_px, probabilities)
    check(canvas is not None, f"prediction map of {slide}: no tiles")
    maps = canvas.result()
    write_prediction_npz(out_npz, maps, labels, geometry)
    prediction_figure(thumb, maps, labels, geometry, out_paths, cmap=cmap, alpha=alpha, dpi=dpi,
                      title=f"slide {slide} · predictions of {canvas.tiles} tiles")  # fmt: skip
    LOGGER.info("prediction map of %s: %d tiles, %d classes (%s)", slide, canvas.tiles, len(labels), "tile scores" if scores else method_id)


def write_qupath(slide: str, summary_path: str, out_path: str, evaluation_path: str | None = None) -> None:
    """The slide's explained tiles as QuPath detections (:mod:`slidegrad.qupath`), from the run's summary
    table (Parquet) and, when the run evaluated its maps, ``evaluation.csv``."""
    import pandas as pd

    from ..qupath import slide_features, write_geojson

    summary = pd.read_parquet(summary_path)
    evaluation = pd.read_csv(evaluation_path) if evaluation_path else None
    collection = slide_features(summary, slide, evaluation)
    write_geojson(out_path, collection)
    LOGGER.info("QuPath detections of %s: %d tiles", slide, len(collection["features"]))
