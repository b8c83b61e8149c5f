"""Saliency masks for one (slide, method, chunk of tiles): the model loads once."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.config import MethodSpec  # noqa: E402
from slidegrad.jobs import run_mask_job  # noqa: E402
from slidegrad.scripting import run_job, runtime_options  # noqa: E402

run_job(
    run_mask_job,
    model_path=snakemake.input.model,
    table_path=snakemake.input.table,
    chunk=snakemake.wildcards.chunk,
    tile_file=snakemake.params.tile_file,
    method=MethodSpec.from_json(snakemake.params.method),
    out_file=snakemake.output[0],
    class_idx=snakemake.params.class_idx,
    device=snakemake.params.device,
    engine=snakemake.params.engine,
    load_options=snakemake.params.load_options,
    save_raw=snakemake.params.save_raw,
    **runtime_options(snakemake.config, snakemake.threads),  # change no output, so no rerun
)
