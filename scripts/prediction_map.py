"""One slide's prediction heatmap: every tile's class probabilities as one map per class."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs.slide_maps import write_prediction_map  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_prediction_map,
    slide=snakemake.wildcards.slide,
    slide_path=snakemake.params.slide_path,
    mpp=snakemake.params.mpp,
    table_path=snakemake.input.table,
    outdir=snakemake.config["outdir"],
    method_id=snakemake.params.method_id,
    scores=snakemake.params.scores,
    out_npz=snakemake.output.npz,
    out_paths=list(snakemake.output.figures),
    map_um=snakemake.params.map_um,
    dpi=snakemake.params.dpi,
)
