"""One evaluation figure per slide: curves against chance, and a method × metric panel.

One file per figure.formats (default PDF + PNG)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.evaluate.jobs import write_evaluation_figure  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_evaluation_figure,
    slide=snakemake.wildcards.slide,
    chunk_tables=list(snakemake.input.tables),
    chunk_curves=list(snakemake.input.curves),
    method_ids=snakemake.params.method_ids,
    method_titles=snakemake.params.method_titles,
    out_paths=list(snakemake.output),
    dpi=snakemake.params.dpi,
)
