"""Overlay (Oranges, alpha 0.6) and inferno heatmap PNGs for a chunk's masks."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs import write_overlays  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_overlays,
    tile_pngs=list(snakemake.input.tiles),
    mask_paths=list(snakemake.input.masks),
    overlay_paths=list(snakemake.output.overlays),
    heatmap_paths=list(snakemake.output.heatmaps),
)
