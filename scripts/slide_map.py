"""One slide's saliency map for one method: stitched, scaled per slide, as a TIFF, a PNG and numbers."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs.slide_maps import write_slide_map  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_slide_map,
    slide=snakemake.wildcards.slide,
    slide_path=snakemake.params.slide_path,
    mpp=snakemake.params.mpp,
    table_path=snakemake.input.table,
    outdir=snakemake.config["outdir"],
    method_id=snakemake.wildcards.method,
    out_tiff=snakemake.output.tiff,
    out_png=snakemake.output.png,
    out_npz=snakemake.output.npz,
    map_um=snakemake.params.map_um,
    percentile=snakemake.params.percentile,
    cmap=snakemake.params.cmap,
    alpha=snakemake.params.alpha,
)
