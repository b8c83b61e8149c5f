"""One comparison figure per slide, a file per figure.formats (default PDF + PNG)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs import write_figure  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_figure,
    slide=snakemake.wildcards.slide,
    table_path=snakemake.input[0],
    outdir=snakemake.config["outdir"],
    method_ids=snakemake.params.method_ids,
    method_titles=snakemake.params.method_titles,
    max_tiles=snakemake.params.max_tiles,
    out_paths=list(snakemake.output),
    overlay=snakemake.params.overlay,
    cmap=snakemake.params.cmap,
    alpha=snakemake.params.alpha,
    dpi=snakemake.params.dpi,
)
