"""One slide's explained tiles as QuPath detections (GeoJSON), with their probabilities and mask statistics."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs.slide_maps import write_qupath  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_qupath,
    slide=snakemake.wildcards.slide,
    summary_path=snakemake.input.summary,
    out_path=snakemake.output[0],
    evaluation_path=snakemake.input.get("evaluation"),
)
