"""Overlay and heatmap PNGs for one chunk's masks, every method (figure.cmap, default viridis; figure.alpha, 0.8)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs import write_overlays  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_overlays,
    table_path=snakemake.input.table,
    chunk=snakemake.wildcards.chunk,
    tile_dir=snakemake.input.tiles,
    mask_dirs=dict(zip(snakemake.params.method_ids, snakemake.input.masks)),
    overlay_dir=snakemake.output.overlays,
    heatmap_dir=snakemake.output.heatmaps,
    cmap=snakemake.params.cmap,
    alpha=snakemake.params.alpha,
)
