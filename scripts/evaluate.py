"""Evaluate one (slide, chunk): every method's masks against the model (the model loads once)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.evaluate.jobs import run_evaluation_job  # noqa: E402
from slidegrad.scripting import run_job, runtime_options  # noqa: E402

evaluation = snakemake.params.evaluation
run_job(
    run_evaluation_job,
    model_path=snakemake.input.model,
    table_path=snakemake.input.table,
    chunk=snakemake.wildcards.chunk,
    tile_file=snakemake.params.tile_file,
    mask_files=dict(zip(snakemake.params.method_ids, snakemake.input.masks)),
    methods=evaluation["methods"],
    settings=evaluation["settings"],
    out_table=snakemake.output.table,
    out_curves=snakemake.output.curves,
    device=snakemake.params.device,
    load_options=snakemake.params.load_options,
    **runtime_options(snakemake.config, snakemake.threads),  # change no output, so no rerun
)
