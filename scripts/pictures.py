"""Overlay and heatmap PNGs for one chunk's tiles that `pictures` asks for, every method (figure.cmap, figure.alpha)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs import write_pictures  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_pictures,
    table_path=snakemake.input.table,
    chunk=snakemake.wildcards.chunk,
    outdir=snakemake.config["outdir"],
    method_ids=snakemake.params.method_ids,
    overlay_dir=snakemake.output.overlays,
    heatmap_dir=snakemake.output.heatmaps,
    limit=snakemake.params.limit,
    cmap=snakemake.params.cmap,
    alpha=snakemake.params.alpha,
)
