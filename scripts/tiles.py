"""Choose one slide's tiles (tiles.mode), save them as PNG and write its tile table."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs import select_tiles  # noqa: E402
from slidegrad.layout import Layout  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(
    select_tiles,
    source=snakemake.input.source,
    table_path=snakemake.output.table,
    tile_dir=snakemake.output.tiles,
    params=snakemake.params.tiles,
    model_path=snakemake.input.get("model"),
    threads=snakemake.threads,
    device=snakemake.config["device"],
    memory_budget_mb=snakemake.config["memory_budget_mb"],
    lock_dir=Layout(snakemake.config["outdir"]).gpu_locks(),
)
