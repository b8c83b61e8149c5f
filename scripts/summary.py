"""results/summary.csv (and .parquet): one row per slide × tile × method."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs import write_summary  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    write_summary,
    table_paths=snakemake.params.tables,
    outdir=snakemake.config["outdir"],
    method_ids=snakemake.params.method_ids,
    out_path=snakemake.output.csv,
    parquet_path=snakemake.output.parquet,
)
