"""What each workflow rule does, as plain functions over paths and the rule's params (scripts only
glue).  Every job logs through :mod:`slidegrad.progress`; the files they read and write are
:mod:`slidegrad.results`', at the places :class:`slidegrad.layout.Layout` names.

* :mod:`.tiles`: the tiles job (choose, read and store a slide's tiles; write its tile table);
* :mod:`.masks`: the mask job (one slide, chunk and method; the model loads once);
* :mod:`.pictures`: overlay and heatmap PNGs of chosen tiles, and the comparison figure;
* :mod:`.summary`: the summary table;
* :mod:`.common`: what they share.
"""

from __future__ import annotations

from .common import budget_bytes, claim_device, format_cell, load_with_threads, read_png, software_versions, write_png
from .masks import ChunkInput, load_chunk, model_input, run_mask_job
from .pictures import chunk_pictures, picture_rows, tile_um_per_px, write_figure, write_pictures
from .summary import (
    PROVENANCE_COLUMNS,
    SUMMARY_COLUMNS,
    SUMMARY_FLOATS,
    SUMMARY_INTS,
    mask_stats,
    summary_columns,
    summary_frame,
    write_parquet,
    write_summary,
)
from .tiles import select_tiles

__all__ = [
    "ChunkInput", "PROVENANCE_COLUMNS", "SUMMARY_COLUMNS", "SUMMARY_FLOATS", "SUMMARY_INTS", "budget_bytes",
    "chunk_pictures", "claim_device", "format_cell", "load_chunk", "load_with_threads", "mask_stats", "model_input",
    "picture_rows", "read_png", "run_mask_job", "select_tiles", "software_versions", "summary_columns", "summary_frame",
    "tile_um_per_px", "write_figure", "write_parquet", "write_pictures", "write_png", "write_summary",
]  # fmt: skip
