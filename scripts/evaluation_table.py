"""results/evaluation.csv: one row per slide × tile × method, each metric and its chance level."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.evaluate.jobs import write_evaluation_table  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(write_evaluation_table, chunk_tables=list(snakemake.input), out_path=snakemake.output[0])
