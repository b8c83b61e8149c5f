"""Train the embedded demo's DAB classifier (seeded, deterministic)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.demo import train_demo_model  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    train_demo_model,
    slide_paths=list(snakemake.input),
    out_dir=snakemake.output[0],
    epochs=snakemake.params.epochs,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
print(f"demo model written to {snakemake.output[0]}", file=sys.stderr)
