"""Train the embedded demo's small vision transformer (vit_demo; seeded, deterministic)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.demo import train_demo_vit  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    train_demo_vit,
    slide_paths=list(snakemake.input),
    out_dir=snakemake.output[0],
    epochs=snakemake.params.epochs,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
print(f"demo ViT written to {snakemake.output[0]}", file=sys.stderr)
