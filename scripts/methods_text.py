"""methods.md (a paragraph for a paper) and the report's captions, from the run's sidecars."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.methods_text import write_methods  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_methods,
    summary_path=snakemake.input.summary,
    evaluation_path=snakemake.input.get("evaluation"),
    out_markdown=snakemake.output.methods,
    caption_paths=dict(zip(snakemake.params.names, snakemake.output.captions)),
    class_idx=snakemake.params.class_idx,
    evaluate=snakemake.params.evaluate,
    figure=snakemake.params.figure,
)
