"""One overview figure per slide: the thumbnail with the explained tiles and, with mosaic, the stitched masks.

One file per figure.formats (default PDF + PNG)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.overview import write_overview  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_overview,
    slide=snakemake.wildcards.slide,
    slide_path=snakemake.params.slide_path,
    mpp=snakemake.params.mpp,
    table_path=snakemake.input.table,
    outdir=snakemake.config["outdir"],
    method_ids=snakemake.params.method_ids,
    method_titles=snakemake.params.method_titles,
    mosaic=snakemake.params.mosaic,
    out_paths=list(snakemake.output),
    cmap=snakemake.params.cmap,
    dpi=snakemake.params.dpi,
    slide_maps=snakemake.input.get("slide_maps", []),
    prediction_map=snakemake.input.get("prediction_map"),
)
