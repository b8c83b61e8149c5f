"""One comparison figure per slide (PDF + PNG)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs import write_figure  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

layout = snakemake.params.layout
run_job(
    write_figure,
    slide=snakemake.wildcards.slide,
    out_paths=[snakemake.output.pdf, snakemake.output.png],
    **layout,
)
